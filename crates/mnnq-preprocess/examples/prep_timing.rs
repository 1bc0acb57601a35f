//! Times decoding and full preprocessing of a config's calibration set.
//! Usage: cargo run --release -p mnnq-preprocess --example prep_timing -- CONFIG.json

use std::time::Instant;

use mnnq_preprocess::{
    calibration_files, decode_file, prepare_images, preprocess_image, Config, InputSpec,
};

fn main() {
    let path = std::env::args_os()
        .nth(1)
        .expect("usage: prep_timing CONFIG.json");
    let (config, _) = Config::from_file(path.as_ref()).expect("config");
    let spec = InputSpec::from_config(&config).expect("input size");
    let files = calibration_files(&config).expect("files");

    let start = Instant::now();
    for file in &files {
        decode_file(file).expect("decode");
    }
    let decode = start.elapsed();

    let start = Instant::now();
    for file in &files {
        preprocess_image(file, &config, &spec).expect("preprocess");
    }
    let sequential = start.elapsed();

    let start = Instant::now();
    let prepared = prepare_images(&files, &config, &spec).expect("prepare");
    let parallel = start.elapsed();

    // Stage split on the first file.
    let image = decode_file(&files[0]).expect("decode");
    let start = Instant::now();
    let resized = mnnq_preprocess::resize::crop_and_resize(
        &image,
        config.center_crop_w,
        config.center_crop_h,
        spec.width,
        spec.height,
    )
    .expect("resize");
    let resize_time = start.elapsed();
    let start = Instant::now();
    let samples = mnnq_preprocess::convert_format(&resized.pixels, config.format);
    let convert_time = start.elapsed();
    let start = Instant::now();
    let _ = mnnq_preprocess::normalize(&samples, &config, &spec);
    let normalize_time = start.elapsed();
    println!(
        "first file stages: resize {:.2} ms, convert {:.2} ms, normalize {:.2} ms",
        resize_time.as_secs_f64() * 1e3,
        convert_time.as_secs_f64() * 1e3,
        normalize_time.as_secs_f64() * 1e3
    );

    println!(
        "{} files -> {:?}: decode only {:.1} ms, preprocess sequential {:.1} ms, parallel ({} threads) {:.1} ms, {} skipped",
        files.len(),
        spec.shape(),
        decode.as_secs_f64() * 1e3,
        sequential.as_secs_f64() * 1e3,
        rayon::current_num_threads(),
        parallel.as_secs_f64() * 1e3,
        prepared.skipped.len()
    );
}
