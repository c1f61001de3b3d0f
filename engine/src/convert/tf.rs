//! TensorFlow-style layers (NHWC tensors, SAME/VALID padding) written as an NCHW ONNX graph.
//! The TFLite and TensorFlow.js readers both describe their networks through this, so the
//! layout conversion lives in one place: activations are NCHW inside the graph, the input is
//! transposed once on the way in, and a tensor leaving 4-D (a reshape, an output) is transposed
//! back to NHWC first, which keeps the original model's element order.

use super::ConvertError;
use super::onnx::{Attr, Dim, Graph};

/// An activation: its name in the graph and its TensorFlow shape (NHWC when 4-D).
#[derive(Clone, Debug)]
pub(crate) struct Act {
    name: String,
    pub(crate) shape: Vec<usize>,
}

/// A tensor of a TensorFlow-family graph while it is read: computed in the graph, or a
/// constant the reader folds into the layer that takes it.
#[derive(Clone)]
pub(crate) enum Value {
    Act(Act),
    Floats(Vec<f32>, Vec<usize>),
    Ints(Vec<i32>, Vec<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Padding {
    Same,
    Valid,
}

/// A convolution's weights in ONNX layout `[out, in / group, kh, kw]`, with its bias.
pub(crate) struct ConvWeights {
    pub(crate) weights: Vec<f32>,
    pub(crate) dims: [usize; 4],
    pub(crate) bias: Option<Vec<f32>>,
}

pub(crate) struct Conv {
    pub(crate) stride: (usize, usize),
    pub(crate) dilation: (usize, usize),
    pub(crate) padding: Padding,
    /// 1 for a plain convolution, the input channels for a depthwise one.
    pub(crate) group: usize,
    pub(crate) relu: bool,
}

pub(crate) struct TfGraph {
    g: Graph,
}

fn bad(what: String) -> ConvertError {
    ConvertError::Malformed(what)
}

/// Output size and (before, after) padding of one spatial axis, as TensorFlow computes them.
fn spatial(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> Result<(usize, usize, usize), ConvertError> {
    if stride == 0 || dilation == 0 || kernel == 0 {
        return Err(bad(format!(
            "kernel {kernel}, stride {stride}, dilation {dilation}"
        )));
    }
    let effective = (kernel - 1) * dilation + 1;
    match padding {
        Padding::Valid => {
            if input < effective {
                return Err(bad(format!(
                    "input {input} smaller than kernel {effective}"
                )));
            }
            Ok(((input - effective) / stride + 1, 0, 0))
        }
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + effective).saturating_sub(input);
            Ok((out, total / 2, total - total / 2))
        }
    }
}

impl TfGraph {
    pub(crate) fn new() -> TfGraph {
        TfGraph { g: Graph::new() }
    }

    /// A `[1, h, w, c]` float input.
    pub(crate) fn input(&mut self, name: &str, nhwc: [usize; 4]) -> Act {
        let dims: Vec<Dim> = nhwc.iter().map(|&d| Dim::Fixed(d)).collect();
        let x = self.g.input(name, &dims);
        let t = self.g.node(
            "Transpose",
            &[&x],
            vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))],
        );
        Act {
            name: t,
            shape: nhwc.to_vec(),
        }
    }

    fn nhwc(x: &Act) -> Result<[usize; 4], ConvertError> {
        match x.shape.as_slice() {
            &[n, h, w, c] => Ok([n, h, w, c]),
            other => Err(bad(format!("expected a 4-D tensor, got shape {other:?}"))),
        }
    }

    pub(crate) fn conv(&mut self, x: &Act, w: ConvWeights, c: Conv) -> Result<Act, ConvertError> {
        let [n, h, wd, ch] = Self::nhwc(x)?;
        let [out_ch, per_group, kh, kw] = w.dims;
        if c.group == 0 || per_group * c.group != ch {
            return Err(bad(format!(
                "convolution of {ch} channels with weights {:?} in {} groups",
                w.dims, c.group
            )));
        }
        let (oh, pt, pb) = spatial(h, kh, c.stride.0, c.dilation.0, c.padding)?;
        let (ow, pl, pr) = spatial(wd, kw, c.stride.1, c.dilation.1, c.padding)?;
        let wname = self.g.constant("w", &w.dims, &w.weights)?;
        let mut inputs = vec![x.name.clone(), wname];
        if let Some(b) = &w.bias {
            inputs.push(self.g.constant("b", &[b.len()], b)?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let y = self.g.node(
            "Conv",
            &refs,
            vec![
                (
                    "dilations",
                    Attr::Ints(vec![c.dilation.0 as i64, c.dilation.1 as i64]),
                ),
                ("group", Attr::Int(c.group as i64)),
                ("kernel_shape", Attr::Ints(vec![kh as i64, kw as i64])),
                (
                    "pads",
                    Attr::Ints(vec![pt as i64, pl as i64, pb as i64, pr as i64]),
                ),
                (
                    "strides",
                    Attr::Ints(vec![c.stride.0 as i64, c.stride.1 as i64]),
                ),
            ],
        );
        let y = if c.relu {
            self.g.node("Relu", &[&y], vec![])
        } else {
            y
        };
        Ok(Act {
            name: y,
            shape: vec![n, oh, ow, out_ch],
        })
    }

    pub(crate) fn add(&mut self, a: &Act, b: &Act, relu: bool) -> Result<Act, ConvertError> {
        if a.shape != b.shape {
            return Err(bad(format!(
                "add of shapes {:?} and {:?}",
                a.shape, b.shape
            )));
        }
        let y = self.g.node("Add", &[&a.name, &b.name], vec![]);
        let y = if relu {
            self.g.node("Relu", &[&y], vec![])
        } else {
            y
        };
        Ok(Act {
            name: y,
            shape: a.shape.clone(),
        })
    }

    pub(crate) fn relu(&mut self, x: &Act) -> Act {
        Act {
            name: self.g.node("Relu", &[&x.name], vec![]),
            shape: x.shape.clone(),
        }
    }

    pub(crate) fn max_pool(
        &mut self,
        x: &Act,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: Padding,
    ) -> Result<Act, ConvertError> {
        let [n, h, w, c] = Self::nhwc(x)?;
        let (oh, pt, pb) = spatial(h, kernel.0, stride.0, 1, padding)?;
        let (ow, pl, pr) = spatial(w, kernel.1, stride.1, 1, padding)?;
        let y = self.g.node(
            "MaxPool",
            &[&x.name],
            vec![
                (
                    "kernel_shape",
                    Attr::Ints(vec![kernel.0 as i64, kernel.1 as i64]),
                ),
                (
                    "pads",
                    Attr::Ints(vec![pt as i64, pl as i64, pb as i64, pr as i64]),
                ),
                (
                    "strides",
                    Attr::Ints(vec![stride.0 as i64, stride.1 as i64]),
                ),
            ],
        );
        Ok(Act {
            name: y,
            shape: vec![n, oh, ow, c],
        })
    }

    /// Zero padding given as TensorFlow's `paddings` constant: shape `[4, 2]`, (before, after)
    /// per NHWC axis.
    pub(crate) fn pad_tf(
        &mut self,
        x: &Act,
        paddings: &[i32],
        shape: &[usize],
    ) -> Result<Act, ConvertError> {
        if shape != [4, 2] || paddings.len() != 8 {
            return Err(bad(format!("paddings of shape {shape:?}")));
        }
        let mut pads = [(0usize, 0usize); 4];
        for (a, pad) in pads.iter_mut().enumerate() {
            let side = |v: i32| usize::try_from(v).map_err(|_| bad("negative padding".into()));
            *pad = (side(paddings[2 * a])?, side(paddings[2 * a + 1])?);
        }
        self.pad(x, pads)
    }

    /// Zero padding, `pads[axis] = (before, after)` in NHWC axis order.
    fn pad(&mut self, x: &Act, pads: [(usize, usize); 4]) -> Result<Act, ConvertError> {
        let s = Self::nhwc(x)?;
        // NHWC axis i is NCHW axis NCHW_OF[i].
        const NCHW_OF: [usize; 4] = [0, 2, 3, 1];
        let mut onnx = [0i64; 8];
        for (i, (before, after)) in pads.iter().enumerate() {
            onnx[NCHW_OF[i]] = *before as i64;
            onnx[4 + NCHW_OF[i]] = *after as i64;
        }
        let p = self.g.constant_i64("pads", &onnx);
        let y = self
            .g
            .node("Pad", &[&x.name, &p], vec![("mode", Attr::Str("constant"))]);
        let shape = s.iter().zip(pads).map(|(d, (b, a))| d + b + a).collect();
        Ok(Act { name: y, shape })
    }

    /// Back to TensorFlow's element order when leaving the 4-D NCHW world.
    fn in_tf_order(&mut self, x: &Act) -> String {
        if x.shape.len() == 4 {
            self.g.node(
                "Transpose",
                &[&x.name],
                vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))],
            )
        } else {
            x.name.clone()
        }
    }

    /// Reshape to a non-4-D `shape` (a `-1` entry is inferred).
    pub(crate) fn reshape(&mut self, x: &Act, shape: &[i64]) -> Result<Act, ConvertError> {
        let total: usize = x.shape.iter().product();
        let known: i64 = shape.iter().filter(|&&d| d != -1).product();
        let inferred = shape.iter().filter(|&&d| d == -1).count();
        let out: Vec<usize> = match inferred {
            0 => shape.iter().map(|&d| d as usize).collect(),
            1 if known > 0 => shape
                .iter()
                .map(|&d| {
                    if d == -1 {
                        total / known as usize
                    } else {
                        d as usize
                    }
                })
                .collect(),
            _ => return Err(bad(format!("reshape to {shape:?}"))),
        };
        if out.iter().product::<usize>() != total || shape.iter().any(|&d| d < -1 || d == 0) {
            return Err(bad(format!("reshape of {:?} to {shape:?}", x.shape)));
        }
        if out.len() == 4 {
            return Err(bad("reshape to a 4-D tensor is not supported".into()));
        }
        let src = self.in_tf_order(x);
        let target: Vec<i64> = out.iter().map(|&d| d as i64).collect();
        let s = self.g.constant_i64("shape", &target);
        let y = self.g.node("Reshape", &[&src, &s], vec![]);
        Ok(Act {
            name: y,
            shape: out,
        })
    }

    /// Concatenation of non-4-D tensors along `axis`.
    pub(crate) fn concat(&mut self, xs: &[Act], axis: usize) -> Result<Act, ConvertError> {
        let first = xs
            .first()
            .ok_or_else(|| bad("empty concatenation".into()))?;
        if first.shape.len() == 4 || axis >= first.shape.len() {
            return Err(bad(format!(
                "concatenation of {:?} on axis {axis}",
                first.shape
            )));
        }
        let mut shape = first.shape.clone();
        shape[axis] = 0;
        for x in xs {
            let same_rest = x.shape.len() == first.shape.len()
                && x.shape
                    .iter()
                    .zip(&first.shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !same_rest {
                return Err(bad(format!(
                    "concatenation of {:?} and {:?}",
                    first.shape, x.shape
                )));
            }
            shape[axis] += x.shape[axis];
        }
        let names: Vec<&str> = xs.iter().map(|x| x.name.as_str()).collect();
        let y = self
            .g
            .node("Concat", &names, vec![("axis", Attr::Int(axis as i64))]);
        Ok(Act { name: y, shape })
    }

    pub(crate) fn output(&mut self, x: &Act, name: &str) {
        let v = self.in_tf_order(x);
        let dims: Vec<Dim> = x.shape.iter().map(|&d| Dim::Fixed(d)).collect();
        self.g.output(&v, name, &dims);
    }

    pub(crate) fn encode(self, name: &str, doc: &str) -> Vec<u8> {
        self.g.encode(name, doc)
    }
}

#[cfg(test)]
mod tests {
    use super::{Padding, spatial};

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        // TensorFlow: 128 input, 3x3 kernel, stride 2 -> 64 out, pad 0 before and 1 after.
        assert_eq!(
            spatial(128, 3, 2, 1, Padding::Same).expect("same"),
            (64, 0, 1)
        );
        assert_eq!(
            spatial(128, 5, 1, 1, Padding::Same).expect("same"),
            (128, 2, 2)
        );
        assert_eq!(
            spatial(130, 3, 2, 1, Padding::Valid).expect("valid"),
            (64, 0, 0)
        );
    }
}
