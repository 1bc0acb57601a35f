//! `input_type: "sequence"` samples: `<input>.txt` as MNN reads them, `input.json` shape
//! overrides, and the `.npy` extension.

use std::path::Path;

use mnnq_preprocess::sequence::{load_sample, SampleError, SequenceInput};
use mnnq_preprocess::{calibration_files, write_npy_f32, Config, InputType};
use npyz::WriterBuilder;

fn inputs() -> Vec<SequenceInput> {
    vec![
        SequenceInput {
            name: "ids".into(),
            shape: vec![1, 4],
        },
        SequenceInput {
            name: "mask".into(),
            shape: vec![1, -1],
        },
    ]
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn text_samples_follow_mnn_and_input_json_overrides_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("s0");
    std::fs::create_dir_all(&sample).unwrap();
    // Values may span lines; they are read in order as f64 then stored as f32.
    write(&sample.join("ids.txt"), "1 2\n3   4.5\n");
    write(&sample.join("mask.txt"), "1 1 0");
    write(
        &sample.join("input.json"),
        r#"{"inputs": [{"name": "mask", "shape": [1, 3]}]}"#,
    );
    let tensors = load_sample(&sample, &inputs()).unwrap();
    assert_eq!(tensors[0].name, "ids");
    assert_eq!(tensors[0].shape, [1, 4]);
    assert_eq!(tensors[0].data, [1.0, 2.0, 3.0, 4.5]);
    assert_eq!(tensors[1].shape, [1, 3]);
    assert_eq!(tensors[1].data, [1.0, 1.0, 0.0]);
}

#[test]
fn npy_files_replace_text_files_and_single_npy_feeds_one_input() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("s0");
    std::fs::create_dir_all(&sample).unwrap();
    write_npy_f32(&sample.join("ids.npy"), &[1, 4], &[0.5, 1.5, 2.5, 3.5]).unwrap();
    // An unsigned byte array for the input of unknown length: shape comes from the file.
    {
        let file = std::fs::File::create(sample.join("mask.npy")).unwrap();
        let mut writer = npyz::WriteOptions::<u8>::new()
            .default_dtype()
            .shape(&[1, 5])
            .writer(file)
            .begin_nd()
            .unwrap();
        writer.extend([1u8, 1, 1, 0, 0]).unwrap();
        writer.finish().unwrap();
    }
    let tensors = load_sample(&sample, &inputs()).unwrap();
    assert_eq!(tensors[0].data, [0.5, 1.5, 2.5, 3.5]);
    assert_eq!(tensors[1].shape, [1, 5]);
    assert_eq!(tensors[1].data, [1.0, 1.0, 1.0, 0.0, 0.0]);

    // A bare .npy entry works for a one-input model; leading 1s may be dropped.
    let single = dir.path().join("x.npy");
    write_npy_f32(&single, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let one = &inputs()[..1];
    let tensors = load_sample(&single, one).unwrap();
    assert_eq!(tensors[0].shape, [1, 4]);
    assert_eq!(tensors[0].data, [1.0, 2.0, 3.0, 4.0]);
    // ...but not for a two-input model.
    assert!(load_sample(&single, &inputs()).is_err());
}

#[test]
fn bad_samples_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, files: &[(&str, &str)]| {
        let sample = dir.path().join(name);
        std::fs::create_dir_all(&sample).unwrap();
        for (file, text) in files {
            write(&sample.join(file), text);
        }
        sample
    };
    let both = make("both", &[("ids.txt", "1 2 3 4"), ("mask.txt", "1")]);
    write_npy_f32(&both.join("ids.npy"), &[1, 4], &[0.0; 4]).unwrap();
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        (
            "missing input file",
            make("missing", &[("ids.txt", "1 2 3 4")]),
            "mask",
        ),
        (
            "too few values",
            make("few", &[("ids.txt", "1 2 3"), ("mask.txt", "1")]),
            "ids.txt",
        ),
        (
            "too many values",
            make("many", &[("ids.txt", "1 2 3 4 5"), ("mask.txt", "1")]),
            "ids.txt",
        ),
        (
            "not a number",
            make("nan", &[("ids.txt", "1 2 x 4"), ("mask.txt", "1")]),
            "\"x\"",
        ),
        (
            "unknown shape for text",
            make("unknown", &[("ids.txt", "1 2 3 4"), ("mask.txt", "1 1")]),
            "not fully known",
        ),
        (
            "bad input.json",
            make(
                "json",
                &[
                    ("ids.txt", "1 2 3 4"),
                    ("mask.txt", "1"),
                    ("input.json", "{"),
                ],
            ),
            "input.json",
        ),
        ("both txt and npy", both, "keep one"),
        (
            "npy with the wrong shape",
            {
                let s = make("shape", &[("mask.txt", "1")]);
                write_npy_f32(&s.join("ids.npy"), &[2, 2], &[0.0; 4]).unwrap();
                s
            },
            "does not match",
        ),
        (
            "npy that is not npy",
            make("garbage", &[("ids.npy", "hello"), ("mask.txt", "1")]),
            "ids.npy",
        ),
    ];
    let mut failures = Vec::new();
    for (name, path, needle) in cases {
        match load_sample(&path, &inputs()) {
            Ok(t) => failures.push(format!("{name}: loaded {t:?}")),
            Err(error) => {
                let message = error.to_string();
                if !message.contains(path.to_str().unwrap()) || !message.contains(needle) {
                    failures.push(format!("{name}: {message}"));
                }
                assert!(matches!(
                    error,
                    SampleError::Invalid { .. } | SampleError::Io { .. }
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn sequence_mode_lists_sample_folders_and_npy_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("b_sample")).unwrap();
    std::fs::create_dir_all(data.join("a_sample")).unwrap();
    std::fs::create_dir_all(data.join(".hidden")).unwrap();
    write(&data.join("notes.txt"), "not a sample");
    write_npy_f32(&data.join("c.npy"), &[1], &[1.0]).unwrap();
    let config_path = dir.path().join("c.json");
    write(
        &config_path,
        &format!(
            r#"{{"format": "RGB", "input_type": "sequence", "path": {:?}}}"#,
            data.to_str().unwrap()
        ),
    );
    let (config, _) = Config::from_file(&config_path).unwrap();
    assert_eq!(config.input_type, InputType::Sequence);
    let files = calibration_files(&config).unwrap();
    assert_eq!(
        files,
        [
            data.join("a_sample"),
            data.join("b_sample"),
            data.join("c.npy")
        ]
    );
}
