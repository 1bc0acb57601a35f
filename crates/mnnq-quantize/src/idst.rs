//! MNN's IDST code-book weight encoding, type 1 ("dense", 8-bit linear code-book), as the
//! quantizer writes it and MNN's loader reads it (`mnn-format.md` §3).

use crate::QuantizeError;

/// Bytes of the type-1 buffer for `codes` grouped as `channels` equal runs:
/// `u8 ndims=2`, the two dims (u16 LE, or u32 LE when `shape_int32`), `u8 count` (0 = 256),
/// the 256 code-book values -128..=127 in ascending order, then one byte `q + 128` per code
/// (8-bit indices into the linear code-book).
pub fn encode_type1(codes: &[i8], channels: usize) -> Result<(Vec<i8>, bool), QuantizeError> {
    if channels == 0 || codes.is_empty() || !codes.len().is_multiple_of(channels) {
        return Err(QuantizeError::Usage(format!(
            "cannot encode {} weight codes as {channels} channels",
            codes.len()
        )));
    }
    let per_channel = codes.len() / channels;
    let shape_int32 = channels > usize::from(u16::MAX) || per_channel > usize::from(u16::MAX);
    if shape_int32 && (channels > u32::MAX as usize || per_channel > u32::MAX as usize) {
        return Err(QuantizeError::Usage(
            "weight tensor too large for IDST".into(),
        ));
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(codes.len() + 270);
    bytes.push(2);
    for dim in [channels, per_channel] {
        if shape_int32 {
            bytes.extend_from_slice(&(dim as u32).to_le_bytes());
        } else {
            bytes.extend_from_slice(&(dim as u16).to_le_bytes());
        }
    }
    // 256 entries do not fit in the u8 count: MNN stores 0 for them.
    bytes.push(0);
    bytes.extend((-128i16..=127).map(|v| v as i8 as u8));
    bytes.extend(codes.iter().map(|&q| (i16::from(q) + 128) as u8));
    Ok((bytes.into_iter().map(|b| b as i8).collect(), shape_int32))
}

/// Decodes a type-1 buffer written with an 8-bit code-book back to `(dims, codes)`. Used to
/// check what we write; accepts only the 8-bit linear form [`encode_type1`] produces.
pub fn decode_type1(buffer: &[i8], shape_int32: bool) -> Result<(Vec<usize>, Vec<i8>), String> {
    let bytes: Vec<u8> = buffer.iter().map(|&b| b as u8).collect();
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let slice = bytes.get(at..at + n).ok_or("IDST buffer is truncated")?;
        at += n;
        Ok(slice)
    };
    let ndims = take(1)?[0] as usize;
    let mut dims = Vec::with_capacity(ndims);
    for _ in 0..ndims {
        dims.push(if shape_int32 {
            u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize
        } else {
            u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize
        });
    }
    let count = match take(1)?[0] {
        0 => 256,
        n => n as usize,
    };
    if count != 256 {
        return Err(format!(
            "code-book has {count} entries; only the 8-bit form is decoded"
        ));
    }
    let mut book: Vec<i8> = take(256)?.iter().map(|&b| b as i8).collect();
    book.sort_unstable();
    let n: usize = dims.iter().product();
    let codes = take(n)?.iter().map(|&i| book[i as usize]).collect();
    Ok((dims, codes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_mnn_header() {
        let codes: Vec<i8> = vec![-127, 0, 5, 127, -1, 3];
        let (buffer, wide) = encode_type1(&codes, 2).unwrap();
        assert!(!wide);
        // Header as MNN writes it for dims {2, 3}: [2, 2,0, 3,0, 0(=256), -128, -127, ...].
        assert_eq!(&buffer[..8], &[2, 2, 0, 3, 0, 0, -128, -127]);
        assert_eq!(buffer.len(), 6 + 256 + 6);
        // Code -127 is stored as index 1, i.e. byte 1.
        assert_eq!(buffer[6 + 256], 1);
        let (dims, back) = decode_type1(&buffer, wide).unwrap();
        assert_eq!(dims, vec![2, 3]);
        assert_eq!(back, codes);
    }

    #[test]
    fn rejects_uneven_channels() {
        assert!(encode_type1(&[1, 2, 3], 2).is_err());
        assert!(encode_type1(&[], 1).is_err());
    }
}
