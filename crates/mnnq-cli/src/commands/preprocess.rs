//! `mnnq preprocess`: the float tensor a model would see for one image, per a calibration
//! config, written as float32 `.npy`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mnnq_preprocess::{Config, InputSpec, InputType};

#[derive(clap::Args)]
pub struct Args {
    /// The image to preprocess.
    pub image: PathBuf,
    /// The calibration config (JSON).
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the float32 tensor.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Take the input layout (and a missing width/height) from this model.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (config, warnings) = Config::from_file(&args.config)?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    if config.input_type != InputType::Image {
        anyhow::bail!(
            "config {}: input_type is \"sequence\"; `mnnq preprocess` only prepares images",
            args.config.display()
        );
    }
    let spec = match &args.model {
        Some(model) => input_spec_from_model(&config, model)?,
        None => InputSpec::from_config(&config)?,
    };
    let tensor = mnnq_preprocess::preprocess_image(&args.image, &config, &spec)?;
    mnnq_preprocess::write_npy_f32(&args.output, &spec.shape(), &tensor)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}

/// HOOK(format): wire `--model` here once `mnnq-format` (branch `format`) is merged.
/// Load the model, take its first input's name, layout (NCHW / NC4HW4 -> `Layout::Nchw`,
/// NHWC -> `Layout::Nhwc`) and 4-D dims (<= 0 = unknown), and return
/// `InputSpec::for_model_input(config, name, layout, &dims)`, printing its warnings.
fn input_spec_from_model(_config: &Config, model: &Path) -> anyhow::Result<InputSpec> {
    anyhow::bail!(
        "--model {} is not supported yet: reading the model's input needs the model format crate; run without --model (NCHW, size from the config)",
        model.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder under the system temp dir, removed on drop.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mnnq-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("images")).unwrap();
        Scratch(dir)
    }

    /// Float32 values of a version-1 `.npy` file and its header text.
    fn read_npy(path: &Path) -> (String, Vec<f32>) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = String::from_utf8(bytes[10..10 + header_len].to_vec()).unwrap();
        let values = bytes[10 + header_len..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (header, values)
    }

    #[test]
    fn writes_the_normalised_nchw_tensor() {
        let dir = scratch("ok");
        let image = dir.0.join("images/p.ppm");
        // 2x1 RGB image: (10, 20, 30) and (40, 50, 60).
        std::fs::write(&image, b"P6 2 1 255 \x0a\x14\x1e\x28\x32\x3c").unwrap();
        let config = dir.0.join("c.json");
        std::fs::write(
            &config,
            r#"{"format": "BGR", "mean": [1, 2, 3], "normal": [0.5, 0.25, 2], "width": 2, "height": 1, "path": "images"}"#,
        )
        .unwrap();
        let output = dir.0.join("out.npy");
        run(Args {
            image,
            config,
            output: output.clone(),
            model: None,
        })
        .unwrap();
        let (header, values) = read_npy(&output);
        assert!(
            header.contains("'<f4'") && header.contains("(1, 3, 1, 2"),
            "{header}"
        );
        // BGR planes: B = (30, 60), G = (20, 50), R = (10, 40), each (v - mean) * normal.
        let expected = [
            (30.0 - 1.0) * 0.5,
            (60.0 - 1.0) * 0.5,
            (20.0 - 2.0) * 0.25,
            (50.0 - 2.0) * 0.25,
            (10.0 - 3.0) * 2.0,
            (40.0 - 3.0) * 2.0,
        ];
        assert_eq!(values, expected);
    }

    #[test]
    fn bad_image_and_model_flag_are_clear_errors() {
        let dir = scratch("bad");
        let image = dir.0.join("images/bad.png");
        std::fs::write(&image, b"not a png").unwrap();
        let config = dir.0.join("c.json");
        std::fs::write(
            &config,
            r#"{"format": "RGB", "width": 2, "height": 2, "path": "images"}"#,
        )
        .unwrap();
        let output = dir.0.join("out.npy");
        let args = |model: Option<PathBuf>| Args {
            image: image.clone(),
            config: config.clone(),
            output: output.clone(),
            model,
        };
        let error = run(args(None)).unwrap_err().to_string();
        assert!(error.contains("bad.png"), "{error}");
        let error = run(args(Some("m.mnn".into()))).unwrap_err().to_string();
        assert!(error.contains("--model"), "{error}");
        assert!(!output.exists());
    }
}
