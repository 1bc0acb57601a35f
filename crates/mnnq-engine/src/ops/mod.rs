//! Op implementations over tensors addressed by strides.
//!
//! `elementwise` and `movement` work on any physical layout (they read and write through strides);
//! `window` (convolution, pooling, resize) needs channels-last 4-D tensors; `reference` holds
//! row-major implementations of the remaining ops, also used to fold constants at load.

pub mod elementwise;
pub mod movement;
pub mod reference;
pub mod window;

use crate::tensor::{DType, Layout};

/// A read-only tensor argument of an op.
#[derive(Clone, Copy, Debug)]
pub struct In<'a> {
    pub shape: &'a [usize],
    pub dtype: DType,
    pub layout: Layout,
    pub data: &'a [f32],
}

impl<'a> In<'a> {
    /// Memory stride of each logical dim.
    pub fn strides(&self) -> Vec<isize> {
        self.layout.strides(self.shape)
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Integer view of integer tensors (bit patterns stored in f32 slots).
    pub fn ints(&self) -> &'a [i32] {
        // SAFETY: f32 and i32 have the same size and alignment and every bit pattern is valid.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr() as *const i32, self.data.len()) }
    }

    /// Element `i` (physical order) as f32, converting integers by value.
    #[inline]
    pub fn get_f32(&self, i: usize) -> f32 {
        match self.dtype {
            DType::F32 => self.data[i],
            DType::I32 => self.data[i].to_bits() as i32 as f32,
        }
    }

    /// All elements in logical row-major order as f32 (integers by value).
    pub fn to_row_major_f32(&self) -> Vec<f32> {
        if self.dtype == DType::F32 && self.memory_is_row_major() {
            // A one-channel map stored channels-last, for example: a plain copy, where the
            // element walk cost 2 % of a detection run on its 640x640 output.
            return self.data[..self.len()].to_vec();
        }
        let mut out = Vec::with_capacity(self.len());
        let strides = self.strides();
        movement::for_each_offset(self.shape, &strides, |off| out.push(self.get_f32(off)));
        out
    }

    /// Whether memory order is logical row-major order (dims of size 1 have any stride).
    fn memory_is_row_major(&self) -> bool {
        let strides = self.strides();
        let mut expected = 1isize;
        for (&dim, &stride) in self.shape.iter().zip(&strides).rev() {
            if dim == 1 {
                continue;
            }
            if stride != expected {
                return false;
            }
            expected *= dim as isize;
        }
        true
    }

    /// All elements in logical row-major order as i64 (floats truncated).
    pub fn to_row_major_i64(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.len());
        let strides = self.strides();
        movement::for_each_offset(self.shape, &strides, |off| {
            out.push(match self.dtype {
                DType::F32 => self.data[off] as i64,
                DType::I32 => self.data[off].to_bits() as i32 as i64,
            })
        });
        out
    }
}

/// A written tensor argument of an op.
#[derive(Debug)]
pub struct Out<'a> {
    pub shape: &'a [usize],
    pub dtype: DType,
    pub layout: Layout,
    pub data: &'a mut [f32],
}

impl<'a> Out<'a> {
    pub fn strides(&self) -> Vec<isize> {
        self.layout.strides(self.shape)
    }

    pub fn ints_mut(&mut self) -> &mut [i32] {
        // SAFETY: as `In::ints`.
        unsafe {
            std::slice::from_raw_parts_mut(self.data.as_mut_ptr() as *mut i32, self.data.len())
        }
    }

    pub fn as_in(&self) -> In<'_> {
        In {
            shape: self.shape,
            dtype: self.dtype,
            layout: self.layout,
            data: self.data,
        }
    }
}

/// How an op may split its work over threads. Work is always cut into pieces whose count depends
/// only on the problem size, never on the thread count, so results are identical for any number
/// of threads.
pub struct Parallel<'p> {
    pub pool: Option<&'p rayon::ThreadPool>,
}

impl Parallel<'_> {
    pub fn sequential() -> Parallel<'static> {
        Parallel { pool: None }
    }

    /// Calls `f(i)` for every `i < count`, spread over the pool's threads.
    pub fn for_each(&self, count: usize, f: impl Fn(usize) + Sync + Send) {
        match self.pool {
            Some(pool) if count > 1 && pool.current_num_threads() > 1 => {
                use rayon::prelude::*;
                pool.install(|| (0..count).into_par_iter().for_each(&f));
            }
            _ => (0..count).for_each(f),
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.map(|p| p.current_num_threads()).unwrap_or(1)
    }
}

/// A raw pointer that may be shared by threads writing disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub struct SharedMut(pub *mut f32);
// SAFETY: users only write disjoint index ranges from different threads.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The base pointer (a method, so closures capture the whole `Sync` wrapper).
    #[inline]
    pub fn ptr(self) -> *mut f32 {
        self.0
    }

    /// # Safety
    /// The range must be inside the buffer and not written by another thread at the same time.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy shortcut and the element walk agree: a one-channel channels-last map is already
    /// in row-major order, a two-channel one is not.
    #[test]
    fn row_major_copy_only_when_memory_order_is_logical_order() {
        let one_channel = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let view = In {
            shape: &[1, 1, 2, 3],
            dtype: DType::F32,
            layout: Layout::ChannelsLast,
            data: &one_channel,
        };
        assert!(view.memory_is_row_major());
        assert_eq!(view.to_row_major_f32(), one_channel);

        // Two channels stored [h][w][c]: logical order is channel 0's plane, then channel 1's.
        let two_channels = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        let view = In {
            shape: &[1, 2, 1, 3],
            dtype: DType::F32,
            layout: Layout::ChannelsLast,
            data: &two_channels,
        };
        assert!(!view.memory_is_row_major());
        assert_eq!(view.to_row_major_f32(), [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
    }
}
