//! Writes the int8 form into the model (doc §7-§8): quantized convolution weights, tensor
//! quant info, Sigmoid/TanH as table-driven UnaryOps.

use std::collections::BTreeMap;

use mnnq_calibrate::{
    quantize_weights_admm, quantize_weights_max_abs, quantize_weights_mse, WeightAdmmOptions,
};
use mnnq_format::{
    Convolution2D, DataType, IdstQuan, Net, Op, OpParameter, OpType, QuantizedFloatParam,
    TensorDescribe, TensorQuantInfo, UnaryOp, UnaryOpOperation,
};

use crate::QuantizeError;
use mnnq_format::weights::encode_dense_codebook;

/// Weight method (doc §7.3-7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum WeightMethod {
    MaxAbs,
    Admm,
    /// Per-channel scale minimising the weights' squared rounding + clipping error
    /// (`weight_range_method: "MSE"`, docs/quality.md).
    Mse,
}

/// Settings of the rewrite.
#[derive(Clone, Debug)]
pub struct RewriteOptions {
    pub weight_method: WeightMethod,
    /// Weight codes in [-weight_clamp, weight_clamp].
    pub weight_clamp: f32,
    /// Feature codes in [-feature_clamp, feature_clamp].
    pub feature_clamp: f32,
    pub quant_bits: u32,
    pub skip_op_names: Vec<String>,
    /// Bias correction (`crate::bias_correction`): per-channel means of convolution inputs,
    /// keyed by input tensor id. None: biases are written unchanged (MNN).
    pub input_channel_means: Option<BTreeMap<u32, Vec<f32>>>,
    /// Convolutions that run float because a tensor has no scale (float head, fallback) still
    /// store int8 weights (IDSTQuan type 1 with `scaleIn = scaleOut = 0`, MNN's weight-only
    /// form, which MNN and our engine decode to float at load), so the file stays about 4x
    /// smaller. False: float weights stay float (MNN's tool).
    pub weight_only_float_convs: bool,
    /// Zero points of the tensors with asymmetric codes (tensor id -> zero point; others 0).
    pub zero_points: BTreeMap<u32, i8>,
    /// GPTQ weight rounding (`crate::weight_rounding`): input second moments per
    /// convolution, keyed by output tensor id. None or a missing entry: nearest rounding.
    pub input_moments: Option<BTreeMap<u32, crate::weight_rounding::InputMoments>>,
}

/// Why a convolution kept float weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvSkipReason {
    /// Listed in `skip_quant_op_names`.
    Skipped,
    /// Weights come from a second input (not constant in the op).
    MultiInput,
    /// Input or output tensor has no scale.
    NoScale,
    /// No inline float weights (already compressed, or external).
    NoFloatWeights,
}

/// What the rewrite did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RewriteSummary {
    pub convolutions_quantized: usize,
    pub convolutions_kept_float: BTreeMap<String, ConvSkipReason>,
    /// Of the convolutions kept float, those whose weights are stored int8 (weight-only).
    pub convolutions_weight_only: usize,
    pub zero_weight_channels: usize,
    pub sigmoid_tanh_converted: usize,
    pub unary_tables: usize,
    /// Unary ops with quant info on both sides but no int8 table we can compute; their
    /// output quant info is dropped so the runtime keeps them in float.
    pub unary_without_table: Vec<String>,
    pub tensors_with_quant_info: usize,
    /// Convolutions whose bias was corrected for the weights' rounding shift.
    pub biases_corrected: usize,
    /// Convolutions whose weight codes were chosen by GPTQ (`weight_rounding`).
    pub weights_rounded_gptq: usize,
}

fn op_name(op: &Op, position: usize) -> String {
    op.name.clone().unwrap_or_else(|| format!("#{position}"))
}

fn single_io(op: &Op) -> Option<(u32, u32)> {
    match (op.input_indexes.as_deref(), op.output_indexes.as_deref()) {
        (Some(&[i]), Some(&[o])) if i >= 0 && o >= 0 => Some((i as u32, o as u32)),
        _ => None,
    }
}

/// `f(x)` of a unary op in f32, as MNN's float kernels define it; `None` for ops we do not
/// tabulate.
pub fn unary_f32(op: UnaryOpOperation, x: f32) -> Option<f32> {
    use UnaryOpOperation as U;
    let erf = |x: f32| -> f32 {
        // Abramowitz & Stegun 7.1.26 in f64 (|error| < 1.5e-7, far below one int8 step).
        let x = f64::from(x);
        let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
        let poly = t
            * (0.254_829_592
                + t * (-0.284_496_736
                    + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
        let y = 1.0 - poly * (-x * x).exp();
        (if x < 0.0 { -y } else { y }) as f32
    };
    Some(match op {
        U::Abs => x.abs(),
        U::Neg => -x,
        U::Floor => x.floor(),
        U::Ceil => x.ceil(),
        U::Square => x * x,
        U::Sqrt => x.sqrt(),
        U::Rsqrt => 1.0 / x.sqrt(),
        U::Exp => x.exp(),
        U::Log => x.ln(),
        U::Sin => x.sin(),
        U::Cos => x.cos(),
        U::Tan => x.tan(),
        U::Asin => x.asin(),
        U::Acos => x.acos(),
        U::Atan => x.atan(),
        U::Reciprocal => 1.0 / x,
        U::Log1p => x.ln_1p(),
        U::Bnll => x.exp().ln_1p(),
        U::Acosh => x.acosh(),
        U::Sinh => x.sinh(),
        U::Asinh => x.asinh(),
        U::Atanh => x.atanh(),
        U::Sign => x.signum() * f32::from(x != 0.0),
        U::Round => x.round(),
        U::Cosh => x.cosh(),
        U::Erf => erf(x),
        U::Erfc => 1.0 - erf(x),
        U::Expm1 => x.exp_m1(),
        U::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        U::Tanh => x.tanh(),
        U::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        U::Gelu => 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh()),
        U::GeluStandard => 0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2)),
        U::Silu => x / (1.0 + (-x).exp()),
        _ => return None,
    })
}

/// The 255-entry int8 table of a unary op: entry `i + 127` = `clamp(round(f(i*s_in)/s_out))`.
/// A NaN result maps to code 0 (our choice: MNN leaves it undefined).
pub fn unary_table(
    op: UnaryOpOperation,
    scale_in: f32,
    scale_out: f32,
    clamp: f32,
) -> Option<Vec<i8>> {
    unary_table_with_zero_points(op, scale_in, 0, scale_out, 0, clamp)
}

/// [`unary_table`] between asymmetric codes: entry `q + 127` is
/// `clamp(round(f((q - z_in) * s_in) / s_out + z_out))`; the table carries both zero points,
/// so MNN's lookup needs nothing else.
pub fn unary_table_with_zero_points(
    op: UnaryOpOperation,
    scale_in: f32,
    zero_in: i8,
    scale_out: f32,
    zero_out: i8,
    clamp: f32,
) -> Option<Vec<i8>> {
    let limit = clamp as i32;
    (-limit..=limit)
        .map(|i| {
            let y = unary_f32(op, (i - i32::from(zero_in)) as f32 * scale_in)?;
            let q = (y / scale_out + f32::from(zero_out)).round();
            Some(if q.is_nan() {
                0
            } else {
                q.clamp(-clamp, clamp) as i8
            })
        })
        .collect::<Option<Vec<i8>>>()
        .map(|mut table| {
            // The runtime indexes `q + 127` over 255 entries whatever the clamp.
            table.resize(255, *table.last().unwrap_or(&0));
            table
        })
}

/// Quantizes one convolution's weights in place.
/// What one convolution's rewrite needs besides its parameters.
struct ConvContext<'a> {
    depthwise: bool,
    scale_in: f32,
    scale_out: f32,
    input_channels: Option<usize>,
    /// Per-channel means of its input (bias correction), if enabled.
    input_means: Option<&'a Vec<f32>>,
    input_moments: Option<&'a crate::weight_rounding::InputMoments>,
}

fn quantize_conv(
    conv: &mut Convolution2D,
    context: ConvContext,
    options: &RewriteOptions,
    summary: &mut RewriteSummary,
) -> Result<(), String> {
    let ConvContext {
        depthwise,
        scale_in,
        scale_out,
        input_channels,
        input_means,
        input_moments,
    } = context;
    let weights = conv.weight.take().unwrap_or_default();
    let common = conv
        .common
        .as_deref_mut()
        .ok_or("convolution without common parameters")?;
    let channels = usize::try_from(common.output_count)
        .ok()
        .filter(|&c| c > 0)
        .ok_or("outputCount is not positive")?;
    let quantized = match options.weight_method {
        WeightMethod::MaxAbs => quantize_weights_max_abs(&weights, channels, options.weight_clamp),
        WeightMethod::Admm => quantize_weights_admm(
            &weights,
            channels,
            &WeightAdmmOptions {
                clamp: options.weight_clamp,
                ..WeightAdmmOptions::default()
            },
        ),
        WeightMethod::Mse => quantize_weights_mse(&weights, channels, options.weight_clamp),
    }
    .map_err(|e| e.to_string())?;
    let mut quantized = quantized;
    if let (Some(moments), WeightMethod::MaxAbs) = (input_moments, options.weight_method) {
        if let Some(codes) = crate::weight_rounding::round_conv(
            &weights,
            &quantized.scales,
            options.weight_clamp,
            moments,
        ) {
            quantized.codes = codes;
            summary.weights_rounded_gptq += 1;
        }
    }
    let per_channel = weights.len() / channels;
    if let Some(means) = input_means {
        let dequantized: Vec<f32> = quantized
            .codes
            .iter()
            .enumerate()
            .map(|(i, &c)| f32::from(c) * quantized.scales[i / per_channel])
            .collect();
        let groups = if depthwise {
            channels
        } else {
            common.group.max(1) as usize
        };
        let kernel_area = (common.kernel_x.max(1) * common.kernel_y.max(1)) as usize;
        let bias = conv.bias.get_or_insert_with(|| vec![0.0; channels]);
        if bias.len() == channels
            && crate::bias_correction::correct_bias(
                &weights,
                &dequantized,
                bias,
                groups,
                kernel_area,
                means,
            )
        {
            summary.biases_corrected += 1;
        }
    }
    summary.zero_weight_channels += weights
        .chunks_exact(per_channel)
        .filter(|c| c.iter().all(|&w| w == 0.0))
        .count();
    if let Some(c) = input_channels {
        common.input_count = c as i32;
    }
    let (buffer, shape_int32) = idst_type1(&quantized.codes, channels, options.quant_bits)?;
    conv.quan_parameter = Some(Box::new(IdstQuan {
        buffer: Some(buffer),
        alpha: Some(quantized.scales),
        type_: 1,
        quant_scale: 1.0,
        scale_in,
        scale_out,
        a_max_or_bits: options.quant_bits as i32,
        shape_int32,
        ..IdstQuan::default()
    }));
    let clamp_max = (1i32 << (options.quant_bits - 1)) - 1;
    conv.symmetric_quan = Some(Box::new(QuantizedFloatParam {
        nbits: options.quant_bits as i32,
        clamp_min: (-clamp_max) as i8,
        clamp_max: clamp_max as i8,
        ..QuantizedFloatParam::default()
    }));
    // MNN's runtime needs a bias vector; a convolution without one gets zeros.
    if conv.bias.as_ref().is_none_or(|b| b.is_empty()) {
        conv.bias = Some(vec![0.0; channels]);
    }
    conv.external = None;
    Ok(())
}

/// Rewrites `net` into the int8 form with feature `scales` (tensor id -> scale).
/// `channels` gives each tensor's channel count as seen during calibration.
pub fn rewrite_net(
    net: &mut Net,
    scales: &BTreeMap<u32, f32>,
    channels: &BTreeMap<u32, usize>,
    options: &RewriteOptions,
) -> Result<RewriteSummary, QuantizeError> {
    let mut summary = RewriteSummary::default();
    let mut scales = scales.clone();
    let ops = net.oplists.get_or_insert_with(Vec::new);

    // Sigmoid / TanH become UnaryOp so the runtime can run them through a table.
    for op in ops.iter_mut() {
        let unary = match op.type_ {
            OpType::Sigmoid => UnaryOpOperation::Sigmoid,
            OpType::TanH => UnaryOpOperation::Tanh,
            _ => continue,
        };
        op.type_ = OpType::UnaryOp;
        op.main = Some(OpParameter::UnaryOp(Box::new(UnaryOp {
            op_type: unary,
            t: DataType::DtFloat,
            table_int8: None,
        })));
        summary.sigmoid_tanh_converted += 1;
    }

    for (position, op) in ops.iter_mut().enumerate() {
        let name = op_name(op, position);
        match op.type_ {
            OpType::Convolution | OpType::ConvolutionDepthwise | OpType::Deconvolution => {
                let reason = if options.skip_op_names.contains(&name) {
                    Some(ConvSkipReason::Skipped)
                } else {
                    match single_io(op) {
                        None => Some(ConvSkipReason::MultiInput),
                        Some((i, o)) if !(scales.contains_key(&i) && scales.contains_key(&o)) => {
                            Some(ConvSkipReason::NoScale)
                        }
                        Some(_) => None,
                    }
                };
                let has_float = matches!(&op.main, Some(OpParameter::Convolution2D(c))
                    if c.weight.as_ref().is_some_and(|w| !w.is_empty()) && c.quan_parameter.is_none() && c.external.is_none());
                let reason = reason.or((!has_float).then_some(ConvSkipReason::NoFloatWeights));
                if let Some(reason) = reason {
                    let weight_only = options.weight_only_float_convs
                        && has_float
                        && reason == ConvSkipReason::NoScale;
                    if weight_only {
                        let Some(OpParameter::Convolution2D(conv)) = &mut op.main else {
                            unreachable!("has_float checked the parameter")
                        };
                        // Zero tensor scales mark the weights as weight-only: the op runs float.
                        let context = ConvContext {
                            depthwise: op.type_ == OpType::ConvolutionDepthwise,
                            scale_in: 0.0,
                            scale_out: 0.0,
                            input_channels: None,
                            input_means: None,
                            input_moments: None,
                        };
                        quantize_conv(conv, context, options, &mut summary).map_err(|message| {
                            QuantizeError::Op {
                                op: name.clone(),
                                message,
                            }
                        })?;
                        // MNN's weight-only form has no int8 compute parameters.
                        conv.symmetric_quan = None;
                        op.external_path = None;
                        summary.convolutions_weight_only += 1;
                    }
                    summary.convolutions_kept_float.insert(name, reason);
                    continue;
                }
                let (i, o) = single_io(op).expect("checked above");
                let depthwise = op.type_ == OpType::ConvolutionDepthwise;
                // The weight layout of a deconvolution is [in][out]: not corrected.
                let means = options
                    .input_channel_means
                    .as_ref()
                    .filter(|_| op.type_ != OpType::Deconvolution)
                    .and_then(|m| m.get(&i));
                let Some(OpParameter::Convolution2D(conv)) = &mut op.main else {
                    unreachable!("checked above")
                };
                let context = ConvContext {
                    depthwise,
                    scale_in: scales[&i],
                    scale_out: scales[&o],
                    input_channels: channels.get(&i).copied(),
                    input_means: means,
                    input_moments: options.input_moments.as_ref().and_then(|m| m.get(&o)),
                };
                quantize_conv(conv, context, options, &mut summary).map_err(|message| {
                    QuantizeError::Op {
                        op: name.clone(),
                        message,
                    }
                })?;
                op.external_path = None;
                summary.convolutions_quantized += 1;
            }
            OpType::UnaryOp => {
                let Some((i, o)) = single_io(op) else {
                    continue;
                };
                let Some(OpParameter::UnaryOp(unary)) = &mut op.main else {
                    continue;
                };
                if matches!(
                    unary.op_type,
                    UnaryOpOperation::Abs | UnaryOpOperation::Neg | UnaryOpOperation::Sign
                ) {
                    continue;
                }
                let (Some(&s_in), Some(&s_out)) = (scales.get(&i), scales.get(&o)) else {
                    continue;
                };
                let zero = |t: &u32| options.zero_points.get(t).copied().unwrap_or(0);
                match unary_table_with_zero_points(
                    unary.op_type,
                    s_in,
                    zero(&i),
                    s_out,
                    zero(&o),
                    options.feature_clamp,
                ) {
                    Some(table) => {
                        unary.table_int8 = Some(table);
                        summary.unary_tables += 1;
                    }
                    None => {
                        scales.remove(&o);
                        summary.unary_without_table.push(name);
                    }
                }
            }
            _ => {}
        }
    }

    // Tensor quant info, merged into existing describes, sorted by index.
    let mut describes: BTreeMap<i32, TensorDescribe> = BTreeMap::new();
    for d in net.extra_tensor_describe.take().into_iter().flatten() {
        describes.insert(d.index, d);
    }
    for (&id, &scale) in &scales {
        let entry = describes
            .entry(id as i32)
            .or_insert_with(|| TensorDescribe {
                index: id as i32,
                ..TensorDescribe::default()
            });
        entry.quant_info = Some(Box::new(TensorQuantInfo {
            scale,
            zero: f32::from(options.zero_points.get(&id).copied().unwrap_or(0)),
            min: -options.feature_clamp,
            max: options.feature_clamp,
            type_: DataType::DtInt8,
        }));
    }
    summary.tensors_with_quant_info = scales.len();
    net.extra_tensor_describe = Some(describes.into_values().collect());
    Ok(summary)
}

/// The IDST type-1 buffer (linear code-book, MSB-first packed indexes) of per-channel codes,
/// and whether its header needs 32-bit dims (a dim above 65535).
fn idst_type1(codes: &[i8], channels: usize, bits: u32) -> Result<(Vec<i8>, bool), String> {
    if channels == 0 || codes.is_empty() || !codes.len().is_multiple_of(channels) {
        return Err(format!(
            "cannot encode {} weight codes as {channels} channels",
            codes.len()
        ));
    }
    let area = codes.len() / channels;
    let too_big =
        |n: usize| u32::try_from(n).map_err(|_| format!("{n} is too large for an IDST header"));
    let (channels, area) = (too_big(channels)?, too_big(area)?);
    let shape_int32 = channels > u32::from(u16::MAX) || area > u32::from(u16::MAX);
    let bytes = encode_dense_codebook(codes, channels, area, bits, shape_int32);
    Ok((bytes.into_iter().map(|b| b as i8).collect(), shape_int32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnnq_format::Convolution2DCommon;

    fn conv_net(weights: Vec<f32>, channels: i32) -> Net {
        let conv = Op {
            input_indexes: Some(vec![0]),
            output_indexes: Some(vec![1]),
            name: Some("conv".into()),
            type_: OpType::Convolution,
            main: Some(OpParameter::Convolution2D(Box::new(Convolution2D {
                common: Some(Box::new(Convolution2DCommon {
                    output_count: channels,
                    ..Convolution2DCommon::default()
                })),
                weight: Some(weights),
                bias: Some(vec![0.5; channels as usize]),
                ..Convolution2D::default()
            }))),
            ..Op::default()
        };
        let sigmoid = Op {
            input_indexes: Some(vec![1]),
            output_indexes: Some(vec![2]),
            name: Some("sig".into()),
            type_: OpType::Sigmoid,
            ..Op::default()
        };
        Net {
            oplists: Some(vec![conv, sigmoid]),
            tensor_name: Some(vec!["x".into(), "y".into(), "z".into()]),
            extra_tensor_describe: Some(vec![TensorDescribe {
                index: 2,
                name: Some("kept".into()),
                ..TensorDescribe::default()
            }]),
            ..Net::default()
        }
    }

    fn options() -> RewriteOptions {
        RewriteOptions {
            weight_method: WeightMethod::MaxAbs,
            weight_clamp: 127.0,
            feature_clamp: 127.0,
            quant_bits: 8,
            skip_op_names: vec![],
            input_channel_means: None,
            input_moments: None,
            weight_only_float_convs: false,
            zero_points: BTreeMap::new(),
        }
    }

    #[test]
    fn zero_channel_gets_zero_codes_and_finite_alpha() {
        // Channel 0: max 2.54 -> alpha 0.02, codes w/0.02; channel 1: all zero.
        let mut net = conv_net(vec![2.54, -1.27, 0.0, 0.0, 0.0, 0.0], 2);
        let scales = BTreeMap::from([(0, 0.1f32), (1, 0.2), (2, 1.0 / 127.0)]);
        let channels = BTreeMap::from([(0, 3usize)]);
        let summary = rewrite_net(&mut net, &scales, &channels, &options()).unwrap();
        assert_eq!(summary.convolutions_quantized, 1);
        assert_eq!(summary.zero_weight_channels, 1);
        assert_eq!(summary.sigmoid_tanh_converted, 1);
        assert_eq!(summary.unary_tables, 1);
        let ops = net.oplists.as_ref().unwrap();
        let Some(OpParameter::Convolution2D(conv)) = &ops[0].main else {
            panic!()
        };
        assert!(conv.weight.is_none());
        assert_eq!(conv.common.as_ref().unwrap().input_count, 3);
        let q = conv.quan_parameter.as_ref().unwrap();
        let alpha = q.alpha.as_ref().unwrap();
        assert_eq!(alpha[0], 2.54 / 127.0);
        assert!(alpha[1].is_finite() && alpha[1] > 0.0);
        assert_eq!((q.scale_in, q.scale_out), (0.1, 0.2));
        let buffer: Vec<u8> = q
            .buffer
            .as_ref()
            .unwrap()
            .iter()
            .map(|&b| b as u8)
            .collect();
        let blob = mnnq_format::weights::decode_dense_codebook(&buffer, false).unwrap();
        assert_eq!(blob.codes, vec![127, -64, 0, 0, 0, 0]);
        // Sigmoid became a table-driven UnaryOp.
        assert_eq!(ops[1].type_, OpType::UnaryOp);
        let Some(OpParameter::UnaryOp(u)) = &ops[1].main else {
            panic!()
        };
        assert_eq!(u.op_type, UnaryOpOperation::Sigmoid);
        assert_eq!(u.table_int8.as_ref().unwrap().len(), 255);
        // Describes: sorted, the existing one keeps its name.
        let d = net.extra_tensor_describe.as_ref().unwrap();
        assert_eq!(d.iter().map(|d| d.index).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(d[2].name.as_deref(), Some("kept"));
        assert_eq!(d[1].quant_info.as_ref().unwrap().scale, 0.2);
    }

    #[test]
    fn conv_without_scales_keeps_float_weights() {
        let mut net = conv_net(vec![1.0, 2.0], 2);
        let scales = BTreeMap::from([(0, 0.1f32)]);
        let summary = rewrite_net(&mut net, &scales, &BTreeMap::new(), &options()).unwrap();
        assert_eq!(summary.convolutions_quantized, 0);
        assert_eq!(
            summary.convolutions_kept_float.get("conv"),
            Some(&ConvSkipReason::NoScale)
        );
        let Some(OpParameter::Convolution2D(conv)) = &net.oplists.as_ref().unwrap()[0].main else {
            panic!()
        };
        assert_eq!(conv.weight.as_deref(), Some(&[1.0f32, 2.0][..]));
    }

    #[test]
    fn conv_without_scales_stores_weight_only_int8_when_asked() {
        // Channel 0: 1.0, 2.0 -> alpha 2/127, codes 64 (63.5 away from zero), 127.
        let mut net = conv_net(vec![1.0, 2.0], 1);
        let scales = BTreeMap::from([(0, 0.1f32)]);
        let options = RewriteOptions {
            weight_only_float_convs: true,
            ..options()
        };
        let summary = rewrite_net(&mut net, &scales, &BTreeMap::new(), &options).unwrap();
        assert_eq!(summary.convolutions_quantized, 0);
        assert_eq!(summary.convolutions_weight_only, 1);
        assert_eq!(
            summary.convolutions_kept_float.get("conv"),
            Some(&ConvSkipReason::NoScale)
        );
        let Some(OpParameter::Convolution2D(conv)) = &net.oplists.as_ref().unwrap()[0].main else {
            panic!()
        };
        assert!(conv.weight.is_none());
        assert!(conv.symmetric_quan.is_none(), "no int8 compute parameters");
        let q = conv.quan_parameter.as_ref().unwrap();
        assert_eq!((q.type_, q.scale_in, q.scale_out), (1, 0.0, 0.0));
        assert_eq!(q.alpha.as_deref(), Some(&[2.0f32 / 127.0][..]));
        let buffer: Vec<u8> = q
            .buffer
            .as_ref()
            .unwrap()
            .iter()
            .map(|&b| b as u8)
            .collect();
        let blob = mnnq_format::weights::decode_dense_codebook(&buffer, false).unwrap();
        assert_eq!(blob.codes, vec![64, 127]);
        // The output tensor carries no quant info, so the op runs float.
        let described = net.extra_tensor_describe.as_deref().unwrap_or_default();
        assert!(described
            .iter()
            .filter(|d| d.index == 1)
            .all(|d| d.quant_info.is_none()));
    }

    #[test]
    fn sigmoid_table_by_hand() {
        // s_in = 0.05, s_out = 1/127: entry for i = 20 (x = 1.0) is round(sigmoid(1)*127) = 93.
        let table = unary_table(UnaryOpOperation::Sigmoid, 0.05, 1.0 / 127.0, 127.0).unwrap();
        assert_eq!(table.len(), 255);
        assert_eq!(table[127 + 20], 93);
        assert_eq!(table[127], 64); // sigmoid(0) = 0.5 -> 63.5 rounds away from zero
        assert_eq!(table[0], 0); // sigmoid(-6.35) * 127 = 0.22
    }

    #[test]
    fn tanh_table_clamps() {
        let table = unary_table(UnaryOpOperation::Tanh, 0.1, 0.005, 127.0).unwrap();
        assert_eq!(table[254], 127);
        assert_eq!(table[0], -127);
        assert_eq!(table[127], 0);
    }
}
