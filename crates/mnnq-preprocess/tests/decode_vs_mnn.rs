//! Every fixture image decodes to exactly the pixels MNN 3.6.1's stb-based decoder gives
//! (`tests/data/mnn_decode_sha256.json`: size and sha256 of the RGB bytes from
//! `MNN.cv.imread`), and mutated copies never escape as a panic.

use std::path::PathBuf;

use mnnq_preprocess::{decode_bytes, decode_file};
use sha2::{Digest, Sha256};

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("MNNQ_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    if dir.join("images").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: fixtures not found at {} (set MNNQ_FIXTURES)",
            dir.display()
        );
        None
    }
}

#[test]
fn fixture_images_decode_exactly_as_mnn() {
    let Some(root) = fixtures() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("data/mnn_decode_sha256.json")).unwrap();
    let images = reference["images"].as_object().unwrap();
    assert!(images.len() >= 200);
    let mut mismatches = Vec::new();
    for (relative, expected) in images {
        let decoded = decode_file(&root.join(relative)).unwrap();
        let rgb: Vec<u8> = decoded
            .pixels
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let digest = format!("{:x}", Sha256::digest(&rgb));
        let same = decoded.width as u64 == expected["width"].as_u64().unwrap()
            && decoded.height as u64 == expected["height"].as_u64().unwrap()
            && digest == expected["rgb_sha256"].as_str().unwrap();
        if !same {
            mismatches.push(relative.clone());
        }
    }
    eprintln!(
        "{} images compared with MNN's decoder, {} differ",
        images.len(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

/// Deterministic byte mutations (xorshift) of real JPEG and PNG files: every outcome must be
/// an `Ok` or an `Err`, never a panic out of the decoder.
#[test]
fn mutated_files_never_panic() {
    let Some(root) = fixtures() else { return };
    let sources = [
        "images/textline/line_00.jpg",
        "images/textline/line_01.png",
        "images/calib/ocv_HappyFish.jpg",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut decoded, mut refused) = (0, 0);
    for source in sources {
        let original = std::fs::read(root.join(source)).unwrap();
        for _ in 0..150 {
            let mut bytes = original.clone();
            let edits = 1 + next() % 8;
            for _ in 0..edits {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            if next() % 4 == 0 {
                let keep = (next() % bytes.len() as u64) as usize;
                bytes.truncate(keep.max(1));
            }
            match decode_bytes(&bytes, source.as_ref()) {
                Ok(image) => {
                    assert_eq!(image.pixels.len(), image.width * image.height * 4);
                    decoded += 1;
                }
                Err(error) => {
                    assert!(error.to_string().contains(source));
                    refused += 1;
                }
            }
        }
    }
    eprintln!("mutations: {decoded} decoded, {refused} refused");
    assert!(refused > 0);
}
