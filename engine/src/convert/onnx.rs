//! Writes ONNX graphs for the converters: nodes, initializers and the model wrapper, encoded
//! with the protobuf types tract itself reads, so what is written is what the engine loads.
//!
//! Names are generated in insertion order and nothing depends on a hash map's order, so one
//! input always gives the same bytes (the manifest pins the converted file's SHA-256).

use prost::Message;
use tract_onnx::pb;

use super::ConvertError;

/// One attribute value of a node.
pub(crate) enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Str(&'static str),
}

/// A dimension of a graph input or output: fixed, or a named batch size.
#[derive(Clone, Copy)]
pub(crate) enum Dim {
    Fixed(usize),
    Param(&'static str),
}

pub(crate) struct Graph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    next: usize,
}

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;

fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => Value::DimValue(*n as i64),
                Dim::Param(p) => Value::DimParam((*p).to_owned()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn dims_i64(dims: &[usize]) -> Vec<i64> {
    dims.iter().map(|&d| d as i64).collect()
}

impl Graph {
    pub(crate) fn new() -> Graph {
        Graph {
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            next: 0,
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_{}", self.next)
    }

    /// Declares a float input.
    pub(crate) fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, dims));
        name.to_owned()
    }

    /// Declares `value` as the float output `name`.
    pub(crate) fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        if value != name {
            self.nodes.push(pb::NodeProto {
                op_type: "Identity".into(),
                input: vec![value.to_owned()],
                output: vec![name.to_owned()],
                ..Default::default()
            });
        }
        self.outputs.push(value_info(name, dims));
    }

    /// A float constant of shape `dims`.
    pub(crate) fn constant(
        &mut self,
        prefix: &str,
        dims: &[usize],
        data: &[f32],
    ) -> Result<String, ConvertError> {
        if dims.iter().product::<usize>() != data.len() {
            return Err(ConvertError::Malformed(format!(
                "constant {prefix}: {} values for shape {dims:?}",
                data.len()
            )));
        }
        let name = self.fresh(prefix);
        self.initializers.push(pb::TensorProto {
            dims: dims_i64(dims),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        Ok(name)
    }

    /// An int64 vector constant (shapes, pads).
    pub(crate) fn constant_i64(&mut self, prefix: &str, data: &[i64]) -> String {
        let name = self.fresh(prefix);
        self.initializers.push(pb::TensorProto {
            dims: vec![data.len() as i64],
            data_type: INT64,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output and returns that output's name.
    pub(crate) fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        use pb::attribute_proto::AttributeType;
        let out = self.fresh(&op.to_ascii_lowercase());
        let attribute = attrs
            .into_iter()
            .map(|(name, value)| {
                let mut a = pb::AttributeProto {
                    name: name.to_owned(),
                    ..Default::default()
                };
                match value {
                    Attr::Int(i) => {
                        a.r#type = AttributeType::Int as i32;
                        a.i = i;
                    }
                    Attr::Ints(v) => {
                        a.r#type = AttributeType::Ints as i32;
                        a.ints = v;
                    }
                    Attr::Str(s) => {
                        a.r#type = AttributeType::String as i32;
                        a.s = s.as_bytes().to_vec();
                    }
                }
                a
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            op_type: op.to_owned(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![out.clone()],
            attribute,
            ..Default::default()
        });
        out
    }

    /// The model file: opset 13, IR version 7 (what tract and onnxruntime both read).
    pub(crate) fn encode(self, name: &str, doc: &str) -> Vec<u8> {
        pb::ModelProto {
            ir_version: 7,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            producer_name: "livegate models fetch".into(),
            doc_string: doc.to_owned(),
            graph: Some(pb::GraphProto {
                node: self.nodes,
                name: name.to_owned(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// Reorders a row-major tensor: output axis `i` is input axis `perm[i]`.
pub(crate) fn permute(
    data: &[f32],
    dims: &[usize],
    perm: &[usize],
) -> Result<(Vec<f32>, Vec<usize>), ConvertError> {
    if dims.iter().product::<usize>() != data.len() || perm.len() != dims.len() {
        return Err(ConvertError::Malformed(format!(
            "{} values for shape {dims:?}",
            data.len()
        )));
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let mut in_strides = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * dims[i + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let total: usize = out_dims.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; out_dims.len()];
    for _ in 0..total {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(data[off]);
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < out_dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Ok((out, out_dims))
}

#[cfg(test)]
mod tests {
    use super::permute;

    #[test]
    fn permute_moves_axes() {
        // [[1,2,3],[4,5,6]] transposed.
        let (d, s) = permute(&[1., 2., 3., 4., 5., 6.], &[2, 3], &[1, 0]).expect("permute");
        assert_eq!(s, vec![3, 2]);
        assert_eq!(d, vec![1., 4., 2., 5., 3., 6.]);
    }
}
