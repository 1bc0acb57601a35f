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

#[test]
fn fake_quant_channel_groups_give_each_group_its_own_step() {
    use mnnq_engine::{FakeQuant, Layout};
    use std::num::NonZeroUsize;
    // Logical [1, 2, 1, 2]: channel 0 is [1.0, -0.5], channel 1 is [10.0, 5.0].
    let logical = [1.0f32, -0.5, 10.0, 5.0];
    let shape = [1, 2, 1, 2];
    let per_tensor = FakeQuant {
        scale: 10.0 / 127.0,
        zero: 0,
        channel_groups: None,
        channel_steps: None,
    };
    let mut one_step = logical;
    per_tensor.apply(&mut one_step, &shape, Layout::RowMajor);
    // 1.0 / (10/127) = 12.7 -> 13; -0.5 -> -6.35 -> -6; 10 -> 127; 5 -> 63.5 -> 64.
    let expect_one = [13.0, -6.0, 127.0, 64.0].map(|q: f32| q * 10.0 / 127.0);
    assert_eq!(one_step, expect_one);

    let grouped = FakeQuant {
        channel_groups: NonZeroUsize::new(2),
        ..per_tensor.clone()
    };
    let mut two_groups = logical;
    grouped.apply(&mut two_groups, &shape, Layout::RowMajor);
    // Channel 0 peaks at 1.0 of the reach 10.0: its step is a tenth (1/127).
    let expect_two = [127.0 / 127.0, -64.0 / 127.0, 10.0, 64.0 * 10.0 / 127.0];
    for (got, want) in two_groups.iter().zip(expect_two) {
        assert!(
            (got - want).abs() < 1e-6,
            "{two_groups:?} vs {expect_two:?}"
        );
    }

    // The same tensor stored channels-last ([1, 1, 2, 2] in memory: c fastest).
    let mut stored = [logical[0], logical[2], logical[1], logical[3]];
    grouped.apply(&mut stored, &shape, Layout::ChannelsLast);
    assert_eq!(
        stored,
        [two_groups[0], two_groups[2], two_groups[1], two_groups[3]]
    );

    // Fixed steps per channel (as channel splitting would fix them): channel 0 at 1/127,
    // channel 1 at the tensor's step, give the grouped result on this input.
    let fixed = FakeQuant {
        channel_steps: Some(vec![1.0 / 127.0, 10.0 / 127.0].into()),
        ..per_tensor.clone()
    };
    let mut by_channel = logical;
    fixed.apply(&mut by_channel, &shape, Layout::RowMajor);
    for (got, want) in by_channel.iter().zip(expect_two) {
        assert!(
            (got - want).abs() < 1e-6,
            "{by_channel:?} vs {expect_two:?}"
        );
    }

    // A one-sided tensor (zero point -127) reaches 254 steps: a group at half of it keeps
    // half the step.
    let one_sided = FakeQuant {
        scale: 1.0,
        zero: -127,
        channel_groups: NonZeroUsize::new(2),
        channel_steps: None,
    };
    let mut v = [127.0f32, 63.3, 254.0, 100.0];
    one_sided.apply(&mut v, &shape, Layout::RowMajor);
    assert_eq!(v, [127.0, 63.5, 254.0, 100.0]);

    // Zero point -100 reaches 227 steps up and 27 down: a group is judged by its tighter
    // side, so a channel that uses all 27 steps below zero keeps the step, and the other one
    // (50 of 227 up, 5 of 27 down) gets 50/227 of it without clipping its negative value.
    let skewed = FakeQuant {
        scale: 1.0,
        zero: -100,
        channel_groups: NonZeroUsize::new(2),
        channel_steps: None,
    };
    let mut v = [100.0f32, -27.0, 50.0, -5.0];
    skewed.apply(&mut v, &shape, Layout::RowMajor);
    let finer = 50.0 / 227.0;
    assert_eq!(v[..2], [100.0, -27.0]);
    assert!((v[2] - 50.0).abs() < 1e-4, "{v:?}");
    assert!((v[3] + 5.0).abs() <= finer / 2.0, "{v:?}");
}
