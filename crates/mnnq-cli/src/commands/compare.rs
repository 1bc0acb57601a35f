//! `mnnq compare FLOAT QUANT --config CONFIG --images DIR`: how far an int8 model drifts from
//! its float model, at the outputs and tensor by tensor.
//!
//! Outputs: QUANT runs in mnnq's int8 runtime (the same integer arithmetic as `mnnq run` on an
//! int8 model), FLOAT in the float engine; the figures are those of `scripts/fidelity.py`
//! (cosine, errors, top-1/top-5 for classifiers, IoU@0.3 for one-channel maps), plus the share
//! of convolution multiply-adds the int8 runtime really runs in int8.
//!
//! Layers: a separate simulation fake-quantizes every tensor that has a scale in QUANT
//! (int8 quantize-dequantize, errors propagated) in the float engine and compares each tensor
//! with the clean float run; that locates where the error comes from. Its output figures are
//! shown too, labelled as simulation.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mnnq_engine::ir::MnnFormat;
use mnnq_engine::Engine;
use mnnq_format::Model;
use mnnq_preprocess::{preprocess_image, Config, InputSpec, Layout};
use mnnq_quantize::diagnose::{
    diagnose_with_zero_points, scales_from_quant_model, tensor_sensitivity,
    zero_points_from_quant_model, TensorError, TensorLoss,
};
use mnnq_quantize::fidelity::{compare_outputs, mac_share, run_all, MacShare, OutputFidelity};

#[derive(clap::Args)]
pub struct Args {
    /// The float model.
    pub float: PathBuf,
    /// The int8 model.
    pub quant: PathBuf,
    /// The calibration config (format, mean, normal, size; feature_clamp_value).
    #[arg(long)]
    pub config: PathBuf,
    /// Folder of evaluation images (every file, sorted by name).
    #[arg(long)]
    pub images: PathBuf,
    /// Use at most this many images (0: all).
    #[arg(long, default_value_t = 0)]
    pub max_images: usize,
    /// Print the result as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG bar chart of the per-tensor error (simulation) to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// In the layer-wise simulation, use QUANT's int8 weights (decoded) instead of FLOAT's.
    #[arg(long)]
    pub quant_weights: bool,
    /// Skip the layer-wise simulation (outputs from the int8 runtime only; faster).
    #[arg(long)]
    pub no_layers: bool,
    /// Worst tensors to list.
    #[arg(long, default_value_t = 15)]
    pub worst: usize,
    /// Also measure each scaled tensor's cost on its own (float engine, float weights): the output loss (1 - cosine,
    /// pooled over the images) when only that tensor is fake-quantized (one float run per
    /// tensor and image; use --max-images on large models).
    #[arg(long)]
    pub sensitivity: bool,
}

#[derive(serde::Serialize)]
struct Report {
    float: PathBuf,
    quant: PathBuf,
    images: usize,
    /// QUANT in the int8 runtime vs FLOAT in the float engine.
    outputs: Vec<OutputFidelity>,
    /// Convolution multiply-adds run in int8 by the int8 runtime.
    macs: MacShare,
    /// The fake-quant simulation's outputs vs float (absent with --no-layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    simulated_outputs: Option<Vec<OutputFidelity>>,
    /// Per-tensor error of the simulation, execution order.
    tensors: Vec<TensorError>,
    /// With --sensitivity: each tensor's loss when only it is fake-quantized, largest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    sensitivity: Option<Vec<TensorLoss>>,
}

/// `float` folded by `fold_affine` when its tensors differ from `quant`'s and folding
/// reproduces them (an int8 model mnnq wrote from a folded graph); None otherwise.
fn folded_like(float: &Model, quant: &Model) -> Option<Model> {
    let names = |m: &Model| m.net.tensor_name.clone().unwrap_or_default();
    let quant_names = names(quant);
    if names(float) == quant_names {
        return None;
    }
    let mut folded = float.clone();
    mnnq_quantize::fold::fold_affine(&mut folded.net);
    (names(&folded) == quant_names).then_some(folded)
}

/// The model's one input made from each image as the config says (compare and quantize's
/// check need a model with one input).
pub(crate) fn model_inputs(
    engine: &Engine,
    model_path: &Path,
    config: &Config,
    files: &[PathBuf],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let [(input_tensor, input_slot)] = engine.inputs[..] else {
        bail!(
            "{}: comparing outputs needs a model with one input",
            model_path.display()
        );
    };
    let shape = &engine.slots[input_slot].shape;
    let layout = match engine.infos[input_tensor].as_ref().map(|i| i.format) {
        Some(MnnFormat::Nhwc) => Layout::Nhwc,
        _ => Layout::Nchw,
    };
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let (spec, _) =
        InputSpec::for_model_input(config, engine.tensor_name(input_tensor), layout, &dims)?;
    Ok(files
        .iter()
        .map(|f| preprocess_image(f, config, &spec))
        .collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    if files.is_empty() {
        bail!("no image files in {}", dir.display());
    }
    Ok(files)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (config, _) = Config::from_file(&args.config)?;
    let float_model = Model::load(&args.float)?;
    let quant_model = Model::load(&args.quant)?;
    let scales = scales_from_quant_model(&quant_model.net);
    if scales.is_empty() {
        bail!(
            "{}: no tensor has a feature scale; is it an int8 model?",
            args.quant.display()
        );
    }
    let engine = Engine::from_model(&float_model)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.float.display()))?;
    let int8_engine = Engine::from_model(&quant_model)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.quant.display()))?;
    if int8_engine.int8.is_none() {
        bail!(
            "{}: the int8 runtime found no int8 quant info to run",
            args.quant.display()
        );
    }
    let mut files = image_files(&args.images)?;
    if args.max_images > 0 {
        files.truncate(args.max_images);
    }
    let inputs = model_inputs(&engine, &args.float, &config, &files)?;

    let float_runs =
        run_all(&engine, &inputs).map_err(|e| anyhow::anyhow!("{}: {e}", args.float.display()))?;
    let int8_runs = run_all(&int8_engine, &inputs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.quant.display()))?;
    let outputs = compare_outputs(&float_runs, &int8_runs);
    let macs = mac_share(&quant_model.net, &int8_engine);
    drop(int8_engine);

    // mnnq quantizes a folded graph (`fold_affine`): the simulation runs the float model
    // folded the same way, so that it finds every scaled tensor under its id.
    let folded_engine = if args.no_layers && !args.sensitivity {
        None
    } else {
        folded_like(&float_model, &quant_model)
            .map(|model| Engine::from_model(&model))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{} (folded): {e}", args.float.display()))?
    };
    let sim_engine = folded_engine.as_ref().unwrap_or(&engine);

    let (simulated_outputs, tensors) = if args.no_layers {
        (None, Vec::new())
    } else {
        let quant_engine = if args.quant_weights {
            let mut model = quant_model.clone();
            mnnq_quantize::diagnose::dequantize_conv_weights(&mut model.net)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.quant.display()))?;
            // Without quant info the engine runs it float, with the decoded int8 weights.
            for d in model.net.extra_tensor_describe.iter_mut().flatten() {
                d.quant_info = None;
            }
            Some(
                Engine::from_model(&model)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", args.quant.display()))?,
            )
        } else {
            None
        };
        let diagnosis = diagnose_with_zero_points(
            sim_engine,
            quant_engine.as_ref().unwrap_or(sim_engine),
            &scales,
            &zero_points_from_quant_model(&quant_model.net),
            &inputs,
            config.feature_clamp_value as f32,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.float.display()))?;
        let (float_sim, quant_sim): (Vec<_>, Vec<_>) = diagnosis
            .outputs
            .into_iter()
            .map(|image| {
                image
                    .into_iter()
                    .map(|(name, f, q)| ((name.clone(), f), (name, q)))
                    .unzip::<_, _, Vec<_>, Vec<_>>()
            })
            .unzip();
        (
            Some(compare_outputs(&float_sim, &quant_sim)),
            diagnosis.tensors,
        )
    };
    let sensitivity = if args.sensitivity {
        Some(
            tensor_sensitivity(
                sim_engine,
                &scales,
                &zero_points_from_quant_model(&quant_model.net),
                &inputs,
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.float.display()))?,
        )
    } else {
        None
    };

    if let Some(path) = &args.plot {
        if tensors.is_empty() {
            bail!("--plot needs the layer-wise simulation (drop --no-layers)");
        }
        std::fs::write(path, svg_chart(&tensors))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let report = Report {
        float: args.float.clone(),
        quant: args.quant.clone(),
        images: files.len(),
        outputs,
        macs,
        simulated_outputs,
        tensors,
        sensitivity,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", text_report(&report, args.worst));
    Ok(())
}

pub(crate) fn output_line(s: &mut String, label: &str, o: &OutputFidelity) {
    let _ = write!(
        s,
        "{label} {}: cosine mean {:.4} min {:.4}, mean abs err {:.4}, max abs err {:.4}",
        o.name, o.cosine_mean, o.cosine_min, o.mean_abs_error, o.max_abs_error
    );
    if o.cosine_undefined > 0 {
        let _ = write!(s, " ({} image(s) without cosine)", o.cosine_undefined);
    }
    if let Some(t) = o.top1_agreement {
        let _ = write!(s, ", top-1 agreement {:.1}%", t * 100.0);
    }
    if let Some(t) = o.top5_overlap {
        let _ = write!(s, ", top-5 overlap {t:.3}");
    }
    if let Some(t) = o.iou_at_0_3 {
        let _ = write!(s, ", IoU@0.3 {t:.3}");
    }
    s.push('\n');
}

fn text_report(report: &Report, worst: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} (float engine) vs {} (int8 runtime) on {} image(s)",
        report.float.display(),
        report.quant.display(),
        report.images
    );
    for o in &report.outputs {
        output_line(&mut s, "output", o);
    }
    let m = &report.macs;
    let _ = writeln!(
        s,
        "int8 share of convolution multiply-adds: {:.1}% ({} float convolution(s){})",
        m.int8_share * 100.0,
        m.float_convolutions.len(),
        if m.float_convolutions.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                m.float_convolutions
                    .iter()
                    .map(|(n, macs)| format!(
                        "{n} {:.2}%",
                        *macs as f64 * 100.0 / m.total_macs.max(1) as f64
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if let Some(losses) = &report.sensitivity {
        let _ = writeln!(
            s,
            "most costly tensors on their own (output loss 1 - cosine with only that tensor rounded; not additive), of {}:",
            losses.len()
        );
        for l in losses.iter().take(worst) {
            let _ = writeln!(s, "  {:<40} {:>10.6}", l.name, l.loss);
        }
    }
    let Some(simulated) = &report.simulated_outputs else {
        return s;
    };
    for o in simulated {
        output_line(
            &mut s,
            "simulation (fake-quant activations, float engine)",
            o,
        );
    }
    let mut ranked: Vec<&TensorError> = report.tensors.iter().collect();
    ranked.sort_by(|a, b| a.cosine.total_cmp(&b.cosine));
    let _ = writeln!(
        s,
        "worst tensors of the simulation (propagated error), of {}:",
        report.tensors.len()
    );
    let _ = writeln!(
        s,
        "  {:<40} {:<22} {:>9} {:>8} {:>9} {:>8}",
        "tensor", "written by", "cosine", "SQNR dB", "overflow", "max/rng"
    );
    for t in ranked.into_iter().take(worst) {
        let _ = writeln!(
            s,
            "  {:<40} {:<22} {:>9.5} {:>8.2} {:>8.4}% {:>8.2}",
            t.name,
            t.producer,
            t.cosine,
            t.sqnr_db,
            t.overflow * 100.0,
            t.max_over_range
        );
    }
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Bars of SQNR (dB) per tensor in execution order; the 5 worst by cosine in red, with names.
fn svg_chart(tensors: &[TensorError]) -> String {
    let (width, height, left, bottom, top) = (1000.0f64, 420.0f64, 50.0, 40.0, 30.0);
    let plot_h = height - bottom - top;
    let n = tensors.len().max(1) as f64;
    let bar_w = (width - left - 10.0) / n;
    let max_db = tensors
        .iter()
        .map(|t| t.sqnr_db)
        .filter(|v| v.is_finite())
        .fold(10.0f64, f64::max);
    let mut worst: Vec<usize> = (0..tensors.len()).collect();
    worst.sort_by(|&a, &b| tensors[a].cosine.total_cmp(&tensors[b].cosine));
    worst.truncate(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18" font-size="13">SQNR per tensor (dB, higher is better), fake-quantized activations propagated; red: 5 lowest cosine</text>"#
    );
    for tick in 0..=4 {
        let v = max_db * f64::from(tick) / 4.0;
        let y = top + plot_h - v / max_db * plot_h;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="4" y="{:.1}">{v:.0}</text>"##,
            width - 10.0,
            y + 3.0
        );
    }
    for (i, t) in tensors.iter().enumerate() {
        let v = if t.sqnr_db.is_finite() {
            t.sqnr_db.max(0.0)
        } else {
            max_db
        };
        let h = v / max_db * plot_h;
        let x = left + i as f64 * bar_w;
        let colour = if worst.contains(&i) {
            "#d62728"
        } else {
            "#1f77b4"
        };
        let _ = writeln!(
            s,
            r#"<rect x="{x:.2}" y="{:.2}" width="{:.2}" height="{h:.2}" fill="{colour}"><title>{} ({}): cosine {:.5}, SQNR {:.2} dB, overflow {:.4}%</title></rect>"#,
            top + plot_h - h,
            (bar_w * 0.9).max(0.5),
            escape(&t.name),
            escape(&t.producer),
            t.cosine,
            t.sqnr_db,
            t.overflow * 100.0
        );
    }
    for (rank, &i) in worst.iter().enumerate() {
        let x = left + i as f64 * bar_w;
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" fill="#d62728">{}</text>"##,
            height - bottom + 12.0 + rank as f64 * 6.0,
            escape(&tensors[i].name)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}">tensors in execution order ({})</text>"#,
        height - 4.0,
        tensors.len()
    );
    s.push_str("</svg>\n");
    s
}
