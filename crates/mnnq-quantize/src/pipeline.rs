//! The whole tool: config + model + images -> int8 model, scale report and summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mnnq_engine::ir::MnnFormat;
use mnnq_engine::Engine;
use mnnq_format::Model;
use mnnq_preprocess::sequence::{load_sample, SequenceInput};
use mnnq_preprocess::{
    calibration_files, image_samples_u8, normalize, preprocess_image, Config, FeatureMethod,
    InputSpec, InputType, Layout,
};

use crate::plan::{layout_ops, tensor_names};
use crate::progress::{Bar, Progress, Silent};
use crate::rewrite::{rewrite_net, RewriteOptions, RewriteSummary, WeightMethod};
use crate::runner::{plan_from_engine, EngineRunner};
use crate::scales::{feature_scales_with, unify, NoScaleReason, UnifyMode};
use crate::stats::{
    collect_histograms, collect_ranges, ForwardPass, HistogramKind, Images, Pass, PassCache,
    Sample, SkippedImage,
};
use crate::{scale_json, QuantizeError};

/// Bins of the streaming ADMM histogram (exact integer sums per bin; 4096 keeps two workers'
/// accumulators for a few hundred tensors well under 100 MB).
pub const ADMM_BINS: usize = 4096;

/// Bytes of decoded 8-bit images the range pass may keep for the histogram pass (which then
/// skips decoding them). A constant, so memory does not grow with the number of images:
/// 40 EfficientNet images (224 x 224 x 3) take 6 MB, 24 PP-OCR det images (640 x 640 x 3) 29 MB.
pub const DECODED_IMAGE_BUDGET: usize = 32 << 20;
/// Calibration images whose convolution-input means drive bias correction.
pub const BIAS_CORRECTION_IMAGES: usize = 8;

/// Run settings that are not in the config.
#[derive(Clone, Debug, Default)]
pub struct QuantizeOptions {
    /// Calibration workers (0: one per available core). Results do not depend on it.
    pub threads: usize,
    /// Show progress bars on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Scale unification: MNN's single pass, or repeated until consistent (default).
    pub unify: UnifyMode,
    /// Called with each config/input warning as soon as it is known (they are also in the
    /// report), so they are seen even when the run fails later.
    pub on_warning: Option<fn(&str)>,
    /// MNN-compatible mode: quality keys absent from the config take MNN's behaviour
    /// ([`crate::range_method::QualityConfig::mnn`]) instead of mnnq's recommended defaults.
    pub mnn_compatible: bool,
}

/// Wall time of each step, in seconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    pub load: f64,
    pub range_pass: f64,
    pub histogram_pass: f64,
    pub scales: f64,
    pub rewrite_and_write: f64,
    pub total: f64,
}

/// What a run did; printed as a summary and written by `--report`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct QuantizeReport {
    pub origin: PathBuf,
    pub quant: PathBuf,
    pub scale_file: PathBuf,
    pub config: PathBuf,
    pub feature_method: String,
    pub weight_method: String,
    pub threads: usize,
    pub images_found: usize,
    pub images_used: usize,
    pub images_skipped: Vec<SkippedImage>,
    pub tensors_tracked: usize,
    pub tensors_with_scale: usize,
    /// Reason -> names of tensors calibration tracked but could give no scale.
    pub tensors_without_scale: BTreeMap<String, Vec<String>>,
    pub max_threshold_tensors: usize,
    pub unify_mode: Option<UnifyMode>,
    /// Unification passes run (more than 2 means a chain needed propagation).
    pub unify_passes: usize,
    /// Max pools over possibly negative inputs given an output scale one ulp above the input
    /// scale, so MNN pools them in float (its x86 int8 max pool is wrong for negative codes).
    pub float_max_pools: usize,
    /// Tensors written with asymmetric codes (`feature_zero_point`).
    pub asymmetric_tensors: usize,
    pub rewrite: RewriteSummary,
    pub size_before: u64,
    pub size_after: u64,
    pub seconds: Timings,
    pub warnings: Vec<String>,
    /// `feature_range_method` from the config (None: not read yet).
    pub range_method: Option<crate::range_method::RangeMethod>,
    /// The quality settings in effect (config keys and mode defaults).
    pub quality: Option<crate::range_method::QualityConfig>,
    /// Tensors `float_outputs` left without a scale (the float head of the network).
    pub float_head: Vec<String>,
    /// Convolution multiply-adds that mnnq's int8 runtime runs int8 in the written model.
    pub int8_macs: Option<crate::fidelity::MacShare>,
    /// Tensors `float_vectors` left without a scale (N x C x 1 x 1).
    pub float_vectors: usize,
    /// Float tensors given their own scale so that MNN does not carry a neighbour's int8
    /// quant info over to them ([`crate::plan::propagation_blockers`]).
    pub propagation_blockers: usize,
    /// Global average pools starting a float head, written as a Reduction MEAN
    /// ([`crate::plan::float_global_pools_as_means`]).
    pub float_pools_as_means: usize,
    /// What `fold_affine` folded before calibration (None: off).
    pub fold: Option<crate::fold::FoldSummary>,
    /// What `target_cosine` left float (None: key not set).
    pub fallback: Option<crate::fallback::FallbackReport>,
    /// What `output_bias_correction` did (None: key not set).
    pub output_bias: Option<crate::output_bias::OutputBiasReport>,
    /// What `range_search` changed (None: key not set).
    pub range_search: Option<crate::range_search::RangeSearchReport>,
    /// Final feature scales by tensor index (also in the scale file).
    #[serde(skip)]
    pub scales: BTreeMap<u32, f32>,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `<quant>.json`, MNN's name for the scale report.
pub fn scale_file_path(quant: &Path) -> PathBuf {
    let mut name = quant.as_os_str().to_os_string();
    name.push(".json");
    PathBuf::from(name)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), QuantizeError> {
    let error = |source| QuantizeError::Write {
        path: path.to_path_buf(),
        source,
    };
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = folder.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(error)
}

fn progress_for(show: bool, label: &str, total: usize) -> (Box<dyn Progress>, Option<Bar>) {
    if show {
        let bar = Bar::new(label, total);
        (Box::new(Bar(bar.0.clone())), Some(bar))
    } else {
        (Box::new(Silent), None)
    }
}

/// The input name and preprocessing of image calibration: the model must have one input, and
/// the config's size must match it. Warnings go to the report (and `on_warning`).
fn image_input_spec(
    engine: &Engine,
    config: &Config,
    config_path: &Path,
    origin: &Path,
    report: &mut QuantizeReport,
    options: &QuantizeOptions,
) -> Result<(String, InputSpec), QuantizeError> {
    let (input_tensor, input_slot) = match engine.inputs[..] {
        [one] => one,
        _ => {
            return Err(QuantizeError::Engine {
                model: origin.display().to_string(),
                message: format!(
                    "image calibration needs exactly one model input, found {}",
                    engine.inputs.len()
                ),
            })
        }
    };
    let input_shape = engine.slots[input_slot].shape.clone();
    let layout = match engine.infos[input_tensor].as_ref().map(|i| i.format) {
        Some(MnnFormat::Nhwc) => Layout::Nhwc,
        _ => Layout::Nchw,
    };
    let dims: Vec<i64> = input_shape.iter().map(|&d| d as i64).collect();
    let input_name = engine.tensor_name(input_tensor).to_string();
    let (spec, spec_warnings) = InputSpec::for_model_input(config, &input_name, layout, &dims)?;
    report
        .warnings
        .extend(spec_warnings.iter().map(|w| w.to_string()));
    if let Some(warn) = options.on_warning {
        spec_warnings.iter().for_each(|w| warn(&w.to_string()));
    }
    if spec.shape()[..] != input_shape[..] {
        return Err(QuantizeError::Usage(format!(
            "{}: width x height {}x{} does not match the model input {input_name:?} of shape {input_shape:?}; \
             the engine runs the model at its stored input size",
            config_path.display(),
            spec.width,
            spec.height
        )));
    }
    Ok((input_name, spec))
}

/// Quantizes `origin` into `quant` (and `<quant>.json`) as `quantized.out` does.
pub fn quantize(
    origin: &Path,
    quant: &Path,
    config_path: &Path,
    options: &QuantizeOptions,
) -> Result<QuantizeReport, QuantizeError> {
    let start = Instant::now();
    if origin == quant || same_file(origin, quant) {
        return Err(QuantizeError::Usage(format!(
            "the output {} is the input model; choose another output file",
            quant.display()
        )));
    }
    let (config, mut config_warnings) = Config::from_file(config_path)?;
    // The config reader does not know mnnq's own quality keys: they are read below.
    config_warnings.retain(|w| {
        !w.unknown_key
            .as_deref()
            .is_some_and(|key| crate::range_method::QUALITY_KEYS.contains(&key))
    });
    if let Some(warn) = options.on_warning {
        config_warnings.iter().for_each(|w| warn(&w.to_string()));
    }
    let mut report = QuantizeReport {
        origin: origin.to_path_buf(),
        quant: quant.to_path_buf(),
        scale_file: scale_file_path(quant),
        config: config_path.to_path_buf(),
        warnings: config_warnings.iter().map(|w| w.to_string()).collect(),
        ..QuantizeReport::default()
    };
    let histogram_kind = match config.feature_quantize_method {
        FeatureMethod::Kl => HistogramKind::Kl,
        FeatureMethod::Admm => HistogramKind::Admm(ADMM_BINS),
        FeatureMethod::Ema => {
            return Err(QuantizeError::Usage(format!(
                "{}: feature_quantize_method \"EMA\" is not supported (use \"KL\" or \"ADMM\")",
                config_path.display()
            )))
        }
    };
    let weight_method = match config.weight_quantize_method {
        mnnq_preprocess::WeightMethod::MaxAbs => WeightMethod::MaxAbs,
        mnnq_preprocess::WeightMethod::Admm => WeightMethod::Admm,
    };
    report.feature_method = format!("{:?}", config.feature_quantize_method).to_uppercase();
    report.weight_method = match weight_method {
        WeightMethod::MaxAbs => "MAX_ABS".into(),
        WeightMethod::Admm => "ADMM".into(),
        WeightMethod::Mse => "MSE".into(),
    };

    // Quality keys (docs/quality.md): absent keys take the mode's defaults.
    let defaults = if options.mnn_compatible {
        crate::range_method::QualityConfig::mnn()
    } else {
        crate::range_method::QualityConfig::recommended()
    };
    let quality =
        crate::range_method::QualityConfig::from_keys(config_path, &config.extra, defaults)
            .map_err(QuantizeError::Usage)?;
    let mut model = Model::load(origin)?;
    report.size_before = std::fs::metadata(origin).map(|m| m.len()).unwrap_or(0);
    if quality.fold_affine {
        // Exact float rewrites: everything after (calibration, scales, the written model)
        // sees the folded graph.
        report.fold = Some(crate::fold::fold_affine(&mut model.net));
    }
    let engine = Engine::from_model(&model).map_err(|e| QuantizeError::Engine {
        model: origin.display().to_string(),
        message: e.to_string(),
    })?;
    // Image calibration: the one model input's preprocessing, from the config and the model.
    let image_spec = match config.input_type {
        InputType::Image => Some(image_input_spec(
            &engine,
            &config,
            config_path,
            origin,
            &mut report,
            options,
        )?),
        InputType::Sequence => None,
    };
    let files = calibration_files(&config)?;
    report.images_found = files.len();
    let threads = if options.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        options.threads
    };
    report.threads = threads;
    report.unify_mode = Some(options.unify);
    let plan = plan_from_engine(&engine, &config.skip_quant_op_names);
    report.tensors_tracked = plan.len();
    report.seconds.load = start.elapsed().as_secs_f64();

    let sequence_inputs: Vec<SequenceInput> = engine
        .input_shapes()
        .into_iter()
        .map(|(name, shape)| SequenceInput {
            name,
            shape: shape.iter().map(|&d| d as i64).collect(),
        })
        .collect();
    // Decoded images of the range pass, kept for the histogram pass within a fixed budget.
    let decoded: PassCache<Vec<u8>> = PassCache::new(DECODED_IMAGE_BUDGET);
    let load = |i: usize| -> Result<Sample, String> {
        match &image_spec {
            Some((name, spec)) if spec.channels == config.format.channels() => decoded
                .take_or_make(i, Vec::len, || {
                    image_samples_u8(&files[i], &config, spec.width, spec.height)
                })
                .map(|samples| vec![(name.clone(), normalize(&samples, &config, spec))])
                .map_err(|e| e.to_string()),
            Some((name, spec)) => preprocess_image(&files[i], &config, spec)
                .map(|data| vec![(name.clone(), data)])
                .map_err(|e| e.to_string()),
            None => load_sample(&files[i], &sequence_inputs)
                .map(|tensors| tensors.into_iter().map(|t| (t.name, t.data)).collect())
                .map_err(|e| e.to_string()),
        }
    };
    let images = Images {
        files: &files,
        load: &load,
    };
    let make_runner = || -> Result<Box<dyn ForwardPass + '_>, QuantizeError> {
        EngineRunner::new(&engine, 1)
            .map(|r| Box::new(r) as Box<dyn ForwardPass>)
            .map_err(|message| QuantizeError::Engine {
                model: origin.display().to_string(),
                message,
            })
    };

    let pass_start = Instant::now();
    let (bar, handle) = progress_for(options.progress, "range", files.len());
    let pass = Pass {
        plan: &plan,
        images: &images,
        threads,
        make_runner: &make_runner,
        progress: bar.as_ref(),
    };
    let (ranges, skipped) = collect_ranges(&pass)?;
    if let Some(h) = handle {
        h.finish();
    }
    report.seconds.range_pass = pass_start.elapsed().as_secs_f64();
    report.images_used = files.len() - skipped.len();
    report.images_skipped = skipped;
    if report.images_used == 0 {
        return Err(QuantizeError::NoImages {
            folder: config.path.clone(),
            skipped: report.images_skipped.len(),
        });
    }

    let pass_start = Instant::now();
    let (bar, handle) = progress_for(options.progress, "histogram", files.len());
    let pass = Pass {
        progress: bar.as_ref(),
        ..pass
    };
    let histograms = collect_histograms(&pass, &ranges, histogram_kind)?;
    if let Some(h) = handle {
        h.finish();
    }
    report.seconds.histogram_pass = pass_start.elapsed().as_secs_f64();

    let step = Instant::now();
    let clamp = config.feature_clamp_value as f32;
    let sensitive = crate::range_method::saturation_sensitive_tensors(&model.net);
    report.range_method = Some(quality.range_method);
    let method_of =
        |id| crate::range_method::per_tensor_method(quality.range_method, &sensitive, id);
    let mut scales = feature_scales_with(&plan, &ranges, &histograms, clamp, &method_of)?;
    let ops = layout_ops(&model.net, &config.skip_quant_op_names, true);
    if quality.feature_zero_point {
        let candidates = crate::zero_point::asymmetric_candidates(&model.net, &ops);
        crate::scales::make_asymmetric(
            &mut scales,
            &plan,
            &ranges,
            &histograms,
            clamp,
            &candidates,
            crate::zero_point::SKEW_RATIO,
            &method_of,
        );
    }
    drop(histograms);
    let float_max_pools =
        crate::plan::signed_max_pools(&model.net, &plan, &ranges, &config.skip_quant_op_names);
    if options.unify == UnifyMode::UntilStable {
        report.float_max_pools = float_max_pools.len();
    }
    // Each tensor's own calibrated scale, before unification ties scales together.
    let calibrated = scales.scales.clone();
    report.unify_passes = unify(&mut scales, &ops, true, options.unify, &float_max_pools);
    report.max_threshold_tensors = scales.max_threshold;
    for id in crate::range_method::outputs_of_op_types(&model.net, &quality.keep_float_op_types) {
        scales.scales.remove(&id);
    }
    if quality.float_vectors {
        let pooled = crate::range_method::pooling_outputs(&model.net);
        for id in crate::range_method::vector_tensors(&plan) {
            let own = calibrated.get(&id).copied();
            match (pooled.get(&id), own) {
                // A pool's output keeps its own scale, unlike its input's: MNN then pools in
                // float between casts (it would otherwise carry the input's quant info over
                // to an output without one, and pool in int8 at the input's scale).
                (Some(input), Some(own)) if scales.scales.get(input) != Some(&own) => {
                    scales.scales.insert(id, own);
                }
                (Some(_), Some(own)) => {
                    scales.scales.insert(id, own.next_up());
                }
                _ => {
                    scales.scales.remove(&id);
                }
            }
            report.float_vectors += 1;
        }
    }
    if engine.inputs.len() != 1 && quality.target_cosine.is_some() {
        return Err(QuantizeError::Usage(format!(
            "{}: target_cosine needs a model with one input, this one has {}",
            config_path.display(),
            engine.inputs.len()
        )));
    }
    if !quality.float_tensors.is_empty() {
        let ids: BTreeMap<&str, u32> = model
            .net
            .tensor_name
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        for name in &quality.float_tensors {
            let id = ids.get(name.as_str()).ok_or_else(|| {
                QuantizeError::Usage(format!(
                    "{}: float_tensors names {name:?}, which is not a tensor of {}",
                    config_path.display(),
                    origin.display()
                ))
            })?;
            scales.scales.remove(id);
        }
    }
    if quality.float_outputs {
        let macs = crate::fallback::conv_macs(&model.net, &engine);
        let names = tensor_names(&model.net);
        for id in crate::range_method::float_head_tensors(&model.net, &macs) {
            if scales.scales.remove(&id).is_some() {
                report
                    .float_head
                    .push(names.get(&id).cloned().unwrap_or_else(|| format!("#{id}")));
            }
        }
    }
    if !options.mnn_compatible {
        // A float head that starts at a global average pool starts at a float mean instead
        // (see the function); the blockers below then leave it alone.
        report.float_pools_as_means =
            crate::plan::float_global_pools_as_means(&mut model.net, &scales.scales).len();
        // Keep the float tensors chosen above float in MNN as well (see the function).
        let blockers = crate::plan::propagation_blockers(&model.net, &scales.scales, &calibrated);
        report.propagation_blockers = blockers.len();
        scales.scales.extend(blockers);
    }
    let channels: BTreeMap<u32, usize> = plan
        .tensors
        .iter()
        .filter_map(|t| Some((t.id, t.channels()?)))
        .collect();
    let load_some = |count: usize| -> Vec<Vec<f32>> {
        (0..files.len())
            .filter(|i| !report.images_skipped.iter().any(|s| s.path == files[*i]))
            .take(count)
            .filter_map(|i| load(i).ok())
            // One-input models only (checked above for target_cosine; bias correction is
            // skipped for others).
            .filter_map(|mut sample| sample.pop().map(|(_, data)| data))
            .collect()
    };
    let input_channel_means = if quality.bias_correction && engine.inputs.len() == 1 {
        // Per-channel means converge fast; 8 images keep this pass short on large inputs
        // (every tensor is observed).
        let inputs = load_some(BIAS_CORRECTION_IMAGES);
        Some(
            crate::bias_correction::conv_input_channel_means(&model.net, &engine, &inputs)
                .map_err(|message| QuantizeError::Engine {
                    model: origin.display().to_string(),
                    message,
                })?,
        )
    } else {
        None
    };
    let mut rewrite_options = RewriteOptions {
        weight_method: match (weight_method, quality.weight_range) {
            (WeightMethod::MaxAbs, crate::range_method::WeightRange::Mse) => WeightMethod::Mse,
            (method, _) => method,
        },
        weight_clamp: config.weight_clamp_value as f32,
        feature_clamp: clamp,
        quant_bits: config.quant_bits,
        skip_op_names: config.skip_quant_op_names.clone(),
        input_channel_means,
        weight_only_float_convs: !options.mnn_compatible,
        zero_points: zero_points_of(&scales),
        input_moments: None,
    };
    if quality.weight_rounding == crate::range_method::WeightRounding::Gptq
        && engine.inputs.len() == 1
    {
        let inputs = load_some(BIAS_CORRECTION_IMAGES);
        rewrite_options.input_moments = Some(
            crate::weight_rounding::conv_input_moments(&engine, &inputs).map_err(|message| {
                QuantizeError::Engine {
                    model: origin.display().to_string(),
                    message,
                }
            })?,
        );
    }
    if rewrite_options.weight_method == WeightMethod::Mse {
        report.weight_method = "MAX_ABS (MSE-searched scales)".into();
    }
    if quality.range_search && engine.inputs.len() == 1 {
        let inputs = load_some(quality.search_images);
        let names = tensor_names(&model.net);
        let groups =
            crate::range_search::scale_groups(&model.net, &scales.scales, &ops, &float_max_pools);
        let quantize_with = |s: &BTreeMap<u32, f32>| -> Result<mnnq_format::Net, String> {
            let mut net = model.net.clone();
            rewrite_net(&mut net, s, &channels, &rewrite_options).map_err(|e| e.to_string())?;
            Ok(net)
        };
        let unify_again = |s: &mut BTreeMap<u32, f32>| {
            let mut all = crate::scales::FeatureScales {
                scales: s.clone(),
                ..Default::default()
            };
            unify(&mut all, &ops, true, options.unify, &float_max_pools);
            for (t, v) in all.scales {
                if let Some(old) = s.get_mut(&t) {
                    *old = v;
                }
            }
        };
        let search = crate::range_search::SearchInputs {
            float_model: &model,
            float_engine: &engine,
            inputs: &inputs,
            threads,
            names: &names,
        };
        let (refined, search_report) = crate::range_search::search_scales(
            &search,
            &scales.scales,
            &groups,
            &quantize_with,
            &unify_again,
        )
        .map_err(|message| QuantizeError::Engine {
            model: origin.display().to_string(),
            message,
        })?;
        scales.scales = refined;
        report.range_search = Some(search_report);
    }
    if let Some(target) = quality.target_cosine {
        let engine_error = |message| QuantizeError::Engine {
            model: origin.display().to_string(),
            message,
        };
        let inputs = load_some(quality.fallback_images);
        let reference: Vec<Vec<f32>> = crate::fidelity::run_all(&engine, &inputs)
            .map_err(engine_error)?
            .into_iter()
            .map(|image| image.into_iter().flat_map(|(_, t)| t.data).collect())
            .collect();
        let mut quantized = model.net.clone();
        rewrite_net(&mut quantized, &scales.scales, &channels, &rewrite_options)?;
        let (choice, fallback) = crate::fallback::choose_fallback(
            &model,
            &quantized,
            &inputs,
            &reference,
            target,
            quality.min_int8_mac_share,
        )
        .map_err(engine_error)?;
        for t in &choice.dropped_scales {
            scales.scales.remove(t);
        }
        rewrite_options
            .skip_op_names
            .extend(fallback.kept_float.iter().cloned());
        report.fallback = Some(fallback);
    }
    let output_bias_inputs =
        (quality.output_bias_correction && engine.inputs.len() == 1).then(|| {
            // Means from the first `search_images` images, the acceptance check on the next
            // ones (half of the images each when there are fewer).
            let mut fit = load_some(2 * quality.search_images);
            let check = fit.split_off(quality.search_images.min(fit.len().div_ceil(2)));
            (fit, check)
        });
    report.quality = Some(quality);
    report.seconds.scales = step.elapsed().as_secs_f64();

    let step = Instant::now();
    rewrite_options.zero_points = zero_points_of(&scales);
    report.asymmetric_tensors = rewrite_options.zero_points.len();
    // The int8 engines of the correction need the model's origin and weight sidecar only.
    let float_model = output_bias_inputs.as_ref().map(|_| Model {
        net: mnnq_format::Net::default(),
        origin: model.origin.clone(),
        external: model.external.clone(),
    });
    report.rewrite = rewrite_net(&mut model.net, &scales.scales, &channels, &rewrite_options)?;
    if let (Some((fit, check)), Some(float_model)) = (&output_bias_inputs, &float_model) {
        report.output_bias = Some(
            crate::output_bias::correct_output_bias(
                float_model,
                &engine,
                &mut model.net,
                fit,
                check,
            )
            .map_err(|message| QuantizeError::Engine {
                model: origin.display().to_string(),
                message,
            })?,
        );
    }
    drop(float_model);
    drop(engine);
    // Tensors whose unary op cannot run in int8 lost their quant info in the rewrite.
    let mut final_scales = scales.scales.clone();
    let names = tensor_names(&model.net);
    for op in model.net.oplists.iter().flatten() {
        if op
            .name
            .as_ref()
            .is_some_and(|n| report.rewrite.unary_without_table.contains(n))
        {
            for &o in op.output_indexes.iter().flatten() {
                final_scales.remove(&(o as u32));
            }
        }
    }
    model.external = None;
    let bytes = model.to_bytes()?;
    write_atomically(quant, &bytes)?;
    write_atomically(
        &report.scale_file,
        scale_json::scale_report(&model.net, &final_scales).as_bytes(),
    )?;
    report.size_after = bytes.len() as u64;
    // What mnnq's int8 runtime runs int8 in the written model (the MAC share in the summary).
    match crate::fidelity::engine_of(&model) {
        Ok(int8_engine) => {
            report.int8_macs = Some(crate::fidelity::mac_share(&model.net, &int8_engine));
        }
        Err(e) => report.warnings.push(format!(
            "{}: the int8 runtime cannot load the written model to count its int8 multiply-adds: {e}",
            quant.display()
        )),
    }
    report.seconds.rewrite_and_write = step.elapsed().as_secs_f64();

    report.tensors_with_scale = final_scales.len();
    for (id, reason) in &scales.missing {
        let key = match reason {
            NoScaleReason::NotSeen => "not_seen",
            NoScaleReason::NoRange => "all_zero",
            NoScaleReason::NotFinite => "not_finite",
        };
        report
            .tensors_without_scale
            .entry(key.to_string())
            .or_default()
            .push(names.get(id).cloned().unwrap_or_else(|| format!("#{id}")));
    }
    report.scales = final_scales;
    report.seconds.total = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The zero points of the tensors that still have a scale.
fn zero_points_of(scales: &crate::scales::FeatureScales) -> BTreeMap<u32, i8> {
    scales
        .zero_points
        .iter()
        .filter(|(id, _)| scales.scales.contains_key(id))
        .map(|(&id, &z)| (id, z))
        .collect()
}

impl QuantizeReport {
    /// A short human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let without: usize = self.tensors_without_scale.values().map(Vec::len).sum();
        s += &format!(
            "quantized {} -> {} ({} + {}, {} thread(s))\n",
            self.origin.display(),
            self.quant.display(),
            self.feature_method,
            self.weight_method,
            self.threads
        );
        s += &format!(
            "images: {} used, {} skipped (of {})\n",
            self.images_used,
            self.images_skipped.len(),
            self.images_found
        );
        for skipped in &self.images_skipped {
            s += &format!("  skipped {}: {}\n", skipped.path.display(), skipped.reason);
        }
        s += &format!(
            "tensors: {} with a scale, {} without (tracked {}; {} used the MAX threshold)\n",
            self.tensors_with_scale, without, self.tensors_tracked, self.max_threshold_tensors
        );
        for (reason, names) in &self.tensors_without_scale {
            let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
            s += &format!(
                "  {reason}: {} ({}{})\n",
                names.len(),
                shown.join(", "),
                if names.len() > 5 { ", ..." } else { "" }
            );
        }
        s += &format!(
            "convolutions: {} quantized, {} kept float ({} of them with int8-stored weights); {} unary tables; {} Sigmoid/TanH converted\n",
            self.rewrite.convolutions_quantized,
            self.rewrite.convolutions_kept_float.len(),
            self.rewrite.convolutions_weight_only,
            self.rewrite.unary_tables,
            self.rewrite.sigmoid_tanh_converted
        );
        if self.float_max_pools > 0 {
            s += &format!(
                "max pools kept float in MNN (input can be negative; MNN's x86 int8 max pool is wrong there): {}\n",
                self.float_max_pools
            );
        }
        if self.asymmetric_tensors > 0 {
            s += &format!(
                "asymmetric features (zero point, feature_zero_point): {} tensor(s)\n",
                self.asymmetric_tensors
            );
        }
        if let Some(q) = &self.quality {
            s += &format!(
                "quality: feature ranges {:?}, weight scales {:?}, bias correction {} ({} convolution(s)), float outputs {}\n",
                q.range_method,
                q.weight_range,
                if q.bias_correction { "on" } else { "off" },
                self.rewrite.biases_corrected,
                if q.float_outputs {
                    format!("on ({})", self.float_head.join(", "))
                } else {
                    "off".into()
                },
            );
        }
        if let Some(r) = &self.range_search {
            s += &format!(
                "range search ({} image(s), {} group(s), {} int8 models measured, {:.1} s): int8 output cosine {:.5} -> {:.5}; {} scale(s) changed\n",
                r.images,
                r.groups,
                r.evaluations,
                r.seconds,
                r.cosine_before,
                r.cosine_after,
                r.changed.len(),
            );
        }
        if let Some(b) = &self.output_bias {
            s += &format!(
                "output bias correction ({} image(s), {} convolution(s), {:.1} s): int8 output cosine {:.5} -> {:.5}, on {} other image(s) {:.5} -> {:.5}{}\n",
                b.images,
                b.convolutions,
                b.seconds,
                b.cosine_before,
                b.cosine_after,
                b.check_images,
                b.check_cosine_before,
                b.check_cosine_after,
                if b.applied {
                    ""
                } else {
                    " (not applied: no gain on the other images)"
                }
            );
        }
        if self.propagation_blockers > 0 {
            s += &format!(
                "float tensors given their own scale so MNN keeps them float: {}\n",
                self.propagation_blockers
            );
        }
        if self.float_pools_as_means > 0 {
            s += &format!(
                "global average pools starting the float head written as a float mean (MNN would pool in int8): {}\n",
                self.float_pools_as_means
            );
        }
        if self.float_vectors > 0 {
            s += &format!(
                "float_vectors: {} tensor(s) of one spatial position left float\n",
                self.float_vectors
            );
        }
        if let Some(f) = &self.fold {
            s += &format!(
                "fold_affine: ops {} -> {} ({} affine op(s) folded into the convolution before, {} into the convolutions after, {} chain(s) reduced to one Add, {} convolution pair(s) merged, {} constant(s) dropped)\n",
                f.ops_before,
                f.ops_after,
                f.into_producers,
                f.into_consumers,
                f.chains_reduced,
                f.conv_pairs_merged,
                f.constants_removed
            );
        }
        if let Some(f) = &self.fallback {
            s += &format!(
                "float fallback (target_cosine {}): int8 output cosine {:.4} -> {:.4} on {} calibration image(s); {} convolution(s) left float ({}); int8 share of convolution multiply-adds {:.1}%{}\n",
                f.target_cosine,
                f.cosine_all_int8,
                f.cosine_final,
                f.images,
                f.kept_float.len(),
                f.kept_float.join(", "),
                f.int8_mac_share * 100.0,
                if f.skipped_for_budget.is_empty() {
                    String::new()
                } else {
                    format!("; {} not taken (MAC budget)", f.skipped_for_budget.len())
                }
            );
        }
        if let Some(m) = &self.int8_macs {
            let float: Vec<String> = m
                .float_convolutions
                .iter()
                .map(|(name, macs)| {
                    format!(
                        "{name} {:.2}%",
                        *macs as f64 * 100.0 / m.total_macs.max(1) as f64
                    )
                })
                .collect();
            s += &format!(
                "int8 share of convolution multiply-adds (mnnq int8 runtime): {:.1}%; float: {}\n",
                m.int8_share * 100.0,
                if float.is_empty() {
                    "none".to_string()
                } else {
                    float.join(", ")
                }
            );
        }
        s += &format!("size: {} -> {} bytes\n", self.size_before, self.size_after);
        let t = &self.seconds;
        s += &format!(
            "time: load {:.2} s, range pass {:.2} s, histogram pass {:.2} s, scales {:.2} s, write {:.2} s, total {:.2} s",
            t.load, t.range_pass, t.histogram_pass, t.scales, t.rewrite_and_write, t.total
        );
        s
    }
}
