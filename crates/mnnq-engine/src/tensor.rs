//! Tensors as the engine's users and its op implementations see them.
//!
//! Every tensor has a LOGICAL shape that follows MNN's semantics (for tensors MNN keeps in NCHW or
//! NC4HW4 this is N, C, spatial...). How the elements sit in memory is a separate choice, the
//! [`Layout`]: plain row-major in logical order, or channels-last (logical dim 1 innermost), which is
//! what the convolution kernels read and write. Op implementations address memory through strides
//! so that most of them work on either layout without a copy.

/// Element type of a tensor. Integer tensors share the f32 arena: an `i32` is stored as the bit
/// pattern of an `f32` slot (same size and alignment), so one memory plan covers both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
}

/// How a tensor's elements are ordered in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Logical order, last dim fastest.
    RowMajor,
    /// Logical `[N, C, D1, D2, ...]` stored as `[N, D1, D2, ..., C]` (NHWC for 4-D tensors).
    /// Only used for rank >= 3; for lower ranks it is the same as row-major.
    ChannelsLast,
}

impl Layout {
    /// The layout to use for a tensor of `rank` dims: channels-last only makes sense from rank 3.
    pub fn for_rank(self, rank: usize) -> Layout {
        if rank >= 3 {
            self
        } else {
            Layout::RowMajor
        }
    }

    /// Logical dims listed from the outermost to the innermost in memory.
    pub fn memory_order(self, rank: usize) -> Vec<usize> {
        match self.for_rank(rank) {
            Layout::RowMajor => (0..rank).collect(),
            Layout::ChannelsLast => {
                let mut order = vec![0];
                order.extend(2..rank);
                order.push(1);
                order
            }
        }
    }

    /// Memory stride (in elements) of each logical dim.
    pub fn strides(self, shape: &[usize]) -> Vec<isize> {
        let order = self.memory_order(shape.len());
        let mut strides = vec![0isize; shape.len()];
        let mut step = 1isize;
        for &dim in order.iter().rev() {
            strides[dim] = step;
            step *= shape[dim] as isize;
        }
        strides
    }
}

/// Number of elements of a shape (1 for a scalar).
pub fn element_count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a logical shape.
pub fn row_major_strides(shape: &[usize]) -> Vec<isize> {
    Layout::RowMajor.strides(shape)
}

/// An owned float tensor in logical row-major order: what `Session::run` takes and returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        assert_eq!(
            element_count(&shape),
            data.len(),
            "tensor data does not match its shape"
        );
        Tensor { shape, data }
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; element_count(shape)],
        }
    }
}

/// A borrowed tensor in logical row-major order, shown to observers during a run.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// The tensor's name in the model.
    pub name: &'a str,
    pub shape: &'a [usize],
    /// Element type in the model; integer tensors are shown converted to f32.
    pub dtype: DType,
    pub data: &'a [f32],
}

/// A constant or folded value: logical row-major data. Integer values keep their bit pattern in
/// the f32 storage (see [`DType`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: Vec<f32>,
}

impl Value {
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Value {
        Value {
            shape,
            dtype: DType::F32,
            data,
        }
    }

    pub fn from_i32(shape: Vec<usize>, data: &[i32]) -> Value {
        Value {
            shape,
            dtype: DType::I32,
            data: data.iter().map(|&v| f32::from_bits(v as u32)).collect(),
        }
    }

    /// The elements as integers (float values are truncated toward zero, as a cast would).
    pub fn to_i64(&self) -> Vec<i64> {
        match self.dtype {
            DType::I32 => self
                .data
                .iter()
                .map(|v| v.to_bits() as i32 as i64)
                .collect(),
            DType::F32 => self.data.iter().map(|&v| v as i64).collect(),
        }
    }

    /// The elements as floats (integers converted by value).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            DType::I32 => self
                .data
                .iter()
                .map(|v| v.to_bits() as i32 as f32)
                .collect(),
            DType::F32 => self.data.clone(),
        }
    }
}

/// Reads element `i` of integer storage.
#[inline]
pub fn bits_to_i32(v: f32) -> i32 {
    v.to_bits() as i32
}

/// Stores an integer in an f32 slot.
#[inline]
pub fn i32_to_bits(v: i32) -> f32 {
    f32::from_bits(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_strides_put_channels_innermost() {
        let shape = [2, 3, 4, 5];
        assert_eq!(Layout::RowMajor.strides(&shape), vec![60, 20, 5, 1]);
        assert_eq!(Layout::ChannelsLast.strides(&shape), vec![60, 1, 15, 3]);
        // Rank 2 tensors have no spatial dims: channels-last is row-major.
        assert_eq!(Layout::ChannelsLast.strides(&[4, 7]), vec![7, 1]);
    }

    #[test]
    fn integer_values_round_trip_through_f32_slots() {
        let v = Value::from_i32(vec![3], &[-1, 7, i32::MAX]);
        assert_eq!(v.to_i64(), vec![-1, 7, i32::MAX as i64]);
    }
}
