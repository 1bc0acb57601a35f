//! GIF, first frame only, with stb_image v2.22's rules (the `stb_image_rust` port decodes GIF
//! wrongly: a plain 1x1 red GIF comes out transparent black).
//!
//! stb's first frame: the canvas is the logical screen, all pixels start as (0, 0, 0, 0); the
//! frame's pixels are written only where the palette entry is opaque (alpha > 128; the
//! transparent index of a graphic-control extension has alpha 0); if the background index is
//! non-zero, pixels the frame did not touch take the global palette's background colour with
//! alpha 255 (and, as stb does, with red and blue swapped). Interlaced frames are walked in the 4-pass order.

use crate::decode::{check_dimensions, RgbaImage};

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let byte = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| "GIF data is truncated".to_string())?;
        self.pos += 1;
        Ok(byte)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from(self.u8()?) | (u16::from(self.u8()?) << 8))
    }
    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.pos + n > self.bytes.len() {
            return Err("GIF data is truncated".into());
        }
        self.pos += n;
        Ok(())
    }
    /// Skips data sub-blocks up to and including the zero-length terminator.
    fn skip_sub_blocks(&mut self) -> Result<(), String> {
        loop {
            let len = self.u8()?;
            if len == 0 {
                return Ok(());
            }
            self.skip(usize::from(len))?;
        }
    }
}

pub(crate) fn is_gif(bytes: &[u8]) -> bool {
    bytes.len() >= 6
        && &bytes[..4] == b"GIF8"
        && (bytes[4] == b'7' || bytes[4] == b'9')
        && bytes[5] == b'a'
}

/// Palette entries as RGBA; entries past the table's size stay (0, 0, 0, 0) as in stb.
fn read_palette(
    r: &mut Reader,
    entries: usize,
    transparent: Option<u8>,
) -> Result<[[u8; 4]; 256], String> {
    let mut palette = [[0u8; 4]; 256];
    for (i, entry) in palette.iter_mut().enumerate().take(entries) {
        let (red, green, blue) = (r.u8()?, r.u8()?, r.u8()?);
        let alpha = if transparent == Some(i as u8) { 0 } else { 255 };
        *entry = [red, green, blue, alpha];
    }
    Ok(palette)
}

/// Position of the next pixel in the frame, following stb's interlace walk.
struct Cursor {
    x: usize,
    y: usize,
    start_x: usize,
    start_y: usize,
    max_x: usize,
    max_y: usize,
    step: usize,
    parse: u32,
    /// Canvas width in pixels (one row).
    line: usize,
}

pub(crate) fn decode_gif(bytes: &[u8]) -> Result<RgbaImage, String> {
    let mut r = Reader { bytes, pos: 6 };
    let width = usize::from(r.u16()?);
    let height = usize::from(r.u16()?);
    let flags = r.u8()?;
    let background_index = r.u8()?;
    let _aspect = r.u8()?;
    check_dimensions(width as u64, height as u64)?;
    let mut global = if flags & 0x80 != 0 {
        Some(read_palette(&mut r, 2 << (flags & 7), None)?)
    } else {
        None
    };
    let mut canvas = vec![0u8; width * height * 4];
    let mut touched = vec![false; width * height];
    let mut transparent: Option<u8> = None;
    loop {
        match r.u8()? {
            0x21 => {
                let label = r.u8()?;
                if label == 0xF9 {
                    let len = r.u8()?;
                    if len == 4 {
                        let extension_flags = r.u8()?;
                        let _delay = r.u16()?;
                        // stb restores the previous transparent entry's alpha, then sets the new one.
                        if let (Some(t), Some(pal)) = (transparent, global.as_mut()) {
                            pal[usize::from(t)][3] = 255;
                        }
                        if extension_flags & 1 != 0 {
                            let t = r.u8()?;
                            transparent = Some(t);
                            if let Some(pal) = global.as_mut() {
                                pal[usize::from(t)][3] = 0;
                            }
                        } else {
                            r.skip(1)?;
                            transparent = None;
                        }
                    } else {
                        r.skip(usize::from(len))?;
                    }
                }
                r.skip_sub_blocks()?;
            }
            0x2C => {
                let x = usize::from(r.u16()?);
                let y = usize::from(r.u16()?);
                let w = usize::from(r.u16()?);
                let h = usize::from(r.u16()?);
                if x + w > width || y + h > height {
                    return Err("GIF frame lies outside the image".into());
                }
                let local_flags = r.u8()?;
                let interlaced = local_flags & 0x40 != 0;
                let line = width;
                let mut cursor = Cursor {
                    x,
                    y: y * line,
                    start_x: x,
                    start_y: y * line,
                    max_x: x + w,
                    max_y: (y + h) * line,
                    step: if interlaced { 8 * line } else { line },
                    parse: if interlaced { 3 } else { 0 },
                    line,
                };
                if w == 0 {
                    cursor.y = cursor.max_y;
                }
                let palette = if local_flags & 0x80 != 0 {
                    read_palette(&mut r, 2 << (local_flags & 7), transparent)?
                } else if let Some(pal) = global {
                    pal
                } else {
                    return Err("GIF has no colour table".into());
                };
                decode_raster(&mut r, &palette, &mut cursor, &mut canvas, &mut touched)?;
                if background_index > 0 {
                    // stb copies its palette entry, stored B, G, R, A, straight into the RGBA
                    // canvas, so the background colour comes out with red and blue swapped.
                    let [red, green, blue, _] = global
                        .map(|p| p[usize::from(background_index)])
                        .unwrap_or([0; 4]);
                    let fill = [blue, green, red, 255];
                    for (pixel, done) in canvas.chunks_exact_mut(4).zip(&touched) {
                        if !done {
                            pixel.copy_from_slice(&fill);
                        }
                    }
                }
                return Ok(RgbaImage {
                    width,
                    height,
                    pixels: canvas,
                });
            }
            0x3B => return Err("GIF has no image".into()),
            other => return Err(format!("unknown GIF block 0x{other:02x}")),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Code {
    prefix: i16,
    first: u8,
    suffix: u8,
}

fn decode_raster(
    r: &mut Reader,
    palette: &[[u8; 4]; 256],
    cursor: &mut Cursor,
    canvas: &mut [u8],
    touched: &mut [bool],
) -> Result<(), String> {
    let min_code_size = u32::from(r.u8()?);
    // stb accepts up to 12; above 8 the first codes index past a 256-entry palette (undefined
    // in C), so such files are refused here.
    if min_code_size > 8 {
        return Err("GIF code size above 8 is not supported".into());
    }
    let clear = 1usize << min_code_size;
    let mut codes = vec![Code::default(); 8192];
    for (i, code) in codes.iter_mut().enumerate().take(clear) {
        *code = Code {
            prefix: -1,
            first: i as u8,
            suffix: i as u8,
        };
    }
    let mut code_size = min_code_size + 1;
    let mut code_mask = (1usize << code_size) - 1;
    let mut available = clear + 2;
    let mut old_code: i32 = -1;
    let mut seen_clear = false;
    let (mut bits, mut valid_bits, mut block_left) = (0u32, 0u32, 0usize);
    let mut chain = Vec::with_capacity(4096);
    loop {
        if valid_bits < code_size {
            if block_left == 0 {
                block_left = usize::from(r.u8()?);
                if block_left == 0 {
                    return Ok(());
                }
            }
            block_left -= 1;
            bits |= u32::from(r.u8()?) << valid_bits;
            valid_bits += 8;
            continue;
        }
        let code = (bits as usize) & code_mask;
        bits >>= code_size;
        valid_bits -= code_size;
        if code == clear {
            code_size = min_code_size + 1;
            code_mask = (1 << code_size) - 1;
            available = clear + 2;
            old_code = -1;
            seen_clear = true;
        } else if code == clear + 1 {
            r.skip(block_left)?;
            return r.skip_sub_blocks();
        } else if code <= available {
            if !seen_clear {
                return Err("corrupt GIF: no clear code".into());
            }
            if old_code >= 0 {
                let old = old_code as usize;
                let index = available;
                available += 1;
                if available > 8192 {
                    return Err("corrupt GIF: too many codes".into());
                }
                let first = codes[old].first;
                // stb compares with the incremented count; a code equal to the entry being
                // created (the KwKwK case) reads that entry's `first`, which is `first`.
                let suffix = if code == available || code == index {
                    first
                } else {
                    codes[code].first
                };
                codes[index] = Code {
                    prefix: old as i16,
                    first,
                    suffix,
                };
            } else if code == available {
                return Err("corrupt GIF: illegal code in raster".into());
            }
            // Emit the code's string: follow the prefixes, then write in forward order.
            chain.clear();
            let mut c = code as i32;
            while c >= 0 {
                chain.push(codes[c as usize].suffix);
                c = i32::from(codes[c as usize].prefix);
                if chain.len() > 8192 {
                    return Err("corrupt GIF: code chain loops".into());
                }
            }
            for &index in chain.iter().rev() {
                emit(cursor, palette[usize::from(index)], canvas, touched);
            }
            if available & code_mask == 0 && available <= 0x0FFF {
                code_size += 1;
                code_mask = (1 << code_size) - 1;
            }
            old_code = code as i32;
        } else {
            return Err("corrupt GIF: illegal code in raster".into());
        }
    }
}

fn emit(cursor: &mut Cursor, colour: [u8; 4], canvas: &mut [u8], touched: &mut [bool]) {
    if cursor.y >= cursor.max_y {
        return;
    }
    let pixel = cursor.y + cursor.x;
    touched[pixel] = true;
    if colour[3] > 128 {
        canvas[pixel * 4..pixel * 4 + 4].copy_from_slice(&colour);
    }
    cursor.x += 1;
    if cursor.x >= cursor.max_x {
        cursor.x = cursor.start_x;
        cursor.y += cursor.step;
        // Interlaced: passes start at rows 0, 4, 2, 1 with steps 8, 8, 4, 2.
        while cursor.y >= cursor.max_y && cursor.parse > 0 {
            cursor.step = (1 << cursor.parse) * cursor.line;
            cursor.y = cursor.start_y + (cursor.step >> 1);
            cursor.parse -= 1;
        }
    }
}
