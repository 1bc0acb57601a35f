//! `mnnq compare FLOAT QUANT --config CONFIG --images DIR`: how far an int8 model drifts from
//! its float model, at the outputs and tensor by tensor.
//!
//! The int8 runtime has not landed yet, so the quantized run is the float engine with every
//! tensor that has a scale in QUANT fake-quantized (int8 quantize-dequantize of activations,
//! errors propagated layer by layer); weights stay float. The real MNN int8 figures come from
//! `scripts/fidelity.py`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mnnq_engine::ir::MnnFormat;
use mnnq_engine::Engine;
use mnnq_format::Model;
use mnnq_preprocess::{preprocess_image, Config, InputSpec, Layout};
use mnnq_quantize::diagnose::{cosine, diagnose, scales_from_quant_model, TensorError};

#[derive(clap::Args)]
pub struct Args {
    /// The float model.
    pub float: PathBuf,
    /// The int8 model (its tensor scales are what gets fake-quantized).
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
    /// Write an SVG bar chart of the per-tensor error to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Run the fake-quantized side with QUANT's int8 weights (decoded) instead of FLOAT's.
    #[arg(long)]
    pub quant_weights: bool,
    /// Worst tensors to list.
    #[arg(long, default_value_t = 15)]
    pub worst: usize,
}

#[derive(serde::Serialize, Default)]
struct OutputFidelity {
    name: String,
    images: usize,
    cosine_mean: f64,
    cosine_min: f64,
    max_abs_error: f64,
    mean_abs_error: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    top1_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top5_overlap: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iou_at_0_3: Option<f64>,
}

#[derive(serde::Serialize)]
struct Report {
    float: PathBuf,
    quant: PathBuf,
    quantized_run: &'static str,
    outputs: Vec<OutputFidelity>,
    tensors: Vec<TensorError>,
}

fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
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

fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn iou(a: &[f32], b: &[f32], threshold: f32) -> Option<f64> {
    let (mut inter, mut union) = (0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        let (p, q) = (x > threshold, y > threshold);
        inter += u64::from(p && q);
        union += u64::from(p || q);
    }
    (union > 0).then(|| inter as f64 / union as f64)
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
    let [(input_tensor, input_slot)] = engine.inputs[..] else {
        bail!(
            "{}: compare needs a model with one input",
            args.float.display()
        );
    };
    let shape = engine.slots[input_slot].shape.clone();
    let layout = match engine.infos[input_tensor].as_ref().map(|i| i.format) {
        Some(MnnFormat::Nhwc) => Layout::Nhwc,
        _ => Layout::Nchw,
    };
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let (spec, _) =
        InputSpec::for_model_input(&config, engine.tensor_name(input_tensor), layout, &dims)?;
    let mut files = image_files(&args.images)?;
    if args.max_images > 0 {
        files.truncate(args.max_images);
    }
    let inputs = files
        .iter()
        .map(|f| preprocess_image(f, &config, &spec))
        .collect::<Result<Vec<_>, _>>()?;
    let quant_engine = if args.quant_weights {
        Some(
            {
                let mut model = quant_model.clone();
                mnnq_quantize::diagnose::dequantize_conv_weights(&mut model.net)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", args.quant.display()))?;
                Engine::from_model(&model)
            }
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.quant.display()))?,
        )
    } else {
        None
    };
    let diagnosis = diagnose(
        &engine,
        quant_engine.as_ref().unwrap_or(&engine),
        &scales,
        &inputs,
        config.feature_clamp_value as f32,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.float.display()))?;

    let mut outputs: Vec<OutputFidelity> = Vec::new();
    for (index, (name, float, _)) in diagnosis.outputs[0].iter().enumerate() {
        let non_batch: Vec<usize> = float.shape.iter().skip(1).copied().collect();
        // As fidelity.py: one dimension besides the batch carries the classes (1x1000, 1x2).
        let classifier = non_batch.iter().filter(|&&d| d > 1).count() == 1;
        let map = float.shape.len() == 4 && float.shape[1] == 1;
        let mut o = OutputFidelity {
            name: name.clone(),
            cosine_min: f64::INFINITY,
            ..OutputFidelity::default()
        };
        let (mut top1, mut top5, mut ious) = (0usize, 0.0f64, Vec::new());
        for image in &diagnosis.outputs {
            let (_, f, q) = &image[index];
            o.cosine_mean += cosine(&f.data, &q.data);
            o.cosine_min = o.cosine_min.min(cosine(&f.data, &q.data));
            let mut sum = 0.0;
            for (&a, &b) in f.data.iter().zip(&q.data) {
                let e = f64::from((a - b).abs());
                o.max_abs_error = o.max_abs_error.max(e);
                sum += e;
            }
            o.mean_abs_error += sum / f.data.len().max(1) as f64;
            if classifier {
                let (tf, tq) = (top_k(&f.data, 5), top_k(&q.data, 5));
                top1 += usize::from(tf[0] == tq[0]);
                top5 += tf.iter().filter(|c| tq.contains(c)).count() as f64 / tf.len() as f64;
            }
            if map {
                if let Some(v) = iou(&f.data, &q.data, 0.3) {
                    ious.push(v);
                }
            }
        }
        let n = diagnosis.outputs.len() as f64;
        o.images = diagnosis.outputs.len();
        o.cosine_mean /= n;
        o.mean_abs_error /= n;
        if classifier {
            o.top1_agreement = Some(top1 as f64 / n);
            if float.data.len() >= 5 {
                o.top5_overlap = Some(top5 / n);
            }
        }
        if map && !ious.is_empty() {
            o.iou_at_0_3 = Some(ious.iter().sum::<f64>() / ious.len() as f64);
        }
        outputs.push(o);
    }

    if let Some(path) = &args.plot {
        std::fs::write(path, svg_chart(&diagnosis.tensors))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let report = Report {
        float: args.float.clone(),
        quant: args.quant.clone(),
        quantized_run: "fake-quant activations in the float engine (int8 runtime not landed)",
        outputs,
        tensors: diagnosis.tensors,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", text_report(&report, args.worst, files.len()));
    Ok(())
}

fn text_report(report: &Report, worst: usize, images: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} vs {} on {images} image(s); quantized run: {}",
        report.float.display(),
        report.quant.display(),
        report.quantized_run
    );
    for o in &report.outputs {
        let _ = write!(
            s,
            "output {}: cosine mean {:.4} min {:.4}, mean abs err {:.4}, max abs err {:.4}",
            o.name, o.cosine_mean, o.cosine_min, o.mean_abs_error, o.max_abs_error
        );
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
    let mut ranked: Vec<&TensorError> = report.tensors.iter().collect();
    ranked.sort_by(|a, b| a.cosine.total_cmp(&b.cosine));
    let _ = writeln!(
        s,
        "worst tensors (propagated error), of {}:",
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
