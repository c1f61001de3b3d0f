//! Reads a TensorFlow Lite flatbuffer (MediaPipe's BlazeFace short-range detector) into ONNX.
//!
//! Covers the operators BlazeFace uses; anything else is refused by name, so a changed origin
//! fails the fetch instead of producing a wrong network. Float16 weights behind `DEQUANTIZE`
//! are widened here once, as TFLite does at load time.

use tract_tflite::tflite::{
    self, ActivationFunctionType, BuiltinOperator, Padding as TfPadding, TensorType,
};

use super::ConvertError;
use super::onnx::permute;
use super::tf::{Act, Conv, ConvWeights, Padding, TfGraph, Value};
use super::{f32s_le, i32s_le};

fn bad(what: impl Into<String>) -> ConvertError {
    ConvertError::Malformed(what.into())
}

fn padding(p: TfPadding) -> Result<Padding, ConvertError> {
    match p {
        TfPadding::SAME => Ok(Padding::Same),
        TfPadding::VALID => Ok(Padding::Valid),
        other => Err(bad(format!("padding {other:?}"))),
    }
}

fn relu(f: ActivationFunctionType) -> Result<bool, ConvertError> {
    match f {
        ActivationFunctionType::NONE => Ok(false),
        ActivationFunctionType::RELU => Ok(true),
        other => Err(ConvertError::Unsupported(format!(
            "fused activation {other:?}"
        ))),
    }
}

fn positive(v: i32, what: &str) -> Result<usize, ConvertError> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| bad(format!("{what} {v}")))
}

/// Converts the TFLite model in `bytes` (first subgraph) to an ONNX model.
pub(crate) fn convert(bytes: &[u8], graph_name: &str, doc: &str) -> Result<Vec<u8>, ConvertError> {
    let model =
        tflite::root_as_model(bytes).map_err(|e| bad(format!("not a TFLite model: {e}")))?;
    let sub = model
        .subgraphs()
        .and_then(|s| s.iter().next())
        .ok_or_else(|| bad("no subgraph"))?;
    let tensors = sub.tensors().ok_or_else(|| bad("no tensors"))?;
    let buffers = model.buffers().ok_or_else(|| bad("no buffers"))?;
    let codes = model
        .operator_codes()
        .ok_or_else(|| bad("no operator codes"))?;
    let mut values: Vec<Option<Value>> = (0..tensors.len()).map(|_| None).collect();
    let mut g = TfGraph::new();

    let shape_of = |i: usize| -> Result<Vec<usize>, ConvertError> {
        if i >= tensors.len() {
            return Err(bad(format!("tensor {i} of {}", tensors.len())));
        }
        let t = tensors.get(i);
        t.shape()
            .map(|s| s.iter().map(|d| usize::try_from(d).unwrap_or(0)).collect())
            .ok_or_else(|| bad(format!("tensor {i} has no shape")))
    };

    // Constants: every tensor with data in its buffer.
    for (i, slot) in values.iter_mut().enumerate() {
        let t = tensors.get(i);
        let b = t.buffer() as usize;
        if b >= buffers.len() {
            return Err(bad(format!(
                "tensor {i} names buffer {b} of {}",
                buffers.len()
            )));
        }
        let Some(data) = buffers.get(b).data().filter(|d| !d.is_empty()) else {
            continue;
        };
        let data = data.bytes();
        let shape = shape_of(i)?;
        let v = match t.type_() {
            TensorType::FLOAT32 => Value::Floats(f32s_le(data), shape),
            TensorType::FLOAT16 => Value::Floats(
                data.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                shape,
            ),
            TensorType::INT32 => Value::Ints(i32s_le(data), shape),
            other => return Err(ConvertError::Unsupported(format!("tensor type {other:?}"))),
        };
        *slot = Some(v);
    }

    let inputs = sub.inputs().ok_or_else(|| bad("no graph inputs"))?;
    for i in inputs.iter() {
        let i = i as usize;
        let shape = shape_of(i)?;
        let name = tensors.get(i).name().unwrap_or("input");
        let &[n, h, w, c] = shape.as_slice() else {
            return Err(bad(format!("input of shape {shape:?}")));
        };
        values[i] = Some(Value::Act(g.input(name, [n, h, w, c])));
    }

    let ops = sub.operators().ok_or_else(|| bad("no operators"))?;
    for op in ops.iter() {
        let code_index = op.opcode_index() as usize;
        if code_index >= codes.len() {
            return Err(bad(format!(
                "operator code {code_index} of {}",
                codes.len()
            )));
        }
        let code = codes.get(code_index);
        // Old files keep small codes in the deprecated byte only.
        let builtin = BuiltinOperator(
            code.builtin_code()
                .0
                .max(i32::from(code.deprecated_builtin_code())),
        );
        let ins: Vec<usize> = op
            .inputs()
            .map(|v| v.iter().filter(|&i| i >= 0).map(|i| i as usize).collect())
            .unwrap_or_default();
        let out = op
            .outputs()
            .and_then(|v| v.iter().next())
            .map(|i| i as usize)
            .ok_or_else(|| bad(format!("{builtin:?} without an output")))?;
        let get = |k: usize| -> Result<&Value, ConvertError> {
            ins.get(k)
                .and_then(|&i| values.get(i))
                .and_then(Option::as_ref)
                .ok_or_else(|| bad(format!("{builtin:?}: input {k} is not computed")))
        };
        let act = |k: usize| -> Result<Act, ConvertError> {
            match get(k)? {
                Value::Act(a) => Ok(a.clone()),
                _ => Err(ConvertError::Unsupported(format!(
                    "{builtin:?} with a constant input {k}"
                ))),
            }
        };
        let floats = |k: usize| -> Result<(Vec<f32>, Vec<usize>), ConvertError> {
            match get(k)? {
                Value::Floats(d, s) => Ok((d.clone(), s.clone())),
                _ => Err(bad(format!(
                    "{builtin:?}: input {k} is not a float constant"
                ))),
            }
        };
        let produced = match builtin {
            BuiltinOperator::DEQUANTIZE => {
                let (d, s) = floats(0)?;
                Value::Floats(d, s)
            }
            BuiltinOperator::CONV_2D | BuiltinOperator::DEPTHWISE_CONV_2D => {
                let x = act(0)?;
                let missing = || bad(format!("{builtin:?} without options"));
                // Weights: [out, kh, kw, in] for a convolution, [1, kh, kw, channels *
                // multiplier] for a depthwise one; both to ONNX's [out, in / group, kh, kw].
                let (stride, dilation, pad, fused, perm, group) =
                    if builtin == BuiltinOperator::CONV_2D {
                        let o = op
                            .builtin_options_as_conv_2_doptions()
                            .ok_or_else(missing)?;
                        (
                            (o.stride_h(), o.stride_w()),
                            (o.dilation_h_factor(), o.dilation_w_factor()),
                            o.padding(),
                            o.fused_activation_function(),
                            [0, 3, 1, 2],
                            1,
                        )
                    } else {
                        let o = op
                            .builtin_options_as_depthwise_conv_2_doptions()
                            .ok_or_else(missing)?;
                        (
                            (o.stride_h(), o.stride_w()),
                            (o.dilation_h_factor(), o.dilation_w_factor()),
                            o.padding(),
                            o.fused_activation_function(),
                            [3, 0, 1, 2],
                            x.shape.get(3).copied().unwrap_or(0),
                        )
                    };
                let (w, ws) = floats(1)?;
                let (w, d) = permute(&w, &ws, &perm)?;
                let bias = if ins.len() > 2 {
                    Some(floats(2)?.0)
                } else {
                    None
                };
                Value::Act(g.conv(
                    &x,
                    ConvWeights {
                        weights: w,
                        dims: [d[0], d[1], d[2], d[3]],
                        bias,
                    },
                    Conv {
                        stride: (positive(stride.0, "stride")?, positive(stride.1, "stride")?),
                        dilation: (
                            positive(dilation.0, "dilation")?,
                            positive(dilation.1, "dilation")?,
                        ),
                        padding: padding(pad)?,
                        group,
                        relu: relu(fused)?,
                    },
                )?)
            }
            BuiltinOperator::ADD => {
                let fused = op
                    .builtin_options_as_add_options()
                    .map(|o| o.fused_activation_function())
                    .unwrap_or(ActivationFunctionType::NONE);
                Value::Act(g.add(&act(0)?, &act(1)?, relu(fused)?)?)
            }
            BuiltinOperator::RELU => Value::Act(g.relu(&act(0)?)),
            BuiltinOperator::PAD => {
                let Value::Ints(p, shape) = get(1)? else {
                    return Err(bad("PAD without constant paddings"));
                };
                Value::Act(g.pad_tf(&act(0)?, p, shape)?)
            }
            BuiltinOperator::MAX_POOL_2D => {
                let o = op
                    .builtin_options_as_pool_2_doptions()
                    .ok_or_else(|| bad("MAX_POOL_2D without options"))?;
                if relu(o.fused_activation_function())? {
                    return Err(ConvertError::Unsupported("pooling with relu".into()));
                }
                Value::Act(g.max_pool(
                    &act(0)?,
                    (
                        positive(o.filter_height(), "filter")?,
                        positive(o.filter_width(), "filter")?,
                    ),
                    (
                        positive(o.stride_h(), "stride")?,
                        positive(o.stride_w(), "stride")?,
                    ),
                    padding(o.padding())?,
                )?)
            }
            BuiltinOperator::RESHAPE => {
                let target: Vec<i64> = shape_of(out)?.iter().map(|&d| d as i64).collect();
                Value::Act(g.reshape(&act(0)?, &target)?)
            }
            BuiltinOperator::CONCATENATION => {
                let o = op
                    .builtin_options_as_concatenation_options()
                    .ok_or_else(|| bad("CONCATENATION without options"))?;
                if relu(o.fused_activation_function())? {
                    return Err(ConvertError::Unsupported("concatenation with relu".into()));
                }
                let xs = (0..ins.len()).map(act).collect::<Result<Vec<_>, _>>()?;
                let rank = xs.first().map(|x| x.shape.len()).unwrap_or(0) as i32;
                let axis = if o.axis() < 0 {
                    o.axis() + rank
                } else {
                    o.axis()
                };
                let axis = usize::try_from(axis).map_err(|_| bad("concatenation axis"))?;
                Value::Act(g.concat(&xs, axis)?)
            }
            other => {
                return Err(ConvertError::Unsupported(format!(
                    "TFLite operator {other:?}"
                )));
            }
        };
        let slot = values
            .get_mut(out)
            .ok_or_else(|| bad(format!("output tensor {out} out of range")))?;
        *slot = Some(produced);
    }

    let outputs = sub.outputs().ok_or_else(|| bad("no graph outputs"))?;
    for o in outputs.iter() {
        let o = o as usize;
        shape_of(o)?;
        let name = tensors.get(o).name().unwrap_or("output").to_owned();
        match values.get(o).and_then(Option::as_ref) {
            Some(Value::Act(a)) => g.output(a, &name),
            _ => return Err(bad(format!("output {name} is not computed"))),
        }
    }
    Ok(g.encode(graph_name, doc))
}
