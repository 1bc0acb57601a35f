//! Convolution weight codecs: every way MNN stores a `Convolution2D`'s weights, decoded to f32,
//! and the int8 encoder the quantizer writes with.
//!
//! Storage forms (see docs/mnn-format.md §3):
//! * inline `weight: [f32]`;
//! * `quanParameter: IDSTQuan`, `type` 1 (dense code-book), 2 (sparse code-book), 3 (IEEE half),
//!   4 (raw int8); scales in `alpha` (f32) or `alphaFp16` when `scaleStorage == FP16`; symmetric
//!   (`w = q * alpha[g]`) or asymmetric (`readType != 0`: pairs `[min, scale]`,
//!   `w = (q - aMin) * scale + min`, `aMin = -128` when 0); `G = len(alpha)` (or half of it)
//!   equal consecutive groups, so block-wise scales work the same way;
//! * the sparse-float form `weightSize` + `index` (`w[index[i]] = alpha[i]`);
//! * `external` offsets into the `<model>.weight` sidecar, for float and for quantized weights.
//!
//! Everything untrusted is checked: sizes are validated against the bytes actually present before
//! anything is allocated, and no input makes these functions panic.

use std::fmt;

use crate::generated::mnn::{Convolution2D, IdstQuan, ScaleStorageType};

/// At most this many weights are decoded from one IDST buffer (1 GiB of f32): a sparse buffer
/// can claim any dense size in a few bytes, so its header alone cannot be trusted.
pub const MAX_DECODED_WEIGHTS: usize = 1 << 28;

/// Why weights could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightError(pub String);

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WeightError {}

type Result<T> = std::result::Result<T, WeightError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(WeightError(message.into()))
}

/// A convolution's weights and bias as f32, in the layout MNN stores them
/// (`[outputCount, inputCount/group, kY, kX]` for convolutions).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvWeights {
    pub weight: Vec<f32>,
    /// The stored bias; empty when the op stores none.
    pub bias: Vec<f32>,
}

/// Integer codes of a quantized convolution with their scales, before dequantization.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedCodes {
    /// One signed code per weight.
    pub codes: Vec<i8>,
    /// As stored: one scale per group (symmetric) or `[min, scale]` pairs (asymmetric), with
    /// `quantScale` NOT applied.
    pub alpha: Vec<f32>,
    /// `readType != 0` (or the legacy type-4 form with `aMin == 0` and `quantScale == 0`).
    pub asymmetric: bool,
    /// The code subtracted before scaling in the asymmetric form (`aMin`, -128 when 0).
    pub asymmetric_zero_code: i32,
}

/// How the weights of a convolution are stored (for `inspect` and for choosing a code path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStorage {
    /// Weights come from another tensor (the op has 2-3 inputs), nothing embedded.
    None,
    /// Inline `weight: [f32]`.
    Float,
    /// `weight`/`bias` floats in the sidecar.
    ExternalFloat,
    /// `quanParameter` of the given `type` (1, 2, 3, 4 or 8); `external` says whether the
    /// buffer is in the sidecar; `sparse_float` marks the `weightSize` + `index` form.
    Idst {
        idst_type: i32,
        external: bool,
        sparse_float: bool,
    },
}

/// Classifies a convolution's weight storage without decoding anything.
pub fn storage_of(conv: &Convolution2D) -> WeightStorage {
    let external = uses_external(&conv.external);
    if let Some(quan) = conv.quan_parameter.as_deref() {
        return WeightStorage::Idst {
            idst_type: quan.type_,
            external: external && quan.buffer.as_ref().is_none_or(|b| b.is_empty()),
            sparse_float: quan.index.is_some(),
        };
    }
    if conv.weight.as_ref().is_some_and(|w| !w.is_empty()) {
        WeightStorage::Float
    } else if external {
        WeightStorage::ExternalFloat
    } else {
        WeightStorage::None
    }
}

/// MNN treats `external` as present when it has more than one entry.
fn uses_external(external: &Option<Vec<i64>>) -> bool {
    external.as_ref().is_some_and(|e| e.len() > 1)
}

/// Reads `len` bytes at `offset` of the sidecar, checking both against its size.
pub(crate) fn sidecar_slice<'a>(
    sidecar: Option<&'a [u8]>,
    offset: i64,
    len: i64,
    what: &str,
) -> Result<&'a [u8]> {
    let Some(sidecar) = sidecar else {
        return fail(format!(
            "{what} is stored in the external .weight file, which is not loaded"
        ));
    };
    let (Ok(start), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
        return fail(format!(
            "{what}: negative external offset {offset} or size {len}"
        ));
    };
    match start.checked_add(len) {
        Some(end) if end <= sidecar.len() => Ok(&sidecar[start..end]),
        _ => fail(format!(
            "{what}: bytes {start}..{} lie outside the {}-byte .weight file",
            start.saturating_add(len),
            sidecar.len()
        )),
    }
}

pub(crate) fn f32s_from_le(bytes: &[u8], what: &str) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return fail(format!(
            "{what}: {} bytes is not a whole number of f32",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn f16s_from_le(bytes: &[u8], what: &str) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(2) {
        return fail(format!(
            "{what}: {} bytes is not a whole number of f16",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
        .collect())
}

fn i8s_as_u8s(values: &[i8]) -> Vec<u8> {
    values.iter().map(|&v| v as u8).collect()
}

/// Decodes a convolution's weights and bias to f32 from whichever storage it uses. `sidecar` is
/// the `<model>.weight` file (see [`crate::Model::external_bytes`]), needed only for `external`.
pub fn decode_conv(conv: &Convolution2D, sidecar: Option<&[u8]>) -> Result<ConvWeights> {
    let external = conv.external.as_deref().filter(|e| e.len() > 1);
    let inline_bias = conv.bias.clone().filter(|b| !b.is_empty());
    if let Some(quan) = conv.quan_parameter.as_deref() {
        let mut parts = QuanParts::gather(quan, external, sidecar)?;
        let external_bias = parts.external_bias.take();
        let weight = parts.decode(quan)?;
        let bias = match (inline_bias, external_bias) {
            (Some(bias), _) => bias,
            (None, Some(bias)) => bias,
            (None, None) => Vec::new(),
        };
        return Ok(ConvWeights { weight, bias });
    }
    if let Some(weight) = conv.weight.as_ref().filter(|w| !w.is_empty()) {
        return Ok(ConvWeights {
            weight: weight.clone(),
            bias: inline_bias.unwrap_or_default(),
        });
    }
    if let Some(external) = external {
        // [offset, weightBytes, biasBytes]: weight floats then bias floats.
        let weight_bytes = sidecar_slice(sidecar, external[0], external[1], "weights")?;
        let weight = f32s_from_le(weight_bytes, "external weights")?;
        let bias = match (inline_bias, external.get(2)) {
            (Some(bias), _) => bias,
            (None, Some(&bias_len)) => {
                let bias_offset = external[0].saturating_add(external[1]);
                f32s_from_le(
                    sidecar_slice(sidecar, bias_offset, bias_len, "bias")?,
                    "external bias",
                )?
            }
            (None, None) => Vec::new(),
        };
        return Ok(ConvWeights { weight, bias });
    }
    fail("the convolution has no embedded weights (they come from an input tensor)")
}

/// The pieces of an `IDSTQuan`, resolved from inline fields or the sidecar.
pub(crate) struct QuanParts {
    pub(crate) buffer: Vec<u8>,
    /// Scales as f32 (converted from f16 when stored that way).
    pub(crate) alpha: Vec<f32>,
    pub(crate) external_bias: Option<Vec<f32>>,
    /// `index` of the sparse-float form (inline, or from the sidecar).
    pub(crate) index: Option<Vec<u32>>,
    /// Float weights of the in-memory type 8 ("float weights in the external file").
    pub(crate) external_float: Option<Vec<f32>>,
}

impl QuanParts {
    pub(crate) fn gather(
        quan: &IdstQuan,
        external: Option<&[i64]>,
        sidecar: Option<&[u8]>,
    ) -> Result<Self> {
        let alpha_is_f16 = quan.scale_storage == ScaleStorageType::Fp16;
        let inline_buffer = quan.buffer.as_deref().filter(|b| !b.is_empty());
        let mut parts = QuanParts {
            buffer: inline_buffer.map(i8s_as_u8s).unwrap_or_default(),
            alpha: if alpha_is_f16 {
                quan.alpha_fp16
                    .iter()
                    .flatten()
                    .map(|&bits| half::f16::from_bits(bits).to_f32())
                    .collect()
            } else {
                quan.alpha.clone().unwrap_or_default()
            },
            external_bias: None,
            index: quan.index.clone(),
            external_float: None,
        };
        let Some(external) = external else {
            return Ok(parts);
        };
        if quan.type_ == 8 {
            let bytes = sidecar_slice(sidecar, external[0], external[1], "weights")?;
            parts.external_float = Some(f32s_from_le(bytes, "external weights")?);
            return Ok(parts);
        }
        if inline_buffer.is_some() {
            return Ok(parts);
        }
        // [offset, bufferBytes, alphaBytes, (biasBytes), (indexBytes)], stored back to back.
        let mut cursor = external[0];
        let mut take = |len: i64, what: &str| -> Result<&[u8]> {
            let bytes = sidecar_slice(sidecar, cursor, len, what)?;
            cursor = cursor.saturating_add(len);
            Ok(bytes)
        };
        parts.buffer = take(external[1], "quantized weights")?.to_vec();
        if let Some(&alpha_len) = external.get(2) {
            let bytes = take(alpha_len, "weight scales")?;
            parts.alpha = if alpha_is_f16 {
                f16s_from_le(bytes, "external f16 scales")?
            } else {
                f32s_from_le(bytes, "external scales")?
            };
        }
        if let Some(&bias_len) = external.get(3) {
            parts.external_bias = Some(f32s_from_le(take(bias_len, "bias")?, "external bias")?);
        }
        if let Some(&index_len) = external.get(4) {
            let bytes = take(index_len, "sparse index")?;
            if !bytes.len().is_multiple_of(4) {
                return fail("external sparse index is not a whole number of u32");
            }
            parts.index = Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        }
        Ok(parts)
    }

    fn decode(self, quan: &IdstQuan) -> Result<Vec<f32>> {
        if let Some(weights) = self.external_float {
            return Ok(weights);
        }
        if let Some(index) = &self.index {
            return decode_sparse_float(quan.weight_size, index, &self.alpha);
        }
        match quan.type_ {
            3 => f16s_from_le(&self.buffer, "fp16 weights"),
            1 | 2 | 4 => {
                let codes = quantized_codes(quan, &self.buffer, self.alpha)?;
                dequantize(&codes, quan)
            }
            other => fail(format!("unknown IDSTQuan type {other}")),
        }
    }
}

/// The sparse-float form: `weightSize` zeros, then `w[index[i]] = alpha[i]`.
fn decode_sparse_float(weight_size: u32, index: &[u32], alpha: &[f32]) -> Result<Vec<f32>> {
    if alpha.len() != index.len() {
        return fail(format!(
            "sparse weights have {} indexes but {} values",
            index.len(),
            alpha.len()
        ));
    }
    let size = weight_size as usize;
    if size > MAX_DECODED_WEIGHTS {
        return fail(format!(
            "sparse weights claim {size} weights, more than supported"
        ));
    }
    let mut weights = vec![0.0f32; size];
    for (&at, &value) in index.iter().zip(alpha) {
        match weights.get_mut(at as usize) {
            Some(slot) => *slot = value,
            None => return fail(format!("sparse index {at} is outside {size} weights")),
        }
    }
    Ok(weights)
}

/// The integer codes and scales of a type 1, 2 or 4 `IDSTQuan` whose buffer is `buffer`
/// (inline or read from the sidecar) and scales `alpha` (as f32).
pub fn quantized_codes(quan: &IdstQuan, buffer: &[u8], alpha: Vec<f32>) -> Result<QuantizedCodes> {
    let legacy_asymmetric_type4 =
        quan.type_ == 4 && quan.a_min == 0 && quan.quant_scale.abs() < 1e-6;
    let asymmetric = quan.read_type != 0 || legacy_asymmetric_type4;
    let codes = match quan.type_ {
        1 => decode_dense_codebook(buffer, quan.shape_int32)?.codes,
        2 => {
            decode_sparse_codebook(buffer, quan.shape_int32, asymmetric.then_some(&alpha[..]))?
                .codes
        }
        4 => buffer.iter().map(|&b| b as i8).collect(),
        other => return fail(format!("IDSTQuan type {other} has no integer codes")),
    };
    Ok(QuantizedCodes {
        codes,
        alpha,
        asymmetric,
        asymmetric_zero_code: if quan.a_min == 0 { -128 } else { quan.a_min },
    })
}

/// Codes -> f32 as MNN's `ConvolutionCommon::load` does (float path), with one deliberate
/// difference: a non-finite symmetric scale (MNN's tool writes NaN for all-zero channels) decodes
/// to zeros rather than NaN, because its stored codes are all 0.
fn dequantize(codes: &QuantizedCodes, quan: &IdstQuan) -> Result<Vec<f32>> {
    let per_group = if codes.asymmetric { 2 } else { 1 };
    let groups = codes.alpha.len() / per_group;
    if groups == 0 || !codes.alpha.len().is_multiple_of(per_group) {
        return fail(format!(
            "{} weight scales cannot describe {} groups",
            codes.alpha.len(),
            if codes.asymmetric {
                "asymmetric"
            } else {
                "symmetric"
            }
        ));
    }
    if codes.codes.is_empty() {
        return fail("the quantized weights hold no values");
    }
    if !codes.codes.len().is_multiple_of(groups) {
        return fail(format!(
            "{} weights do not split into {groups} equal groups",
            codes.codes.len()
        ));
    }
    // MNN applies quantScale to every alpha entry unless the legacy has_scaleInt flag is set or
    // this is the legacy type-4 form, whose quantScale is 0.
    let legacy_type4 = quan.type_ == 4 && quan.a_min == 0 && quan.quant_scale.abs() < 1e-6;
    let extra = if quan.has_scale_int || legacy_type4 {
        1.0
    } else {
        quan.quant_scale
    };
    let group_len = codes.codes.len() / groups;
    let mut weights = Vec::with_capacity(codes.codes.len());
    for (group, chunk) in codes.codes.chunks(group_len.max(1)).enumerate() {
        if codes.asymmetric {
            let min = codes.alpha[2 * group];
            let scale = codes.alpha[2 * group + 1];
            let zero = codes.asymmetric_zero_code as f32;
            let (scale, offset) = ((scale * extra), (min - zero * scale) * extra);
            weights.extend(chunk.iter().map(|&q| q as f32 * scale + offset));
        } else {
            let alpha = codes.alpha[group] * extra;
            if alpha.is_finite() {
                weights.extend(chunk.iter().map(|&q| q as f32 * alpha));
            } else {
                weights.extend(
                    chunk
                        .iter()
                        .map(|&q| if q == 0 { 0.0 } else { q as f32 * alpha }),
                );
            }
        }
    }
    Ok(weights)
}

/// Decodes an IDSTQuan to f32 when all its data is inline (no sidecar).
pub fn decode_idst(quan: &IdstQuan) -> Result<Vec<f32>> {
    QuanParts::gather(quan, None, None)?.decode(quan)
}

/// A decoded code-book buffer: its dims header and one code per weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodebookBlob {
    /// `{outputCount, weightsPerOutputChannel}` as written by MNN.
    pub dims: Vec<u32>,
    pub codes: Vec<i8>,
}

/// A cursor over an untrusted byte buffer.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        match self.at.checked_add(len) {
            Some(end) if end <= self.bytes.len() => {
                let slice = &self.bytes[self.at..end];
                self.at = end;
                Ok(slice)
            }
            _ => fail(format!(
                "IDST buffer ends inside the {what} ({len} bytes needed at byte {}, {} present)",
                self.at,
                self.bytes.len()
            )),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn dims(&mut self, shape_int32: bool) -> Result<(Vec<u32>, usize)> {
        let count = self.u8("dims header")? as usize;
        if count == 0 || count > 4 {
            return fail(format!("IDST buffer has {count} dims (1 to 4 expected)"));
        }
        let width = if shape_int32 { 4 } else { 2 };
        let raw = self.take(count * width, "dims header")?;
        let dims: Vec<u32> = raw
            .chunks_exact(width)
            .map(|c| {
                if shape_int32 {
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u16::from_le_bytes([c[0], c[1]]) as u32
                }
            })
            .collect();
        let total = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
            .filter(|&n| n <= MAX_DECODED_WEIGHTS);
        match total {
            Some(total) => Ok((dims, total)),
            None => fail(format!("IDST dims {dims:?} describe too many weights")),
        }
    }
    /// A code-book: count byte (0 means 256) then that many signed values, sorted ascending.
    fn codebook(&mut self) -> Result<Vec<i8>> {
        let count = match self.u8("code-book size")? {
            0 => 256,
            n => n as usize,
        };
        let mut book: Vec<i8> = self
            .take(count, "code-book")?
            .iter()
            .map(|&b| b as i8)
            .collect();
        book.sort_unstable();
        Ok(book)
    }
}

/// Bits needed to index `count` entries: ceil(log2(count)), at least 1.
fn index_bits(count: usize) -> u32 {
    (usize::BITS - count.saturating_sub(1).leading_zeros()).max(1)
}

/// Unpacks `count` values of `bits` bits each, most significant bit first.
fn unpack_msb_first(packed: &[u8], count: usize, bits: u32) -> Vec<u8> {
    let mut values = Vec::with_capacity(count);
    let mut bit = 0usize;
    for _ in 0..count {
        let mut value = 0u32;
        for _ in 0..bits {
            let byte = packed[bit / 8];
            value = (value << 1) | ((byte >> (7 - bit % 8)) & 1) as u32;
            bit += 1;
        }
        values.push(value as u8);
    }
    values
}

/// Packs values of `bits` bits each, most significant bit first.
fn pack_msb_first(values: impl IntoIterator<Item = u8>, bits: u32) -> Vec<u8> {
    if bits == 8 {
        // One value per byte: the bit loop below would copy each byte unchanged.
        return values.into_iter().collect();
    }
    let mut packed = Vec::new();
    let mut bit = 0usize;
    for value in values {
        for shift in (0..bits).rev() {
            if bit.is_multiple_of(8) {
                packed.push(0);
            }
            if (value >> shift) & 1 == 1 {
                *packed.last_mut().expect("pushed above") |= 0x80 >> (bit % 8);
            }
            bit += 1;
        }
    }
    packed
}

fn packed_len(count: usize, bits: u32) -> Result<usize> {
    count
        .checked_mul(bits as usize)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| WeightError("packed size overflows".into()))
}

/// Decodes an IDST type 1 buffer (dense code-book) to one code per weight.
pub fn decode_dense_codebook(buffer: &[u8], shape_int32: bool) -> Result<CodebookBlob> {
    let mut reader = Reader {
        bytes: buffer,
        at: 0,
    };
    let (dims, total) = reader.dims(shape_int32)?;
    let book = reader.codebook()?;
    let bits = index_bits(book.len());
    let packed = reader.take(packed_len(total, bits)?, "packed weight indexes")?;
    let mut codes = Vec::with_capacity(total);
    for index in unpack_msb_first(packed, total, bits) {
        match book.get(index as usize) {
            Some(&code) => codes.push(code),
            None => {
                return fail(format!(
                    "weight index {index} outside the {}-entry code-book",
                    book.len()
                ))
            }
        }
    }
    Ok(CodebookBlob { dims, codes })
}

/// Decodes an IDST type 2 buffer (sparse code-book). `asymmetric_alpha` is the `[min, scale]`
/// pairs when the weights are asymmetric: positions not listed then hold each channel's zero code.
pub fn decode_sparse_codebook(
    buffer: &[u8],
    shape_int32: bool,
    asymmetric_alpha: Option<&[f32]>,
) -> Result<CodebookBlob> {
    let mut reader = Reader {
        bytes: buffer,
        at: 0,
    };
    let (dims, total) = reader.dims(shape_int32)?;
    let nnz = u32::from_le_bytes(
        reader
            .take(4, "non-zero count")?
            .try_into()
            .expect("took 4 bytes"),
    ) as usize;
    let step_bits = reader.u8("step width")? as u32;
    if !(1..=8).contains(&step_bits) {
        return fail(format!(
            "sparse step width {step_bits} bits (1 to 8 expected)"
        ));
    }
    let steps = unpack_msb_first(
        reader.take(packed_len(nnz, step_bits)?, "packed steps")?,
        nnz,
        step_bits,
    );
    // MNN keeps the distinct code-book values only, sorted; indexes address that list.
    let mut book = reader.codebook()?;
    let data_bits = index_bits(book.len());
    book.dedup();
    let indexes = unpack_msb_first(
        reader.take(packed_len(nnz, data_bits)?, "packed values")?,
        nnz,
        data_bits,
    );
    let mut codes = vec![0i8; total];
    if let Some(alpha) = asymmetric_alpha {
        // Only per-channel pairs (one per dims[0]) define a zero code, as in MNN.
        let channels = dims[0] as usize;
        if channels > 0 && alpha.len() == 2 * channels {
            let lowest = -(1i32 << (data_bits - 1));
            let area = total / channels;
            for (channel, chunk) in codes.chunks_mut(area.max(1)).enumerate().take(channels) {
                let (min, scale) = (alpha[2 * channel], alpha[2 * channel + 1]);
                let zero = if scale > 1e-6 {
                    round_half_away((0.0 - min) / scale) as i32 + lowest
                } else {
                    lowest
                };
                chunk.fill(zero as i8);
            }
        }
    }
    let mut position = 0usize;
    for (step, index) in steps.into_iter().zip(indexes) {
        position += step as usize;
        let Some(&value) = book.get(index as usize) else {
            return fail(format!(
                "sparse value index {index} outside the {}-entry code-book",
                book.len()
            ));
        };
        match codes.get_mut(position) {
            Some(slot) => *slot = value,
            None => {
                return fail(format!(
                    "sparse position {position} outside {total} weights"
                ))
            }
        }
    }
    Ok(CodebookBlob { dims, codes })
}

/// C's `roundf`: halves round away from zero (Rust's `f32::round` does the same).
fn round_half_away(x: f32) -> f32 {
    x.round()
}

/// Symmetric quantization of one weight as MNN's encoder does it:
/// `q = clamp(round(w / alpha), -2^(b-1), 2^(b-1)-1)`, and `q = 0` when `alpha <= 1e-6` (or NaN).
pub fn quantize_symmetric(weight: f32, alpha: f32, bits: u32) -> i8 {
    let high = ((1i32 << (bits - 1)) - 1) as f32;
    let low = -(1i32 << (bits - 1)) as f32;
    // Written so that NaN scales also give 0.
    if alpha.is_nan() || alpha <= 1e-6 {
        return 0;
    }
    // f32::min/max return the non-NaN operand, as C's fmin/fmax do in MNN's encoder.
    round_half_away(weight / alpha).min(high).max(low) as i8
}

/// Encodes f32 weights with one symmetric scale per output channel into an `IDSTQuan` as MNN's
/// quantization tool writes it (docs/mnn-quantization.md §7.5): linear code-book type 1, or the
/// sparse type 2 when that is strictly smaller; `alpha = alphas`, `quantScale = 1`,
/// `aMaxOrBits = bits`, `shapeInt32` when a dim exceeds 65535; `readType = aMin = 0`.
/// `weights.len()` must be a multiple of `alphas.len()`; `bits` is 2..=8.
pub fn encode_idst_int8(weights: &[f32], alphas: &[f32], bits: u32) -> Result<IdstQuan> {
    if !(2..=8).contains(&bits) {
        return fail(format!(
            "cannot encode {bits}-bit weights (2 to 8 supported)"
        ));
    }
    if alphas.is_empty() || weights.is_empty() || !weights.len().is_multiple_of(alphas.len()) {
        return fail(format!(
            "{} weights do not split into {} channels",
            weights.len(),
            alphas.len()
        ));
    }
    let channels = alphas.len();
    let area = weights.len() / channels;
    if channels > u32::MAX as usize || area > u32::MAX as usize {
        return fail("too many weights for an IDST header");
    }
    let codes: Vec<i8> = weights
        .chunks(area)
        .zip(alphas)
        .flat_map(|(chunk, &alpha)| {
            chunk
                .iter()
                .map(move |&w| quantize_symmetric(w, alpha, bits))
        })
        .collect();
    let shape_int32 = channels > 0xffff || area > 0xffff;
    let dense = encode_dense_codebook(&codes, channels as u32, area as u32, bits, shape_int32);
    let sparse = encode_sparse_codebook(&codes, channels as u32, area as u32, bits, shape_int32);
    let (idst_type, buffer) = match sparse {
        Some(sparse) if sparse.len() < dense.len() => (2, sparse),
        _ => (1, dense),
    };
    Ok(IdstQuan {
        buffer: Some(buffer.into_iter().map(|b| b as i8).collect()),
        alpha: Some(alphas.to_vec()),
        type_: idst_type,
        quant_scale: 1.0,
        a_max_or_bits: bits as i32,
        shape_int32,
        ..Default::default()
    })
}

fn write_dims(out: &mut Vec<u8>, dims: &[u32], shape_int32: bool) {
    out.push(dims.len() as u8);
    for &d in dims {
        if shape_int32 {
            out.extend_from_slice(&d.to_le_bytes());
        } else {
            out.extend_from_slice(&(d as u16).to_le_bytes());
        }
    }
}

/// The linear code-book `-2^(b-1) ..= 2^(b-1)-1` (count byte 0 stands for 256).
fn write_linear_codebook(out: &mut Vec<u8>, bits: u32) {
    let count = 1usize << bits;
    out.push(count as u8);
    let low = -(1i32 << (bits - 1));
    out.extend((0..count as i32).map(|i| (low + i) as i8 as u8));
}

/// Type 1: dims, linear code-book, packed indexes `q + 2^(b-1)`.
pub fn encode_dense_codebook(
    codes: &[i8],
    channels: u32,
    area: u32,
    bits: u32,
    shape_int32: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(codes.len() + 300);
    write_dims(&mut out, &[channels, area], shape_int32);
    write_linear_codebook(&mut out, bits);
    let offset = 1i32 << (bits - 1);
    out.extend(pack_msb_first(
        codes.iter().map(|&q| (q as i32 + offset) as u8),
        bits,
    ));
    out
}

/// Type 2: dims, nnz, step width, packed steps, linear code-book, packed value indexes. The step
/// width is the one (2..=8 bits) giving the smallest payload; a filler entry holding the zero
/// code is inserted whenever a gap reaches `2^stepBits - 1`. `None` when all codes are zero.
pub fn encode_sparse_codebook(
    codes: &[i8],
    channels: u32,
    area: u32,
    bits: u32,
    shape_int32: bool,
) -> Option<Vec<u8>> {
    let entries_for = |step_bits: u32| {
        let max_step = (1usize << step_bits) - 1;
        let mut entries = Vec::new();
        let mut previous = 0usize;
        for (i, &q) in codes.iter().enumerate() {
            if q != 0 {
                entries.push(((i - previous) as u8, q));
                previous = i;
            }
            if i - previous >= max_step {
                entries.push(((i - previous) as u8, 0));
                previous = i;
            }
        }
        entries
    };
    let mut best: Option<(usize, u32)> = None;
    for step_bits in 2..=8 {
        let nnz = entries_for(step_bits).len();
        let size = (nnz * step_bits as usize).div_ceil(8) + (nnz * bits as usize).div_ceil(8);
        if best.is_none_or(|(best_size, _)| size < best_size) {
            best = Some((size, step_bits));
        }
    }
    let (_, step_bits) = best?;
    let entries = entries_for(step_bits);
    if entries.is_empty() {
        return None;
    }
    let offset = 1i32 << (bits - 1);
    let mut out = Vec::new();
    write_dims(&mut out, &[channels, area], shape_int32);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.push(step_bits as u8);
    out.extend(pack_msb_first(
        entries.iter().map(|&(step, _)| step),
        step_bits,
    ));
    write_linear_codebook(&mut out, bits);
    out.extend(pack_msb_first(
        entries.iter().map(|&(_, q)| (q as i32 + offset) as u8),
        bits,
    ));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_bits_matches_ceil_log2() {
        assert_eq!(index_bits(1), 1);
        assert_eq!(index_bits(2), 1);
        assert_eq!(index_bits(3), 2);
        assert_eq!(index_bits(16), 4);
        assert_eq!(index_bits(17), 5);
        assert_eq!(index_bits(256), 8);
    }

    #[test]
    fn msb_first_packing_by_hand() {
        // 3-bit values 5 (101), 2 (010), 7 (111): 10101011 1xxxxxxx.
        assert_eq!(pack_msb_first([5, 2, 7], 3), vec![0b1010_1011, 0b1000_0000]);
        assert_eq!(
            unpack_msb_first(&[0b1010_1011, 0b1000_0000], 3, 3),
            vec![5, 2, 7]
        );
        // 8 bits: each value is its own byte.
        let bytes = [0x00, 0xa5, 0x01, 0x80, 0xff];
        assert_eq!(pack_msb_first(bytes, 8), bytes.to_vec());
        assert_eq!(unpack_msb_first(&bytes, 5, 8), bytes.to_vec());
    }

    #[test]
    fn quantize_rounds_half_away_and_clamps() {
        assert_eq!(quantize_symmetric(2.5, 1.0, 8), 3);
        assert_eq!(quantize_symmetric(-2.5, 1.0, 8), -3);
        assert_eq!(quantize_symmetric(1000.0, 1.0, 8), 127);
        assert_eq!(quantize_symmetric(-1000.0, 1.0, 8), -128);
        assert_eq!(quantize_symmetric(5.0, 1.0, 4), 5);
        assert_eq!(quantize_symmetric(9.0, 1.0, 4), 7);
        assert_eq!(quantize_symmetric(3.0, 1e-7, 8), 0);
        assert_eq!(quantize_symmetric(3.0, f32::NAN, 8), 0);
    }
}
