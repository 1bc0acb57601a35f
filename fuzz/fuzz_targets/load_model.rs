//! Feeds arbitrary bytes to the model reader. It must never panic, overflow the stack or
//! allocate without bound; whatever it accepts must serialize and reload to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnnq_format::Model;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = Model::from_bytes(data, "fuzz input") {
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
