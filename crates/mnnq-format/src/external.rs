//! Moving data out of the `.weight` sidecar into the model itself, as MNN's quantization tool does
//! before it quantizes (`_treateExternalOps`), so that the result is one self-contained file.

use crate::error::FormatError;
use crate::generated::mnn::{Blob, DataType, Op, OpParameter};
use crate::model::Model;
use crate::weights::{decode_conv, f32s_from_le, sidecar_slice, QuanParts, WeightError};

fn has_external(external: &Option<Vec<i64>>) -> bool {
    external.as_ref().is_some_and(|e| e.len() > 1)
}

/// `[offset, firstBytes, secondBytes]` -> two f32 arrays stored back to back.
fn two_float_arrays(
    external: &[i64],
    sidecar: Option<&[u8]>,
) -> Result<(Vec<f32>, Vec<f32>), WeightError> {
    let first = f32s_from_le(
        sidecar_slice(sidecar, external[0], external[1], "data")?,
        "data",
    )?;
    let second = match external.get(2) {
        Some(&len) => {
            let at = external[0].saturating_add(external[1]);
            f32s_from_le(sidecar_slice(sidecar, at, len, "data")?, "data")?
        }
        None => Vec::new(),
    };
    Ok((first, second))
}

fn inline_blob(blob: &mut Blob, sidecar: Option<&[u8]>) -> Result<(), WeightError> {
    let Some(external) = blob.external.take().filter(|e| e.len() > 1) else {
        return Ok(());
    };
    let bytes = sidecar_slice(sidecar, external[0], external[1], "constant")?;
    let whole = |size: usize| {
        if bytes.len() % size == 0 {
            Ok(bytes.chunks_exact(size))
        } else {
            Err(WeightError(format!(
                "{} bytes of constant data do not fit {:?} elements",
                bytes.len(),
                blob.data_type
            )))
        }
    };
    match blob.data_type {
        DataType::DtFloat => blob.float32s = Some(f32s_from_le(bytes, "constant")?),
        DataType::DtInt32 => {
            blob.int32s = Some(
                whole(4)?
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        DataType::DtInt64 => {
            blob.int64s = Some(
                whole(8)?
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            )
        }
        DataType::DtInt8 => blob.int8s = Some(bytes.iter().map(|&b| b as i8).collect()),
        DataType::DtUint8 | DataType::DtBool => blob.uint8s = Some(bytes.to_vec()),
        other => {
            return Err(WeightError(format!(
                "external constants of type {other:?} cannot be inlined"
            )))
        }
    }
    Ok(())
}

fn inline_op(op: &mut Op, sidecar: Option<&[u8]>) -> Result<(), WeightError> {
    match op.main.as_mut() {
        Some(OpParameter::Convolution2D(conv)) if has_external(&conv.external) => {
            let external = conv.external.take().expect("checked above");
            match conv.quan_parameter.as_deref_mut() {
                Some(quan) if quan.type_ == 8 => {
                    // Type 8 only marks "float weights in the sidecar": make it a float conv.
                    let restored = decode_conv(
                        &crate::Convolution2D {
                            external: Some(external),
                            quan_parameter: Some(Box::new(quan.clone())),
                            ..Default::default()
                        },
                        sidecar,
                    )?;
                    conv.quan_parameter = None;
                    conv.weight = Some(restored.weight);
                    if conv.bias.is_none() && !restored.bias.is_empty() {
                        conv.bias = Some(restored.bias);
                    }
                }
                Some(quan) => {
                    let parts = QuanParts::gather(quan, Some(&external), sidecar)?;
                    quan.buffer = Some(parts.buffer.iter().map(|&b| b as i8).collect());
                    // f16 scales widen to f32 exactly, so storing them as f32 loses nothing.
                    quan.alpha = Some(parts.alpha);
                    quan.alpha_fp16 = None;
                    quan.scale_storage = crate::ScaleStorageType::Fp32;
                    if parts.index.is_some() {
                        quan.index = parts.index;
                    }
                    if conv.bias.is_none() {
                        conv.bias = parts.external_bias;
                    }
                }
                None => {
                    let (weight, bias) = two_float_arrays(&external, sidecar)?;
                    conv.weight = Some(weight);
                    if conv.bias.is_none() {
                        conv.bias = Some(bias);
                    }
                }
            }
        }
        Some(OpParameter::Convolution3D(conv)) if has_external(&conv.external) => {
            let (weight, bias) =
                two_float_arrays(&conv.external.take().expect("checked"), sidecar)?;
            conv.weight = Some(weight);
            conv.bias = Some(bias);
        }
        Some(OpParameter::Scale(scale)) if has_external(&scale.external) => {
            let (data, bias) = two_float_arrays(&scale.external.take().expect("checked"), sidecar)?;
            scale.scale_data = Some(data);
            scale.bias_data = Some(bias);
        }
        Some(OpParameter::LayerNorm(norm)) if has_external(&norm.external) => {
            let (gamma, beta) = two_float_arrays(&norm.external.take().expect("checked"), sidecar)?;
            norm.gamma = Some(gamma);
            norm.beta = Some(beta);
        }
        Some(OpParameter::GroupNorm(norm)) if has_external(&norm.external) => {
            let (gamma, beta) = two_float_arrays(&norm.external.take().expect("checked"), sidecar)?;
            norm.gamma = Some(gamma);
            norm.beta = Some(beta);
        }
        Some(OpParameter::Blob(blob)) => inline_blob(blob, sidecar)?,
        Some(OpParameter::LoopParam(loop_param)) => {
            let commands = loop_param.commands.iter_mut().flatten();
            let init = loop_param.init_command.iter_mut().flatten();
            for command in commands.chain(init) {
                if let Some(inner) = command.op.as_deref_mut() {
                    inline_op(inner, sidecar)?;
                }
            }
        }
        _ => {}
    }
    op.external_path = None;
    Ok(())
}

impl Model {
    /// Moves every `external` payload (convolution weights, constants, Scale/LayerNorm/GroupNorm
    /// arrays) from the loaded `.weight` sidecar into the model and drops the sidecar, so that
    /// [`Model::save`] writes one self-contained file. Quantized weights stay quantized.
    /// Ops naming their own file in `externalPath` are read from the default sidecar too.
    pub fn inline_external_data(&mut self) -> Result<(), FormatError> {
        let sidecar = self.external.take();
        let bytes = sidecar.as_ref().map(|e| e.bytes.as_slice());
        let origin = self.origin.clone();
        let fail = |what: String, error: WeightError| FormatError::External {
            origin: origin.clone(),
            detail: format!("{what}: {error}"),
        };
        let net = &mut self.net;
        for (position, op) in net.oplists.iter_mut().flatten().enumerate() {
            let name = op.name.clone().unwrap_or_else(|| format!("#{position}"));
            inline_op(op, bytes).map_err(|e| fail(format!("op {name}"), e))?;
        }
        for graph in net.subgraphs.iter_mut().flatten() {
            for op in graph.nodes.iter_mut().flatten() {
                let name = op.name.clone().unwrap_or_default();
                inline_op(op, bytes).map_err(|e| fail(format!("subgraph op {name}"), e))?;
            }
        }
        for describe in net.extra_tensor_describe.iter_mut().flatten() {
            if let Some(blob) = describe.blob.as_deref_mut() {
                inline_blob(blob, bytes)
                    .map_err(|e| fail(format!("tensor {}", describe.index), e))?;
            }
        }
        Ok(())
    }
}
