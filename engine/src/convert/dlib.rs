//! Reads dlib's `dlib_face_recognition_resnet_model_v1.dat` (dlib's binary `serialize` format)
//! and writes the same network as ONNX.
//!
//! The file holds the layers of dlib's `anet_type` (dnn_face_recognition_ex.cpp) input-first:
//! `con<32,7,7,2,2> affine relu max_pool<3,3,2,2>`, then residual stages of 3x32, 1+3x64,
//! 1+2x128, 1+2x256 and one more downsampling 256 block, `avg_pool_everything` and
//! `fc_no_bias<128>`. The reader walks the records in file order (`con_4`, `affine_`,
//! `max_pool_2`, `avg_pool_2`, `fc_2`) and checks each against that architecture; a file of
//! another shape is refused, not guessed at.
//!
//! Graph: input `image` `[N, 3, 150, 150]`, RGB 0..255, an aligned face chip; output
//! `descriptor` `[N, 128]`, dlib's raw descriptor. dlib's input scaling (`(x - mean) / 256`)
//! is the first two nodes.

use super::ConvertError;
use super::onnx::{Attr, Dim, Graph};

fn bad(what: impl Into<String>) -> ConvertError {
    ConvertError::Malformed(format!("dlib model: {}", what.into()))
}

/// A cursor over dlib's serialization: integers as a length byte (low nibble, high bit for
/// the sign) and little-endian bytes; strings as length then bytes.
struct Reader<'a> {
    d: &'a [u8],
    p: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, ConvertError> {
        let b = *self.d.get(self.p).ok_or_else(|| bad("truncated"))?;
        self.p += 1;
        Ok(b)
    }

    fn int(&mut self) -> Result<i64, ConvertError> {
        let head = self.byte()?;
        let n = usize::from(head & 0x0F);
        if n > 8 {
            return Err(bad(format!("integer of {n} bytes")));
        }
        let mut v: u64 = 0;
        for i in 0..n {
            v |= u64::from(self.byte()?) << (8 * i);
        }
        let v = i64::try_from(v).map_err(|_| bad("integer out of range"))?;
        Ok(if head & 0x80 != 0 { -v } else { v })
    }

    fn size(&mut self) -> Result<usize, ConvertError> {
        usize::try_from(self.int()?).map_err(|_| bad("negative size"))
    }

    fn string(&mut self) -> Result<String, ConvertError> {
        let n = self.size()?;
        let end = self
            .p
            .checked_add(n)
            .filter(|&e| e <= self.d.len())
            .ok_or_else(|| bad("truncated string"))?;
        let s = String::from_utf8_lossy(&self.d[self.p..end]).into_owned();
        self.p = end;
        Ok(s)
    }

    /// dlib's portable float: a mantissa and a base-2 exponent.
    fn float(&mut self) -> Result<f64, ConvertError> {
        let m = self.int()?;
        let e = self.int()?;
        let e = i32::try_from(e).map_err(|_| bad("float exponent"))?;
        Ok(m as f64 * 2f64.powi(e))
    }

    /// A `resizable_tensor`: version 2, four dimensions, then raw little-endian f32s.
    fn tensor(&mut self) -> Result<Vec<f32>, ConvertError> {
        let version = self.int()?;
        if version != 2 {
            return Err(bad(format!("tensor version {version}")));
        }
        let mut n: usize = 1;
        for _ in 0..4 {
            n = n
                .checked_mul(self.size()?)
                .ok_or_else(|| bad("tensor size"))?;
        }
        let end = n
            .checked_mul(4)
            .and_then(|b| self.p.checked_add(b))
            .filter(|&e| e <= self.d.len())
            .ok_or_else(|| bad("truncated tensor"))?;
        let v = super::f32s_le(&self.d[self.p..end]);
        self.p = end;
        Ok(v)
    }
}

enum Record {
    Con {
        w: Vec<f32>,
        dims: [usize; 4],
        b: Vec<f32>,
        stride: usize,
        pad: usize,
    },
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    MaxPool {
        k: usize,
        stride: usize,
        pad: usize,
    },
    AvgPool {
        k: usize,
        stride: usize,
        pad: usize,
    },
    Fc {
        w: Vec<f32>,
        inputs: usize,
        outputs: usize,
    },
}

/// Where the serialized string `tag` next starts at or after `from`.
fn find(d: &[u8], tag: &str, from: usize) -> Option<usize> {
    let mut pat = vec![1u8, tag.len() as u8];
    pat.extend_from_slice(tag.as_bytes());
    d.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat.as_slice())
        .map(|i| i + from)
}

fn records(d: &[u8]) -> Result<(Vec<Record>, [f32; 3]), ConvertError> {
    let at = find(d, "input_rgb_image_sized", 0).ok_or_else(|| bad("no input layer"))?;
    let mut r = Reader { d, p: at };
    r.string()?;
    let mean = [r.float()? as f32, r.float()? as f32, r.float()? as f32];

    const KINDS: [&str; 5] = ["con_4", "affine_", "max_pool_2", "avg_pool_2", "fc_2"];
    let mut out = Vec::new();
    let mut pos = r.p;
    // The next hit of each kind, searched again only once passed: one scan per kind in all.
    let mut hits: Vec<(Option<usize>, &str)> =
        KINDS.iter().map(|k| (find(d, k, pos), *k)).collect();
    loop {
        for (hit, kind) in hits.iter_mut() {
            if hit.is_some_and(|h| h < pos) {
                *hit = find(d, kind, pos);
            }
        }
        let next = hits.iter().filter_map(|(h, k)| h.map(|h| (h, *k))).min();
        let Some((at, kind)) = next else { break };
        let mut r = Reader { d, p: at };
        r.string()?;
        let rec = match kind {
            "con_4" => {
                let params = r.tensor()?;
                let mut f = [0usize; 7];
                for v in &mut f {
                    *v = r.size()?;
                }
                let [filters, rows, cols, sy, sx, py, px] = f;
                if sy != sx || py != px || filters == 0 || rows == 0 || cols == 0 {
                    return Err(bad(format!("convolution {f:?}")));
                }
                let per = filters * rows * cols;
                if params.len() <= filters || (params.len() - filters) % per != 0 {
                    return Err(bad(format!("convolution of {} parameters", params.len())));
                }
                let cin = (params.len() - filters) / per;
                let split = filters * cin * rows * cols;
                Record::Con {
                    w: params[..split].to_vec(),
                    dims: [filters, cin, rows, cols],
                    b: params[split..].to_vec(),
                    stride: sy,
                    pad: py,
                }
            }
            "affine_" => {
                let params = r.tensor()?;
                if params.is_empty() || params.len() % 2 != 0 {
                    return Err(bad("affine parameters"));
                }
                let c = params.len() / 2;
                Record::Affine {
                    gamma: params[..c].to_vec(),
                    beta: params[c..].to_vec(),
                }
            }
            "max_pool_2" | "avg_pool_2" => {
                let mut f = [0usize; 6];
                for v in &mut f {
                    *v = r.size()?;
                }
                let [k, _, stride, _, pad, _] = f;
                if kind == "max_pool_2" {
                    Record::MaxPool { k, stride, pad }
                } else {
                    Record::AvgPool { k, stride, pad }
                }
            }
            _ => {
                let outputs = r.size()?;
                let inputs = r.size()?;
                let w = r.tensor()?;
                if w.len() != inputs * outputs {
                    return Err(bad(
                        "fully connected layer with a bias or of the wrong size",
                    ));
                }
                Record::Fc { w, inputs, outputs }
            }
        };
        out.push(rec);
        pos = r.p;
    }
    Ok((out, mean))
}

struct Builder {
    g: Graph,
    recs: std::vec::IntoIter<Record>,
}

/// `[channels, height, width]` of an activation.
type Shape = [usize; 3];

fn pooled(n: usize, k: usize, s: usize) -> usize {
    n.saturating_sub(k) / s + 1
}

impl Builder {
    fn next(&mut self, what: &str) -> Result<Record, ConvertError> {
        self.recs
            .next()
            .ok_or_else(|| bad(format!("file ends where a {what} was expected")))
    }

    fn conv(&mut self, x: &str, s: Shape) -> Result<(String, Shape), ConvertError> {
        let Record::Con {
            w,
            dims,
            b,
            stride,
            pad,
        } = self.next("convolution")?
        else {
            return Err(bad("expected a convolution"));
        };
        if dims[1] != s[0] || stride == 0 {
            return Err(bad(format!("convolution {dims:?} on {s:?}")));
        }
        let wn = self.g.constant("w", &dims, &w)?;
        let bn = self.g.constant("b", &[b.len()], &b)?;
        let p = pad as i64;
        let y = self.g.node(
            "Conv",
            &[x, &wn, &bn],
            vec![
                (
                    "kernel_shape",
                    Attr::Ints(vec![dims[2] as i64, dims[3] as i64]),
                ),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("strides", Attr::Ints(vec![stride as i64, stride as i64])),
            ],
        );
        let out = |n: usize, k: usize| (n + 2 * pad).saturating_sub(k) / stride + 1;
        Ok((y, [dims[0], out(s[1], dims[2]), out(s[2], dims[3])]))
    }

    fn affine(&mut self, x: &str, s: Shape) -> Result<String, ConvertError> {
        let Record::Affine { gamma, beta } = self.next("affine layer")? else {
            return Err(bad("expected an affine layer"));
        };
        if gamma.len() != s[0] {
            return Err(bad(format!("affine of {} channels on {s:?}", gamma.len())));
        }
        let g = self.g.constant("g", &[1, gamma.len(), 1, 1], &gamma)?;
        let b = self.g.constant("beta", &[1, beta.len(), 1, 1], &beta)?;
        let y = self.g.node("Mul", &[x, &g], vec![]);
        Ok(self.g.node("Add", &[&y, &b], vec![]))
    }

    /// The next record must be the unpadded `k`x`k` pool of stride `stride` that `op`
    /// (`MaxPool` or `AveragePool`) names; it becomes that node on `x`.
    fn pool(&mut self, x: &str, op: &str, k: usize, stride: usize) -> Result<String, ConvertError> {
        let what = format!("a {k}x{k} {op} of stride {stride}");
        let found = match self.next(&what)? {
            Record::MaxPool { k, stride, pad: 0 } if op == "MaxPool" => (k, stride),
            Record::AvgPool { k, stride, pad: 0 } if op == "AveragePool" => (k, stride),
            _ => (0, 0),
        };
        if found != (k, stride) {
            return Err(bad(format!("expected {what}")));
        }
        let (k, s) = (k as i64, stride as i64);
        Ok(self.g.node(
            op,
            &[x],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![s, s])),
            ],
        ))
    }

    fn relu(&mut self, x: &str) -> String {
        self.g.node("Relu", &[x], vec![])
    }

    fn block(&mut self, x: &str, s: Shape) -> Result<(String, Shape), ConvertError> {
        let (y, s1) = self.conv(x, s)?;
        let y = self.affine(&y, s1)?;
        let y = self.relu(&y);
        let (y, s2) = self.conv(&y, s1)?;
        Ok((self.affine(&y, s2)?, s2))
    }

    fn ares(&mut self, x: &str, s: Shape) -> Result<(String, Shape), ConvertError> {
        let (y, s1) = self.block(x, s)?;
        if s1 != s {
            return Err(bad(format!("residual block changes {s:?} to {s1:?}")));
        }
        let z = self.g.node("Add", &[&y, x], vec![]);
        Ok((self.relu(&z), s))
    }

    /// dlib's `add_prev` of tensors of different sizes: each dimension is the larger one and
    /// the missing entries count as zero, which is zero padding at the end.
    fn pad_to(&mut self, x: String, s: Shape, to: Shape) -> String {
        if s == to {
            return x;
        }
        let pads = [
            0,
            0,
            0,
            0,
            0,
            (to[0] - s[0]) as i64,
            (to[1] - s[1]) as i64,
            (to[2] - s[2]) as i64,
        ];
        let p = self.g.constant_i64("pads", &pads);
        self.g
            .node("Pad", &[&x, &p], vec![("mode", Attr::Str("constant"))])
    }

    fn ares_down(&mut self, x: &str, s: Shape) -> Result<(String, Shape), ConvertError> {
        let (y, s1) = self.block(x, s)?;
        let ap = self.pool(x, "AveragePool", 2, 2)?;
        let sa = [s[0], pooled(s[1], 2, 2), pooled(s[2], 2, 2)];
        let o = [s1[0].max(sa[0]), s1[1].max(sa[1]), s1[2].max(sa[2])];
        let y = self.pad_to(y, s1, o);
        let ap = self.pad_to(ap, sa, o);
        let z = self.g.node("Add", &[&y, &ap], vec![]);
        Ok((self.relu(&z), o))
    }
}

/// Converts the `.dat` bytes to an ONNX model.
pub(crate) fn convert(dat: &[u8], doc: &str) -> Result<Vec<u8>, ConvertError> {
    let (recs, mean) = records(dat)?;
    let mut b = Builder {
        g: Graph::new(),
        recs: recs.into_iter(),
    };
    let image = b.g.input(
        "image",
        &[
            Dim::Param("N"),
            Dim::Fixed(3),
            Dim::Fixed(150),
            Dim::Fixed(150),
        ],
    );
    let m = b.g.constant("avg", &[1, 3, 1, 1], &mean)?;
    let x = b.g.node("Sub", &[&image, &m], vec![]);
    let k = b.g.constant("s", &[], &[1.0 / 256.0])?;
    let x = b.g.node("Mul", &[&x, &k], vec![]);

    let (x, s) = b.conv(&x, [3, 150, 150])?;
    let x = b.affine(&x, s)?;
    let x = b.relu(&x);
    let x = b.pool(&x, "MaxPool", 3, 2)?;
    let mut s = [s[0], pooled(s[1], 3, 2), pooled(s[2], 3, 2)];
    let mut x = x;
    // (downsampling first?, residual blocks) per stage.
    for (down, blocks) in [(false, 3), (true, 3), (true, 2), (true, 2), (true, 0)] {
        if down {
            (x, s) = b.ares_down(&x, s)?;
        }
        for _ in 0..blocks {
            (x, s) = b.ares(&x, s)?;
        }
    }
    match b.next("global average pool")? {
        Record::AvgPool { k: 0, .. } => {}
        _ => return Err(bad("expected avg_pool_everything")),
    }
    let x = b.g.node("GlobalAveragePool", &[&x], vec![]);
    let x = b.g.node("Flatten", &[&x], vec![("axis", Attr::Int(1))]);
    let Record::Fc { w, inputs, outputs } = b.next("fully connected layer")? else {
        return Err(bad("expected the final fully connected layer"));
    };
    if inputs != s[0] {
        return Err(bad(format!(
            "fully connected layer of {inputs} inputs on {s:?}"
        )));
    }
    if b.recs.next().is_some() {
        return Err(bad("layers after the final fully connected layer"));
    }
    let w = b.g.constant("fcw", &[inputs, outputs], &w)?;
    let y = b.g.node("MatMul", &[&x, &w], vec![]);
    b.g.output(&y, "descriptor", &[Dim::Param("N"), Dim::Fixed(outputs)]);
    Ok(b.g.encode("dlib_face_recognition_resnet_model_v1", doc))
}
