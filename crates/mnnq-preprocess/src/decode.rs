//! Image decoding to 8-bit RGBA with stb_image semantics (MNN's tool calls
//! `stbi_load(file, &w, &h, &comp, 4)` from stb_image v2.22).
//!
//! JPEG, PNG (16-bit reduced to 8), 16/24/32-bit BMP, TGA and PSD go through the
//! `stb_image_rust` crate, a machine translation of stb_image 2.27 whose decoders match 2.22 for
//! these formats (all 236 fixture images decode exactly as MNN's decoder). That port lacks PNM
//! and Radiance HDR and gets GIF and palette BMP wrong (a palette array with swapped
//! dimensions); those are decoded here with stb 2.22's rules (PNM: binary P5/P6 with maxval
//! <= 255; HDR tone-mapped with gamma 2.2, scale 1; GIF: first frame, see `gif.rs`; palette BMP:
//! see `bmp.rs`). Checked against the C stb_image 2.22 that MNN ships, on generated files:
//! 300 GIFs, 60 BMPs, 150 PNGs (all colour types and bit depths, interlaced, tRNS), 20 TGAs,
//! 36 PNMs and 30 HDRs decode identically, except where C reads uninitialised memory (palette
//! indices past the palette: here they give zeros) and truncated PNMs (an error here).
//! Softimage PIC is not supported.
//!
//! Safety of the port: it is unsafe, transpiled C that keeps its error message and a few
//! scratch tables in `static mut`s, so two decodes at the same time would race. All calls into
//! it go through one global lock; it may also panic on hostile input (arithmetic overflow
//! checks in debug builds), so each call is wrapped in `catch_unwind`. Dimensions are checked
//! with `stbi_info` before the pixel buffer is allocated.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::ImageError;

/// Largest image we agree to decode, in pixels (the RGBA buffer is 4 bytes per pixel).
/// 2^26 pixels = 256 MiB of RGBA, e.g. 8192 x 8192.
pub const MAX_PIXELS: u64 = 1 << 26;

/// Decoded picture: `width * height` pixels, 4 bytes each (R, G, B, A), rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbaImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Serialises every call into `stb_image_rust` (see the module comment).
static STB_LOCK: Mutex<()> = Mutex::new(());

/// Reads and decodes one image file.
pub fn decode_file(path: &Path) -> Result<RgbaImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_bytes(&bytes, path)
}

/// Decodes an in-memory image file; `path` only names it in errors.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbaImage, ImageError> {
    let path_buf = path.to_path_buf();
    if bytes.is_empty() {
        return Err(ImageError::Empty { path: path_buf });
    }
    if bytes.len() > i32::MAX as usize {
        return Err(ImageError::Decode {
            path: path_buf,
            reason: "file larger than 2 GiB".into(),
        });
    }
    // stb tests PNM and HDR before TGA (which has no magic number); no other format it knows
    // starts with these bytes, so testing them first keeps stb's detection order.
    if is_pnm(bytes) {
        return decode_pnm(bytes).map_err(|reason| decode_error(path_buf, reason));
    }
    if is_hdr(bytes) {
        return decode_hdr(bytes).map_err(|reason| decode_error(path_buf, reason));
    }
    if crate::gif::is_gif(bytes) {
        return crate::gif::decode_gif(bytes).map_err(|reason| decode_error(path_buf, reason));
    }
    if let Some(result) = crate::bmp::decode_palette_bmp(bytes) {
        return result.map_err(|reason| decode_error(path_buf, reason));
    }
    if is_softimage_pic(bytes) {
        return Err(decode_error(
            path_buf,
            "Softimage PIC files are not supported (convert to PNG)".into(),
        ));
    }
    decode_with_stb(bytes, path_buf)
}

/// stb's PIC test: a 4-byte magic, then "PICT" at offset 88.
fn is_softimage_pic(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x53, 0x80, 0xF6, 0x34]) && bytes.get(88..92) == Some(b"PICT")
}

fn decode_error(path: PathBuf, reason: String) -> ImageError {
    if reason.starts_with("too large") {
        ImageError::TooLarge { path, reason }
    } else {
        ImageError::Decode { path, reason }
    }
}

pub(crate) fn check_dimensions(width: u64, height: u64) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("image has no pixels ({width} x {height})"));
    }
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(format!(
            "too large: {width} x {height} pixels, the limit is {MAX_PIXELS} pixels"
        ));
    }
    Ok(())
}

fn decode_with_stb(bytes: &[u8], path: PathBuf) -> Result<RgbaImage, ImageError> {
    let _guard = STB_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let outcome = catch_unwind(AssertUnwindSafe(|| stb_decode_locked(bytes)));
    match outcome {
        Ok(Ok(image)) => Ok(image),
        Ok(Err(reason)) => Err(decode_error(path, reason)),
        Err(_) => Err(ImageError::Decode {
            path,
            reason: "the decoder gave up on malformed data (internal panic caught)".into(),
        }),
    }
}

/// Must only run while `STB_LOCK` is held.
fn stb_decode_locked(bytes: &[u8]) -> Result<RgbaImage, String> {
    let (mut width, mut height, mut components) = (0i32, 0i32, 0i32);
    let len = bytes.len() as i32;
    // SAFETY: the port only reads `len` bytes from the buffer and writes the three out
    // parameters; the global lock excludes concurrent use of its static state.
    let known = unsafe {
        stb_image_rust::stbi__g_failure_reason = "";
        stb_image_rust::stbi_info_from_memory(
            bytes.as_ptr(),
            len,
            &mut width,
            &mut height,
            &mut components,
        )
    };
    if known == 0 {
        return Err(stb_failure_reason("not an image format stb_image reads"));
    }
    // stb's `info` reports a top-down BMP's height as negative.
    check_dimensions(
        u64::from(width.unsigned_abs()),
        u64::from(height.unsigned_abs()),
    )?;
    // SAFETY: as above; a non-null result points to width*height*4 bytes allocated by the port.
    let data = unsafe {
        stb_image_rust::stbi_load_from_memory(
            bytes.as_ptr(),
            len,
            &mut width,
            &mut height,
            &mut components,
            stb_image_rust::STBI_rgb_alpha,
        )
    };
    if data.is_null() {
        return Err(stb_failure_reason("decoding failed"));
    }
    let result = (|| {
        let (w, h) = (width.max(0) as u64, height.max(0) as u64);
        check_dimensions(w, h)?;
        let size = (w * h * 4) as usize;
        // SAFETY: the port returned a buffer of exactly w*h*4 bytes for req_comp = 4.
        let pixels = unsafe { std::slice::from_raw_parts(data, size) }.to_vec();
        Ok(RgbaImage {
            width: w as usize,
            height: h as usize,
            pixels,
        })
    })();
    // SAFETY: `data` came from the port's allocator and is freed once.
    unsafe { stb_image_rust::c_runtime::free(data) };
    result
}

/// stb's last failure message, read under the lock.
fn stb_failure_reason(fallback: &str) -> String {
    // SAFETY: only called while `STB_LOCK` is held.
    let reason: &'static str = unsafe { stb_image_rust::stbi__g_failure_reason };
    if reason.is_empty() {
        fallback.to_string()
    } else {
        format!("{fallback}: {reason}")
    }
}

// ---------------------------------------------------------------------------------------------
// PNM (binary P5 gray / P6 RGB), as stb reads it.

fn is_pnm(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == b'P' && (bytes[1] == b'5' || bytes[1] == b'6')
}

/// Byte cursor mirroring stb's `get8` (returns 0 past the end) and end-of-file test.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn get8(&mut self) -> u8 {
        let byte = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos = (self.pos + 1).min(self.bytes.len());
        byte
    }
    fn at_eof(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

fn decode_pnm(bytes: &[u8]) -> Result<RgbaImage, String> {
    let gray = bytes[1] == b'5';
    let mut cursor = Cursor { bytes, pos: 2 };
    // stb keeps one look-ahead character `c`: the header numbers end at the first non-digit,
    // and the pixel data starts right after the single character that ended the max value.
    let mut c = cursor.get8();
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let read_number = |cursor: &mut Cursor, c: &mut u8| -> Result<u64, String> {
        loop {
            while !cursor.at_eof() && is_space(*c) {
                *c = cursor.get8();
            }
            if cursor.at_eof() || *c != b'#' {
                break;
            }
            while !cursor.at_eof() && *c != b'\n' && *c != b'\r' {
                *c = cursor.get8();
            }
        }
        if !c.is_ascii_digit() {
            return Err("PNM header: expected a number".to_string());
        }
        let mut value: u64 = 0;
        while !cursor.at_eof() && c.is_ascii_digit() {
            value = value
                .saturating_mul(10)
                .saturating_add(u64::from(*c - b'0'));
            *c = cursor.get8();
        }
        Ok(value)
    };
    let width = read_number(&mut cursor, &mut c)?;
    let height = read_number(&mut cursor, &mut c)?;
    let max_value = read_number(&mut cursor, &mut c)?;
    if max_value > 255 {
        return Err("PNM with max value > 255 is not 8-bit (stb_image refuses it)".into());
    }
    check_dimensions(width, height)?;
    let channels: usize = if gray { 1 } else { 3 };
    let pixel_count = (width * height) as usize;
    let data_start = cursor.pos;
    let data = bytes
        .get(data_start..data_start + pixel_count * channels)
        .ok_or_else(|| "PNM pixel data is truncated".to_string())?;
    let mut pixels = Vec::with_capacity(pixel_count * 4);
    for px in data.chunks_exact(channels) {
        if gray {
            pixels.extend_from_slice(&[px[0], px[0], px[0], 255]);
        } else {
            pixels.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
    }
    Ok(RgbaImage {
        width: width as usize,
        height: height as usize,
        pixels,
    })
}

// ---------------------------------------------------------------------------------------------
// Radiance HDR (RGBE), decoded to float then tone-mapped to 8 bit as stb's `hdr_to_ldr` does.

fn is_hdr(bytes: &[u8]) -> bool {
    bytes.starts_with(b"#?RADIANCE\n") || bytes.starts_with(b"#?RGBE\n")
}

fn decode_hdr(bytes: &[u8]) -> Result<RgbaImage, String> {
    let mut pos = 0usize;
    let next_line = |pos: &mut usize| -> &[u8] {
        let start = *pos;
        while *pos < bytes.len() && bytes[*pos] != b'\n' {
            *pos += 1;
        }
        let line = &bytes[start..*pos];
        *pos = (*pos + 1).min(bytes.len());
        line
    };
    next_line(&mut pos); // magic
    let mut valid_format = false;
    loop {
        if pos >= bytes.len() {
            return Err("HDR header has no end".into());
        }
        let line = next_line(&mut pos);
        if line.is_empty() {
            break;
        }
        if line == b"FORMAT=32-bit_rle_rgbe" {
            valid_format = true;
        }
    }
    if !valid_format {
        return Err("HDR format is not 32-bit_rle_rgbe".into());
    }
    let size_line = String::from_utf8_lossy(next_line(&mut pos)).into_owned();
    let parts: Vec<&str> = size_line.split_whitespace().collect();
    if parts.len() != 4 || parts[0] != "-Y" || parts[2] != "+X" {
        return Err("HDR size line is not '-Y height +X width'".into());
    }
    let height: u64 = parts[1]
        .parse()
        .map_err(|_| "HDR height is not a number".to_string())?;
    let width: u64 = parts[3]
        .parse()
        .map_err(|_| "HDR width is not a number".to_string())?;
    check_dimensions(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let truncated = || "HDR pixel data is truncated".to_string();
    let mut rgbe = vec![0u8; w * h * 4];
    if !(8..32768).contains(&w) {
        // Flat, not run-length encoded.
        let data = bytes.get(pos..pos + w * h * 4).ok_or_else(truncated)?;
        rgbe.copy_from_slice(data);
    } else {
        let mut scanline = vec![0u8; w * 4];
        for row in 0..h {
            let head = bytes.get(pos..pos + 4).ok_or_else(truncated)?;
            if head[0] != 2 || head[1] != 2 || head[2] & 0x80 != 0 {
                // Not run-length encoded: the rest of the image is flat, starting here.
                let remaining = (h - row) * w * 4;
                let data = bytes.get(pos..pos + remaining).ok_or_else(truncated)?;
                rgbe[row * w * 4..].copy_from_slice(data);
                break;
            }
            let encoded_width = (usize::from(head[2]) << 8) | usize::from(head[3]);
            if encoded_width != w {
                return Err("HDR scanline width does not match the image width".into());
            }
            pos += 4;
            for channel in 0..4 {
                let mut i = 0;
                while i < w {
                    let count_byte = *bytes.get(pos).ok_or_else(truncated)?;
                    pos += 1;
                    if count_byte > 128 {
                        let run = usize::from(count_byte - 128);
                        let value = *bytes.get(pos).ok_or_else(truncated)?;
                        pos += 1;
                        if run > w - i {
                            return Err("HDR run-length data is corrupt".into());
                        }
                        for _ in 0..run {
                            scanline[i * 4 + channel] = value;
                            i += 1;
                        }
                    } else {
                        let run = usize::from(count_byte);
                        if run == 0 || run > w - i {
                            return Err("HDR run-length data is corrupt".into());
                        }
                        for _ in 0..run {
                            scanline[i * 4 + channel] = *bytes.get(pos).ok_or_else(truncated)?;
                            pos += 1;
                            i += 1;
                        }
                    }
                }
            }
            rgbe[row * w * 4..(row + 1) * w * 4].copy_from_slice(&scanline);
        }
    }
    // stb: `f = ldexp(1, e - 136)`, rgb = byte * f, alpha 1; then to 8 bit with
    // `pow(v * scale, 1/2.2) * 255 + 0.5` (scale 1), clamped, truncated; alpha `v * 255 + 0.5`.
    let gamma_inverse = 1.0f32 / 2.2f32;
    let to_ldr = |v: f32| -> u8 {
        let z = (f64::from(v)).powf(f64::from(gamma_inverse)) as f32 * 255.0 + 0.5;
        z.clamp(0.0, 255.0) as u8
    };
    let mut pixels = Vec::with_capacity(w * h * 4);
    for px in rgbe.chunks_exact(4) {
        if px[3] != 0 {
            let factor = 2f32.powi(i32::from(px[3]) - 136);
            pixels.push(to_ldr(f32::from(px[0]) * factor));
            pixels.push(to_ldr(f32::from(px[1]) * factor));
            pixels.push(to_ldr(f32::from(px[2]) * factor));
        } else {
            pixels.extend_from_slice(&[0, 0, 0]);
        }
        pixels.push(255);
    }
    Ok(RgbaImage {
        width: w,
        height: h,
        pixels,
    })
}
