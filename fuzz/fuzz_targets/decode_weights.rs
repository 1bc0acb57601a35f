//! Feeds arbitrary bytes to the IDST weight decoders (dense and sparse code-book, with and
//! without u32 dims and asymmetric zero fill): errors are fine, panics and huge allocations not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnnq_format::weights::{decode_dense_codebook, decode_idst, decode_sparse_codebook};
use mnnq_format::IdstQuan;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buffer)) = data.split_first() else {
        return;
    };
    let shape_int32 = flags & 1 == 1;
    let _ = decode_dense_codebook(buffer, shape_int32);
    let alpha = [-0.5f32, 0.25, 0.1, -1.0];
    let _ = decode_sparse_codebook(buffer, shape_int32, (flags & 2 == 2).then_some(&alpha[..]));
    let quan = IdstQuan {
        buffer: Some(buffer.iter().map(|&b| b as i8).collect()),
        alpha: Some(alpha[..1 + (flags as usize >> 2) % 4].to_vec()),
        type_: i32::from(flags >> 4) % 5,
        read_type: i32::from(flags >> 3 & 1),
        shape_int32,
        quant_scale: 1.0,
        ..Default::default()
    };
    let _ = decode_idst(&quan);
});
