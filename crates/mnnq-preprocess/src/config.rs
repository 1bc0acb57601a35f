//! The `quantized.out` calibration config (JSON).
//!
//! Every key MNN 3.6.1's tool reads is accepted with MNN's default. Where MNN silently does
//! something surprising, this parser reports an error instead (see `ConfigError`), and every
//! key it does not know is kept in [`Config::extra`] with a warning, so newer keys can be added
//! later without breaking older configs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Largest `width` / `height` accepted (a sanity bound, far above any model input).
pub const MAX_TARGET_SIDE: u64 = 16384;

/// Destination pixel format of the image preprocessing (`format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Rgb,
    Bgr,
    Rgba,
    Bgra,
    Gray,
}

impl ImageFormat {
    pub fn channels(self) -> usize {
        match self {
            ImageFormat::Gray => 1,
            ImageFormat::Rgb | ImageFormat::Bgr => 3,
            ImageFormat::Rgba | ImageFormat::Bgra => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Rgb => "RGB",
            ImageFormat::Bgr => "BGR",
            ImageFormat::Rgba => "RGBA",
            ImageFormat::Bgra => "BGRA",
            ImageFormat::Gray => "GRAY",
        }
    }
}

/// `feature_quantize_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureMethod {
    Kl,
    Admm,
    /// Parsed so that configs written for MNN load; the quantizer refuses it.
    Ema,
}

/// `weight_quantize_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightMethod {
    MaxAbs,
    Admm,
}

/// `input_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputType {
    /// Each calibration entry is an image file.
    Image,
    /// Each calibration entry is a directory with one `<inputName>.txt` (or `.npy`) per model
    /// input, or a single `.npy` file for a one-input model (see `sequence.rs`).
    Sequence,
}

/// One element of `inputs`: shape override for a named model input.
#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: String,
    pub shape: Option<Vec<i64>>,
    /// Parsed by MNN but unused there too.
    pub value: Option<f32>,
}

/// A non-fatal remark about a config or a calibration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    /// The config key this version does not know, when that is the remark (so a later stage
    /// that reads the key itself can drop the warning).
    pub unknown_key: Option<String>,
}

impl Warning {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Warning {
            message: message.into(),
            unknown_key: None,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a config cannot be used. Every variant names the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", config.display())]
    Read {
        config: PathBuf,
        source: std::io::Error,
    },
    #[error("config {} is not valid JSON: {source}", config.display())]
    Json {
        config: PathBuf,
        source: serde_json::Error,
    },
    #[error("config {}: {}{message}", config.display(), key.as_ref().map(|k| format!("key \"{k}\": ")).unwrap_or_default())]
    Invalid {
        config: PathBuf,
        /// The offending key, when one key is to blame.
        key: Option<String>,
        message: String,
    },
}

impl ConfigError {
    /// The key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}

/// A parsed calibration config. Field names follow the JSON keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file this config was read from (for messages and relative paths).
    pub source: PathBuf,
    pub format: ImageFormat,
    /// One value per channel of `format`, in destination channel order.
    pub mean: Vec<f32>,
    /// One value per channel of `format`; the network sees `(v - mean[c]) * normal[c]`.
    pub normal: Vec<f32>,
    /// Target size; `None` when absent (the model's input shape must then supply it).
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Calibration folder, resolved (see [`Config::from_file`]).
    pub path: PathBuf,
    /// Number of calibration entries to use, 0 = all (`used_sample_num` overrides
    /// `used_image_num`, as in MNN).
    pub used_sample_num: usize,
    pub feature_quantize_method: FeatureMethod,
    pub weight_quantize_method: WeightMethod,
    /// Feature range is +-this value (1..=127, default 127).
    pub feature_clamp_value: i32,
    /// Weight range is +-this value: the given value (default 127), but never more than
    /// `2^(quant_bits-1) - 1`.
    pub weight_clamp_value: i32,
    pub quant_bits: u32,
    pub skip_quant_op_names: Vec<String>,
    /// `batch_size` if given (MNN uses it for EMA only; default there 32 or the model's batch).
    pub batch_size: Option<usize>,
    /// Fraction of the source image kept (centred) before resizing, in (0, 1].
    pub center_crop_h: f32,
    pub center_crop_w: f32,
    pub input_type: InputType,
    pub inputs: Vec<InputDecl>,
    pub debug: bool,
    /// Effective winograd option: true only for EMA unless `winogradOpt` is false.
    pub winograd_opt: bool,
    /// Keys this version does not know, kept verbatim for later use.
    pub extra: BTreeMap<String, Value>,
}

/// Keys documented by MNN that it does not read: accepted with a warning.
const IGNORED_KEYS: &[&str] = &["model"];

struct Reader<'a> {
    config: &'a Path,
    object: Map<String, Value>,
    warnings: Vec<Warning>,
}

impl Reader<'_> {
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            config: self.config.to_path_buf(),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    fn type_error(&self, key: &str, expected: &str, value: &Value) -> ConfigError {
        self.error(
            key,
            format!("expected {expected}, found {}", describe(value)),
        )
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.object.remove(key)
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.type_error(key, "a string", &other)),
        }
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.type_error(key, "true or false", &other)),
        }
    }

    fn number(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.type_error(key, "a number", &other)),
        }
    }

    /// An integer in `min..=max`; `12.0` is accepted as 12, `12.5` is not.
    fn integer(&mut self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let number = match &value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            _ => None,
        };
        let Some(number) = number else {
            return Err(self.type_error(key, "an integer", &value));
        };
        if number < min || number > max {
            return Err(self.error(key, format!("{number} is out of range {min}..={max}")));
        }
        Ok(Some(number))
    }

    fn float_list(&mut self, key: &str) -> Result<Option<Vec<f32>>, ConfigError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let Value::Array(items) = &value else {
            return Err(self.type_error(key, "a list of numbers", &value));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item.as_f64() {
                Some(f) if (f as f32).is_finite() => out.push(f as f32),
                _ => {
                    return Err(self.error(
                        key,
                        format!("expected finite numbers, found {}", describe(item)),
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    fn string_list(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let Value::Array(items) = &value else {
            return Err(self.type_error(key, "a list of strings", &value));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => return Err(self.type_error(key, "a list of strings", other)),
            }
        }
        Ok(Some(out))
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

impl Config {
    /// Reads and checks a config file. Relative `path`s resolve against the working directory
    /// as in MNN; if nothing is there but the folder exists relative to the config file's folder
    /// or that folder's parent, that one is used with a warning.
    pub fn from_file(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            config: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses config text; `source` names the file in messages and anchors the fallback for a
    /// relative `path`.
    pub fn from_json_str(text: &str, source: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
            config: source.to_path_buf(),
            source: e,
        })?;
        let Value::Object(object) = value else {
            return Err(ConfigError::Invalid {
                config: source.to_path_buf(),
                key: None,
                message: format!("expected a JSON object, found {}", describe(&value)),
            });
        };
        let mut r = Reader {
            config: source,
            object,
            warnings: Vec::new(),
        };

        let format = match r.string("format")? {
            None => {
                r.warnings.push(Warning::new(format!(
                    "config {}: no \"format\", using BGR as MNN does",
                    source.display()
                )));
                ImageFormat::Bgr
            }
            Some(name) => match name.as_str() {
                "BGR" => ImageFormat::Bgr,
                "RGB" => ImageFormat::Rgb,
                "GRAY" => ImageFormat::Gray,
                "RGBA" => ImageFormat::Rgba,
                "BGRA" => ImageFormat::Bgra,
                _ => {
                    return Err(r.error(
                        "format",
                        format!("unknown format {name:?}; use one of BGR, RGB, GRAY, RGBA, BGRA"),
                    ))
                }
            },
        };
        let channels = format.channels();
        let per_channel = |r: &mut Reader, key: &str, default: f32| {
            let Some(values) = r.float_list(key)? else {
                return Ok(vec![default; channels]);
            };
            if values.len() != channels {
                return Err(r.error(
                    key,
                    format!(
                        "has {} value(s) but format {} has {channels} channel(s); give one value per channel",
                        values.len(),
                        format.name()
                    ),
                ));
            }
            Ok(values)
        };
        let mean = per_channel(&mut r, "mean", 0.0)?;
        let normal = per_channel(&mut r, "normal", 1.0)?;

        let crop = |r: &mut Reader, key: &str| -> Result<f32, ConfigError> {
            match r.number(key)? {
                None => Ok(1.0),
                Some(f) if f > 0.0 && f <= 1.0 => Ok(f as f32),
                Some(f) => Err(r.error(key, format!("{f} is not a fraction in (0, 1]"))),
            }
        };
        let center_crop_h = crop(&mut r, "center_crop_h")?;
        let center_crop_w = crop(&mut r, "center_crop_w")?;

        let side = MAX_TARGET_SIDE as i64;
        let width = r.integer("width", 1, side)?.map(|v| v as usize);
        let height = r.integer("height", 1, side)?.map(|v| v as usize);
        let batch_size = r.integer("batch_size", 1, 1 << 20)?.map(|v| v as usize);
        let quant_bits = r.integer("quant_bits", 2, 8)?.unwrap_or(8) as u32;

        let raw_path = r.string("path")?.ok_or_else(|| ConfigError::Invalid {
            config: source.to_path_buf(),
            key: Some("path".into()),
            message: "missing: set it to the folder of calibration images".into(),
        })?;
        if raw_path.is_empty() {
            return Err(r.error("path", "is empty"));
        }

        let used_image_num = r.integer("used_image_num", 0, i64::from(i32::MAX))?;
        let used_sample_num = r.integer("used_sample_num", 0, i64::from(i32::MAX))?;
        if let (Some(images), Some(samples)) = (used_image_num, used_sample_num) {
            if images != samples {
                r.warnings.push(Warning::new(format!(
                    "config {}: both used_image_num ({images}) and used_sample_num ({samples}) are set; using used_sample_num as MNN does",
                    source.display()
                )));
            }
        }
        let used_sample_num = used_sample_num.or(used_image_num).unwrap_or(0) as usize;

        let feature_quantize_method = match r.string("feature_quantize_method")? {
            None => FeatureMethod::Kl,
            Some(name) => match name.as_str() {
                "KL" => FeatureMethod::Kl,
                "ADMM" => FeatureMethod::Admm,
                "EMA" => FeatureMethod::Ema,
                _ => {
                    return Err(r.error(
                        "feature_quantize_method",
                        format!("unknown method {name:?}; use KL, ADMM or EMA"),
                    ))
                }
            },
        };
        let weight_quantize_method = match r.string("weight_quantize_method")? {
            None => WeightMethod::MaxAbs,
            Some(name) => match name.as_str() {
                "MAX_ABS" => WeightMethod::MaxAbs,
                "ADMM" => WeightMethod::Admm,
                _ => {
                    return Err(r.error(
                        "weight_quantize_method",
                        format!("unknown method {name:?}; use MAX_ABS or ADMM"),
                    ))
                }
            },
        };

        // MNN accepts 0 here, which makes every scale infinite; we require at least 1.
        let feature_clamp_value = r.integer("feature_clamp_value", 1, 127)?.unwrap_or(127) as i32;
        let given_weight_clamp = r.integer("weight_clamp_value", 1, 127)?.map(|v| v as i32);
        let bits_limit = (1i32 << (quant_bits - 1)) - 1;
        // MNN lowers the weight clamp to the bit width only when the key is present; a
        // 4-bit config without it would keep codes up to 127. We always honour the bit width.
        let weight_clamp_value = given_weight_clamp.unwrap_or(127).min(bits_limit);
        if quant_bits < 8 && given_weight_clamp.is_none() {
            r.warnings.push(Warning::new(format!(
                "config {}: quant_bits {quant_bits} without weight_clamp_value; clamping weights to +-{bits_limit} (MNN would keep 127)",
                source.display()
            )));
        }

        let winograd_key = r.boolean("winogradOpt")?;
        let winograd_opt =
            feature_quantize_method == FeatureMethod::Ema && winograd_key != Some(false);
        if winograd_key == Some(true) && feature_quantize_method != FeatureMethod::Ema {
            r.warnings.push(Warning::new(format!(
                "config {}: winogradOpt only applies to the EMA method; ignored",
                source.display()
            )));
        }
        let skip_quant_op_names = r.string_list("skip_quant_op_names")?.unwrap_or_default();
        let debug = r.boolean("debug")?.unwrap_or(false);
        let input_type = match r.string("input_type")? {
            None => InputType::Image,
            Some(name) => match name.as_str() {
                "image" => InputType::Image,
                "sequence" => InputType::Sequence,
                _ => {
                    return Err(r.error(
                        "input_type",
                        format!("unknown input type {name:?}; use \"image\" or \"sequence\""),
                    ))
                }
            },
        };
        let inputs = match r.take("inputs") {
            None => Vec::new(),
            Some(value) => parse_inputs(&r, &value)?,
        };

        let path = resolve_calibration_folder(&mut r, &raw_path)?;

        let mut extra = BTreeMap::new();
        for (key, value) in std::mem::take(&mut r.object) {
            let warning = if IGNORED_KEYS.contains(&key.as_str()) {
                Warning::new(format!(
                    "config {}: key \"{key}\" is not read by the quantizer; ignored",
                    source.display()
                ))
            } else {
                Warning {
                    unknown_key: Some(key.clone()),
                    ..Warning::new(format!(
                        "config {}: unknown key \"{key}\"; ignored",
                        source.display()
                    ))
                }
            };
            r.warnings.push(warning);
            extra.insert(key, value);
        }

        let config = Config {
            source: source.to_path_buf(),
            format,
            mean,
            normal,
            width,
            height,
            path,
            used_sample_num,
            feature_quantize_method,
            weight_quantize_method,
            feature_clamp_value,
            weight_clamp_value,
            quant_bits,
            skip_quant_op_names,
            batch_size,
            center_crop_h,
            center_crop_w,
            input_type,
            inputs,
            debug,
            winograd_opt,
            extra,
        };
        // An empty calibration folder is a config error too; the list itself is built again by
        // the caller (`calibration_files`), which reports the same error if the folder was
        // emptied in between.
        crate::calibration_files(&config)?;
        Ok((config, r.warnings))
    }

    /// An error about this config, for checks made after parsing.
    pub(crate) fn error(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            config: self.source.clone(),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

fn parse_inputs(r: &Reader, value: &Value) -> Result<Vec<InputDecl>, ConfigError> {
    let Value::Array(items) = value else {
        return Err(r.type_error("inputs", "a list of {name, shape} objects", value));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(fields) = item else {
            return Err(r.type_error("inputs", "a list of {name, shape} objects", item));
        };
        let name = match fields.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(r.error("inputs", "every entry needs a non-empty \"name\" string")),
        };
        let shape = match fields.get("shape") {
            None => None,
            Some(Value::Array(dims)) => {
                let mut shape = Vec::with_capacity(dims.len());
                for dim in dims {
                    match dim.as_i64() {
                        Some(d) if d >= -1 => shape.push(d),
                        _ => {
                            return Err(r.error(
                                "inputs",
                                format!("input {name:?}: shape must be a list of integers >= -1"),
                            ))
                        }
                    }
                }
                Some(shape)
            }
            Some(other) => {
                return Err(r.type_error("inputs", "\"shape\" as a list of integers", other))
            }
        };
        let value = match fields.get("value") {
            None => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| {
                r.error("inputs", format!("input {name:?}: value must be a number"))
            })? as f32),
        };
        out.push(InputDecl { name, shape, value });
    }
    Ok(out)
}

/// MNN opens `path` relative to the working directory. Configs are often written relative to
/// their own folder or its parent (the shared fixtures' `configs/*.json` are relative to the
/// fixtures root), so those are tried next, with a warning.
fn resolve_calibration_folder(r: &mut Reader, raw: &str) -> Result<PathBuf, ConfigError> {
    let given = PathBuf::from(raw);
    if given.is_dir() {
        return Ok(given);
    }
    // The config's own folder first, then its parent (configs often sit in a `configs/`
    // folder next to the data, as the shared fixtures do).
    let beside_config = if given.is_relative() {
        let config_dir = r.config.parent().filter(|d| !d.as_os_str().is_empty());
        let config_dir = config_dir.unwrap_or(Path::new("."));
        [Some(config_dir), config_dir.parent()]
            .into_iter()
            .flatten()
            .map(|dir| dir.join(&given))
            .find(|candidate| candidate.is_dir())
    } else {
        None
    };
    if let Some(candidate) = beside_config {
        r.warnings.push(Warning::new(format!(
            "config {}: calibration folder {raw:?} is not in the working directory; using {} (found relative to the config file)",
            r.config.display(),
            candidate.display()
        )));
        return Ok(candidate);
    }
    let problem = if given.exists() {
        "is not a folder".to_string()
    } else if given.is_relative() {
        "does not exist (looked relative to the working directory, the config file's folder and its parent)".into()
    } else {
        "does not exist".into()
    };
    Err(r.error("path", format!("calibration folder {raw:?} {problem}")))
}
