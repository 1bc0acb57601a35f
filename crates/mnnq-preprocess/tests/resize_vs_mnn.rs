//! Crop + stretch + RGB conversion against MNN 3.6.1's `CVImageProcess` on 40 generated cases
//! (sources up to 640 px, targets up to 1200 px wide so rows span several 512-pixel tiles,
//! random centre crops, same-size copies). The reference holds the sha256 of MNN's 8-bit
//! planes (`tests/data/mnn_resize_cases.json`); the source image is generated from a formula.

use mnnq_preprocess::resize::crop_and_resize;
use mnnq_preprocess::{convert_format, ImageFormat, RgbaImage};
use sha2::{Digest, Sha256};

fn source(width: usize, height: usize) -> RgbaImage {
    let mut pixels = Vec::with_capacity(width * height * 4);
    for y in 0..height as i64 {
        for x in 0..width as i64 {
            let r = x * 255 / (width as i64 - 1).max(1);
            let g = y * 255 / (height as i64 - 1).max(1);
            let b = ((x * 73_856_093) ^ (y * 19_349_663)) & 255;
            pixels.extend_from_slice(&[r as u8, g as u8, b as u8, 255]);
        }
    }
    RgbaImage {
        width,
        height,
        pixels,
    }
}

#[test]
fn generated_cases_are_bit_identical_to_mnn() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("data/mnn_resize_cases.json")).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    let mut mismatches = Vec::new();
    for case in cases {
        let dims = |key: &str| {
            let v = case[key].as_array().unwrap();
            (
                v[0].as_u64().unwrap() as usize,
                v[1].as_u64().unwrap() as usize,
            )
        };
        let (w, h) = dims("source");
        let (ow, oh) = dims("target");
        let crop_w = case["center_crop_w"].as_f64().unwrap() as f32;
        let crop_h = case["center_crop_h"].as_f64().unwrap() as f32;
        let resized = crop_and_resize(&source(w, h), crop_w, crop_h, ow, oh).unwrap();
        let rgb = convert_format(&resized.pixels, ImageFormat::Rgb);
        // Interleaved HWC -> planar CHW, as the reference stores it.
        let mut planes = vec![0u8; rgb.len()];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planes[c * ow * oh + i] = px[c];
            }
        }
        let digest = format!("{:x}", Sha256::digest(&planes));
        if digest != case["rgb_planes_sha256"].as_str().unwrap() {
            mismatches.push(format!("{w}x{h} -> {ow}x{oh}, crop {crop_w} x {crop_h}"));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
