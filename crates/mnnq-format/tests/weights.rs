//! Weight codecs: hand-computed buffers for every storage form, encoder round trips, the sidecar,
//! and MNN's own int8 fixtures decoded against the float models.

use std::collections::HashMap;
use std::path::PathBuf;

use mnnq_format::weights::{
    decode_conv, decode_dense_codebook, decode_idst, decode_sparse_codebook, encode_idst_int8,
    quantize_symmetric, storage_of, WeightStorage,
};
use mnnq_format::{Convolution2D, IdstQuan, Model, Net, Op, OpParameter, OpType, ScaleStorageType};

fn as_i8(bytes: &[u8]) -> Vec<i8> {
    bytes.iter().map(|&b| b as i8).collect()
}

#[test]
fn type1_by_hand_unsorted_codebook_two_bits() {
    // dims {2, 3} (u16), 4 code-book entries given unsorted: sorted = [-2, -1, 0, 1], 2 bits.
    // Indexes 0 1 2 3 3 0 -> 00 01 10 11 | 11 00 (MSB first) = 0x1B 0xC0.
    let buffer = [2, 2, 0, 3, 0, 4, 1, 0xfe, 0, 0xff, 0x1b, 0xc0];
    let blob = decode_dense_codebook(&buffer, false).unwrap();
    assert_eq!(blob.dims, vec![2, 3]);
    assert_eq!(blob.codes, vec![-2, -1, 0, 1, 1, -2]);
    let quan = IdstQuan {
        buffer: Some(as_i8(&buffer)),
        alpha: Some(vec![0.5, 2.0]),
        type_: 1,
        quant_scale: 1.0,
        ..Default::default()
    };
    assert_eq!(
        decode_idst(&quan).unwrap(),
        vec![-1.0, -0.5, 0.0, 2.0, 2.0, -4.0]
    );
    // quantScale multiplies every alpha unless has_scaleInt is set.
    let scaled = IdstQuan {
        quant_scale: 2.0,
        ..quan.clone()
    };
    assert_eq!(
        decode_idst(&scaled).unwrap(),
        vec![-2.0, -1.0, 0.0, 4.0, 4.0, -8.0]
    );
    let legacy = IdstQuan {
        quant_scale: 2.0,
        has_scale_int: true,
        ..quan
    };
    assert_eq!(
        decode_idst(&legacy).unwrap(),
        vec![-1.0, -0.5, 0.0, 2.0, 2.0, -4.0]
    );
}

#[test]
fn type1_u32_dims_and_block_wise_groups() {
    // dims {1, 4} as u32 (shapeInt32), 2-entry code-book [-1, 1] (1 bit), indexes 1 0 0 1 = 0x90.
    let buffer = [2, 1, 0, 0, 0, 4, 0, 0, 0, 2, 0xff, 1, 0x90];
    let quan = IdstQuan {
        buffer: Some(as_i8(&buffer)),
        // Two scales for four weights of one channel: block-wise, groups of two.
        alpha: Some(vec![0.25, 4.0]),
        type_: 1,
        quant_scale: 1.0,
        shape_int32: true,
        ..Default::default()
    };
    assert_eq!(decode_idst(&quan).unwrap(), vec![0.25, -0.25, -4.0, 4.0]);
    // The same bytes read with u16 dims give dims {1, 0}: no weights, which is an error.
    let wrong = IdstQuan {
        shape_int32: false,
        ..quan
    };
    assert!(decode_idst(&wrong).is_err());
}

#[test]
fn asymmetric_pairs_with_default_and_explicit_amin() {
    // 8-bit linear code-book, codes -128, -118, 127 for one channel (stored as q + 128).
    let mut buffer = vec![2, 1, 0, 3, 0, 0];
    buffer.extend((0..256i32).map(|i| (i - 128) as i8 as u8));
    buffer.extend([0u8, 10, 255]);
    let quan = IdstQuan {
        buffer: Some(as_i8(&buffer)),
        alpha: Some(vec![-1.0, 0.1]), // [min, scale]
        type_: 1,
        quant_scale: 1.0,
        read_type: 1,
        ..Default::default()
    };
    // aMin = 0 means -128: w = (q + 128) * 0.1 - 1.
    let decoded = decode_idst(&quan).unwrap();
    let expected = [-1.0f32, 0.0, 24.5];
    for (d, e) in decoded.iter().zip(expected) {
        assert!((d - e).abs() < 1e-5, "{decoded:?}");
    }
    // aMin = -8 (4-bit style): w = (q + 8) * 0.1 - 1.
    let four_bit = IdstQuan { a_min: -8, ..quan };
    let decoded = decode_idst(&four_bit).unwrap();
    let expected = [-13.0f32, -12.0, 12.5];
    for (d, e) in decoded.iter().zip(expected) {
        assert!((d - e).abs() < 1e-4, "{decoded:?}");
    }
}

#[test]
fn type2_sparse_by_hand_symmetric_and_asymmetric() {
    // dims {1, 6}, nnz 2, 2-bit steps [1, 3] (0x70), code-book [3, -3] -> sorted [-3, 3],
    // 1-bit value indexes [1, 0] (0x80): w[1] = 3, w[4] = -3.
    let buffer = [2, 1, 0, 6, 0, 2, 0, 0, 0, 2, 0x70, 2, 3, 0xfd, 0x80];
    let blob = decode_sparse_codebook(&buffer, false, None).unwrap();
    assert_eq!(blob.codes, vec![0, 3, 0, 0, -3, 0]);
    let quan = IdstQuan {
        buffer: Some(as_i8(&buffer)),
        alpha: Some(vec![0.5]),
        type_: 2,
        quant_scale: 1.0,
        ..Default::default()
    };
    assert_eq!(
        decode_idst(&quan).unwrap(),
        vec![0.0, 1.5, 0.0, 0.0, -1.5, 0.0]
    );
    // Asymmetric: unlisted positions hold the channel's zero code round(-min/scale) + lowest,
    // lowest = -2^(dataBits-1) = -1 here: round(1.0/0.5) - 1 = 1.
    let blob = decode_sparse_codebook(&buffer, false, Some(&[-1.0, 0.5])).unwrap();
    assert_eq!(blob.codes, vec![1, 3, 1, 1, -3, 1]);
}

#[test]
fn type3_fp16_and_type4_raw_int8() {
    let halves: Vec<u8> = [1.5f32, -2.0, 0.099975586]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
        .collect();
    let fp16 = IdstQuan {
        buffer: Some(as_i8(&halves)),
        type_: 3,
        ..Default::default()
    };
    assert_eq!(decode_idst(&fp16).unwrap(), vec![1.5, -2.0, 0.099975586]);

    let raw = IdstQuan {
        buffer: Some(vec![-4, 2, 7, -1]),
        alpha: Some(vec![0.5, 0.25]),
        type_: 4,
        quant_scale: 1.0,
        ..Default::default()
    };
    assert_eq!(decode_idst(&raw).unwrap(), vec![-2.0, 1.0, 1.75, -0.25]);
}

#[test]
fn sparse_float_form_and_fp16_alpha() {
    let sparse = IdstQuan {
        weight_size: 5,
        index: Some(vec![4, 1]),
        alpha: Some(vec![7.0, -3.0]),
        type_: 1,
        ..Default::default()
    };
    assert_eq!(
        decode_idst(&sparse).unwrap(),
        vec![0.0, -3.0, 0.0, 0.0, 7.0]
    );
    let out_of_range = IdstQuan {
        index: Some(vec![5, 1]),
        ..sparse
    };
    assert!(decode_idst(&out_of_range).is_err());

    let mut quan = encode_idst_int8(&[1.0, -2.0, 0.5, 4.0], &[0.5, 0.125], 8).unwrap();
    quan.alpha_fp16 = Some(
        [0.5f32, 0.125]
            .iter()
            .map(|&a| half::f16::from_f32(a).to_bits())
            .collect(),
    );
    quan.alpha = None;
    quan.scale_storage = ScaleStorageType::Fp16;
    assert_eq!(decode_idst(&quan).unwrap(), vec![1.0, -2.0, 0.5, 4.0]);
}

/// xorshift64* so the round trips cover many values without a dependency.
fn pseudo_random(seed: u64, count: usize) -> Vec<f32> {
    let mut state = seed | 1;
    (0..count)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn encoder_round_trips_for_every_bit_width() {
    for bits in 2..=8u32 {
        let channels = 5;
        let weights = pseudo_random(bits as u64, channels * 27);
        let alphas: Vec<f32> = weights
            .chunks(27)
            .map(|c| c.iter().fold(0f32, |m, w| m.max(w.abs())) / ((1 << (bits - 1)) - 1) as f32)
            .collect();
        let quan = encode_idst_int8(&weights, &alphas, bits).unwrap();
        assert_eq!(quan.a_max_or_bits, bits as i32);
        assert_eq!(quan.quant_scale, 1.0);
        assert_eq!(quan.alpha.as_deref(), Some(&alphas[..]));
        let decoded = decode_idst(&quan).unwrap();
        for (i, (&w, &d)) in weights.iter().zip(&decoded).enumerate() {
            let alpha = alphas[i / 27];
            assert_eq!(d, quantize_symmetric(w, alpha, bits) as f32 * alpha);
            assert!(
                (w - d).abs() <= alpha / 2.0 + 1e-6,
                "bits {bits}: {w} -> {d}"
            );
        }
    }
}

#[test]
fn encoder_picks_sparse_only_when_smaller() {
    // Dense random weights: type 1.
    let weights = pseudo_random(7, 4 * 64);
    let dense = encode_idst_int8(&weights, &[0.01; 4], 8).unwrap();
    assert_eq!(dense.type_, 1);
    // Type 1 size is exact: 1 + 2*2 dims, 1 count, 256 code-book, one byte per 8-bit code.
    assert_eq!(dense.buffer.as_ref().unwrap().len(), 1 + 4 + 1 + 256 + 256);
    // 95% zeros (with long gaps that need filler entries): type 2, decoding to the same values.
    let mut sparse_weights = vec![0.0f32; 4 * 600];
    for (i, w) in sparse_weights.iter_mut().enumerate() {
        if i % 20 == 3 {
            *w = ((i % 7) as f32 - 3.0) * 0.1;
        }
    }
    sparse_weights[1000..1500].fill(0.0);
    let sparse = encode_idst_int8(&sparse_weights, &[0.1; 4], 8).unwrap();
    assert_eq!(sparse.type_, 2);
    let decoded = decode_idst(&sparse).unwrap();
    let expected: Vec<f32> = sparse_weights
        .iter()
        .map(|&w| quantize_symmetric(w, 0.1, 8) as f32 * 0.1)
        .collect();
    assert_eq!(decoded, expected);
    // An all-zero tensor cannot be sparse-encoded (no entries): type 1.
    assert_eq!(
        encode_idst_int8(&[0.0; 8], &[1.0, 1.0], 8).unwrap().type_,
        1
    );
    // Large dims switch the header to u32.
    let wide = encode_idst_int8(&vec![0.5; 70_000], &[1.0], 8).unwrap();
    assert!(wide.shape_int32);
    assert_eq!(decode_idst(&wide).unwrap().len(), 70_000);
}

#[test]
fn encoder_rejects_bad_arguments() {
    assert!(encode_idst_int8(&[1.0; 6], &[1.0; 4], 8).is_err());
    assert!(encode_idst_int8(&[1.0; 6], &[], 8).is_err());
    assert!(encode_idst_int8(&[1.0; 6], &[1.0], 9).is_err());
    assert!(encode_idst_int8(&[1.0; 6], &[1.0], 1).is_err());
}

#[test]
fn corrupt_buffers_are_errors() {
    let good = encode_idst_int8(&pseudo_random(3, 64), &[0.01; 2], 8).unwrap();
    let bytes = good.buffer.clone().unwrap();
    for cut in 0..bytes.len() {
        let quan = IdstQuan {
            buffer: Some(bytes[..cut].to_vec()),
            ..good.clone()
        };
        assert!(decode_idst(&quan).is_err(), "cut at {cut}");
    }
    // A sparse header claiming 65535 x 65535 weights from a few bytes is refused.
    let huge = [2u8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 2, 1, 0];
    assert!(decode_sparse_codebook(&huge, false, None).is_err());
    let wrong_groups = IdstQuan {
        alpha: Some(vec![1.0; 3]),
        ..good
    };
    assert!(decode_idst(&wrong_groups).is_err());
}

#[test]
fn external_sidecar_float_and_quantized() {
    let weight = [1.0f32, -2.0, 3.0, 0.5];
    let bias = [0.25f32, -0.75];
    let quan = encode_idst_int8(&weight, &[0.5, 0.25], 8).unwrap();
    let idst_bytes: Vec<u8> = quan
        .buffer
        .as_ref()
        .unwrap()
        .iter()
        .map(|&b| b as u8)
        .collect();
    let le = |values: &[f32]| {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    // Sidecar: 8 bytes of something else, then float weights + bias, then IDST + alpha + bias.
    let mut sidecar = vec![0xaa; 8];
    let float_at = sidecar.len() as i64;
    sidecar.extend(le(&weight));
    sidecar.extend(le(&bias));
    let quan_at = sidecar.len() as i64;
    sidecar.extend(&idst_bytes);
    sidecar.extend(le(&[0.5, 0.25]));
    sidecar.extend(le(&bias));

    let float_conv = Convolution2D {
        external: Some(vec![float_at, 16, 8]),
        ..Default::default()
    };
    assert_eq!(storage_of(&float_conv), WeightStorage::ExternalFloat);
    let decoded = decode_conv(&float_conv, Some(&sidecar)).unwrap();
    assert_eq!(
        (decoded.weight.as_slice(), decoded.bias.as_slice()),
        (&weight[..], &bias[..])
    );
    assert!(decode_conv(&float_conv, None).is_err());
    assert!(decode_conv(&float_conv, Some(&sidecar[..20])).is_err());

    let quan_conv = Convolution2D {
        quan_parameter: Some(Box::new(IdstQuan {
            buffer: None,
            alpha: None,
            ..quan
        })),
        external: Some(vec![quan_at, idst_bytes.len() as i64, 8, 8]),
        ..Default::default()
    };
    let decoded = decode_conv(&quan_conv, Some(&sidecar)).unwrap();
    assert_eq!(decoded.weight, vec![1.0, -2.0, 3.0, 0.5]);
    assert_eq!(decoded.bias, bias.to_vec());
}

#[test]
fn model_load_reads_the_sidecar_and_save_writes_it() {
    let weight = [1.0f32, 2.0, 3.0, 4.0];
    let sidecar: Vec<u8> = weight.iter().flat_map(|v| v.to_le_bytes()).collect();
    let net = Net {
        oplists: Some(vec![Op {
            type_: OpType::Convolution,
            main: Some(OpParameter::Convolution2D(Box::new(Convolution2D {
                external: Some(vec![0, 16, 0]),
                ..Default::default()
            }))),
            input_indexes: Some(vec![0]),
            output_indexes: Some(vec![1]),
            ..Default::default()
        }]),
        tensor_name: Some(vec!["x".into(), "y".into()]),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext.mnn");
    std::fs::write(&path, Model::new(net, "memory").to_bytes().unwrap()).unwrap();
    let message = Model::load(&path).unwrap_err().to_string();
    assert!(message.contains("ext.mnn.weight"), "{message}");
    std::fs::write(dir.path().join("ext.mnn.weight"), &sidecar).unwrap();
    let model = Model::load(&path).unwrap();
    let Some(OpParameter::Convolution2D(conv)) = &model.net.oplists.as_ref().unwrap()[0].main
    else {
        panic!("not a convolution")
    };
    assert_eq!(
        decode_conv(conv, model.external_bytes()).unwrap().weight,
        weight.to_vec()
    );
    // Saving elsewhere writes the sidecar next to the new model.
    let copy = dir.path().join("copy.mnn");
    model.save(&copy).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("copy.mnn.weight")).unwrap(),
        sidecar
    );
}

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("MNNQ_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("SKIPPED: fixtures not found at {}", dir.display());
        None
    }
}

#[test]
fn mnn_int8_fixtures_decode_close_to_the_float_models() {
    let Some(root) = fixtures() else { return };
    for model in ["efficientnet_lite0", "ppocr_det_v4", "ppocr_cls_v2"] {
        let float = Model::load(root.join(format!("models/{model}.mnn"))).unwrap();
        let int8 = Model::load(root.join(format!("mnn_int8/{model}/KL_MAX_ABS.mnn"))).unwrap();
        let float_convs: HashMap<&str, &Convolution2D> = float
            .net
            .oplists
            .iter()
            .flatten()
            .filter_map(|op| match &op.main {
                Some(OpParameter::Convolution2D(conv)) => Some((op.name.as_deref()?, &**conv)),
                _ => None,
            })
            .collect();
        let mut checked = 0;
        for op in int8.net.oplists.iter().flatten() {
            let Some(OpParameter::Convolution2D(conv)) = &op.main else {
                continue;
            };
            let Some(quan) = conv.quan_parameter.as_deref() else {
                continue;
            };
            let name = op.name.as_deref().unwrap();
            let reference = decode_conv(float_convs[name], None).unwrap();
            let decoded = decode_conv(conv, None).unwrap();
            assert_eq!(
                decoded.weight.len(),
                reference.weight.len(),
                "{model} {name}"
            );
            assert_eq!(
                decoded.bias, reference.bias,
                "{model} {name}: bias must stay float"
            );
            let alpha = quan.alpha.as_ref().unwrap();
            let per_channel = reference.weight.len() / alpha.len();
            for (i, (&d, &f)) in decoded.weight.iter().zip(&reference.weight).enumerate() {
                let a = alpha[i / per_channel];
                if a.is_finite() && a <= 1e-6 {
                    // The encoder stores q = 0 for scales this small (the whole channel is tiny).
                    assert_eq!(d, 0.0, "{model} {name} #{i}");
                    assert!(
                        f.abs() <= a * 127.0 * (1.0 + 1e-5),
                        "{model} {name} #{i}: {f}"
                    );
                } else if a.is_finite() {
                    // Half a step of rounding, plus float error of the division.
                    assert!(
                        (d - f).abs() <= a * 0.5 * (1.0 + 1e-5) + 1e-7,
                        "{model} {name} #{i}: {f} vs {d} (alpha {a})"
                    );
                } else {
                    // MNN's tool writes NaN scales for channels that are all zero.
                    assert_eq!((f, d), (0.0, 0.0), "{model} {name} #{i}");
                }
            }
            checked += 1;
        }
        assert!(
            checked > 10,
            "{model}: only {checked} quantized convolutions"
        );
    }
}
