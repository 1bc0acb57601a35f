//! Centre crop and corner-aligned bilinear stretch, reproducing MNN's x86 `ImageProcess`.
//!
//! MNN builds the destination->source transform with a Skia-derived 4-point perspective solver
//! (`Matrix::setPolyToPoly`), maps the first pixel of each 512-pixel row tile and the point one
//! past its end, then walks the tile adding `delta / count` per pixel in f32. Samples are
//! `(1-fx)(1-fy)c00 + fx(1-fy)c01 + fy(1-fx)c10 + fx*fy*c11` in f32, clamped to [0, 255] and
//! truncated (SSE4.1 path). Because truncation turns sub-ulp coordinate differences into whole
//! levels, the transform is computed with the same float operations as MNN's solver rather than
//! the closed form `sx = dx * (W-1)/(w-1)`.

use crate::decode::RgbaImage;

/// Pixels per row tile in MNN's `ImageProcess` (the step restarts at each tile).
const TILE: usize = 512;

/// 3x3 matrix, Skia layout: `[sx, kx, tx, ky, sy, ty, p0, p1, p2]`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Matrix {
    m: [f32; 9],
}

const SCALE_X: usize = 0;
const SKEW_X: usize = 1;
const TRANS_X: usize = 2;
const SKEW_Y: usize = 3;
const SCALE_Y: usize = 4;
const TRANS_Y: usize = 5;
const PERSP_0: usize = 6;
const PERSP_1: usize = 7;
const PERSP_2: usize = 8;

const TRANSLATE_MASK: u8 = 1;
const SCALE_MASK: u8 = 2;
const AFFINE_MASK: u8 = 4;
const PERSPECTIVE_MASK: u8 = 8;

impl Matrix {
    /// Type bits as Skia computes them from the values (translate, scale, affine, perspective).
    fn type_mask(&self) -> u8 {
        let m = &self.m;
        if m[PERSP_0] != 0.0 || m[PERSP_1] != 0.0 || m[PERSP_2] != 1.0 {
            return TRANSLATE_MASK | SCALE_MASK | AFFINE_MASK | PERSPECTIVE_MASK;
        }
        let mut mask = 0;
        if m[TRANS_X] != 0.0 || m[TRANS_Y] != 0.0 {
            mask |= TRANSLATE_MASK;
        }
        // Skia compares the bit patterns with -0.0 folded onto 0.0, i.e. plain float equality.
        if m[SKEW_X] != 0.0 || m[SKEW_Y] != 0.0 {
            mask |= AFFINE_MASK | SCALE_MASK;
        } else if m[SCALE_X] != 1.0 || m[SCALE_Y] != 1.0 {
            mask |= SCALE_MASK;
        }
        mask
    }

    fn is_identity(&self) -> bool {
        self.type_mask() == 0
    }

    /// Skia's `Poly4Proc`: the matrix mapping the unit square onto the four points.
    fn poly4(points: &[[f32; 2]; 4]) -> Option<Matrix> {
        let [p0, p1, p2, p3] = *points;
        let x0 = p2[0] - p0[0];
        let y0 = p2[1] - p0[1];
        let x1 = p2[0] - p1[0];
        let y1 = p2[1] - p1[1];
        let x2 = p2[0] - p3[0];
        let y2 = p2[1] - p3[1];
        let is_zero = |x: f32| x * x == 0.0;
        let x_dominates = |x: f32, y: f32| {
            if x > 0.0 {
                if y > 0.0 {
                    x > y
                } else {
                    x > -y
                }
            } else if y > 0.0 {
                -x > y
            } else {
                x < y
            }
        };
        let a1 = if x_dominates(x2, y2) {
            let denom = x1 * y2 / x2 - y1;
            if is_zero(denom) {
                return None;
            }
            (((x0 - x1) * y2 / x2) - y0 + y1) / denom
        } else {
            let denom = x1 - y1 * x2 / y2;
            if is_zero(denom) {
                return None;
            }
            (x0 - x1 - (y0 - y1) * x2 / y2) / denom
        };
        let a2 = if x_dominates(x1, y1) {
            let denom = y2 - x2 * y1 / x1;
            if is_zero(denom) {
                return None;
            }
            (y0 - y2 - (x0 - x2) * y1 / x1) / denom
        } else {
            let denom = y2 * x1 / y1 - x2;
            if is_zero(denom) {
                return None;
            }
            ((y0 - y2) * x1 / y1 - x0 + x2) / denom
        };
        let mut m = [0.0f32; 9];
        m[SCALE_X] = a2 * p3[0] + p3[0] - p0[0];
        m[SKEW_Y] = a2 * p3[1] + p3[1] - p0[1];
        m[PERSP_0] = a2;
        m[SKEW_X] = a1 * p1[0] + p1[0] - p0[0];
        m[SCALE_Y] = a1 * p1[1] + p1[1] - p0[1];
        m[PERSP_1] = a1;
        m[TRANS_X] = p0[0];
        m[TRANS_Y] = p0[1];
        m[PERSP_2] = 1.0;
        Some(Matrix { m })
    }

    /// Skia's `invert` (double-precision determinant and cross products). Also returns the
    /// type mask Skia stores on the result, which `concat` dispatches on.
    fn invert(&self) -> Option<(Matrix, u8)> {
        let mask = self.type_mask();
        let m = &self.m;
        if mask == 0 {
            return Some((IDENTITY, 0));
        }
        if mask & !(SCALE_MASK | TRANSLATE_MASK) == 0 {
            let mut inv = IDENTITY;
            if mask & SCALE_MASK != 0 {
                if m[SCALE_X] == 0.0 || m[SCALE_Y] == 0.0 {
                    return None;
                }
                let inv_x = 1.0 / m[SCALE_X];
                let inv_y = 1.0 / m[SCALE_Y];
                inv.m[SCALE_X] = inv_x;
                inv.m[SCALE_Y] = inv_y;
                inv.m[TRANS_X] = -m[TRANS_X] * inv_x;
                inv.m[TRANS_Y] = -m[TRANS_Y] * inv_y;
            } else {
                inv.m[TRANS_X] = -m[TRANS_X];
                inv.m[TRANS_Y] = -m[TRANS_Y];
            }
            return Some((inv, mask));
        }
        let d = |v: f32| f64::from(v);
        let dcross = |a: f64, b: f64, c: f64, e: f64| a * b - c * e;
        let perspective = mask & PERSPECTIVE_MASK != 0;
        let det = if perspective {
            d(m[SCALE_X]) * dcross(d(m[SCALE_Y]), d(m[PERSP_2]), d(m[TRANS_Y]), d(m[PERSP_1]))
                + d(m[SKEW_X]) * dcross(d(m[TRANS_Y]), d(m[PERSP_0]), d(m[SKEW_Y]), d(m[PERSP_2]))
                + d(m[TRANS_X]) * dcross(d(m[SKEW_Y]), d(m[PERSP_1]), d(m[SCALE_Y]), d(m[PERSP_0]))
        } else {
            dcross(d(m[SCALE_X]), d(m[SCALE_Y]), d(m[SKEW_X]), d(m[SKEW_Y]))
        };
        let inv_det = 1.0 / det;
        if inv_det == 0.0 || !inv_det.is_finite() {
            return None;
        }
        // f32 cross product scaled in f64, as Skia's `scross_dscale`.
        let scross = |a: f32, b: f32, c: f32, e: f32| ((a * b - c * e) as f64 * inv_det) as f32;
        let dcross_scale =
            |a: f32, b: f32, c: f32, e: f32| (dcross(d(a), d(b), d(c), d(e)) * inv_det) as f32;
        let mut r = [0.0f32; 9];
        if perspective {
            r[SCALE_X] = scross(m[SCALE_Y], m[PERSP_2], m[TRANS_Y], m[PERSP_1]);
            r[SKEW_X] = scross(m[TRANS_X], m[PERSP_1], m[SKEW_X], m[PERSP_2]);
            r[TRANS_X] = scross(m[SKEW_X], m[TRANS_Y], m[TRANS_X], m[SCALE_Y]);
            r[SKEW_Y] = scross(m[TRANS_Y], m[PERSP_0], m[SKEW_Y], m[PERSP_2]);
            r[SCALE_Y] = scross(m[SCALE_X], m[PERSP_2], m[TRANS_X], m[PERSP_0]);
            r[TRANS_Y] = scross(m[TRANS_X], m[SKEW_Y], m[SCALE_X], m[TRANS_Y]);
            r[PERSP_0] = scross(m[SKEW_Y], m[PERSP_1], m[SCALE_Y], m[PERSP_0]);
            r[PERSP_1] = scross(m[SKEW_X], m[PERSP_0], m[SCALE_X], m[PERSP_1]);
            r[PERSP_2] = scross(m[SCALE_X], m[SCALE_Y], m[SKEW_X], m[SKEW_Y]);
        } else {
            r[SCALE_X] = (d(m[SCALE_Y]) * inv_det) as f32;
            r[SKEW_X] = (d(-m[SKEW_X]) * inv_det) as f32;
            r[TRANS_X] = dcross_scale(m[SKEW_X], m[TRANS_Y], m[SCALE_Y], m[TRANS_X]);
            r[SKEW_Y] = (d(-m[SKEW_Y]) * inv_det) as f32;
            r[SCALE_Y] = (d(m[SCALE_X]) * inv_det) as f32;
            r[TRANS_Y] = dcross_scale(m[SKEW_Y], m[TRANS_X], m[SCALE_X], m[TRANS_Y]);
            r[PERSP_2] = 1.0;
        }
        Some((Matrix { m: r }, mask))
    }

    /// Skia's `setConcat(a, b)` = a * b (apply b first); `tb` is the mask stored on `b`.
    fn concat(a: &Matrix, b: &Matrix, tb: u8) -> Matrix {
        let ta = a.type_mask();
        let (am, bm) = (&a.m, &b.m);
        if (ta | tb) & (AFFINE_MASK | PERSPECTIVE_MASK) == 0 {
            let mut r = IDENTITY;
            r.m[SCALE_X] = am[SCALE_X] * bm[SCALE_X];
            r.m[SCALE_Y] = am[SCALE_Y] * bm[SCALE_Y];
            r.m[TRANS_X] = am[SCALE_X] * bm[TRANS_X] + am[TRANS_X];
            r.m[TRANS_Y] = am[SCALE_Y] * bm[TRANS_Y] + am[TRANS_Y];
            return r;
        }
        let mut r = [0.0f32; 9];
        if (ta | tb) & PERSPECTIVE_MASK != 0 {
            let rowcol = |row: usize, col: usize| {
                am[row] * bm[col] + am[row + 1] * bm[col + 3] + am[row + 2] * bm[col + 6]
            };
            for row in 0..3 {
                for col in 0..3 {
                    r[row * 3 + col] = rowcol(row * 3, col);
                }
            }
        } else {
            let muladdmul = |a: f32, b: f32, c: f32, e: f32| {
                (f64::from(a) * f64::from(b) + f64::from(c) * f64::from(e)) as f32
            };
            r[SCALE_X] = muladdmul(am[SCALE_X], bm[SCALE_X], am[SKEW_X], bm[SKEW_Y]);
            r[SKEW_X] = muladdmul(am[SCALE_X], bm[SKEW_X], am[SKEW_X], bm[SCALE_Y]);
            r[TRANS_X] = muladdmul(am[SCALE_X], bm[TRANS_X], am[SKEW_X], bm[TRANS_Y]) + am[TRANS_X];
            r[SKEW_Y] = muladdmul(am[SKEW_Y], bm[SCALE_X], am[SCALE_Y], bm[SKEW_Y]);
            r[SCALE_Y] = muladdmul(am[SKEW_Y], bm[SKEW_X], am[SCALE_Y], bm[SCALE_Y]);
            r[TRANS_Y] = muladdmul(am[SKEW_Y], bm[TRANS_X], am[SCALE_Y], bm[TRANS_Y]) + am[TRANS_Y];
            r[PERSP_2] = 1.0;
        }
        Matrix { m: r }
    }

    /// Skia's `setPolyToPoly` for 4 points: maps `from[i]` to `to[i]`.
    fn poly_to_poly(from: &[[f32; 2]; 4], to: &[[f32; 2]; 4]) -> Option<Matrix> {
        let from_map = Matrix::poly4(from)?;
        let (inverse, inverse_mask) = from_map.invert()?;
        let to_map = Matrix::poly4(to)?;
        // Skia skips the multiplication when the right side is known to be the identity.
        if inverse_mask == 0 {
            return Some(to_map);
        }
        Some(Matrix::concat(&to_map, &inverse, inverse_mask))
    }

    /// Skia's `mapPoints` for one point, dispatching on the type mask as Skia does.
    fn map(&self, x: f32, y: f32) -> (f32, f32) {
        let m = &self.m;
        let mask = self.type_mask();
        if mask == 0 {
            (x, y)
        } else if mask == TRANSLATE_MASK {
            (x + m[TRANS_X], y + m[TRANS_Y])
        } else if mask & !(TRANSLATE_MASK | SCALE_MASK) == 0 {
            (x * m[SCALE_X] + m[TRANS_X], y * m[SCALE_Y] + m[TRANS_Y])
        } else if mask & PERSPECTIVE_MASK == 0 {
            (
                x * m[SCALE_X] + y * m[SKEW_X] + m[TRANS_X],
                x * m[SKEW_Y] + y * m[SCALE_Y] + m[TRANS_Y],
            )
        } else {
            let px = (x * m[SCALE_X] + y * m[SKEW_X]) + m[TRANS_X];
            let py = (x * m[SKEW_Y] + y * m[SCALE_Y]) + m[TRANS_Y];
            // Skia's legacy evaluation order for the perspective term.
            let mut z = x * m[PERSP_0] + (y * m[PERSP_1] + m[PERSP_2]);
            if z != 0.0 {
                z = 1.0 / z;
            }
            (px * z, py * z)
        }
    }
}

const IDENTITY: Matrix = Matrix {
    m: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
};

/// The source rectangle kept by the centre crop: `(start_x, start_y, width, height)`, with MNN's
/// integer arithmetic (`int(H * fraction)`, start `(H - kept) / 2`). `None` if nothing is kept.
pub fn center_crop_rect(
    width: usize,
    height: usize,
    crop_w: f32,
    crop_h: f32,
) -> Option<(usize, usize, usize, usize)> {
    // MNN multiplies an int by a float (f32) and truncates.
    let kept_h = (height as f32 * crop_h) as i64;
    let kept_w = (width as f32 * crop_w) as i64;
    if kept_h <= 0 || kept_w <= 0 {
        return None;
    }
    let (kept_w, kept_h) = (kept_w.min(width as i64), kept_h.min(height as i64));
    let start_y = (height as i64 - kept_h) / 2;
    let start_x = (width as i64 - kept_w) / 2;
    Some((
        start_x as usize,
        start_y as usize,
        kept_w as usize,
        kept_h as usize,
    ))
}

/// Crops (centre) and stretches `image` to `out_width x out_height` RGBA, as MNN's tool does.
/// Returns `None` if the crop keeps no pixel or the transform is degenerate.
pub fn crop_and_resize(
    image: &RgbaImage,
    crop_w: f32,
    crop_h: f32,
    out_width: usize,
    out_height: usize,
) -> Option<RgbaImage> {
    let (iw, ih) = (image.width, image.height);
    let (start_x, start_y, kept_w, kept_h) = center_crop_rect(iw, ih, crop_w, crop_h)?;
    if out_width == 0 || out_height == 0 {
        return None;
    }
    let (end_x, end_y) = (start_x + kept_w, start_y + kept_h);
    // Destination corners, in MNN's order, mapped onto the source corners.
    let (ow, oh) = ((out_width - 1) as f32, (out_height - 1) as f32);
    let dst_points = [[0.0, 0.0], [0.0, oh], [ow, 0.0], [ow, oh]];
    let src_points = [
        [start_x as f32, start_y as f32],
        [start_x as f32, (end_y - 1) as f32],
        [(end_x - 1) as f32, start_y as f32],
        [(end_x - 1) as f32, (end_y - 1) as f32],
    ];
    // A 1-pixel-wide (or high) source or target makes the 4-point solver singular. MNN then
    // keeps its matrix as constructed, the identity: no stretch at all, the output samples the
    // source's top-left corner (clamped at the edges). Reproduced on purpose (checked against
    // MNN 3.6.1); such images are degenerate calibration data anyway.
    let transform = Matrix::poly_to_poly(&dst_points, &src_points).unwrap_or(IDENTITY);

    let mut out = vec![0u8; out_width * out_height * 4];
    if transform.is_identity() && iw >= out_width && ih >= out_height {
        // MNN copies rows without resampling.
        for (y, row) in out.chunks_exact_mut(out_width * 4).enumerate() {
            let start = y * iw * 4;
            row.copy_from_slice(&image.pixels[start..start + out_width * 4]);
        }
    } else {
        let x_max = (iw - 1) as f32;
        let y_max = (ih - 1) as f32;
        let stride = iw * 4;
        let src = &image.pixels;
        for (dy, row) in out.chunks_exact_mut(out_width * 4).enumerate() {
            for tile_start in (0..out_width).step_by(TILE) {
                let count = TILE.min(out_width - tile_start);
                let (x0, y0) = transform.map(tile_start as f32, dy as f32);
                let (x1, y1) = transform.map((tile_start + count) as f32, dy as f32);
                let step_x = (x1 - x0) / count as f32;
                let step_y = (y1 - y0) / count as f32;
                let (mut cur_x, mut cur_y) = (x0, y0);
                for i in 0..count {
                    let y = cur_y.min(y_max).max(0.0);
                    let x = cur_x.min(x_max).max(0.0);
                    let (yi0, xi0) = (y as usize, x as usize);
                    // ceil for x, y >= 0, without a libm call on baseline x86-64.
                    let yi1 = yi0 + usize::from(y > yi0 as f32);
                    let xi1 = xi0 + usize::from(x > xi0 as f32);
                    let fx = x - xi0 as f32;
                    let fy = y - yi0 as f32;
                    let w00 = (1.0 - fx) * (1.0 - fy);
                    let w01 = fx * (1.0 - fy);
                    let w10 = fy * (1.0 - fx);
                    let w11 = fx * fy;
                    let i00 = yi0 * stride + xi0 * 4;
                    let i01 = yi0 * stride + xi1 * 4;
                    let i10 = yi1 * stride + xi0 * 4;
                    let i11 = yi1 * stride + xi1 * 4;
                    let dst = &mut row[(tile_start + i) * 4..(tile_start + i) * 4 + 4];
                    for c in 0..4 {
                        // Separate multiplies and adds in this order (SSE, no FMA).
                        let mut v = w00 * f32::from(src[i00 + c]);
                        v += w01 * f32::from(src[i01 + c]);
                        v += w10 * f32::from(src[i10 + c]);
                        v += w11 * f32::from(src[i11 + c]);
                        dst[c] = v.clamp(0.0, 255.0) as u8;
                    }
                    cur_y += step_y;
                    cur_x += step_x;
                }
            }
        }
    }
    Some(RgbaImage {
        width: out_width,
        height: out_height,
        pixels: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_matrix_maps_corners_onto_corners() {
        let dst = [[0.0, 0.0], [0.0, 223.0], [223.0, 0.0], [223.0, 223.0]];
        let src = [[0.0, 0.0], [0.0, 193.0], [258.0, 0.0], [258.0, 193.0]];
        let m = Matrix::poly_to_poly(&dst, &src).expect("solvable");
        for (d, s) in dst.iter().zip(src.iter()) {
            let (x, y) = m.map(d[0], d[1]);
            assert!(
                (x - s[0]).abs() < 1e-3 && (y - s[1]).abs() < 1e-3,
                "{d:?} -> ({x}, {y})"
            );
        }
    }

    #[test]
    fn same_size_without_crop_is_an_exact_copy() {
        let pixels: Vec<u8> = (0..5 * 3 * 4).map(|i| (i * 7 % 256) as u8).collect();
        let image = RgbaImage {
            width: 5,
            height: 3,
            pixels: pixels.clone(),
        };
        let out = crop_and_resize(&image, 1.0, 1.0, 5, 3).unwrap();
        assert_eq!(out.pixels, pixels);
    }

    #[test]
    fn two_by_one_upscaled_to_three_interpolates_the_middle() {
        // Source pixels 0 and 100 (all channels); the middle output sits at x = 0.5.
        let image = RgbaImage {
            width: 2,
            height: 2,
            pixels: vec![
                0, 0, 0, 0, 100, 100, 100, 100, 0, 0, 0, 0, 100, 100, 100, 100,
            ],
        };
        let out = crop_and_resize(&image, 1.0, 1.0, 3, 2).unwrap();
        let first_row: Vec<u8> = out.pixels[..12].iter().step_by(4).copied().collect();
        assert_eq!(first_row, vec![0, 50, 100]);
    }

    #[test]
    fn degenerate_source_keeps_the_identity_like_mnn() {
        // 1 x 5 source (grey levels 0, 50, ..., 200) to 3 x 9. Reference from MNN 3.6.1
        // (`CVMatrix.setPolyToPoly` fails and leaves the identity): every column is
        // 0, 50, 100, 150, 200, 200, 200, 200, 200.
        let mut pixels = Vec::new();
        for y in 0..5u8 {
            pixels.extend_from_slice(&[y * 50, y * 50, y * 50, 255]);
        }
        let image = RgbaImage {
            width: 1,
            height: 5,
            pixels,
        };
        let out = crop_and_resize(&image, 1.0, 1.0, 3, 9).unwrap();
        for x in 0..3 {
            let column: Vec<u8> = (0..9).map(|y| out.pixels[(y * 3 + x) * 4]).collect();
            assert_eq!(column, [0, 50, 100, 150, 200, 200, 200, 200, 200]);
        }
    }

    #[test]
    fn crop_rect_uses_integer_arithmetic() {
        // 101 * 0.5 = 50.5 -> 50 kept, start (101 - 50) / 2 = 25.
        assert_eq!(center_crop_rect(101, 101, 0.5, 0.5), Some((25, 25, 50, 50)));
        assert_eq!(center_crop_rect(3, 3, 0.2, 1.0), None);
    }
}
