//! The graph view of the real models agrees with what fixtures/README.md documents.

use std::path::PathBuf;

use mnnq_format::{DataType, MnnDataFormat, Model};
use mnnq_graph::Graph;

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
fn fixture_inputs_and_outputs() {
    let Some(root) = fixtures() else { return };
    let cases = [
        ("efficientnet_lite0", "input", [1, 3, 224, 224], "logits"),
        ("ppocr_det_v4", "x", [1, 3, 640, 640], "sigmoid_0.tmp_0"),
        (
            "ppocr_cls_v2",
            "x",
            [1, 3, 48, 192],
            "save_infer_model/scale_0.tmp_1",
        ),
    ];
    for (name, input, dims, output) in cases {
        for path in [
            root.join(format!("models/{name}.mnn")),
            root.join(format!("mnn_int8/{name}/KL_MAX_ABS.mnn")),
        ] {
            let model = Model::load(&path).unwrap();
            let graph = Graph::new(&model.net).unwrap();
            assert_eq!(graph.inputs().len(), 1, "{}", path.display());
            let graph_input = &graph.inputs()[0];
            assert_eq!(graph_input.name, input);
            assert_eq!(graph_input.dims, dims.to_vec());
            assert_eq!(graph_input.dtype, DataType::DtFloat);
            assert_eq!(graph_input.dformat, MnnDataFormat::Nchw);
            let outputs: Vec<&str> = graph
                .outputs()
                .iter()
                .map(|&t| graph.tensor_name(t))
                .collect();
            assert_eq!(outputs, vec![output], "{}", path.display());
            // Every tensor an op reads is produced by an earlier op (converter order).
            for op in 0..graph.ops().len() {
                for &tensor in graph.op_inputs(op) {
                    let producer = graph
                        .producer(tensor)
                        .expect("consumed tensor has a producer");
                    assert!(
                        producer < op,
                        "{}: op {op} reads tensor {tensor} before it is made",
                        path.display()
                    );
                    assert!(graph.consumers(tensor).contains(&op));
                }
            }
        }
    }
}
