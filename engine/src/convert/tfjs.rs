//! Reads a TensorFlow.js graph model (`model.json` plus its weight shards) into ONNX: the
//! format the BlazeFace back-camera detector is published in.
//!
//! Covers the operators that network uses; anything else is refused by name. Quantized
//! weights are refused too (the published file is float32).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::ConvertError;
use super::onnx::permute;
use super::tf::{Act, Conv, ConvWeights, Padding, TfGraph, Value};
use super::{f32s_le, i32s_le};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelJson {
    model_topology: Topology,
    weights_manifest: Vec<WeightGroup>,
    #[serde(default)]
    signature: Option<Signature>,
    #[serde(default)]
    user_defined_metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    signature: Option<Signature>,
}

#[derive(Deserialize)]
struct Signature {
    #[serde(default)]
    inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    outputs: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Topology {
    node: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    name: String,
    op: String,
    #[serde(default)]
    input: Vec<String>,
    #[serde(default)]
    attr: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct WeightGroup {
    paths: Vec<String>,
    weights: Vec<WeightSpec>,
}

#[derive(Deserialize)]
struct WeightSpec {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    #[serde(default)]
    quantization: Option<serde_json::Value>,
}

fn bad(what: impl Into<String>) -> ConvertError {
    ConvertError::Malformed(what.into())
}

/// Strips an output index (`name:0`) and a control-dependency mark (`^name`).
fn node_of(input: &str) -> &str {
    let input = input.trim_start_matches('^');
    match input.rsplit_once(':') {
        Some((n, i)) if i.chars().all(|c| c.is_ascii_digit()) => n,
        _ => input,
    }
}

fn attr_str(n: &Node, key: &str) -> Result<String, ConvertError> {
    use base64::Engine as _;
    let s = n
        .attr
        .get(key)
        .and_then(|v| v.get("s"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad(format!("{}: no attribute {key}", n.name)))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| bad(format!("{}: attribute {key}: {e}", n.name)))?;
    String::from_utf8(raw).map_err(|e| bad(format!("{}: attribute {key}: {e}", n.name)))
}

fn attr_strs(n: &Node, key: &str) -> Vec<String> {
    use base64::Engine as _;
    n.attr
        .get(key)
        .and_then(|v| v.pointer("/list/s"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .filter_map(|b| String::from_utf8(b).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A count TensorFlow.js writes as a string (`"256"`) or, in some files, as a number.
fn count(v: &serde_json::Value) -> Option<usize> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or(v.as_u64().and_then(|u| usize::try_from(u).ok()))
}

/// An NHWC `[1, h, w, 1]`-style list (strides, ksize, dilations) as its (h, w) pair.
fn attr_hw(n: &Node, key: &str, default: usize) -> Result<(usize, usize), ConvertError> {
    let Some(list) = n.attr.get(key).and_then(|v| v.pointer("/list/i")) else {
        return Ok((default, default));
    };
    let v: Vec<usize> = list
        .as_array()
        .map(|a| a.iter().filter_map(count).collect())
        .unwrap_or_default();
    match v.as_slice() {
        &[1, h, w, 1] if h > 0 && w > 0 => Ok((h, w)),
        other => Err(bad(format!("{}: {key} {other:?}", n.name))),
    }
}

fn padding(n: &Node) -> Result<Padding, ConvertError> {
    match attr_str(n, "padding")?.as_str() {
        "SAME" => Ok(Padding::Same),
        "VALID" => Ok(Padding::Valid),
        other => Err(ConvertError::Unsupported(format!(
            "{}: padding {other}",
            n.name
        ))),
    }
}

fn nhwc_only(n: &Node) -> Result<(), ConvertError> {
    if n.attr.contains_key("data_format") && attr_str(n, "data_format")? != "NHWC" {
        return Err(ConvertError::Unsupported(format!(
            "{}: data format other than NHWC",
            n.name
        )));
    }
    Ok(())
}

/// Splits the weight shards into one constant per entry of the manifest.
fn weights(
    groups: &[WeightGroup],
    shard: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<HashMap<String, Value>, ConvertError> {
    let mut out = HashMap::new();
    for group in groups {
        let mut data = Vec::new();
        for p in &group.paths {
            let bytes = shard(p).ok_or_else(|| bad(format!("weight shard {p} is missing")))?;
            data.extend_from_slice(&bytes);
        }
        let mut at = 0usize;
        for w in &group.weights {
            if w.quantization.is_some() {
                return Err(ConvertError::Unsupported(format!(
                    "quantized weight {}",
                    w.name
                )));
            }
            let n: usize = w.shape.iter().product();
            let end = at
                .checked_add(n.checked_mul(4).ok_or_else(|| bad("weight size"))?)
                .filter(|&e| e <= data.len())
                .ok_or_else(|| bad(format!("weight {} runs past the shards", w.name)))?;
            let bytes = &data[at..end];
            at = end;
            let v = match w.dtype.as_str() {
                "float32" => Value::Floats(f32s_le(bytes), w.shape.clone()),
                "int32" => Value::Ints(i32s_le(bytes), w.shape.clone()),
                other => return Err(ConvertError::Unsupported(format!("weight dtype {other}"))),
            };
            out.insert(w.name.clone(), v);
        }
    }
    Ok(out)
}

struct Converter<'a> {
    nodes: HashMap<&'a str, &'a Node>,
    values: HashMap<String, Value>,
    g: TfGraph,
}

impl<'a> Converter<'a> {
    fn value(&mut self, name: &str, depth: usize) -> Result<Value, ConvertError> {
        if let Some(v) = self.values.get(name) {
            return Ok(v.clone());
        }
        if depth > 10_000 {
            return Err(bad("graph too deep or cyclic"));
        }
        let node = *self
            .nodes
            .get(name)
            .ok_or_else(|| bad(format!("unknown node {name}")))?;
        let mut ins = Vec::new();
        for i in node.input.iter().filter(|i| !i.starts_with('^')) {
            ins.push(self.value(node_of(i), depth + 1)?);
        }
        let v = self.compute(node, ins)?;
        self.values.insert(name.to_owned(), v.clone());
        Ok(v)
    }

    fn compute(&mut self, n: &Node, ins: Vec<Value>) -> Result<Value, ConvertError> {
        let act = |k: usize| -> Result<Act, ConvertError> {
            match ins.get(k) {
                Some(Value::Act(a)) => Ok(a.clone()),
                _ => Err(ConvertError::Unsupported(format!(
                    "{} ({}): input {k} is not an activation",
                    n.name, n.op
                ))),
            }
        };
        let floats = |k: usize| -> Result<(Vec<f32>, Vec<usize>), ConvertError> {
            match ins.get(k) {
                Some(Value::Floats(d, s)) => Ok((d.clone(), s.clone())),
                _ => Err(bad(format!(
                    "{}: input {k} is not a float constant",
                    n.name
                ))),
            }
        };
        let ints = |k: usize| -> Result<(Vec<i32>, Vec<usize>), ConvertError> {
            match ins.get(k) {
                Some(Value::Ints(d, s)) => Ok((d.clone(), s.clone())),
                _ => Err(bad(format!("{}: input {k} is not an int constant", n.name))),
            }
        };
        Ok(match n.op.as_str() {
            "Const" => return Err(bad(format!("constant {} has no weights", n.name))),
            "Identity" => ins
                .into_iter()
                .next()
                .ok_or_else(|| bad(format!("{}: no input", n.name)))?,
            "_FusedConv2D" | "Conv2D" | "DepthwiseConv2dNative" => {
                nhwc_only(n)?;
                let x = act(0)?;
                let (w, ws) = floats(1)?;
                let &[kh, kw, cin, cout] = ws.as_slice() else {
                    return Err(bad(format!("{}: filter of shape {ws:?}", n.name)));
                };
                let depthwise = n.op == "DepthwiseConv2dNative";
                let (weights, dims, group) = if depthwise {
                    // [kh, kw, channels, multiplier] -> [channels * multiplier, 1, kh, kw]
                    let (w, d) = permute(&w, &[kh, kw, 1, cin * cout], &[3, 2, 0, 1])?;
                    (w, d, cin)
                } else {
                    // [kh, kw, in, out] -> [out, in, kh, kw]
                    let (w, d) = permute(&w, &ws, &[3, 2, 0, 1])?;
                    (w, d, 1)
                };
                let mut relu = false;
                let mut bias = None;
                if n.op == "_FusedConv2D" {
                    let fused = attr_strs(n, "fused_ops");
                    match fused
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice()
                    {
                        ["BiasAdd"] => bias = Some(floats(2)?.0),
                        ["BiasAdd", "Relu"] => {
                            bias = Some(floats(2)?.0);
                            relu = true;
                        }
                        other => {
                            return Err(ConvertError::Unsupported(format!(
                                "{}: fused ops {other:?}",
                                n.name
                            )));
                        }
                    }
                }
                Value::Act(self.g.conv(
                    &x,
                    ConvWeights {
                        weights,
                        dims: [dims[0], dims[1], dims[2], dims[3]],
                        bias,
                    },
                    Conv {
                        stride: attr_hw(n, "strides", 1)?,
                        dilation: attr_hw(n, "dilations", 1)?,
                        padding: padding(n)?,
                        group,
                        relu,
                    },
                )?)
            }
            "AddV2" | "Add" => Value::Act(self.g.add(&act(0)?, &act(1)?, false)?),
            "Relu" => Value::Act(self.g.relu(&act(0)?)),
            "MaxPool" => {
                nhwc_only(n)?;
                Value::Act(self.g.max_pool(
                    &act(0)?,
                    attr_hw(n, "ksize", 1)?,
                    attr_hw(n, "strides", 1)?,
                    padding(n)?,
                )?)
            }
            "Pad" => {
                let (p, shape) = ints(1)?;
                Value::Act(self.g.pad_tf(&act(0)?, &p, &shape)?)
            }
            "Reshape" => {
                let (s, _) = ints(1)?;
                let target: Vec<i64> = s.iter().map(|&d| i64::from(d)).collect();
                Value::Act(self.g.reshape(&act(0)?, &target)?)
            }
            other => {
                return Err(ConvertError::Unsupported(format!(
                    "TensorFlow.js operator {other} ({})",
                    n.name
                )));
            }
        })
    }
}

fn dims_of(n: &Node) -> Result<[usize; 4], ConvertError> {
    let dims: Vec<usize> = n
        .attr
        .get("shape")
        .and_then(|v| v.pointer("/shape/dim"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.get("size"))
                .filter_map(count)
                .collect()
        })
        .unwrap_or_default();
    match dims.as_slice() {
        &[n1, h, w, c] if n1 > 0 && h > 0 && w > 0 && c > 0 => Ok([n1, h, w, c]),
        other => Err(bad(format!("input {} of shape {other:?}", n.name))),
    }
}

/// Converts `model.json` (with `shard` giving each weight file named in it) to ONNX. Graph
/// inputs and outputs keep the names of the model's signature (`input:0`, `Identity:0`, ...).
pub(crate) fn convert(
    model_json: &[u8],
    shard: &dyn Fn(&str) -> Option<Vec<u8>>,
    graph_name: &str,
    doc: &str,
) -> Result<Vec<u8>, ConvertError> {
    let m: ModelJson =
        serde_json::from_slice(model_json).map_err(|e| bad(format!("model.json: {e}")))?;
    let signature = m
        .signature
        .or(m.user_defined_metadata.and_then(|u| u.signature))
        .ok_or_else(|| bad("model.json has no signature naming inputs and outputs"))?;
    let mut c = Converter {
        nodes: m
            .model_topology
            .node
            .iter()
            .map(|n| (n.name.as_str(), n))
            .collect(),
        values: weights(&m.weights_manifest, shard)?,
        g: TfGraph::new(),
    };
    for input in signature.inputs.keys() {
        let node = *c
            .nodes
            .get(node_of(input))
            .ok_or_else(|| bad(format!("input {input} is not a node")))?;
        if node.op != "Placeholder" {
            return Err(bad(format!("input {input} is a {}", node.op)));
        }
        let a = c.g.input(input, dims_of(node)?);
        c.values.insert(node.name.clone(), Value::Act(a));
    }
    for output in signature.outputs.keys() {
        match c.value(node_of(output), 0)? {
            Value::Act(a) => c.g.output(&a, output),
            _ => return Err(bad(format!("output {output} is a constant"))),
        }
    }
    Ok(c.g.encode(graph_name, doc))
}
