//! Data movement through strides: layout conversion, concat, permute, slices, tile, padding.

use super::{In, Out};

/// Calls `f(offset)` for every element of `shape` in logical row-major order.
pub fn for_each_offset(shape: &[usize], strides: &[isize], mut f: impl FnMut(usize)) {
    for_each_row(shape, [strides], |[base], len| {
        let s = strides.last().copied().unwrap_or(0);
        for i in 0..len as isize {
            f((base + i * s) as usize);
        }
    });
}

/// Iterates over every row (all dims but the last) of `dims`, calling `f(bases, len)` with the
/// memory offset of the row's first element in each of the `N` stride sets. Rows are visited in
/// row-major order of `dims`; the caller reads the inner stride from its own stride sets.
pub fn for_each_row<const N: usize>(
    dims: &[usize],
    strides: [&[isize]; N],
    mut f: impl FnMut([isize; N], usize),
) {
    let rank = dims.len();
    if dims.contains(&0) {
        return;
    }
    if rank == 0 {
        f([0; N], 1);
        return;
    }
    let inner = dims[rank - 1];
    let mut index = vec![0usize; rank];
    let mut base = [0isize; N];
    loop {
        f(base, inner);
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            for k in 0..N {
                base[k] += strides[k][d];
            }
            if index[d] < dims[d] {
                break;
            }
            for k in 0..N {
                base[k] -= strides[k][d] * dims[d] as isize;
            }
            index[d] = 0;
        }
    }
}

/// Drops size-1 dims and merges neighbours that are contiguous in every stride set, so loops run
/// over as few, as long rows as possible.
pub fn simplify<const N: usize>(
    dims: &[usize],
    strides: [Vec<isize>; N],
) -> (Vec<usize>, [Vec<isize>; N]) {
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: [Vec<isize>; N] = std::array::from_fn(|_| Vec::new());
    for (d, &size) in dims.iter().enumerate() {
        if size == 1 {
            continue;
        }
        if let Some(&last) = out_dims.last() {
            let mergeable = (0..N).all(|k| {
                let prev = *out_strides[k].last().unwrap();
                prev == strides[k][d] * size as isize
            });
            if mergeable {
                let n = out_dims.len();
                out_dims[n - 1] = last * size;
                for k in 0..N {
                    let m = out_strides[k].len();
                    out_strides[k][m - 1] = strides[k][d];
                }
                continue;
            }
        }
        out_dims.push(size);
        for k in 0..N {
            out_strides[k].push(strides[k][d]);
        }
    }
    if out_dims.is_empty() {
        out_dims.push(1);
        for s in out_strides.iter_mut() {
            s.push(1);
        }
    }
    (out_dims, out_strides)
}

/// Strides of `input` (with memory strides `strides`) broadcast to `out_shape`: right-aligned, 0
/// on broadcast dims.
pub fn broadcast_strides(shape: &[usize], strides: &[isize], out_shape: &[usize]) -> Vec<isize> {
    let r = out_shape.len();
    let mut s = vec![0isize; r];
    for i in 0..shape.len() {
        let o = r - shape.len() + i;
        if shape[i] != 1 || out_shape[o] == 1 {
            s[o] = strides[i];
        }
    }
    s
}

/// Reorders `values` (one per logical dim) into the memory order of a layout.
pub fn in_order<T: Copy>(values: &[T], order: &[usize]) -> Vec<T> {
    order.iter().map(|&d| values[d]).collect()
}

/// Copies the elements of a strided source view into a strided destination view of the same
/// logical shape. Iterates in the destination's memory order.
pub fn copy_view(
    shape: &[usize],
    src: &[f32],
    src_base: isize,
    src_strides: &[isize],
    dst: &mut [f32],
    dst_base: isize,
    dst_strides: &[isize],
) {
    // Walk in destination memory order (sequential writes), unless the destination's innermost
    // dim is short and the source's is longer (a transpose to channels-last with few channels):
    // then walk in source order so the inner loop is long.
    let mut order: Vec<usize> = (0..shape.len()).collect();
    order.sort_by_key(|&d| std::cmp::Reverse(dst_strides[d].unsigned_abs()));
    let mut src_order: Vec<usize> = (0..shape.len()).collect();
    src_order.sort_by_key(|&d| std::cmp::Reverse(src_strides[d].unsigned_abs()));
    if let (Some(&di), Some(&si)) = (order.last(), src_order.last()) {
        if shape[di] < 16 && shape[si] > shape[di] {
            order = src_order;
        }
    }
    let dims = in_order(shape, &order);
    let (dims, [ss, ds]) = simplify(
        &dims,
        [in_order(src_strides, &order), in_order(dst_strides, &order)],
    );
    let (si, di) = (ss[ss.len() - 1], ds[ds.len() - 1]);
    for_each_row(&dims, [&ss, &ds], |[s, d], len| {
        let (s, d) = (s + src_base, d + dst_base);
        if si == 1 && di == 1 {
            dst[d as usize..d as usize + len].copy_from_slice(&src[s as usize..s as usize + len]);
        } else {
            for i in 0..len as isize {
                dst[(d + i * di) as usize] = src[(s + i * si) as usize];
            }
        }
    });
}

/// Copies `input` into `output` (same logical shape, any layouts).
pub fn convert(input: &In, output: &mut Out) {
    let is = input.strides();
    let os = output.strides();
    copy_view(input.shape, input.data, 0, &is, output.data, 0, &os);
}

/// ConvertTensor between an NHWC-format tensor and a channels-first one: a logical permutation.
pub fn permute(input: &In, perm: &[usize], output: &mut Out) {
    let is = input.strides();
    // Output logical dim d reads input dim perm[d].
    let src_strides: Vec<isize> = perm.iter().map(|&p| is[p]).collect();
    let os = output.strides();
    copy_view(
        output.shape,
        input.data,
        0,
        &src_strides,
        output.data,
        0,
        &os,
    );
}

/// Concatenation along `axis` (inputs and output in any layouts).
pub fn concat(inputs: &[In], axis: usize, output: &mut Out) {
    let os = output.strides();
    let mut offset = 0isize;
    for input in inputs {
        let is = input.strides();
        copy_view(
            input.shape,
            input.data,
            0,
            &is,
            output.data,
            offset * os[axis],
            &os,
        );
        offset += input.shape[axis] as isize;
    }
}

/// General strided slice: output element `i` along dim `d` reads input index
/// `begin[d] + i * step[d]`.
pub fn slice(input: &In, begin: &[i64], step: &[i64], output: &mut Out) {
    let is = input.strides();
    let base: isize = (0..is.len()).map(|d| begin[d] as isize * is[d]).sum();
    let src_strides: Vec<isize> = (0..is.len()).map(|d| step[d] as isize * is[d]).collect();
    let os = output.strides();
    copy_view(
        output.shape,
        input.data,
        base,
        &src_strides,
        output.data,
        0,
        &os,
    );
}

/// Broadcasts `input` to the output shape (BroadcastTo, and Tile's per-copy step).
pub fn broadcast_to(input: &In, output: &mut Out) {
    let is = broadcast_strides(input.shape, &input.strides(), output.shape);
    let os = output.strides();
    copy_view(output.shape, input.data, 0, &is, output.data, 0, &os);
}

/// Tile: output index `o` reads input index `o % in_dim` along every dim.
pub fn tile(input: &In, output: &mut Out) {
    let in_shape = input.shape;
    let is = input.strides();
    let os = output.strides();
    let rank = in_shape.len();
    let reps: Vec<usize> = (0..rank)
        .map(|d| output.shape[d] / in_shape[d].max(1))
        .collect();
    // Iterate over every combination of repetition indices and copy the whole input block.
    let total: usize = reps.iter().product();
    for r in 0..total {
        let mut rem = r;
        let mut base = 0isize;
        for d in (0..rank).rev() {
            let k = rem % reps[d];
            rem /= reps[d];
            base += (k * in_shape[d]) as isize * os[d];
        }
        copy_view(in_shape, input.data, 0, &is, output.data, base, &os);
    }
}

/// Gather along `axis` with integer indices (negative counts from the end).
pub fn gather(input: &In, indices: &[i64], axis: usize, output: &mut Out) -> Result<(), String> {
    let s = input.shape;
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis + 1..].iter().product();
    let n = s[axis] as i64;
    let src = input.to_row_major_f32();
    let out_ints = input.dtype == crate::tensor::DType::I32;
    let mut o = 0;
    for i in 0..outer {
        for &raw in indices {
            let idx = if raw < 0 { raw + n } else { raw };
            if idx < 0 || idx >= n {
                return Err(format!("gather index {raw} out of range for dim {n}"));
            }
            let start = (i * s[axis] + idx as usize) * inner;
            for v in &src[start..start + inner] {
                output.data[o] = if out_ints {
                    crate::tensor::i32_to_bits(*v as i32)
                } else {
                    *v
                };
                o += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DType, Layout};

    #[test]
    fn convert_round_trips_between_layouts() {
        let shape = [1, 3, 2, 2];
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let input = In {
            shape: &shape,
            dtype: DType::F32,
            layout: Layout::RowMajor,
            data: &data,
        };
        let mut nhwc = vec![0.0; 12];
        convert(
            &input,
            &mut Out {
                shape: &shape,
                dtype: DType::F32,
                layout: Layout::ChannelsLast,
                data: &mut nhwc,
            },
        );
        // Pixel (0,0) holds channels 0, 4, 8.
        assert_eq!(&nhwc[..3], &[0.0, 4.0, 8.0]);
        let back_in = In {
            shape: &shape,
            dtype: DType::F32,
            layout: Layout::ChannelsLast,
            data: &nhwc,
        };
        let mut back = vec![0.0; 12];
        convert(
            &back_in,
            &mut Out {
                shape: &shape,
                dtype: DType::F32,
                layout: Layout::RowMajor,
                data: &mut back,
            },
        );
        assert_eq!(back, data);
    }

    #[test]
    fn concat_on_channels_last() {
        let a: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0]; // [1,1,2,2]
        let b: Vec<f32> = vec![5.0, 6.0, 7.0, 8.0];
        let shape = [1, 1, 2, 2];
        let ins = [
            In {
                shape: &shape,
                dtype: DType::F32,
                layout: Layout::ChannelsLast,
                data: &a,
            },
            In {
                shape: &shape,
                dtype: DType::F32,
                layout: Layout::RowMajor,
                data: &b,
            },
        ];
        let out_shape = [1, 2, 2, 2];
        let mut out = vec![0.0; 8];
        concat(
            &ins,
            1,
            &mut Out {
                shape: &out_shape,
                dtype: DType::F32,
                layout: Layout::ChannelsLast,
                data: &mut out,
            },
        );
        assert_eq!(out, vec![1.0, 5.0, 2.0, 6.0, 3.0, 7.0, 4.0, 8.0]);
    }
}
