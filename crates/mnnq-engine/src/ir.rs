//! The engine's own description of a model: ops with plain parameter structs, decoupled from the
//! FlatBuffers types. `import` builds it from an MNN `Net`; the int8 runtime will reuse it (and the
//! shapes, schedule and memory plan derived from it) with other kernels.

use crate::tensor::{DType, Value};

/// MNN's per-tensor dimension format. Only matters for semantics: NHWC tensors have logical dims in
/// NHWC order; NCHW and NC4HW4 tensors have logical NCHW dims (NC4HW4 is a memory packing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MnnFormat {
    Nchw,
    Nhwc,
    Nc4hw4,
}

impl MnnFormat {
    /// MNN_DATA_FORMAT numbers: NCHW=0, NHWC=1, NC4HW4=2, NHWC4=3, UNKNOWN=4.
    pub fn from_mnn(code: i32) -> MnnFormat {
        match code {
            1 | 3 => MnnFormat::Nhwc,
            2 => MnnFormat::Nc4hw4,
            _ => MnnFormat::Nchw,
        }
    }

    /// Whether tensors of this format list their dims as N, C, spatial.
    pub fn is_channels_first(self) -> bool {
        !matches!(self, MnnFormat::Nhwc)
    }
}

/// Fused activation of convolutions and binary ops.
pub use mnnq_kernels::Activation;

/// Padding rule of a convolution or pooling window (MNN `PadMode` / `PoolPadType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Explicit pads.
    Caffe,
    Valid,
    Same,
}

impl PadMode {
    pub fn from_mnn(code: i32) -> PadMode {
        match code {
            1 => PadMode::Valid,
            2 => PadMode::Same,
            _ => PadMode::Caffe,
        }
    }
}

/// Which member of the convolution family an op is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    Convolution,
    Depthwise,
    Deconvolution,
    DeconvolutionDepthwise,
}

impl ConvKind {
    pub fn is_deconvolution(self) -> bool {
        matches!(
            self,
            ConvKind::Deconvolution | ConvKind::DeconvolutionDepthwise
        )
    }
}

/// Convolution parameters with float weights already decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvParams {
    pub kind: ConvKind,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub pad_mode: PadMode,
    pub pad_x: usize,
    pub pad_y: usize,
    /// `[top, left, bottom, right]` when the model gives explicit pads (they override padX/padY).
    pub pads: Option<[usize; 4]>,
    /// Deconvolution only: extra output rows/cols (`outPads`, `[h, w]`).
    pub out_pads: [usize; 2],
    pub group: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub activation: Activation,
    /// Convolution: `[out, in/group, kh, kw]`; deconvolution: `[in, out/group, kh, kw]`.
    /// Empty when the weights come as a second input.
    pub weights: Vec<f32>,
    /// `[out]`; empty means zero.
    pub bias: Vec<f32>,
    /// Deconvolution only: the output size comes from the last input (`hasOutputShape`, MNN
    /// reads its elements 1 and 2 as height and width).
    pub has_output_shape: bool,
    /// That size once known (filled in at load from the constant input).
    pub output_size: Option<[usize; 2]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolType {
    Max,
    Average,
}

/// Pooling parameters (2-D `Pool` and `Pool3D` on 4-D tensors).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolParams {
    pub pool_type: PoolType,
    pub global: bool,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_mode: PadMode,
    pub pad_x: usize,
    pub pad_y: usize,
    pub pads: Option<[usize; 4]>,
    pub ceil_mode: bool,
    /// MNN `AvgPoolCountType`: 0 default (include padding for CAFFE pads without `pads`, exclude
    /// otherwise), 1 include padding, 2 exclude padding.
    pub count_type: i32,
}

/// MNN `BinaryOpOperation` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOperation {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    RealDiv,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    Equal,
    NotEqual,
    FloorDiv,
    SquaredDifference,
    FloorMod,
    Mod,
    Atan2,
    LogicalOr,
    LogicalXor,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    LeftShift,
    RightShift,
    MulSilu,
}

impl BinaryOperation {
    pub fn from_mnn(code: i32) -> Option<BinaryOperation> {
        use BinaryOperation::*;
        Some(match code {
            0 => Add,
            1 => Sub,
            2 => Mul,
            3 => Div,
            4 | 9 => Max,
            5 | 8 => Min,
            6 => Pow,
            7 => RealDiv,
            10 => Greater,
            11 => GreaterEqual,
            12 => Less,
            13 => FloorDiv,
            14 => SquaredDifference,
            15 => Equal,
            16 => LessEqual,
            17 => FloorMod,
            19 => Mod,
            20 => Atan2,
            21 => LogicalOr,
            22 => NotEqual,
            23 => BitwiseAnd,
            24 => BitwiseOr,
            25 => BitwiseXor,
            26 => LogicalXor,
            27 => LeftShift,
            28 => RightShift,
            29 => MulSilu,
            _ => return None,
        })
    }

    /// Comparisons produce integer (0/1) tensors in MNN.
    pub fn is_comparison(self) -> bool {
        use BinaryOperation::*;
        matches!(
            self,
            Greater | GreaterEqual | Less | LessEqual | Equal | NotEqual
        )
    }
}

/// MNN `UnaryOpOperation` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOperation {
    Abs,
    Neg,
    Floor,
    Ceil,
    Square,
    Sqrt,
    Rsqrt,
    Exp,
    Log,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Reciprocal,
    Log1p,
    Bnll,
    Acosh,
    Sinh,
    Asinh,
    Atanh,
    Sign,
    Round,
    Cosh,
    Erf,
    Erfc,
    Erfinv,
    Expm1,
    Sigmoid,
    Tanh,
    HardSwish,
    Gelu,
    GeluStandard,
    Silu,
}

impl UnaryOperation {
    pub fn from_mnn(code: i32) -> Option<UnaryOperation> {
        use UnaryOperation::*;
        const ALL: [UnaryOperation; 35] = [
            Abs,
            Neg,
            Floor,
            Ceil,
            Square,
            Sqrt,
            Rsqrt,
            Exp,
            Log,
            Sin,
            Cos,
            Tan,
            Asin,
            Acos,
            Atan,
            Reciprocal,
            Log1p,
            Bnll,
            Acosh,
            Sinh,
            Asinh,
            Atanh,
            Sign,
            Round,
            Cosh,
            Erf,
            Erfc,
            Erfinv,
            Expm1,
            Sigmoid,
            Tanh,
            HardSwish,
            Gelu,
            GeluStandard,
            Silu,
        ];
        usize::try_from(code).ok().and_then(|i| ALL.get(i).copied())
    }
}

/// Interp (resize) parameters, as stored (scales/offsets resolved at shape time).
#[derive(Clone, Debug, PartialEq)]
pub struct InterpParams {
    /// 1 nearest (floor), 2 bilinear, 3 bicubic, 4 nearest (round).
    pub resize_type: i32,
    pub align_corners: bool,
    pub half_pixel_centers: bool,
    pub width_scale: f32,
    pub height_scale: f32,
    pub output_width: usize,
    pub output_height: usize,
    pub width_offset: f32,
    pub height_offset: f32,
    pub cubic_coeff_a: f32,
    /// `CoordinateTransformationMode`: 0 NotSet, 1 AlignCorners, 2 HalfPixels, 3 PytorchHalfPixels,
    /// 4 Asymmetric, 5 TensorflowHalfPixels, 6 TensorflowCropAndResize.
    pub ctm: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EltwiseType {
    Prod,
    Sum,
    Max,
    Sub,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReductionType {
    Sum,
    AbsSum,
    SumSquares,
    Mean,
    Max,
    Min,
    Prod,
    Any,
    All,
}

impl ReductionType {
    pub fn from_mnn(code: i32) -> Option<ReductionType> {
        use ReductionType::*;
        Some(match code {
            0 => Sum,
            1 => AbsSum,
            2 => SumSquares,
            3 => Mean,
            4 => Max,
            5 => Min,
            6 => Prod,
            7 => Any,
            8 => All,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadValueMode {
    Constant,
    Reflect,
    Symmetric,
    Edge,
}

/// One op of the engine's graph with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    Input {
        dims: Vec<i32>,
        dtype: DType,
        format: MnnFormat,
    },
    Const {
        value: Value,
        format: MnnFormat,
    },
    Conv(Box<ConvParams>),
    Pool(PoolParams),
    /// Pooling over depth, height and width of a 5-D NCDHW tensor, as MNN lowers it: a 2-D pool
    /// over (H, W) of every depth slice (`hw`), then a pool over depth (`depth`, kernel along H of
    /// an `[N, C, D, OH*OW]` view; averages exclude the padding there, as in MNN).
    Pool3D {
        hw: PoolParams,
        depth: PoolParams,
    },
    /// MNN `Im2Col`: `[N, C, H, W]` to `[C*kh*kw, N*oh*ow]` (rows ordered (c, ky, kx), columns
    /// (n, oy, ox)), zeros where the window reaches into padding. Weights are unused.
    Im2Col(Box<ConvParams>),
    Binary {
        op: BinaryOperation,
        relu: bool,
    },
    Unary(UnaryOperation),
    Relu {
        slope: f32,
    },
    Relu6 {
        min: f32,
        max: f32,
    },
    PRelu {
        slopes: Vec<f32>,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        scale: f32,
        alpha: f32,
    },
    Eltwise {
        kind: EltwiseType,
        coeff: Vec<f32>,
    },
    /// Per-channel `x * scale + bias` (Scale, and BatchNorm folded at import).
    Scale {
        scale: Vec<f32>,
        bias: Vec<f32>,
    },
    Concat {
        axis: i32,
    },
    /// Target dims from the parameter when no second input gives them.
    Reshape {
        dims: Vec<i32>,
        dim_type: MnnFormat,
    },
    Flatten {
        axis: i32,
        end_axis: i32,
    },
    Squeeze {
        dims: Vec<i32>,
    },
    Unsqueeze {
        dims: Vec<i32>,
    },
    ExpandDims {
        axis: i32,
    },
    Permute {
        dims: Vec<i32>,
    },
    Transpose,
    /// Shape, optionally sliced to dims `[start, end)` (ONNX Shape-15 attributes).
    Shape {
        start: Option<i32>,
        end: Option<i32>,
    },
    Rank,
    Size,
    SliceTf,
    StridedSlice {
        /// ONNX-style inputs: (data, starts, ends, axes, steps) instead of full-rank
        /// (data, begin, end, strides).
        onnx: bool,
        begin_mask: i32,
        end_mask: i32,
        ellipsis_mask: i32,
        new_axis_mask: i32,
        shrink_axis_mask: i32,
    },
    /// Caffe-style slice into several outputs at `points` along `axis`.
    Slice {
        axis: i32,
        points: Vec<i32>,
        /// The points are sizes of the parts (TensorFlow/ONNX/Torch sources), not split positions.
        sizes: bool,
    },
    /// Stack inputs along a new axis.
    Pack {
        axis: i32,
    },
    /// Split along an axis into slices with that axis removed.
    Unpack {
        axis: i32,
    },
    /// DepthToSpace (`to_space`) or SpaceToDepth, with DCR or CRD channel order.
    DepthSpace {
        block: usize,
        to_space: bool,
        crd: bool,
    },
    Gather {
        axis: i32,
    },
    Padding {
        mode: PadValueMode,
    },
    Interp(InterpParams),
    Softmax {
        axis: i32,
    },
    LayerNorm {
        axes: Vec<i32>,
        epsilon: f32,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        rms: bool,
    },
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    InnerProduct {
        out_count: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
        axis: i32,
    },
    ConvertTensor {
        source: MnnFormat,
        dest: MnnFormat,
    },
    Cast {
        dtype: DType,
    },
    Reduction {
        op: ReductionType,
        dims: Vec<i32>,
        keep_dims: bool,
    },
    ArgMax {
        axis: i32,
        min: bool,
    },
    Tile,
    BroadcastTo,
    Fill,
    Range,
    Select,
    Crop {
        axis: i32,
        offsets: Vec<i32>,
    },
    Normalize {
        across_spatial: bool,
        channel_shared: bool,
        eps: f32,
        scale: Vec<f32>,
    },
    /// Copies its input (Dropout, Identity...).
    Identity,
}

/// A node of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    /// MNN's op type name, for messages.
    pub type_name: String,
    pub kind: OpKind,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
}

/// A whole model in engine form.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ModelIr {
    pub tensor_names: Vec<String>,
    /// Nodes in an executable (topological) order.
    pub nodes: Vec<Node>,
    /// Model output tensors (MNN `outputName`, or tensors nobody consumes).
    pub outputs: Vec<usize>,
}
