//! Decodes images with our stb-compatible decoder and writes `<out>/<name>.rgba` (raw RGBA8) and
//! `<out>/<name>.size` ("width height"), for comparing against another decoder.
//! Usage: cargo run -p mnnq-preprocess --example dump_rgba -- OUT_DIR IMAGE...

fn main() {
    let mut args = std::env::args_os().skip(1);
    let out = std::path::PathBuf::from(args.next().expect("usage: dump_rgba OUT_DIR IMAGE..."));
    std::fs::create_dir_all(&out).expect("create output folder");
    for image in args {
        let path = std::path::PathBuf::from(image);
        match mnnq_preprocess::decode_file(&path) {
            Ok(decoded) => {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                std::fs::write(out.join(format!("{name}.rgba")), &decoded.pixels).unwrap();
                std::fs::write(
                    out.join(format!("{name}.size")),
                    format!("{} {}", decoded.width, decoded.height),
                )
                .unwrap();
            }
            Err(error) => eprintln!("{error}"),
        }
    }
}
