//! Feeds arbitrary bytes to the model reader. It must never panic, overflow the stack or
//! allocate without bound; whatever it accepts must serialize and reload to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnnq_format::weights::decode_conv;
use mnnq_format::{Model, OpParameter};

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = Model::from_bytes(data, "fuzz input") {
        // Weight decoding must cope with whatever an accepted model contains.
        for op in model.net.oplists.iter().flatten() {
            if let Some(OpParameter::Convolution2D(conv)) = &op.main {
                let _ = decode_conv(conv, None);
            }
        }
        let bytes = model
            .to_bytes()
            .expect("an accepted model must serialize");
        let again = Model::from_bytes(&bytes, "fuzz rewrite").expect("a rewritten model must load");
        assert!(
            again.to_bytes().expect("serialize again") == bytes,
            "rewriting is not stable"
        );
    }
});
