//! The float engine as calibration sees it: which tensors to track, and one session per
//! worker that reports every tensor it computes.

use std::collections::BTreeSet;

use mnnq_engine::engine::Step;
use mnnq_engine::ir::MnnFormat;
use mnnq_engine::{DType, Engine, Session, Tensor};

use crate::plan::{CalibrationPlan, TrackedTensor};
use crate::stats::ForwardPass;

/// Tensors MNN gives a scale (doc §4.1): the graph inputs, every float tensor an executed op
/// reads or writes, and float constant operands of executed ops. Ops named in `skip` are not
/// looked at. Ops the engine folded at load (shape arithmetic) are not executed, so their
/// tensors get no scale, as in MNN.
pub fn plan_from_engine(engine: &Engine, skip: &[String]) -> CalibrationPlan {
    let mut ids: BTreeSet<usize> = engine.inputs.iter().map(|&(t, _)| t).collect();
    let graph_inputs = ids.clone();
    for step in &engine.steps {
        let Step::Node { node, .. } = step else {
            continue;
        };
        let node = &engine.ir.nodes[*node];
        if skip.contains(&node.name) {
            continue;
        }
        ids.extend(node.inputs.iter().chain(&node.outputs).copied());
    }
    let tensors = ids
        .into_iter()
        .filter_map(|t| {
            let constant = engine.values.get(t).and_then(|v| v.as_ref());
            let (shape, dtype, nhwc) =
                match (constant, engine.infos.get(t).and_then(|i| i.as_ref())) {
                    (_, Some(info)) => (
                        info.shape.clone(),
                        info.dtype,
                        info.format == MnnFormat::Nhwc,
                    ),
                    (Some(value), None) => (value.shape.clone(), value.dtype, false),
                    (None, None) => return None,
                };
            if dtype != DType::F32 {
                return None;
            }
            Some(TrackedTensor {
                id: t as u32,
                shape,
                nhwc,
                graph_input: graph_inputs.contains(&t),
                constant: constant.map(|v| v.data.clone()),
            })
        })
        .collect();
    CalibrationPlan::new(tensors)
}

/// One float session (single-threaded) as a [`ForwardPass`].
pub struct EngineRunner<'e> {
    session: Session<'e>,
    input_name: String,
    input_shape: Vec<usize>,
}

impl<'e> EngineRunner<'e> {
    pub fn new(engine: &'e Engine, threads: usize) -> Result<Self, String> {
        let [(input_name, input_shape)] = &engine.input_shapes()[..] else {
            return Err(format!(
                "image calibration needs a model with exactly one input, this one has {}",
                engine.inputs.len()
            ));
        };
        Ok(EngineRunner {
            session: Session::new(engine, threads).map_err(|e| e.to_string())?,
            input_name: input_name.clone(),
            input_shape: input_shape.clone(),
        })
    }
}

impl ForwardPass for EngineRunner<'_> {
    fn forward(
        &mut self,
        input: Vec<f32>,
        visit: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), String> {
        let expected: usize = self.input_shape.iter().product();
        if input.len() != expected {
            return Err(format!(
                "the preprocessed image has {} values, input {:?} needs {expected} ({:?})",
                input.len(),
                self.input_name,
                self.input_shape
            ));
        }
        let tensor = Tensor::new(self.input_shape.clone(), input);
        // Calibration statistics do not depend on element order: skip the reordering copy.
        self.session
            .run_observed_unordered(&[(self.input_name.as_str(), tensor)], &mut |t, view| {
                visit(t, view.data)
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
