//! Session behaviour on a small model from the conformance folder (no fixtures needed): observer
//! views, fake quantization, memory reuse, input checking.

use std::path::PathBuf;

use mnnq_engine::{Engine, Session, Tensor};

fn model() -> Option<Engine> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/conv_then_prelu/model.mnn");
    if !path.is_file() {
        println!("SKIPPED: {} not found", path.display());
        return None;
    }
    Some(Engine::load(&path).unwrap())
}

fn input(engine: &Engine) -> (String, Tensor) {
    let (name, shape) = engine.input_shapes().remove(0);
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    (name, Tensor::new(shape, data))
}

#[test]
fn observer_sees_inputs_and_outputs_in_logical_order() {
    let Some(engine) = model() else { return };
    let (name, x) = input(&engine);
    let mut session = Session::new(&engine, 1).unwrap();
    let mut seen: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let out = session
        .run_observed(&[(name.as_str(), x.clone())], &mut |_, v| {
            seen.push((v.name.to_string(), v.shape.to_vec(), v.data.to_vec()))
        })
        .unwrap();
    // The graph input comes first, exactly as given (row-major NCHW).
    assert_eq!(seen[0].0, name);
    assert_eq!(seen[0].2, x.data);
    // The model output is shown with the same values the run returns.
    let (out_name, out_tensor) = &out[0];
    let last = seen
        .iter()
        .rev()
        .find(|s| &s.0 == out_name)
        .expect("output observed");
    assert_eq!(last.1, out_tensor.shape);
    assert_eq!(last.2, out_tensor.data);
    assert!(
        seen.len() >= 3,
        "expected several computed tensors, saw {}",
        seen.len()
    );
}

#[test]
fn channels_last_tensors_are_observed_in_logical_order() {
    // Input -> ConvertTensor -> Convolution (channels-last in memory) -> ConvertTensor (a copy
    // into row-major NCHW): the convolution's observed view must equal the model output.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/conv_k1x3_s1x2_rect/model.mnn");
    if !path.is_file() {
        println!("SKIPPED: {} not found", path.display());
        return;
    }
    let engine = Engine::load(&path).unwrap();
    let (name, x) = input(&engine);
    let mut session = Session::new(&engine, 1).unwrap();
    let mut views: Vec<(Vec<usize>, Vec<f32>)> = Vec::new();
    let out = session
        .run_observed(&[(name.as_str(), x)], &mut |_, v| {
            views.push((v.shape.to_vec(), v.data.to_vec()))
        })
        .unwrap();
    let conv_view = &views[views.len() - 2];
    assert_eq!(conv_view.0, out[0].1.shape);
    assert_eq!(conv_view.1, out[0].1.data);
    assert!(
        out[0].1.shape[1] > 1,
        "need several channels to tell the orders apart"
    );
}

#[test]
fn unordered_observation_shows_the_same_elements_without_reordering() {
    // The channels-last convolution output is where memory order differs from logical order.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/conv_k1x3_s1x2_rect/model.mnn");
    if !path.is_file() {
        println!("SKIPPED: {} not found", path.display());
        return;
    }
    let engine = Engine::load(&path).unwrap();
    let (name, x) = input(&engine);
    let mut session = Session::new(&engine, 1).unwrap();
    let mut ordered: Vec<(usize, Vec<f32>)> = Vec::new();
    session
        .run_observed(&[(name.as_str(), x.clone())], &mut |t, v| {
            ordered.push((t, v.data.to_vec()))
        })
        .unwrap();
    let mut unordered: Vec<(usize, Vec<f32>)> = Vec::new();
    session
        .run_observed_unordered(&[(name.as_str(), x.clone())], &mut |t, v| {
            unordered.push((t, v.data.to_vec()))
        })
        .unwrap();
    assert_eq!(ordered.len(), unordered.len());
    let sorted_bits = |v: &[f32]| {
        let mut bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        bits.sort_unstable();
        bits
    };
    let mut reordered_somewhere = false;
    for ((t1, a), (t2, b)) in ordered.iter().zip(&unordered) {
        assert_eq!(t1, t2, "same tensors in the same order");
        assert_eq!(sorted_bits(a), sorted_bits(b), "tensor {t1}: same elements");
        reordered_somewhere |= a != b;
    }
    assert!(
        reordered_somewhere,
        "the convolution output is channels-last in memory and should be shown unreordered"
    );
    // A later ordinary run shows logical order again.
    let mut again: Vec<(usize, Vec<f32>)> = Vec::new();
    session
        .run_observed(&[(name.as_str(), x)], &mut |t, v| {
            again.push((t, v.data.to_vec()))
        })
        .unwrap();
    assert_eq!(again, ordered);
}

#[test]
fn fake_quant_changes_the_quantized_tensor_only_when_set() {
    let Some(engine) = model() else { return };
    let (name, x) = input(&engine);
    let mut session = Session::new(&engine, 1).unwrap();
    let plain = session.run(&[(name.as_str(), x.clone())]).unwrap();
    let out_tensor = engine.outputs[0].0;
    // A coarse scale: values snap to multiples of 0.5.
    session.set_fake_quant(out_tensor, Some(0.5));
    let quant = session.run(&[(name.as_str(), x.clone())]).unwrap();
    assert!(quant[0].1.data.iter().all(|v| (v / 0.5).fract() == 0.0));
    assert_ne!(quant[0].1.data, plain[0].1.data);
    // Asymmetric codes with scale 0.5 and zero point 100: values in [-113.5, 13.5], still on
    // the 0.5 grid, and every value that far from the range is clamped to an end.
    session.set_fake_quant_with_zero_point(out_tensor, Some((0.5, 100)));
    let shifted = session.run(&[(name.as_str(), x.clone())]).unwrap();
    assert!(shifted[0]
        .1
        .data
        .iter()
        .all(|v| (v / 0.5).fract() == 0.0 && (-113.5..=13.5).contains(v)));
    for (&q, &p) in shifted[0].1.data.iter().zip(&plain[0].1.data) {
        if p > 14.0 {
            assert_eq!(q, 13.5);
        }
    }
    session.set_fake_quant(out_tensor, None);
    let again = session.run(&[(name.as_str(), x)]).unwrap();
    assert_eq!(again[0].1.data, plain[0].1.data);
}

#[test]
fn wrong_inputs_are_rejected_with_a_message() {
    let Some(engine) = model() else { return };
    let (name, x) = input(&engine);
    let mut session = Session::new(&engine, 1).unwrap();
    let mut shape = x.shape.clone();
    shape[0] += 1;
    let bad = Tensor::zeros(&shape);
    let err = session
        .run(&[(name.as_str(), bad)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn memory_plan_reuses_buffers_on_a_real_model() {
    let root = std::env::var_os("MNNQ_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    let path = root.join("models/efficientnet_lite0.mnn");
    if !path.is_file() {
        println!("SKIPPED: {} not found", path.display());
        return;
    }
    let engine = Engine::load(&path).unwrap();
    // Liveness-based reuse: far less memory than one buffer per tensor.
    assert!(
        engine.memory.arena_len * 3 < engine.memory.unshared_len,
        "{:?}",
        engine.memory
    );
}
