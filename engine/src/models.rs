//! Model files: checksum verification (`SHA256SUMS`) and loading into optimized tract plans.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use crate::error::EngineError;

/// BlazeFace short-range detector (128x128), tried first.
pub const DETECTOR_SHORT_RANGE: &str = "face_detection_short_range.onnx";
/// BlazeFace full/back detector (256x256), used when the short-range one finds nothing.
pub const DETECTOR_BACK_256: &str = "face_detection_back_256.onnx";
/// MiniFASNetV2 anti-spoofing model (crop scale 2.7).
pub const MINIFASNET_V2: &str = "MiniFASNetV2.onnx";
/// MiniFASNetV1SE anti-spoofing model (crop scale 4.0).
pub const MINIFASNET_V1SE: &str = "MiniFASNetV1SE.onnx";

/// dlib's face embedding ResNet (128-d), on aligned 150x150 chips.
pub const FACE_EMBEDDING: &str = "face_embedding_dlib_resnet_v1.onnx";

/// The model files the engine loads from the models directory (each one must be listed in
/// its `SHA256SUMS`).
pub const MODEL_FILES: &[&str] = &[
    DETECTOR_SHORT_RANGE,
    DETECTOR_BACK_256,
    MINIFASNET_V2,
    MINIFASNET_V1SE,
    FACE_EMBEDDING,
];

/// Where livegate keeps fetched models for the user: `$XDG_CACHE_HOME/livegate/models`, else
/// `~/.cache/livegate/models`; `None` without either variable.
pub fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("livegate").join("models"))
}

/// The models directory when nothing names one: `LIVEGATE_MODELS_DIR`, else `./models` when it
/// holds a `SHA256SUMS`, else the user cache ([`user_cache_dir`], where `serve` fetches them).
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIVEGATE_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("models");
    if local.join(CHECKSUMS_FILE).is_file() {
        return local;
    }
    user_cache_dir().unwrap_or(local)
}

/// Name of the checksum list in the models directory (`sha256sum` format).
pub const CHECKSUMS_FILE: &str = "SHA256SUMS";

pub(crate) type Plan = Arc<TypedRunnableModel>;

/// Parsed `SHA256SUMS`: `(hex digest, file name)` pairs.
pub(crate) struct Checksums {
    path: PathBuf,
    entries: Vec<(String, String)>,
}

impl Checksums {
    pub(crate) fn read(models_dir: &Path) -> Result<Self, EngineError> {
        let path = models_dir.join(CHECKSUMS_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|source| EngineError::ChecksumsUnreadable {
                path: path.clone(),
                source,
            })?;
        let entries = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    return None;
                }
                let (hash, name) = line.split_once(char::is_whitespace)?;
                // `sha256sum` writes "HASH  name" (text) or "HASH *name" (binary).
                let name = name.trim_start().trim_start_matches('*');
                Some((hash.to_ascii_lowercase(), name.to_string()))
            })
            .collect();
        Ok(Checksums { path, entries })
    }

    fn expected(&self, file: &'static str) -> Result<&str, EngineError> {
        self.entries
            .iter()
            .find(|(_, name)| name == file)
            .map(|(hash, _)| hash.as_str())
            .ok_or_else(|| EngineError::ChecksumMissing {
                file,
                path: self.path.clone(),
            })
    }

    /// Reads `file` from `models_dir` and checks it against its pinned hash; returns its bytes.
    pub(crate) fn read_verified(
        &self,
        models_dir: &Path,
        file: &'static str,
    ) -> Result<Vec<u8>, EngineError> {
        let expected = self.expected(file)?;
        let path = models_dir.join(file);
        let bytes = std::fs::read(&path).map_err(|source| EngineError::ModelMissing {
            file,
            path: path.clone(),
            expected: expected.to_string(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != expected {
            return Err(EngineError::ChecksumMismatch {
                file,
                path,
                expected: expected.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }
}

/// Checks every file of [`MODEL_FILES`] in `models_dir` against the directory's `SHA256SUMS`
/// without loading anything. The first problem found is returned.
pub fn verify_models(models_dir: &Path) -> Result<(), EngineError> {
    let sums = Checksums::read(models_dir)?;
    for file in MODEL_FILES {
        sums.read_verified(models_dir, file)?;
    }
    Ok(())
}

/// Parses verified ONNX bytes and turns them into an optimized plan with a fixed input shape.
pub(crate) fn load_plan(
    file: &'static str,
    bytes: &[u8],
    input_shape: &[usize],
) -> Result<(Plan, Vec<Vec<usize>>), EngineError> {
    let to_load_err = |e: TractError| EngineError::ModelLoad {
        file,
        source: e.into(),
    };
    let model = crate::prelu::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(to_load_err)?
        .with_input_fact(0, f32::fact(input_shape).into())
        .map_err(to_load_err)?
        .into_optimized()
        .map_err(to_load_err)?;
    let mut output_shapes = Vec::with_capacity(model.outputs.len());
    for i in 0..model.outputs.len() {
        let fact = model.output_fact(i).map_err(to_load_err)?;
        let shape = fact
            .shape
            .as_concrete()
            .ok_or_else(|| EngineError::ModelSignature {
                file,
                detail: format!("output {i} has a symbolic shape {:?}", fact.shape),
            })?;
        output_shapes.push(shape.to_vec());
    }
    let plan = model.into_runnable().map_err(to_load_err)?;
    Ok((plan, output_shapes))
}

/// Runs a plan on one f32 input tensor.
pub(crate) fn run_plan(
    plan: &Plan,
    file: &'static str,
    shape: &[usize],
    data: Vec<f32>,
) -> Result<TVec<TValue>, EngineError> {
    let to_err = |e: TractError| EngineError::Inference {
        file,
        source: e.into(),
    };
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, data)
        .map_err(|e| EngineError::Inference {
            file,
            source: e.into(),
        })?
        .into_tensor();
    plan.run(tvec!(input.into())).map_err(to_err)
}

/// The f32 data of output `index`.
pub(crate) fn output_slice<'a>(
    outputs: &'a TVec<TValue>,
    index: usize,
    file: &'static str,
) -> Result<&'a [f32], EngineError> {
    outputs
        .get(index)
        .ok_or_else(|| EngineError::ModelSignature {
            file,
            detail: format!("missing output {index}"),
        })?
        .try_as_plain_ram()
        .and_then(|view| view.as_slice::<f32>())
        .map_err(|e| EngineError::Inference {
            file,
            source: e.into(),
        })
}
