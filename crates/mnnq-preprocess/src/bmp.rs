//! Palette BMPs (1, 4 and 8 bits per pixel) with stb_image v2.22's rules. The `stb_image_rust`
//! port declares its BMP palette with the two dimensions swapped and panics on any palette
//! index above 3, so these files are decoded here; 16/24/32-bit BMPs still go to the port.
//!
//! As in stb, reads past the end of the file give 0 (a truncated BMP decodes, padded with the
//! palette's first colour), rows are stored bottom-up unless the height is negative, and a
//! palette index beyond the palette's size gives black here (stb reads uninitialised memory).

use crate::decode::{check_dimensions, RgbaImage};

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let byte = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos = (self.pos + 1).min(self.bytes.len());
        byte
    }
    fn u16(&mut self) -> u32 {
        u32::from(self.u8()) | (u32::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        self.u16() | (self.u16() << 16)
    }
    /// stb's skip: a negative count jumps to the end.
    fn skip(&mut self, n: i64) {
        self.pos = if n < 0 {
            self.bytes.len()
        } else {
            (self.pos + n as usize).min(self.bytes.len())
        };
    }
}

/// `Some` if this is a BMP with fewer than 16 bits per pixel (decoded here), `None` for any other
/// file (left to the port, which also reports malformed BMP headers).
pub(crate) fn decode_palette_bmp(bytes: &[u8]) -> Option<Result<RgbaImage, String>> {
    if bytes.len() < 30 || &bytes[..2] != b"BM" {
        return None;
    }
    let mut r = Reader { bytes, pos: 10 };
    let offset = i64::from(r.u32());
    let header_size = r.u32();
    if ![12, 40, 56, 108, 124].contains(&header_size) {
        return None;
    }
    let (width, height_signed) = if header_size == 12 {
        (r.u16(), i64::from(r.u16()))
    } else {
        (r.u32(), i64::from(r.u32() as i32))
    };
    let planes = r.u16();
    let bits = r.u16();
    if bits >= 16 {
        return None;
    }
    Some(decode(
        &mut r,
        offset,
        i64::from(header_size),
        width,
        height_signed,
        planes,
        bits,
    ))
}

fn decode(
    r: &mut Reader,
    offset: i64,
    header_size: i64,
    width: u32,
    height_signed: i64,
    planes: u32,
    bits: u32,
) -> Result<RgbaImage, String> {
    if planes != 1 {
        return Err("bad BMP: plane count is not 1".into());
    }
    if header_size != 12 {
        let compression = r.u32();
        if compression == 1 || compression == 2 {
            return Err("run-length encoded BMP is not supported (as in stb_image)".into());
        }
    }
    let flip = height_signed > 0;
    let height = height_signed.unsigned_abs();
    check_dimensions(u64::from(width), height)?;
    let (w, h) = (width as usize, height as usize);
    let palette_size = if header_size == 12 {
        (offset - 14 - 24) / 3
    } else {
        (offset - 14 - header_size) >> 2
    };
    if palette_size <= 0 || palette_size > 256 {
        return Err(format!(
            "corrupt BMP: palette of {palette_size} entries (offset {offset})"
        ));
    }
    let row_bytes = match bits {
        1 => w.div_ceil(8),
        4 => w.div_ceil(2),
        8 => w,
        _ => return Err(format!("BMP with {bits} bits per pixel is not supported")),
    };
    // Palette entries follow the header (B, G, R[, reserved]).
    r.pos = (14 + header_size as usize).min(r.bytes.len());
    let mut palette = [[0u8; 3]; 256];
    for entry in palette.iter_mut().take(palette_size as usize) {
        let (blue, green, red) = (r.u8(), r.u8(), r.u8());
        if header_size != 12 {
            r.u8();
        }
        *entry = [red, green, blue];
    }
    let entry_bytes = if header_size == 12 { 3 } else { 4 };
    r.skip(offset - 14 - header_size - palette_size * entry_bytes);
    let padding = (4 - row_bytes % 4) % 4;
    let mut pixels = Vec::with_capacity(w * h * 4);
    let put = |index: usize, pixels: &mut Vec<u8>| {
        let [red, green, blue] = palette[index];
        pixels.extend_from_slice(&[red, green, blue, 255]);
    };
    for _ in 0..h {
        match bits {
            1 => {
                let mut bit = 7i32;
                let mut v = r.u8();
                for i in 0..w {
                    put(usize::from((v >> bit) & 1), &mut pixels);
                    if i + 1 == w {
                        break;
                    }
                    bit -= 1;
                    if bit < 0 {
                        bit = 7;
                        v = r.u8();
                    }
                }
            }
            _ => {
                let mut i = 0;
                while i < w {
                    let byte = r.u8();
                    let (first, second) = if bits == 4 {
                        (byte >> 4, byte & 15)
                    } else {
                        (byte, 0)
                    };
                    put(usize::from(first), &mut pixels);
                    if i + 1 == w {
                        break;
                    }
                    let second = if bits == 8 { r.u8() } else { second };
                    put(usize::from(second), &mut pixels);
                    i += 2;
                }
            }
        }
        r.skip(padding as i64);
    }
    if flip {
        let stride = w * 4;
        for y in 0..h / 2 {
            let (top, bottom) = pixels.split_at_mut((h - 1 - y) * stride);
            top[y * stride..(y + 1) * stride].swap_with_slice(&mut bottom[..stride]);
        }
    }
    Ok(RgbaImage {
        width: w,
        height: h,
        pixels,
    })
}
