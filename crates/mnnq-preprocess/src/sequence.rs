//! Non-image calibration data (`"input_type": "sequence"`).
//!
//! As in MNN, each calibration entry is a folder holding, for every model input, a file
//! `<inputName>.txt` of whitespace-separated numbers (read as f64, stored as f32), in the order
//! of the input's shape; an optional `input.json` (`{"inputs": [{"name", "shape"}]}`) overrides
//! the shapes.
//!
//! Extension (not in MNN): `.npy` tensors.
//! * In a sample folder, `<inputName>.npy` may replace `<inputName>.txt` (having both is an
//!   error, to avoid guessing).
//! * For a model with exactly one input, a calibration entry may be a single `.npy` file.
//!
//! Accepted `.npy` dtypes: f32, f64, i8, u8, i16, u16, i32, u32, i64, u64 and bool, all
//! converted to f32 (f16 is not accepted). C order only. The array's shape must equal the expected shape, where
//! unknown (<= 0) expected dimensions match anything and leading 1s on either side are ignored.
//!
//! Unlike MNN, a value count that differs from the shape's element count is an error (MNN
//! ignores extra values and leaves missing ones unset).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A model input to fill: its name and shape as the model gives it (<= 0 = unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceInput {
    pub name: String,
    pub shape: Vec<i64>,
}

/// One input's data for one calibration sample.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Why a sample could not be loaded. Every variant names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> SampleError {
    SampleError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub(crate) fn is_npy_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Loads every model input of one calibration entry (a sample folder, or a `.npy` file for a
/// one-input model).
pub fn load_sample(
    entry: &Path,
    inputs: &[SequenceInput],
) -> Result<Vec<NamedTensor>, SampleError> {
    if entry.is_file() {
        if !is_npy_path(entry) {
            return Err(invalid(
                entry,
                "a sequence calibration entry must be a folder or a .npy file",
            ));
        }
        let [input] = inputs else {
            return Err(invalid(
                entry,
                format!(
                    "a single .npy file can only feed a model with one input; this model has {}: put one <inputName>.npy per input in a folder",
                    inputs.len()
                ),
            ));
        };
        let (shape, data) = read_npy(entry, &input.shape)?;
        return Ok(vec![NamedTensor {
            name: input.name.clone(),
            shape,
            data,
        }]);
    }
    let shapes = read_shape_overrides(entry)?;
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let expected = shapes
            .iter()
            .find(|(name, _)| name == &input.name)
            .map(|(_, shape)| shape.clone())
            .unwrap_or_else(|| input.shape.clone());
        let txt = entry.join(format!("{}.txt", input.name));
        let npy = entry.join(format!("{}.npy", input.name));
        let (shape, data) = match (txt.is_file(), npy.is_file()) {
            (true, true) => {
                return Err(invalid(
                    entry,
                    format!(
                        "both {}.txt and {}.npy exist; keep one",
                        input.name, input.name
                    ),
                ))
            }
            (false, true) => read_npy(&npy, &expected)?,
            (true, false) => read_txt(&txt, &expected)?,
            (false, false) => {
                return Err(invalid(
                    entry,
                    format!(
                        "no {}.txt or {}.npy for model input {:?}",
                        input.name, input.name, input.name
                    ),
                ))
            }
        };
        tensors.push(NamedTensor {
            name: input.name.clone(),
            shape,
            data,
        });
    }
    Ok(tensors)
}

/// `input.json` shapes: `(name, shape)` pairs, empty if the file is absent.
fn read_shape_overrides(folder: &Path) -> Result<Vec<(String, Vec<i64>)>, SampleError> {
    let path = folder.join("input.json");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|source| SampleError::Io {
        path: path.clone(),
        source,
    })?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| invalid(&path, format!("not valid JSON: {e}")))?;
    let Some(Value::Array(items)) = value.get("inputs") else {
        return Err(invalid(&path, "needs an \"inputs\" list of {name, shape}"));
    };
    let mut out = Vec::new();
    for item in items {
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            return Err(invalid(
                &path,
                "every entry of \"inputs\" needs a \"name\" string",
            ));
        };
        if let Some(dims) = item.get("shape") {
            let shape: Option<Vec<i64>> = dims
                .as_array()
                .and_then(|d| d.iter().map(Value::as_i64).collect());
            let shape = shape.filter(|s| s.iter().all(|&d| d > 0)).ok_or_else(|| {
                invalid(
                    &path,
                    format!("input {name:?}: shape must be a list of positive integers"),
                )
            })?;
            out.push((name.to_string(), shape));
        }
    }
    Ok(out)
}

fn known_shape(path: &Path, expected: &[i64]) -> Result<Vec<usize>, SampleError> {
    if expected.is_empty() || expected.iter().any(|&d| d <= 0) {
        return Err(invalid(
            path,
            format!("the input shape {expected:?} is not fully known; give it in input.json or use a .npy file"),
        ));
    }
    Ok(expected.iter().map(|&d| d as usize).collect())
}

fn read_txt(path: &Path, expected: &[i64]) -> Result<(Vec<usize>, Vec<f32>), SampleError> {
    let shape = known_shape(path, expected)?;
    let count: usize = shape.iter().product();
    let text = std::fs::read_to_string(path).map_err(|source| SampleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut data = Vec::with_capacity(count);
    for (i, token) in text.split_whitespace().enumerate() {
        let value: f64 = token
            .parse()
            .map_err(|_| invalid(path, format!("value {} ({token:?}) is not a number", i + 1)))?;
        data.push(value as f32);
    }
    if data.len() != count {
        return Err(invalid(
            path,
            format!(
                "has {} values but shape {shape:?} needs {count}",
                data.len()
            ),
        ));
    }
    Ok((shape, data))
}

fn strip_leading_ones<T: PartialEq + Copy>(dims: &[T], one: T) -> &[T] {
    let first = dims.iter().position(|&d| d != one).unwrap_or(dims.len());
    &dims[first..]
}

fn read_npy(path: &Path, expected: &[i64]) -> Result<(Vec<usize>, Vec<f32>), SampleError> {
    let bytes = std::fs::read(path).map_err(|source| SampleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| invalid(path, format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(invalid(
            path,
            "Fortran-order arrays are not supported; save with C order",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let given = strip_leading_ones(&shape, 1);
    let wanted = strip_leading_ones(expected, 1);
    let matches = given.len() == wanted.len()
        && given
            .iter()
            .zip(wanted)
            .all(|(&g, &w)| w <= 0 || g as i64 == w);
    if !expected.is_empty() && !matches {
        return Err(invalid(
            path,
            format!("array shape {shape:?} does not match the input shape {expected:?}"),
        ));
    }
    let type_str = npy.dtype().descr();
    let convert_error = |e: std::io::Error| invalid(path, format!("cannot read the data: {e}"));
    let descr = type_str
        .trim_matches('\'')
        .trim_start_matches(['<', '>', '|', '='])
        .to_string();
    let data: Vec<f32> = match descr.as_str() {
        "f4" => npy.into_vec::<f32>().map_err(convert_error)?,
        "f8" => to_f32(npy.into_vec::<f64>().map_err(convert_error)?),
        "i1" => to_f32(npy.into_vec::<i8>().map_err(convert_error)?),
        "u1" => to_f32(npy.into_vec::<u8>().map_err(convert_error)?),
        "i2" => to_f32(npy.into_vec::<i16>().map_err(convert_error)?),
        "u2" => to_f32(npy.into_vec::<u16>().map_err(convert_error)?),
        "i4" => npy
            .into_vec::<i32>()
            .map_err(convert_error)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "u4" => npy
            .into_vec::<u32>()
            .map_err(convert_error)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "i8" => npy
            .into_vec::<i64>()
            .map_err(convert_error)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "u8" => npy
            .into_vec::<u64>()
            .map_err(convert_error)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "b1" => npy
            .into_vec::<bool>()
            .map_err(convert_error)?
            .into_iter()
            .map(|v| if v { 1.0 } else { 0.0 })
            .collect(),
        _ => return Err(invalid(path, format!("unsupported dtype {type_str}"))),
    };
    let final_shape = if expected.iter().all(|&d| d > 0) && !expected.is_empty() {
        expected.iter().map(|&d| d as usize).collect()
    } else {
        shape
    };
    Ok((final_shape, data))
}

fn to_f32<T: Into<f64>>(values: Vec<T>) -> Vec<f32> {
    values.into_iter().map(|v| v.into() as f32).collect()
}
