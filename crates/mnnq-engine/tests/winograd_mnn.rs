//! With `MNNQ_WINOGRAD=1`, 3x3 stride-1 convolutions run MNN's own Winograd arithmetic: the
//! conformance cases MNN runs as Winograd (several tile sizes, full and partial batches of
//! tiles, a lone last tile) must then give MNN's output bytes exactly.

use std::path::PathBuf;

use mnnq_engine::{Engine, Session, Tensor};

fn read_f32_npy(path: &std::path::Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    Tensor::new(shape, npy.into_vec::<f32>().unwrap())
}

#[test]
fn winograd_cases_match_mnn_bit_for_bit() {
    // Set before the first engine is prepared (the switch is read once per process).
    std::env::set_var("MNNQ_WINOGRAD", "1");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let Ok(dir) = std::fs::read_dir(&root) else {
        println!("SKIPPED: no conformance cases at {}", root.display());
        return;
    };
    let mut cases: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.contains("winograd") || name.starts_with("conv_then_")
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 7,
        "expected the Winograd cases in {}",
        root.display()
    );
    for case in cases {
        let engine = Engine::load(case.join("model.mnn")).unwrap();
        let x = read_f32_npy(&case.join("input_x.npy"));
        for threads in [1, 2] {
            let mut session = Session::new(&engine, threads).unwrap();
            let got = session.run(&[("x", x.clone())]).unwrap();
            let want = read_f32_npy(&case.join("output_y.npy"));
            let (_, y) = got.iter().find(|(n, _)| n == "y").unwrap();
            let differing = y
                .data
                .iter()
                .zip(&want.data)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                differing,
                0,
                "{}: {differing} of {} values differ from MNN ({threads} threads)",
                case.display(),
                want.data.len()
            );
        }
    }
}
