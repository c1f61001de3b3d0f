//! A fused per-channel PReLU for tract.
//!
//! tract 0.23 translates ONNX `PRelu` into three element-wise nodes (`x < 0` test, `x * slope`,
//! select), each allocating a tensor and walking it through a generic broadcasting loop. The
//! MiniFASNet models have 33 PReLUs each; those nodes were about a fifth of the inference
//! time. Here `PRelu` with a constant per-channel slope (the case of every model we load)
//! becomes one node that rewrites its input in place. Any other `PRelu` gets tract's own
//! decomposition.

use tract_onnx::tract_hir::internal::*;

/// The ONNX front end with `PRelu` mapped to [`ChannelPrelu`] where possible.
pub(crate) fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register
        .insert("PRelu", |_, _| Ok((expand(PreluExpansion), vec![])));
    onnx
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct PreluExpansion;

impl Expansion for PreluExpansion {
    fn name(&self) -> StaticName {
        "PreluExpansion".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let (x, slope) = (inputs[0], inputs[1]);
        if let Some(alpha) = per_channel_slope(model.outlet_fact(x)?, model.outlet_fact(slope)?)? {
            return model.wire_node(name, ChannelPrelu { alpha }, &[x]);
        }
        // tract's decomposition: iff(0 > x, x * slope, x).
        let rank = model.outlet_fact(x)?.rank();
        let mut b = slope;
        while model.outlet_fact(b)?.rank() < rank {
            b = model.wire_node(
                format!("{}.add-axis-{}", name, model.outlet_fact(b)?.rank()),
                AxisOp::Add(0),
                &[b],
            )?[0];
        }
        let zero = tensor0(0.0)
            .cast_to_dt(model.outlet_fact(x)?.datum_type)?
            .into_owned()
            .broadcast_into_rank(rank)?;
        let xb = model.wire_node(
            format!("{name}.mul"),
            tract_onnx::tract_hir::ops::math::mul(),
            &[x, b],
        )?[0];
        let zero = model.add_const(format!("{name}.zero"), zero)?;
        let test = model.wire_node(
            format!("{name}.test"),
            tract_core::ops::binary::TypedBinOp(tract_core::ops::logic::comp_gt(), None),
            &[zero, x],
        )?;
        model.wire_node(
            format!("{name}.iff"),
            tract_core::ops::logic::Iff,
            &[test[0], xb, x],
        )
    }
}

/// The slope as one value per channel (axis 1) when `x` is f32 of rank >= 2 with a known
/// channel count and the slope is a constant that broadcasts along axis 1 only.
fn per_channel_slope(x: &TypedFact, slope: &TypedFact) -> TractResult<Option<Vec<f32>>> {
    let (Some(konst), Some(shape)) = (slope.konst.as_ref(), x.shape.as_concrete()) else {
        return Ok(None);
    };
    if x.datum_type != f32::datum_type() || konst.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let rank = shape.len();
    let s_shape = konst.shape();
    if rank < 2 || s_shape.len() > rank {
        return Ok(None);
    }
    let channels = shape[1];
    // Right-align the slope's shape on x's (ONNX unidirectional broadcasting).
    let mut padded = vec![1usize; rank - s_shape.len()];
    padded.extend_from_slice(s_shape);
    if padded
        .iter()
        .enumerate()
        .any(|(axis, &d)| d != 1 && !(axis == 1 && d == channels))
    {
        return Ok(None);
    }
    let values = konst.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    Ok(Some(match values.len() {
        1 => vec![values[0]; channels],
        n if n == channels => values,
        _ => return Ok(None),
    }))
}

/// `y = x` where `x >= 0`, `alpha[c] * x` elsewhere, `c` the index on axis 1. f32 only.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelPrelu {
    alpha: Vec<f32>,
}

// Compared only to deduplicate ops; the slopes are constants from the model, never NaN.
impl Eq for ChannelPrelu {}

impl Op for ChannelPrelu {
    fn name(&self) -> StaticName {
        "ChannelPrelu".into()
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for ChannelPrelu {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(input) = inputs.into_iter().next() else {
            bail!("ChannelPrelu expects one input");
        };
        // Reuses the input's buffer when this node is its only reader.
        let mut t = input.into_tensor();
        let shape = t.shape().to_vec();
        let channels = self.alpha.len();
        if shape.len() < 2 || shape[1] != channels {
            bail!("ChannelPrelu: input shape {shape:?} does not have {channels} channels");
        }
        let plane: usize = shape[2..].iter().product();
        {
            let mut view = t.try_as_plain_ram_mut()?;
            let data = view.as_slice_mut::<f32>()?;
            if plane > 0 {
                for (i, chunk) in data.chunks_mut(plane).enumerate() {
                    let a = self.alpha[i % channels];
                    for v in chunk {
                        // Branch-free select, so the loop vectorizes.
                        let x = *v;
                        *v = if x < 0.0 { x * a } else { x };
                    }
                }
            }
        }
        Ok(tvec!(t.into_tvalue()))
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(self.eval(&EvalContext::out_of_plan(), inputs)?))
    }
}

impl TypedOp for ChannelPrelu {
    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let Some(x) = inputs.first() else {
            bail!("ChannelPrelu expects one input");
        };
        Ok(tvec!(x.without_value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_prelu_scales_negatives_per_channel() {
        let op = ChannelPrelu {
            alpha: vec![0.5, 2.0],
        };
        let x = tract_ndarray::Array4::from_shape_vec(
            (1, 2, 1, 3),
            vec![-2.0f32, 0.0, 3.0, -1.0, 1.0, -4.0],
        )
        .unwrap()
        .into_tensor();
        let out = op
            .eval(&EvalContext::out_of_plan(), tvec!(x.into_tvalue()))
            .unwrap();
        let y = out[0].try_as_plain_ram().unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[-1.0, 0.0, 3.0, -2.0, 1.0, -8.0]
        );
    }

    #[test]
    fn slope_shapes() {
        let x = f32::fact([1, 3, 4, 4]);
        let per_channel = TypedFact::try_from(tensor3(&[[[0.1f32]], [[0.2]], [[0.3]]])).unwrap();
        assert_eq!(
            per_channel_slope(&x, &per_channel).unwrap(),
            Some(vec![0.1, 0.2, 0.3])
        );
        let scalar = TypedFact::try_from(tensor1(&[0.25f32])).unwrap();
        assert_eq!(per_channel_slope(&x, &scalar).unwrap(), Some(vec![0.25; 3]));
        // A [3] slope broadcasts along the last axis (4 wide): not per channel.
        let last_axis = TypedFact::try_from(tensor1(&[0.1f32, 0.2, 0.3])).unwrap();
        assert_eq!(per_channel_slope(&x, &last_axis).unwrap(), None);
    }
}
