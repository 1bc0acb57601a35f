//! Strided int8 copies: the byte moves behind int8 Concat, layout conversions and reshapes
//! (MNN's Raster int8 byte copy), without widening the codes to f32.

/// Copies every element of a tensor of logical `shape` from `src` (element strides
/// `src_strides`) to `dst` (element strides `dst_strides`, starting at `dst_offset`). Runs that are
/// contiguous in both are copied with `copy_from_slice`: a channels-last concat along channels
/// copies one run per pixel, equal layouts copy one run in all.
///
/// Panics if an element lies outside `src` or `dst`.
pub fn copy_strided_i8(
    shape: &[usize],
    src: &[i8],
    src_strides: &[usize],
    dst: &mut [i8],
    dst_offset: usize,
    dst_strides: &[usize],
) {
    assert!(
        shape.len() == src_strides.len() && shape.len() == dst_strides.len(),
        "copy_strided_i8: shape and strides of different ranks"
    );
    if shape.contains(&0) {
        return;
    }
    // Dims of more than one element, innermost in the source first.
    let mut dims: Vec<(usize, usize, usize)> = (0..shape.len())
        .filter(|&d| shape[d] > 1)
        .map(|d| (shape[d], src_strides[d], dst_strides[d]))
        .collect();
    dims.sort_by_key(|&(_, s, _)| s);
    // Merge the innermost dims while both sides stay contiguous.
    let mut run = 1usize;
    while let Some(&(size, ss, ds)) = dims.first() {
        if ss != run || ds != run {
            break;
        }
        run *= size;
        dims.remove(0);
    }
    // Single elements (a transpose): the source's innermost dim becomes a tight strided loop.
    let inner = if run == 1 && !dims.is_empty() {
        Some(dims.remove(0))
    } else {
        None
    };
    // Planes to interleaved channels (NCHW -> NHWC of an image's 2-4 channels): when the
    // destination's innermost dim is the channel and the source's innermost dim the pixels,
    // each pixel's channels are written together in one pass, instead of one pass per channel
    // storing every 2nd-4th byte.
    let mut planes = None;
    if let Some((pixels, 1, channels)) = inner {
        if (2..=4).contains(&channels) {
            if let Some(at) = dims.iter().position(|&(n, _, d)| d == 1 && n == channels) {
                let (_, plane, _) = dims.remove(at);
                planes = Some((pixels, plane, channels));
            }
        }
    }
    // An odometer over the remaining dims, innermost first.
    let mut index = vec![0usize; dims.len()];
    let (mut s_off, mut d_off) = (0usize, dst_offset);
    loop {
        match (planes, inner) {
            (Some((pixels, plane, channels)), _) => {
                let src = &src[s_off..s_off + (channels - 1) * plane + pixels];
                let dst = &mut dst[d_off..d_off + pixels * channels];
                match channels {
                    2 => interleave::<2>(src, plane, dst),
                    3 => interleave::<3>(src, plane, dst),
                    _ => interleave::<4>(src, plane, dst),
                }
            }
            (None, Some((size, ss, ds))) => {
                let (src_row, dst_row) = (
                    &src[s_off..=s_off + (size - 1) * ss],
                    &mut dst[d_off..=d_off + (size - 1) * ds],
                );
                for i in 0..size {
                    dst_row[i * ds] = src_row[i * ss];
                }
            }
            (None, None) => dst[d_off..d_off + run].copy_from_slice(&src[s_off..s_off + run]),
        }
        let mut k = 0;
        loop {
            if k == dims.len() {
                return;
            }
            let (size, ss, ds) = dims[k];
            index[k] += 1;
            s_off += ss;
            d_off += ds;
            if index[k] < size {
                break;
            }
            s_off -= ss * size;
            d_off -= ds * size;
            index[k] = 0;
            k += 1;
        }
    }
}

/// `dst[p * C + c] = src[c * plane + p]` for every pixel `p` of `dst.len() / C`.
#[inline]
fn interleave<const C: usize>(src: &[i8], plane: usize, dst: &mut [i8]) {
    let planes: [&[i8]; C] = std::array::from_fn(|c| &src[c * plane..c * plane + dst.len() / C]);
    for (p, pixel) in dst.chunks_exact_mut(C).enumerate() {
        for c in 0..C {
            pixel[c] = planes[c][p];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: every logical index, one element at a time.
    fn copy_reference(
        shape: &[usize],
        src: &[i8],
        src_strides: &[usize],
        dst: &mut [i8],
        dst_offset: usize,
        dst_strides: &[usize],
    ) {
        let total: usize = shape.iter().product();
        for linear in 0..total {
            let (mut rest, mut s, mut d) = (linear, 0, dst_offset);
            for k in (0..shape.len()).rev() {
                let i = rest % shape[k];
                rest /= shape[k];
                s += i * src_strides[k];
                d += i * dst_strides[k];
            }
            dst[d] = src[s];
        }
    }

    /// Dense strides of `shape` with the dims laid out in memory order `order` (outermost first).
    fn strides_for(shape: &[usize], order: &[usize]) -> Vec<usize> {
        let mut strides = vec![0; shape.len()];
        let mut step = 1;
        for &d in order.iter().rev() {
            strides[d] = step;
            step *= shape[d];
        }
        strides
    }

    /// An image's planes to interleaved channels (the int8 input's NCHW -> NHWC), 1 to 5
    /// channels, against the reference.
    #[test]
    fn planar_image_to_channels_last_matches_the_reference() {
        for channels in 1..=5 {
            let shape = [2, channels, 7, 9];
            let src: Vec<i8> = (0..shape.iter().product::<usize>())
                .map(|i| (i * 37 % 251) as i8)
                .collect();
            let src_strides = strides_for(&shape, &[0, 1, 2, 3]);
            let dst_strides = strides_for(&shape, &[0, 2, 3, 1]);
            let mut want = vec![0i8; src.len()];
            copy_reference(&shape, &src, &src_strides, &mut want, 0, &dst_strides);
            let mut got = vec![0i8; src.len()];
            copy_strided_i8(&shape, &src, &src_strides, &mut got, 0, &dst_strides);
            assert_eq!(got, want, "{channels} channels");
        }
    }

    proptest! {
        #[test]
        fn strided_copy_matches_the_reference(
            shape in proptest::collection::vec(1usize..5, 1..5),
            seed in any::<u64>(),
            extra in 0usize..4,
            before in 0usize..4,
        ) {
            let rank = shape.len();
            // Source and destination orders: two permutations from the seed.
            let mut src_order: Vec<usize> = (0..rank).collect();
            let mut dst_order: Vec<usize> = (0..rank).collect();
            let mut r = seed;
            for k in (1..rank).rev() {
                src_order.swap(k, (r % (k as u64 + 1)) as usize);
                r /= 7;
                dst_order.swap(k, (r % (k as u64 + 1)) as usize);
                r /= 7;
            }
            // The destination is larger along dim 0 (like a concat): `before` elements of that
            // dim come first, `extra` after.
            let mut dst_shape = shape.clone();
            dst_shape[0] += before + extra;
            let src_strides = strides_for(&shape, &src_order);
            let dst_strides = strides_for(&dst_shape, &dst_order);
            let n: usize = shape.iter().product();
            let src: Vec<i8> = (0..n).map(|i| (i as i64 * 31 + seed as i64 % 97) as i8).collect();
            let m: usize = dst_shape.iter().product();
            let offset = before * dst_strides[0];
            let mut want = vec![-7i8; m];
            copy_reference(&shape, &src, &src_strides, &mut want, offset, &dst_strides);
            let mut got = vec![-7i8; m];
            copy_strided_i8(&shape, &src, &src_strides, &mut got, offset, &dst_strides);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn channel_concat_copies_runs() {
        // NHWC [1, 2 pixels, C 2] into an output of C 3 at channel offset 1.
        let src = [1i8, 2, 3, 4];
        let mut dst = [0i8; 6];
        copy_strided_i8(&[1, 2, 2], &src, &[4, 2, 1], &mut dst, 1, &[6, 3, 1]);
        assert_eq!(dst, [0, 1, 2, 0, 3, 4]);
    }
}
