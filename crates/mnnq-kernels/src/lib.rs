//! Hot loops, apart from graph logic: fp32 and int8 micro-kernels, one per instruction set and
//! tile shape, chosen at run time by CPU feature (see [`dispatch`]).

pub mod dispatch;
pub mod f32;
pub mod geometry;
pub mod int8;

pub use geometry::{Activation, ConvGeometry};
