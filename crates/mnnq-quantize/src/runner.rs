//! The float engine as calibration sees it: which tensors to track, and one session per
//! worker that reports every tensor it computes.

use std::collections::BTreeSet;

use mnnq_engine::engine::Step;
use mnnq_engine::ir::MnnFormat;
use mnnq_engine::{DType, Engine, Session, Tensor, TensorView};

use crate::plan::{CalibrationPlan, TrackedTensor};
use crate::stats::{ForwardPass, Sample};

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
    /// Name and shape of every model input.
    inputs: Vec<(String, Vec<usize>)>,
}

impl<'e> EngineRunner<'e> {
    pub fn new(engine: &'e Engine, threads: usize) -> Result<Self, String> {
        if engine.inputs.is_empty() {
            return Err("the model has no input to calibrate with".into());
        }
        Ok(EngineRunner {
            session: Session::new(engine, threads).map_err(|e| e.to_string())?,
            inputs: engine.input_shapes(),
        })
    }
}

impl ForwardPass for EngineRunner<'_> {
    fn forward(
        &mut self,
        mut sample: Sample,
        visit: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), String> {
        let mut tensors = Vec::with_capacity(self.inputs.len());
        for (name, shape) in &self.inputs {
            let position = if self.inputs.len() == 1 && sample.len() == 1 {
                Some(0)
            } else {
                sample.iter().position(|(n, _)| n == name)
            };
            let Some(position) = position else {
                return Err(format!("no data for model input {name:?}"));
            };
            let (_, data) = sample.swap_remove(position);
            let expected: usize = shape.iter().product();
            if data.len() != expected {
                return Err(format!(
                    "input {name:?} needs {expected} values ({shape:?}), the sample has {}",
                    data.len()
                ));
            }
            // The engine runs at the stored input shapes; the data is in logical order.
            tensors.push((name.as_str(), Tensor::new(shape.clone(), data)));
        }
        // Calibration statistics do not depend on element order: skip the reordering copy.
        self.session
            .run_observed_unordered(&tensors, &mut |t, view| visit(t, view.data))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Runs each of `inputs` through `engine` (a one-input model) in one session, showing every
/// computed tensor to `observe` with whether it is stored channels-last (MNN's NHWC), and
/// returns each image's outputs concatenated. `purpose` names the caller in errors.
pub fn observe_images(
    engine: &Engine,
    inputs: &[Vec<f32>],
    purpose: &str,
    observe: &mut dyn FnMut(usize, &TensorView, bool),
) -> Result<Vec<Vec<f32>>, String> {
    let [(input_name, input_shape)] = &engine.input_shapes()[..] else {
        return Err(format!("{purpose} needs a model with one input"));
    };
    let mut session = Session::new(engine, 1).map_err(|e| e.to_string())?;
    let mut outputs = Vec::with_capacity(inputs.len());
    for input in inputs {
        let out = session
            .run_observed(
                &[(
                    input_name.as_str(),
                    Tensor::new(input_shape.clone(), input.clone()),
                )],
                &mut |t, view| {
                    let nhwc = engine
                        .infos
                        .get(t)
                        .and_then(|i| i.as_ref())
                        .is_some_and(|i| i.format == MnnFormat::Nhwc);
                    observe(t, view, nhwc);
                },
            )
            .map_err(|e| e.to_string())?;
        outputs.push(out.into_iter().flat_map(|(_, t)| t.data).collect());
    }
    Ok(outputs)
}
