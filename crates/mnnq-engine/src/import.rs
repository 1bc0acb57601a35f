//! Building the engine's graph from an MNN `Net` (as decoded by `mnnq-format`).

use mnnq_format::{Model, Net, Op, OpParameter, OpType};

use crate::error::EngineError;
use crate::ir::*;
use crate::tensor::{DType, Value};

/// MNN `DataType` number to our element type.
fn dtype_of(code: i32) -> DType {
    match code {
        // DT_FLOAT, DT_DOUBLE, DT_BFLOAT16, DT_HALF (and DT_INVALID, which MNN treats as float).
        0 | 1 | 2 | 14 | 19 => DType::F32,
        _ => DType::I32,
    }
}

/// A constant tensor from a `Blob`.
pub fn blob_value(blob: &mnnq_format::Blob) -> Result<Value, String> {
    let dims: Vec<usize> = blob
        .dims
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let count: usize = dims.iter().product();
    let dtype = dtype_of(blob.data_type as i32);
    let value = if let Some(f) = blob.float32s.as_ref().filter(|v| !v.is_empty()) {
        let mut v = Value::from_f32(dims.clone(), f.clone());
        if dtype == DType::I32 {
            v = Value::from_i32(
                dims.clone(),
                &f.iter().map(|&x| x as i32).collect::<Vec<_>>(),
            );
        }
        v
    } else if let Some(i) = blob.int32s.as_ref().filter(|v| !v.is_empty()) {
        if dtype == DType::F32 {
            Value::from_f32(dims.clone(), i.iter().map(|&x| x as f32).collect())
        } else {
            Value::from_i32(dims.clone(), i)
        }
    } else if let Some(i) = blob.int64s.as_ref().filter(|v| !v.is_empty()) {
        let clamped: Vec<i32> = i
            .iter()
            .map(|&x| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
            .collect();
        Value::from_i32(dims.clone(), &clamped)
    } else if let Some(u) = blob.uint8s.as_ref().filter(|v| !v.is_empty()) {
        let ints: Vec<i32> = u.iter().map(|&x| x as i32).collect();
        Value::from_i32(dims.clone(), &ints)
    } else if let Some(u) = blob.int8s.as_ref().filter(|v| !v.is_empty()) {
        let ints: Vec<i32> = u.iter().map(|&x| x as i32).collect();
        Value::from_i32(dims.clone(), &ints)
    } else if blob.external.is_some() {
        return Err("constants stored in an external weight file are not supported".into());
    } else if count == 0 {
        Value::from_f32(dims.clone(), vec![])
    } else {
        return Err(format!("constant of shape {dims:?} carries no data"));
    };
    if value.data.len() != count {
        if dims.is_empty() && value.data.len() == 1 {
            return Ok(value);
        }
        return Err(format!(
            "constant of shape {dims:?} has {} values",
            value.data.len()
        ));
    }
    Ok(value)
}

fn pads4(v: Option<&Vec<i32>>) -> Option<[usize; 4]> {
    let v = v?;
    match v.len() {
        4 => Some([v[0], v[1], v[2], v[3]].map(|p| p.max(0) as usize)),
        2 => Some([v[0], v[1], v[0], v[1]].map(|p| p.max(0) as usize)),
        _ => None,
    }
}

fn conv_params(op: &Op, conv: &mnnq_format::Convolution2D) -> Result<ConvParams, String> {
    let c = conv
        .common
        .as_ref()
        .ok_or("convolution without common parameters")?;
    // Compressed or int8 weights run float with their dequantized values (what MNN does for
    // ops that stay float); the int8 runtime reads the codes separately.
    let decoded = match conv.quan_parameter.is_some() {
        true => Some(
            mnnq_format::weights::decode_conv(conv, None)
                .map_err(|e| format!("cannot decode the quantized weights: {e}"))?,
        ),
        false => None,
    };
    if conv.external.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err("convolution weights in an external file are not supported".into());
    }
    let kind = match op.type_ {
        OpType::Convolution => ConvKind::Convolution,
        OpType::ConvolutionDepthwise => ConvKind::Depthwise,
        OpType::Deconvolution => ConvKind::Deconvolution,
        OpType::DeconvolutionDepthwise => ConvKind::DeconvolutionDepthwise,
        // Only the window matters.
        OpType::Im2Col => ConvKind::Convolution,
        other => return Err(format!("{other:?} is not a float convolution")),
    };
    let weights = match &decoded {
        Some(d) => d.weight.clone(),
        None => conv.weight.clone().unwrap_or_default(),
    };
    let out_channels = c.output_count.max(0) as usize;
    let (kh, kw) = (c.kernel_y.max(1) as usize, c.kernel_x.max(1) as usize);
    let mut group = c.group.max(1) as usize;
    if matches!(kind, ConvKind::Depthwise | ConvKind::DeconvolutionDepthwise) {
        group = out_channels.max(1);
    }
    let mut in_channels = c.input_count.max(0) as usize;
    if in_channels == 0 && !weights.is_empty() && out_channels > 0 {
        in_channels = match kind {
            ConvKind::Convolution | ConvKind::Depthwise => {
                weights.len() * group / (out_channels * kh * kw)
            }
            _ => weights.len() * group / (out_channels * kh * kw),
        };
    }
    let activation = if c.relu6 {
        Activation::Relu6
    } else if c.relu {
        Activation::Relu
    } else {
        Activation::None
    };
    let out_pads = match c.out_pads.as_deref() {
        Some([h, w, ..]) => [(*h).max(0) as usize, (*w).max(0) as usize],
        _ => [0, 0],
    };
    if c.has_output_shape && !kind.is_deconvolution() {
        return Err("an output shape input is only supported on deconvolutions".into());
    }
    Ok(ConvParams {
        kind,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: c.stride_y.max(1) as usize,
        stride_w: c.stride_x.max(1) as usize,
        dilation_h: c.dilate_y.max(1) as usize,
        dilation_w: c.dilate_x.max(1) as usize,
        pad_mode: PadMode::from_mnn(c.pad_mode as i32),
        pad_x: c.pad_x.max(0) as usize,
        pad_y: c.pad_y.max(0) as usize,
        pads: pads4(c.pads.as_ref()),
        out_pads,
        group,
        in_channels,
        out_channels,
        activation,
        weights,
        bias: match decoded {
            Some(d) if !d.bias.is_empty() => d.bias,
            _ => conv.bias.clone().unwrap_or_default(),
        },
        has_output_shape: c.has_output_shape,
        output_size: None,
    })
}

fn op_kind(op: &Op) -> Result<OpKind, String> {
    let main = op.main.as_ref();
    macro_rules! param {
        ($variant:ident) => {
            match main {
                Some(OpParameter::$variant(p)) => Some(p.as_ref()),
                _ => None,
            }
        };
    }
    macro_rules! need {
        ($variant:ident) => {
            param!($variant)
                .ok_or_else(|| format!("missing {} parameters", stringify!($variant)))?
        };
    }
    Ok(match op.type_ {
        OpType::Input => {
            let p = need!(Input);
            OpKind::Input {
                dims: p.dims.clone().unwrap_or_default(),
                dtype: dtype_of(p.dtype as i32),
                format: MnnFormat::from_mnn(p.dformat as i32),
            }
        }
        OpType::Const | OpType::TrainableParam => {
            let b = need!(Blob);
            OpKind::Const {
                value: blob_value(b)?,
                format: MnnFormat::from_mnn(b.data_format as i32),
            }
        }
        OpType::Convolution
        | OpType::ConvolutionDepthwise
        | OpType::Deconvolution
        | OpType::DeconvolutionDepthwise => {
            OpKind::Conv(Box::new(conv_params(op, need!(Convolution2D))?))
        }
        OpType::Im2Col => OpKind::Im2Col(Box::new(conv_params(op, need!(Convolution2D))?)),
        OpType::Pooling => {
            let p = need!(Pool);
            OpKind::Pool(PoolParams {
                pool_type: if p.type_ as i32 == 0 {
                    PoolType::Max
                } else {
                    PoolType::Average
                },
                global: p.is_global,
                kernel_h: p.kernel_y.max(1) as usize,
                kernel_w: p.kernel_x.max(1) as usize,
                stride_h: p.stride_y.max(1) as usize,
                stride_w: p.stride_x.max(1) as usize,
                pad_mode: PadMode::from_mnn(p.pad_type as i32),
                pad_x: p.pad_x.max(0) as usize,
                pad_y: p.pad_y.max(0) as usize,
                pads: pads4(p.pads.as_ref()),
                ceil_mode: p.ceil_model,
                count_type: p.count_type as i32,
            })
        }
        OpType::Pooling3D => {
            let p = need!(Pool3D);
            let kernels = p.kernels.clone().unwrap_or_default();
            let strides = p.strides.clone().unwrap_or_default();
            let pads = p.pads.clone().unwrap_or_default();
            let pool_type = if p.type_ as i32 == 0 {
                PoolType::Max
            } else {
                PoolType::Average
            };
            let pad_mode = PadMode::from_mnn(p.pad_type as i32);
            let k = |i: usize| kernels.get(i).copied().unwrap_or(1).max(1) as usize;
            let s = |i: usize| strides.get(i).copied().unwrap_or(1).max(1) as usize;
            let pad = |i: usize| pads.get(i).copied().unwrap_or(0).max(0) as usize;
            let base = PoolParams {
                pool_type,
                global: p.is_global,
                kernel_h: 1,
                kernel_w: 1,
                stride_h: 1,
                stride_w: 1,
                pad_mode,
                pad_x: 0,
                pad_y: 0,
                pads: None,
                ceil_mode: false,
                count_type: 0,
            };
            if kernels.len() == 3 || (p.is_global && kernels.is_empty()) {
                OpKind::Pool3D {
                    hw: PoolParams {
                        kernel_h: k(1),
                        kernel_w: k(2),
                        stride_h: s(1),
                        stride_w: s(2),
                        pad_y: pad(1),
                        pad_x: pad(2),
                        ..base.clone()
                    },
                    depth: PoolParams {
                        kernel_h: k(0),
                        stride_h: s(0),
                        pad_y: pad(0),
                        // MNN pools the depth with padding excluded from averages.
                        count_type: 2,
                        ..base
                    },
                }
            } else if kernels.len() == 2 || p.is_global {
                OpKind::Pool(PoolParams {
                    kernel_h: k(0),
                    kernel_w: k(1),
                    stride_h: s(0),
                    stride_w: s(1),
                    pad_x: pad(1),
                    pad_y: pad(0),
                    pads: if pads.len() == 4 {
                        pads4(Some(&pads))
                    } else {
                        None
                    },
                    ..base
                })
            } else {
                return Err(format!("Pool3D with kernels {kernels:?} is not supported"));
            }
        }
        OpType::BinaryOp => {
            let p = need!(BinaryOp);
            OpKind::Binary {
                op: BinaryOperation::from_mnn(p.op_type as i32).ok_or_else(|| {
                    format!("binary operation {} is not supported", p.op_type as i32)
                })?,
                relu: p.activation_type == 1,
            }
        }
        OpType::UnaryOp => {
            let p = need!(UnaryOp);
            OpKind::Unary(
                UnaryOperation::from_mnn(p.op_type as i32).ok_or_else(|| {
                    format!("unary operation {} is not supported", p.op_type as i32)
                })?,
            )
        }
        OpType::Sigmoid => OpKind::Unary(UnaryOperation::Sigmoid),
        OpType::TanH => OpKind::Unary(UnaryOperation::Tanh),
        OpType::Exp => OpKind::Unary(UnaryOperation::Exp),
        OpType::Log => OpKind::Unary(UnaryOperation::Log),
        OpType::Bnll => OpKind::Unary(UnaryOperation::Bnll),
        OpType::AbsVal => OpKind::Unary(UnaryOperation::Abs),
        OpType::ReLu => OpKind::Relu {
            slope: param!(Relu).map(|p| p.slope).unwrap_or(0.0),
        },
        OpType::ReLu6 => {
            let (min, max) = param!(Relu6)
                .map(|p| (p.min_value, p.max_value))
                .unwrap_or((0.0, 6.0));
            OpKind::Relu6 { min, max }
        }
        OpType::PReLu => OpKind::PRelu {
            slopes: need!(PRelu).slope.clone().unwrap_or_default(),
        },
        OpType::Elu => OpKind::Elu {
            alpha: param!(Elu).map(|p| p.alpha).unwrap_or(1.0),
        },
        OpType::Selu => {
            let p = need!(Selu);
            OpKind::Selu {
                scale: p.scale,
                alpha: p.alpha,
            }
        }
        OpType::Eltwise => {
            let p = need!(Eltwise);
            OpKind::Eltwise {
                kind: match p.type_ as i32 {
                    0 => EltwiseType::Prod,
                    1 => EltwiseType::Sum,
                    2 => EltwiseType::Max,
                    _ => EltwiseType::Sub,
                },
                coeff: p.coeff.clone().unwrap_or_default(),
            }
        }
        OpType::Scale => {
            let p = need!(Scale);
            if p.external.as_ref().is_some_and(|e| !e.is_empty()) {
                return Err("Scale data in an external file is not supported".into());
            }
            OpKind::Scale {
                scale: p.scale_data.clone().unwrap_or_default(),
                bias: p.bias_data.clone().unwrap_or_default(),
            }
        }
        OpType::BatchNorm => {
            let p = need!(BatchNorm);
            let get = |v: &Option<Vec<f32>>| v.clone().unwrap_or_default();
            let (slope, mean, var, bias) = (
                get(&p.slope_data),
                get(&p.mean_data),
                get(&p.var_data),
                get(&p.bias_data),
            );
            let n = p.channels.max(0) as usize;
            let mut scale = vec![1.0; n];
            let mut shift = vec![0.0; n];
            for c in 0..n {
                let a = slope.get(c).copied().unwrap_or(1.0)
                    / (var.get(c).copied().unwrap_or(1.0) + p.epsilon).sqrt();
                scale[c] = a;
                shift[c] =
                    bias.get(c).copied().unwrap_or(0.0) - mean.get(c).copied().unwrap_or(0.0) * a;
            }
            OpKind::Scale { scale, bias: shift }
        }
        OpType::Concat => OpKind::Concat {
            axis: need!(Axis).axis,
        },
        OpType::Softmax => OpKind::Softmax {
            axis: param!(Axis).map(|p| p.axis).unwrap_or(1),
        },
        OpType::Reshape => {
            let p = param!(Reshape);
            OpKind::Reshape {
                dims: p.and_then(|p| p.dims.clone()).unwrap_or_default(),
                dim_type: MnnFormat::from_mnn(p.map(|p| p.dim_type as i32).unwrap_or(0)),
            }
        }
        OpType::Flatten => {
            let p = need!(Flatten);
            OpKind::Flatten {
                axis: p.axis,
                end_axis: p.end_axis,
            }
        }
        OpType::Squeeze => OpKind::Squeeze {
            dims: param!(SqueezeParam)
                .and_then(|p| p.squeeze_dims.clone())
                .unwrap_or_default(),
        },
        OpType::Unsqueeze => OpKind::Unsqueeze {
            dims: param!(SqueezeParam)
                .and_then(|p| p.squeeze_dims.clone())
                .unwrap_or_default(),
        },
        OpType::ExpandDims => OpKind::ExpandDims {
            axis: param!(ExpandDims).map(|p| p.axis).unwrap_or(0),
        },
        OpType::Permute => OpKind::Permute {
            dims: need!(Permute).dims.clone().unwrap_or_default(),
        },
        OpType::Transpose => OpKind::Transpose,
        OpType::Shape => {
            let p = param!(ShapeParam);
            OpKind::Shape {
                start: p.filter(|p| p.has_start).map(|p| p.start),
                end: p.filter(|p| p.has_end).map(|p| p.end),
            }
        }
        OpType::Pack => OpKind::Pack {
            axis: param!(PackParam).map(|p| p.axis).unwrap_or(0),
        },
        OpType::Unpack => OpKind::Unpack {
            axis: param!(Axis).map(|p| p.axis).unwrap_or(0),
        },
        OpType::DepthToSpace | OpType::SpaceToDepth => {
            let p = need!(DepthSpaceParam);
            OpKind::DepthSpace {
                block: p.block_size.max(1) as usize,
                to_space: op.type_ == OpType::DepthToSpace,
                crd: p.mode as i32 == 1,
            }
        }
        OpType::Rank => OpKind::Rank,
        OpType::Size => OpKind::Size,
        OpType::SliceTf => OpKind::SliceTf,
        OpType::StridedSlice => {
            let p = need!(StridedSliceParam);
            OpKind::StridedSlice {
                onnx: p.from_type == 1,
                begin_mask: p.begin_mask,
                end_mask: p.end_mask,
                ellipsis_mask: p.ellipsis_mask,
                new_axis_mask: p.new_axis_mask,
                shrink_axis_mask: p.shrink_axis_mask,
            }
        }
        OpType::Slice => {
            let p = need!(Slice);
            OpKind::Slice {
                axis: p.axis,
                points: p.slice_points.clone().unwrap_or_default(),
                sizes: p.source_type as i32 != 0,
            }
        }
        OpType::Gather | OpType::GatherV2 => OpKind::Gather {
            axis: param!(Gather)
                .map(|p| p.axis)
                .or(param!(Axis).map(|p| p.axis))
                .unwrap_or(0),
        },
        OpType::Padding => OpKind::Padding {
            mode: match param!(PadParam).map(|p| p.mode as i32).unwrap_or(0) {
                1 => PadValueMode::Reflect,
                2 => PadValueMode::Symmetric,
                3 => PadValueMode::Edge,
                _ => PadValueMode::Constant,
            },
        },
        OpType::Interp => {
            let p = need!(Interp);
            OpKind::Interp(InterpParams {
                resize_type: p.resize_type,
                align_corners: p.align_corners,
                half_pixel_centers: p.half_pixel_centers,
                width_scale: p.width_scale,
                height_scale: p.height_scale,
                output_width: p.output_width.max(0) as usize,
                output_height: p.output_height.max(0) as usize,
                width_offset: p.width_offset,
                height_offset: p.height_offset,
                cubic_coeff_a: p.cubic_coeff_a,
                ctm: p.ctm as i32,
            })
        }
        OpType::LayerNorm => {
            let p = need!(LayerNorm);
            if p.external.as_ref().is_some_and(|e| !e.is_empty()) {
                return Err("LayerNorm data in an external file is not supported".into());
            }
            if p.group > 1 {
                return Err("grouped LayerNorm is not supported".into());
            }
            OpKind::LayerNorm {
                axes: p.axis.clone().unwrap_or_default(),
                epsilon: p.epsilon,
                gamma: p.gamma.clone().unwrap_or_default(),
                beta: p.beta.clone().unwrap_or_default(),
                rms: p.use_rms_norm,
            }
        }
        OpType::MatMul => {
            let p = param!(MatMul);
            if p.is_some_and(|p| p.weight.as_ref().is_some_and(|w| !w.is_empty())) {
                return Err("MatMul with embedded weights is not supported".into());
            }
            OpKind::MatMul {
                transpose_a: p.map(|p| p.transpose_a).unwrap_or(false),
                transpose_b: p.map(|p| p.transpose_b).unwrap_or(false),
            }
        }
        OpType::BatchMatMul => {
            let p = param!(BatchMatMulParam);
            OpKind::MatMul {
                transpose_a: p.map(|p| p.adj_x).unwrap_or(false),
                transpose_b: p.map(|p| p.adj_y).unwrap_or(false),
            }
        }
        OpType::InnerProduct => {
            let p = need!(InnerProduct);
            if p.quan_parameter.is_some() {
                return Err("quantized InnerProduct weights are not supported".into());
            }
            OpKind::InnerProduct {
                out_count: p.output_count.max(0) as usize,
                weights: p.weight.clone().unwrap_or_default(),
                bias: p.bias.clone().unwrap_or_default(),
                axis: p.axis,
            }
        }
        OpType::ConvertTensor => {
            let p = need!(TensorConvertInfo);
            OpKind::ConvertTensor {
                source: MnnFormat::from_mnn(p.source as i32),
                dest: MnnFormat::from_mnn(p.dest as i32),
            }
        }
        OpType::Cast => OpKind::Cast {
            dtype: dtype_of(need!(CastParam).dst_t as i32),
        },
        OpType::Reduction => {
            let p = need!(ReductionParam);
            OpKind::Reduction {
                op: ReductionType::from_mnn(p.operation as i32)
                    .ok_or_else(|| format!("reduction {} is not supported", p.operation as i32))?,
                dims: p.dim.clone().unwrap_or_default(),
                keep_dims: p.keep_dims,
            }
        }
        OpType::ArgMax | OpType::ArgMin => {
            let p = need!(ArgMax);
            if p.top_k > 1 || p.out_max_val != 0 {
                return Err("ArgMax with topK > 1 or outMaxVal is not supported".into());
            }
            OpKind::ArgMax {
                axis: p.axis,
                min: op.type_ == OpType::ArgMin,
            }
        }
        OpType::Tile => OpKind::Tile,
        OpType::BroadcastTo => OpKind::BroadcastTo,
        OpType::Fill => OpKind::Fill,
        OpType::Range => OpKind::Range,
        OpType::Select => OpKind::Select,
        OpType::Crop => {
            let p = need!(Crop);
            OpKind::Crop {
                axis: p.axis,
                offsets: p.offset.clone().unwrap_or_default(),
            }
        }
        OpType::Normalize => {
            let p = need!(Normalize);
            OpKind::Normalize {
                across_spatial: p.across_spatial != 0,
                channel_shared: p.channel_shared != 0,
                eps: p.eps,
                scale: p.scale.clone().unwrap_or_default(),
            }
        }
        OpType::Dropout | OpType::Identity => OpKind::Identity,
        other => {
            return Err(format!(
                "op type {other:?} is not supported by the float engine"
            ))
        }
    })
}

/// Converts a whole `Net`.
pub fn net_to_ir(net: &Net) -> Result<ModelIr, EngineError> {
    let tensor_names = net.tensor_name.clone().unwrap_or_default();
    let ops = net
        .oplists
        .as_deref()
        .ok_or_else(|| EngineError::Model("the model has no ops".into()))?;
    if net.subgraphs.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(EngineError::Model(
            "models with subgraphs (While/If) are not supported".into(),
        ));
    }
    let mut nodes = Vec::with_capacity(ops.len());
    for op in ops {
        let type_name = format!("{:?}", op.type_);
        let name = op.name.clone().unwrap_or_default();
        let kind = op_kind(op).map_err(|message| EngineError::Op {
            op_type: type_name.clone(),
            op_name: name.clone(),
            message,
        })?;
        let idx = |v: &Option<Vec<i32>>| -> Result<Vec<usize>, EngineError> {
            v.as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|&i| {
                    usize::try_from(i)
                        .ok()
                        .filter(|&i| i < tensor_names.len())
                        .ok_or_else(|| EngineError::Op {
                            op_type: type_name.clone(),
                            op_name: name.clone(),
                            message: format!("tensor index {i} out of range"),
                        })
                })
                .collect()
        };
        nodes.push(Node {
            inputs: idx(&op.input_indexes)?,
            outputs: idx(&op.output_indexes)?,
            name,
            type_name,
            kind,
        });
    }
    let mut outputs = Vec::new();
    for out in net.output_name.as_deref().unwrap_or(&[]) {
        let t = tensor_names
            .iter()
            .position(|n| n == out)
            .ok_or_else(|| EngineError::Model(format!("output '{out}' names no tensor")))?;
        outputs.push(t);
    }
    Ok(ModelIr {
        tensor_names,
        nodes,
        outputs,
    })
}

impl crate::Engine {
    /// Loads and prepares an `.mnn` file.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<crate::Engine, EngineError> {
        let path = path.as_ref();
        let model = Model::load(path).map_err(|e| EngineError::Load(e.to_string()))?;
        Self::from_model(&model).map_err(|e| match e {
            EngineError::File { .. } | EngineError::Load(_) => e,
            other => EngineError::File {
                path: path.display().to_string(),
                message: other.to_string(),
            },
        })
    }

    /// Prepares a model already in memory.
    pub fn from_model(model: &Model) -> Result<crate::Engine, EngineError> {
        let mut engine = crate::Engine::from_ir(net_to_ir(&model.net)?)?;
        if !engine.is_value_dependent() {
            engine.int8 = crate::int8::Int8Plan::build(&model.net, &engine)?.map(Box::new);
        }
        Ok(engine)
    }
}
