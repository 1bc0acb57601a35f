//! Calibration inputs: the `quantized.out` config file, the calibration file list, image decoding
//! and preprocessing exactly as MNN's tool does them (x86 build of MNN 3.6.1).
//!
//! Pipeline for one image: decode to RGBA8 (stb_image semantics, [`decode`]) -> optional centre
//! crop -> corner-aligned bilinear stretch to the target size ([`resize`]) -> RGBA to the
//! config's `format` -> `(v - mean[c]) * normal[c]` in f32 -> NCHW or NHWC. On the shared
//! fixtures this is bit-identical to MNN (decoded pixels, 8-bit samples and float tensors).
//!
//! Decisions where MNN is silent, lenient or quirky:
//! * Bad configs are errors naming the config file and key ([`ConfigError`]); unknown keys are
//!   kept in [`Config::extra`] with a warning. `format` missing = BGR with a warning (MNN's
//!   default); an unknown `format`, method or `input_type` is an error (MNN: silent default or
//!   early return).
//! * `mean` / `normal` must have exactly one value per channel of `format`; a single value is
//!   not broadcast (MNN would apply it to channel 0 only and use 0 / 1 for the others, so a
//!   broadcast would silently differ from MNN on the same config).
//! * Clamp values must be integers in 1..=127 (MNN accepts 0 and truncates fractions);
//!   `quant_bits` < 8 always caps the weight clamp at `2^(bits-1) - 1` (MNN only when
//!   `weight_clamp_value` is present).
//! * A relative `path` is tried against the working directory (MNN), then against the config
//!   file's folder and that folder's parent, with a warning.
//! * The calibration subset is the first N entries in byte-wise sorted order (MNN takes N in
//!   directory order, then sorts, so its subset depends on the file system).
//! * A file that fails to decode is skipped with a warning naming it ([`prepare_images`]); MNN
//!   silently feeds the previous image again. No usable file is an error.
//! * Images larger than [`MAX_PIXELS`] are refused before decoding; truncated PNM files are
//!   errors (stb returns uninitialised pixels).
//! * Width/height: the config wins over the model's input shape (MNN resizes the input), with
//!   a warning when they differ; missing ones come from the model ([`InputSpec::for_model_input`]).
//! * Non-image data: `input_type: "sequence"` as MNN, plus `.npy` tensors ([`sequence`]).

mod bmp;
pub mod config;
pub mod decode;
mod gif;
pub mod npy;
pub mod resize;
pub mod sequence;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use config::{
    Config, ConfigError, FeatureMethod, ImageFormat, InputDecl, InputType, Warning, WeightMethod,
};
pub use decode::{decode_bytes, decode_file, RgbaImage, MAX_PIXELS};
pub use npy::write_npy_f32;

/// Memory order of a model input tensor (batch 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[1, C, H, W]` (also used for MNN's NC4HW4 inputs: the tool fills them through NCHW).
    Nchw,
    /// `[1, H, W, C]`.
    Nhwc,
}

/// The model input an image is prepared for. Built by the caller (from the model, or from the
/// config alone with [`InputSpec::from_config`]), so this crate does not depend on the model
/// format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputSpec {
    /// Number of f32 values of one preprocessed image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tensor shape with batch 1, in the layout's order.
    pub fn shape(&self) -> [usize; 4] {
        match self.layout {
            Layout::Nchw => [1, self.channels, self.height, self.width],
            Layout::Nhwc => [1, self.height, self.width, self.channels],
        }
    }

    /// The input as the config alone describes it: NCHW, channels of `format`, config size.
    /// Errors if the config has no `width`/`height`.
    pub fn from_config(config: &Config) -> Result<InputSpec, ConfigError> {
        let (width, height) = match (config.width, config.height) {
            (Some(w), Some(h)) => (w, h),
            _ => {
                let missing = if config.width.is_none() {
                    "width"
                } else {
                    "height"
                };
                return Err(config.error(
                    Some(missing),
                    "missing, and there is no model to take the input size from",
                ));
            }
        };
        Ok(InputSpec {
            name: "input".into(),
            layout: Layout::Nchw,
            channels: config.format.channels(),
            height,
            width,
        })
    }

    /// Hook for the model: builds the spec from a model input's name, layout and 4-D shape
    /// (`dims` in the layout's order; values <= 0 are unknown). The config's `width`/`height`
    /// win, as in MNN (which resizes the input to them; a warning says when they differ from the
    /// model); missing ones are taken from the model; if neither has them it is an error.
    /// A known channel count that differs from `format`'s is an error (MNN does not check).
    pub fn for_model_input(
        config: &Config,
        name: &str,
        layout: Layout,
        dims: &[i64],
    ) -> Result<(InputSpec, Vec<Warning>), ConfigError> {
        let mut warnings = Vec::new();
        if dims.len() != 4 {
            return Err(config.error(
                None,
                format!(
                    "model input {name:?} has {} dimensions; image calibration needs a 4-D input (use input_type \"sequence\" otherwise)",
                    dims.len()
                ),
            ));
        }
        let (model_c, model_h, model_w) = match layout {
            Layout::Nchw => (dims[1], dims[2], dims[3]),
            Layout::Nhwc => (dims[3], dims[1], dims[2]),
        };
        let channels = config.format.channels();
        if model_c > 0 && model_c as usize != channels {
            return Err(config.error(
                Some("format"),
                format!(
                    "format {} gives {channels} channel(s) but model input {name:?} has {model_c}",
                    config.format.name()
                ),
            ));
        }
        let mut side = |key: &str, from_config: Option<usize>, from_model: i64| match (
            from_config,
            from_model,
        ) {
            (Some(c), m) => {
                if m > 0 && m as usize != c {
                    warnings.push(Warning::new(format!(
                            "config {}: {key} {c} differs from model input {name:?} ({m}); using {c} as MNN does",
                            config.source.display()
                        )));
                }
                Ok(c)
            }
            (None, m) if m > 0 => Ok(m as usize),
            (None, _) => Err(config.error(
                Some(key),
                format!("missing, and model input {name:?} does not fix it"),
            )),
        };
        let width = side("width", config.width, model_w)?;
        let height = side("height", config.height, model_h)?;
        Ok((
            InputSpec {
                name: name.to_string(),
                layout,
                channels,
                height,
                width,
            },
            warnings,
        ))
    }
}

/// Why one image could not be turned into an input tensor. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {} is an empty file", path.display())]
    Empty { path: PathBuf },
    #[error("cannot decode image {}: {reason}", path.display())]
    Decode { path: PathBuf, reason: String },
    #[error("image {} is too large: {reason}", path.display())]
    TooLarge { path: PathBuf, reason: String },
    #[error("cannot preprocess image {}: {reason}", path.display())]
    Geometry { path: PathBuf, reason: String },
}

impl ImageError {
    pub fn path(&self) -> &Path {
        match self {
            ImageError::Io { path, .. }
            | ImageError::Empty { path }
            | ImageError::Decode { path, .. }
            | ImageError::TooLarge { path, .. }
            | ImageError::Geometry { path, .. } => path,
        }
    }
}

/// Calibration entries of `config.path`: byte-wise sorted names, dot-files skipped, the first
/// `used_sample_num` taken (0 = all). Image mode lists regular files; sequence mode lists
/// sub-folders and `.npy` files. No entry is an error naming the config file.
///
/// MNN takes the first N in *directory* order and sorts afterwards, so with a limit its subset
/// depends on the file system; ours does not.
pub fn calibration_files(config: &Config) -> Result<Vec<PathBuf>, ConfigError> {
    let folder = &config.path;
    let read = std::fs::read_dir(folder).map_err(|e| {
        config.error(
            Some("path"),
            format!("cannot list calibration folder {}: {e}", folder.display()),
        )
    })?;
    let mut entries: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| {
            config.error(
                Some("path"),
                format!("cannot list calibration folder {}: {e}", folder.display()),
            )
        })?;
        let name = entry.file_name();
        let name_bytes = os_str_bytes(&name);
        if name_bytes.first() == Some(&b'.') {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links, as MNN's `stat` does; a dangling link is skipped.
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        let wanted = match config.input_type {
            InputType::Image => metadata.is_file(),
            InputType::Sequence => {
                metadata.is_dir() || (metadata.is_file() && sequence::is_npy_path(&path))
            }
        };
        if wanted {
            entries.push((name_bytes, path));
        }
    }
    entries.sort();
    if config.used_sample_num > 0 {
        entries.truncate(config.used_sample_num);
    }
    if entries.is_empty() {
        let what = match config.input_type {
            InputType::Image => "no image files",
            InputType::Sequence => "no sample folders or .npy files",
        };
        return Err(config.error(
            Some("path"),
            format!("calibration folder {} has {what}", folder.display()),
        ));
    }
    Ok(entries.into_iter().map(|(_, path)| path).collect())
}

#[cfg(unix)]
fn os_str_bytes(name: &std::ffi::OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().to_vec()
}

#[cfg(not(unix))]
fn os_str_bytes(name: &std::ffi::OsStr) -> Vec<u8> {
    name.to_string_lossy().as_bytes().to_vec()
}

/// Decodes, crops, resizes and colour-converts one image to the 8-bit samples MNN feeds into
/// its normalisation, interleaved (`height x width x channels` of `config.format`).
pub fn image_samples_u8(
    path: &Path,
    config: &Config,
    width: usize,
    height: usize,
) -> Result<Vec<u8>, ImageError> {
    let image = decode_file(path)?;
    rgba_to_samples_u8(&image, path, config, width, height)
}

/// As [`image_samples_u8`] for an already decoded image (`path` only names it in errors).
pub fn rgba_to_samples_u8(
    image: &RgbaImage,
    path: &Path,
    config: &Config,
    width: usize,
    height: usize,
) -> Result<Vec<u8>, ImageError> {
    let resized = resize::crop_and_resize(
        image,
        config.center_crop_w,
        config.center_crop_h,
        width,
        height,
    )
    .ok_or_else(|| ImageError::Geometry {
        path: path.to_path_buf(),
        reason: format!(
            "centre crop {} x {} of a {} x {} image keeps no pixel",
            config.center_crop_w, config.center_crop_h, image.width, image.height
        ),
    })?;
    Ok(convert_format(&resized.pixels, config.format))
}

/// RGBA to the destination format; GRAY uses MNN's integer formula `(19R + 38G + 7B) >> 6`.
pub fn convert_format(rgba: &[u8], format: ImageFormat) -> Vec<u8> {
    let pixels = rgba.chunks_exact(4);
    let mut out = Vec::with_capacity(pixels.len() * format.channels());
    for p in pixels {
        match format {
            ImageFormat::Rgba => out.extend_from_slice(p),
            ImageFormat::Bgra => out.extend_from_slice(&[p[2], p[1], p[0], p[3]]),
            ImageFormat::Rgb => out.extend_from_slice(&p[..3]),
            ImageFormat::Bgr => out.extend_from_slice(&[p[2], p[1], p[0]]),
            ImageFormat::Gray => {
                let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
                out.push(((19 * r + 38 * g + 7 * b) >> 6) as u8);
            }
        }
    }
    out
}

/// Normalises interleaved 8-bit samples, `(v - mean[c]) * normal[c]` in f32, and writes them in
/// the spec's layout.
pub fn normalize(samples: &[u8], config: &Config, spec: &InputSpec) -> Vec<f32> {
    let channels = spec.channels;
    let plane = spec.height * spec.width;
    let mut out = vec![0.0f32; plane * channels];
    for (pixel, values) in samples.chunks_exact(channels).enumerate() {
        for (c, &v) in values.iter().enumerate() {
            let f = (f32::from(v) - config.mean[c]) * config.normal[c];
            let index = match spec.layout {
                Layout::Nchw => c * plane + pixel,
                Layout::Nhwc => pixel * channels + c,
            };
            out[index] = f;
        }
    }
    out
}

/// One image -> the float tensor the model input sees (batch 1, `spec.layout`).
pub fn preprocess_image(
    path: &Path,
    config: &Config,
    spec: &InputSpec,
) -> Result<Vec<f32>, ImageError> {
    if spec.channels != config.format.channels() {
        return Err(ImageError::Geometry {
            path: path.to_path_buf(),
            reason: format!(
                "input {:?} has {} channel(s) but format {} gives {}",
                spec.name,
                spec.channels,
                config.format.name(),
                config.format.channels()
            ),
        });
    }
    let samples = image_samples_u8(path, config, spec.width, spec.height)?;
    Ok(normalize(&samples, config, spec))
}

/// Preprocesses many images in parallel; the results are in `files` order and identical to
/// calling [`preprocess_image`] on each in turn.
pub fn preprocess_batch(
    files: &[PathBuf],
    config: &Config,
    spec: &InputSpec,
) -> Vec<Result<Vec<f32>, ImageError>> {
    files
        .par_iter()
        .map(|path| preprocess_image(path, config, spec))
        .collect()
}

/// The usable calibration images of a set, in file order.
#[derive(Debug)]
pub struct PreparedImages {
    /// `(file, tensor)` for each image that could be used.
    pub samples: Vec<(PathBuf, Vec<f32>)>,
    /// One warning per file that was skipped, naming it and the reason.
    pub skipped: Vec<Warning>,
}

/// Why no calibration data could be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("none of the {count} calibration file(s) in {} could be used; first problem: {first}", folder.display())]
    NoUsableImage {
        folder: PathBuf,
        count: usize,
        first: ImageError,
    },
}

/// Preprocesses `files` in parallel, skipping (with a warning each) the ones that fail.
/// Errors only if none is usable.
pub fn prepare_images(
    files: &[PathBuf],
    config: &Config,
    spec: &InputSpec,
) -> Result<PreparedImages, PrepareError> {
    let mut samples = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    let mut first_error = None;
    for (path, result) in files.iter().zip(preprocess_batch(files, config, spec)) {
        match result {
            Ok(tensor) => samples.push((path.clone(), tensor)),
            Err(error) => {
                skipped.push(Warning::new(format!("skipping calibration file: {error}")));
                first_error.get_or_insert(error);
            }
        }
    }
    if samples.is_empty() {
        if let Some(first) = first_error {
            return Err(PrepareError::NoUsableImage {
                folder: config.path.clone(),
                count: files.len(),
                first,
            });
        }
        return Err(PrepareError::Config(
            config.error(Some("path"), "no calibration files were given"),
        ));
    }
    Ok(PreparedImages { samples, skipped })
}
