//! Builds the engine's ONNX files from their published origins, in Rust, at fetch time:
//! dlib's `.dat` serialization (the face embedding), TensorFlow Lite (the short-range
//! detector) and TensorFlow.js graph models (the back-camera detector).
//!
//! Each reader knows only the operators its network uses and refuses anything else by name:
//! a changed origin must fail the fetch, not yield a model that loads and scores wrong. The
//! output is deterministic (the manifest pins its SHA-256), and the golden tests compare its
//! scores with the previously shipped files.

mod dlib;
mod onnx;
mod tf;
mod tfjs;
mod tflite;

/// Little-endian f32s (a trailing partial value is ignored; shapes are checked where used).
pub(crate) fn f32s_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian i32s, as [`f32s_le`].
pub(crate) fn i32s_le(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A reader of one origin format, as named by the manifest's `convert` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// dlib's binary `serialize` output of the face recognition ResNet (`dlib-dat`).
    DlibDat,
    /// A TensorFlow Lite flatbuffer (`tflite`).
    Tflite,
    /// A TensorFlow.js graph model: `model.json` first, then its weight shards (`tfjs-graph`).
    TfjsGraph,
}

impl std::str::FromStr for Format {
    type Err = ConvertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dlib-dat" => Ok(Format::DlibDat),
            "tflite" => Ok(Format::Tflite),
            "tfjs-graph" => Ok(Format::TfjsGraph),
            other => Err(ConvertError::Unsupported(format!(
                "origin format {other:?} (known: dlib-dat, tflite, tfjs-graph)"
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The origin does not parse as its format claims, or its network is not the expected one.
    #[error("the origin file is malformed: {0}")]
    Malformed(String),
    /// The origin uses something this reader does not translate.
    #[error("the origin uses what the converter does not support: {0}")]
    Unsupported(String),
    #[error("the origin archive lacks {0}")]
    MissingMember(String),
}

/// One file taken out of an origin archive.
pub struct Member {
    /// Its path inside the archive.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Converts `members` (in the manifest's order) to the bytes of an ONNX model named `name`.
pub fn convert(format: Format, members: &[Member], name: &str) -> Result<Vec<u8>, ConvertError> {
    let first = members
        .first()
        .ok_or_else(|| ConvertError::MissingMember("the file to convert".into()))?;
    let doc = format!("{name}, converted by livegate from {}", first.path);
    match format {
        Format::DlibDat => dlib::convert(&first.bytes, &doc),
        Format::Tflite => tflite::convert(&first.bytes, name, &doc),
        Format::TfjsGraph => {
            // Shards are named relative to model.json.
            let dir = first.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let shard = |p: &str| {
                let want = if dir.is_empty() {
                    p.to_owned()
                } else {
                    format!("{dir}/{p}")
                };
                members
                    .iter()
                    .find(|m| m.path == want)
                    .map(|m| m.bytes.clone())
            };
            tfjs::convert(&first.bytes, &shard, name, &doc)
        }
    }
}
