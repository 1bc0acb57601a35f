//! A graph view over a loaded model: tensors by index, the producer and consumers of each tensor,
//! graph inputs and outputs.
//!
//! MNN graphs name tensors by integer: `Net.tensorName[i]` is tensor `i`, and every op lists
//! `inputIndexes` / `outputIndexes` into that table. [`Graph::new`] validates those indexes once
//! so that later passes can index without checks.

use std::collections::HashMap;

use mnnq_format::{DataType, MnnDataFormat, Net, Op, OpParameter, OpType};

/// Why a `Net` does not form a usable graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("the model has no op list")]
    NoOps,
    #[error("the model has no tensor names")]
    NoTensorNames,
    #[error(
        "op #{op} ({op_name}) refers to {role} tensor {index}, but the model has {tensor_count} tensors"
    )]
    TensorOutOfRange {
        op: usize,
        op_name: String,
        role: &'static str,
        index: i64,
        tensor_count: usize,
    },
    #[error("tensor {tensor} ({name}) is produced by op #{first} and again by op #{second}")]
    ProducedTwice {
        tensor: usize,
        name: String,
        first: usize,
        second: usize,
    },
    #[error("output `{0}` listed in outputName is not a tensor of the model")]
    UnknownOutput(String),
    #[error("Input op #{op} ({op_name}) must have exactly one output, it has {outputs}")]
    BadInputOp {
        op: usize,
        op_name: String,
        outputs: usize,
    },
}

/// A graph input: an `Input` op and the tensor it produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphInput {
    /// Position of the `Input` op in `oplists`.
    pub op: usize,
    pub tensor: usize,
    /// The tensor's name (what users feed by).
    pub name: String,
    /// As stored; a leading -1 (dynamic batch) is read as 1 by MNN.
    pub dims: Vec<i32>,
    pub dtype: DataType,
    /// The layout the user must feed.
    pub dformat: MnnDataFormat,
}

/// Indexes over a `Net`: who produces and who consumes each tensor.
#[derive(Debug, Clone)]
pub struct Graph<'a> {
    net: &'a Net,
    ops: &'a [Op],
    names: &'a [String],
    by_name: HashMap<&'a str, usize>,
    op_inputs: Vec<Vec<usize>>,
    op_outputs: Vec<Vec<usize>>,
    producers: Vec<Option<usize>>,
    consumers: Vec<Vec<usize>>,
    inputs: Vec<GraphInput>,
    outputs: Vec<usize>,
}

fn checked_indexes(
    op_position: usize,
    op: &Op,
    indexes: Option<&Vec<i32>>,
    role: &'static str,
    tensor_count: usize,
) -> Result<Vec<usize>, GraphError> {
    indexes
        .into_iter()
        .flatten()
        .map(|&index| match usize::try_from(index) {
            Ok(i) if i < tensor_count => Ok(i),
            _ => Err(GraphError::TensorOutOfRange {
                op: op_position,
                op_name: op.name.clone().unwrap_or_default(),
                role,
                index: index as i64,
                tensor_count,
            }),
        })
        .collect()
}

impl<'a> Graph<'a> {
    /// Builds the view, checking every tensor index.
    pub fn new(net: &'a Net) -> Result<Self, GraphError> {
        let ops = net.oplists.as_deref().ok_or(GraphError::NoOps)?;
        let names = net
            .tensor_name
            .as_deref()
            .ok_or(GraphError::NoTensorNames)?;
        let tensor_count = names.len();
        let mut by_name = HashMap::with_capacity(tensor_count);
        for (index, name) in names.iter().enumerate() {
            // The first tensor wins when names repeat, as in MNN's name lookup.
            by_name.entry(name.as_str()).or_insert(index);
        }
        let mut op_inputs = Vec::with_capacity(ops.len());
        let mut op_outputs = Vec::with_capacity(ops.len());
        let mut producers = vec![None; tensor_count];
        let mut consumers = vec![Vec::new(); tensor_count];
        let mut inputs = Vec::new();
        for (position, op) in ops.iter().enumerate() {
            let ins = checked_indexes(
                position,
                op,
                op.input_indexes.as_ref(),
                "input",
                tensor_count,
            )?;
            let outs = checked_indexes(
                position,
                op,
                op.output_indexes.as_ref(),
                "output",
                tensor_count,
            )?;
            for &tensor in &ins {
                // An op reading one tensor twice is still one consumer.
                if consumers[tensor].last() != Some(&position) {
                    consumers[tensor].push(position);
                }
            }
            for &tensor in &outs {
                if let Some(first) = producers[tensor] {
                    return Err(GraphError::ProducedTwice {
                        tensor,
                        name: names[tensor].clone(),
                        first,
                        second: position,
                    });
                }
                producers[tensor] = Some(position);
            }
            if op.type_ == OpType::Input {
                if outs.len() != 1 {
                    return Err(GraphError::BadInputOp {
                        op: position,
                        op_name: op.name.clone().unwrap_or_default(),
                        outputs: outs.len(),
                    });
                }
                let (dims, dtype, dformat) = match &op.main {
                    Some(OpParameter::Input(input)) => (
                        input.dims.clone().unwrap_or_default(),
                        input.dtype,
                        input.dformat,
                    ),
                    // Schema defaults of the Input table.
                    _ => (Vec::new(), DataType::DtFloat, MnnDataFormat::Nc4hw4),
                };
                inputs.push(GraphInput {
                    op: position,
                    tensor: outs[0],
                    name: names[outs[0]].clone(),
                    dims,
                    dtype,
                    dformat,
                });
            }
            op_inputs.push(ins);
            op_outputs.push(outs);
        }
        let outputs = match net.output_name.as_deref() {
            Some(listed) if !listed.is_empty() => listed
                .iter()
                .map(|name| {
                    by_name
                        .get(name.as_str())
                        .copied()
                        .ok_or_else(|| GraphError::UnknownOutput(name.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => (0..tensor_count)
                .filter(|&t| producers[t].is_some() && consumers[t].is_empty())
                .collect(),
        };
        Ok(Graph {
            net,
            ops,
            names,
            by_name,
            op_inputs,
            op_outputs,
            producers,
            consumers,
            inputs,
            outputs,
        })
    }

    pub fn net(&self) -> &'a Net {
        self.net
    }

    /// The ops in file order (an executable order for converter output).
    pub fn ops(&self) -> &'a [Op] {
        self.ops
    }

    pub fn tensor_count(&self) -> usize {
        self.names.len()
    }

    /// Name of tensor `tensor`; panics if `tensor >= tensor_count()` (indexes from this graph
    /// are always in range).
    pub fn tensor_name(&self, tensor: usize) -> &'a str {
        &self.names[tensor]
    }

    /// The tensor with this name (the first one, if names repeat).
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Input tensors of op `op`, checked to be in range.
    pub fn op_inputs(&self, op: usize) -> &[usize] {
        &self.op_inputs[op]
    }

    /// Output tensors of op `op`, checked to be in range.
    pub fn op_outputs(&self, op: usize) -> &[usize] {
        &self.op_outputs[op]
    }

    /// The op that writes `tensor`, if any (graph inputs are written by their `Input` op).
    pub fn producer(&self, tensor: usize) -> Option<usize> {
        self.producers[tensor]
    }

    /// The ops that read `tensor`, in op order, each once.
    pub fn consumers(&self, tensor: usize) -> &[usize] {
        &self.consumers[tensor]
    }

    /// Graph inputs (the `Input` ops), in op order.
    pub fn inputs(&self) -> &[GraphInput] {
        &self.inputs
    }

    /// Graph outputs: `outputName` when present, else tensors produced and never consumed.
    pub fn outputs(&self) -> &[usize] {
        &self.outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnnq_format::Input;

    fn op(type_: OpType, inputs: &[i32], outputs: &[i32]) -> Op {
        Op {
            type_,
            input_indexes: Some(inputs.to_vec()),
            output_indexes: Some(outputs.to_vec()),
            name: Some(format!("{type_:?}{outputs:?}")),
            ..Default::default()
        }
    }

    /// x -> relu -> a; (a, x) -> add -> b; a -> sigmoid -> c (c and b are never consumed).
    fn diamond() -> Net {
        let mut input = op(OpType::Input, &[], &[0]);
        input.main = Some(OpParameter::Input(Box::new(Input {
            dims: Some(vec![1, 3, 4, 4]),
            dtype: DataType::DtFloat,
            dformat: MnnDataFormat::Nchw,
        })));
        Net {
            oplists: Some(vec![
                input,
                op(OpType::ReLu, &[0], &[1]),
                op(OpType::BinaryOp, &[1, 0], &[2]),
                op(OpType::Sigmoid, &[1], &[3]),
            ]),
            tensor_name: Some(["x", "a", "b", "c"].map(String::from).to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn producers_consumers_inputs_outputs() {
        let net = diamond();
        let graph = Graph::new(&net).unwrap();
        assert_eq!(graph.tensor_count(), 4);
        assert_eq!(graph.tensor_index("b"), Some(2));
        assert_eq!(graph.tensor_index("nope"), None);
        assert_eq!(graph.tensor_name(3), "c");
        assert_eq!(graph.producer(0), Some(0));
        assert_eq!(graph.producer(2), Some(2));
        assert_eq!(graph.consumers(0), &[1, 2]);
        assert_eq!(graph.consumers(1), &[2, 3]);
        assert!(graph.consumers(3).is_empty());
        assert_eq!(graph.op_inputs(2), &[1, 0]);
        assert_eq!(graph.outputs(), &[2, 3]);
        let input = &graph.inputs()[0];
        assert_eq!((input.name.as_str(), input.tensor, input.op), ("x", 0, 0));
        assert_eq!(input.dims, vec![1, 3, 4, 4]);
        assert_eq!(input.dformat, MnnDataFormat::Nchw);
    }

    #[test]
    fn output_names_take_precedence() {
        let mut net = diamond();
        net.output_name = Some(vec!["a".into(), "c".into()]);
        assert_eq!(Graph::new(&net).unwrap().outputs(), &[1, 3]);
        net.output_name = Some(vec!["zz".into()]);
        assert_eq!(
            Graph::new(&net).unwrap_err(),
            GraphError::UnknownOutput("zz".into())
        );
    }

    #[test]
    fn bad_indexes_are_errors() {
        let mut net = diamond();
        net.oplists.as_mut().unwrap()[2].input_indexes = Some(vec![1, 7]);
        let error = Graph::new(&net).unwrap_err();
        assert!(matches!(
            error,
            GraphError::TensorOutOfRange {
                op: 2,
                index: 7,
                tensor_count: 4,
                role: "input",
                ..
            }
        ));
        assert!(error.to_string().contains("tensor 7"), "{error}");
        net.oplists.as_mut().unwrap()[2].input_indexes = Some(vec![-1]);
        assert!(Graph::new(&net).is_err());
        let mut net = diamond();
        net.oplists.as_mut().unwrap()[3].output_indexes = Some(vec![2]);
        assert!(matches!(
            Graph::new(&net).unwrap_err(),
            GraphError::ProducedTwice {
                tensor: 2,
                first: 2,
                second: 3,
                ..
            }
        ));
        let mut net = diamond();
        net.tensor_name = None;
        assert_eq!(Graph::new(&net).unwrap_err(), GraphError::NoTensorNames);
    }
}
