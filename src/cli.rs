//! The command line: clap definitions and the headless subcommands
//! (`train`, `sample`, `interpolate`, `info`, `datasets`). Every failure is
//! one line naming the file and the problem, and writes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::data;
use crate::device::{self, DeviceChoice};
use crate::export::grid;
use crate::gan::Model;
use crate::gan::model_file;
use crate::latent::{self, Ease, Mode, Prior};
use crate::store;
use crate::train::config::Preset;
use crate::train::{Session, TrainConfig, run};

/// Train DCGANs and explore their latent space: slerp vs lerp on the sphere.
#[derive(Parser, Debug)]
#[command(name = "ganscope", version, about)]
pub struct Cli {
    /// What to do; no subcommand opens the app on the embedded default model.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the app on MODEL (a .safetensors file, a run directory or builtin:NAME).
    Explore {
        /// The model to open.
        model: Option<String>,
        /// Where the app generates, trains and exports; a GPU that cannot be
        /// opened falls back to the CPU, and the status bar says why.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Train a GAN into a run directory.
    Train(TrainArgs),
    /// Write a grid of samples from consecutive seeds.
    Sample(SampleArgs),
    /// Write the frames of a path through seeds' latents as an MP4, a GIF or a PNG folder.
    Interpolate(InterpolateArgs),
    /// Describe a model: architecture, parameters, training provenance.
    Info {
        /// The model (default: the embedded default model).
        model: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the built-in datasets.
    Datasets,
    /// Measure generator inference and training speed (threads: RAYON_NUM_THREADS).
    Bench(BenchArgs),
}

/// `ganscope bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Fewer repetitions (a smoke run).
    #[arg(long)]
    pub quick: bool,
    /// Use candle's stock ops instead of ganscope's fast CPU ops and CUDA convolutions.
    #[arg(long)]
    pub stock: bool,
    /// Also print where a training step's and one generated image's time goes, op by op (extra runs after the timed ones).
    #[arg(long)]
    pub ops: bool,
    /// CUDA: f32 matmuls on TF32 tensor cores (10-bit mantissa inputs).
    #[arg(long)]
    pub tf32: bool,
    /// Resolutions to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [28, 32, 64])]
    pub resolutions: Vec<usize>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

/// `ganscope train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Dataset: builtin:NAME, an image folder, or a folder of IDX files.
    #[arg(long)]
    pub data: Option<String>,
    /// Run directory for checkpoints, samples and metrics.jsonl.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// G steps to train (overrides the config).
    #[arg(long)]
    pub steps: Option<u64>,
    /// A TOML config file (see --print-config).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start from a preset: plain-dcgan, recommended, conditional.
    #[arg(long)]
    pub preset: Option<String>,
    /// Override one option, e.g. --set model.g_width=48 --set loss=hinge.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// CUDA: f32 matmuls on TF32 tensor cores (10-bit mantissa inputs).
    #[arg(long)]
    pub tf32: bool,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print the full config as commented TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Options shared by commands that load a model.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A .safetensors model, a run directory, or builtin:NAME (default: builtin:emoji).
    #[arg(long)]
    pub model: Option<String>,
    /// Class of a conditional model.
    #[arg(long)]
    pub class: Option<u32>,
    /// Where to run the generator.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
    /// Write the latents used as JSON: {"dim": D, "latents": [[...], ...]}.
    #[arg(long)]
    pub latents_out: Option<PathBuf>,
}

/// `ganscope sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// First seed; image k uses seed + k.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of images.
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// Grid columns (default: square).
    #[arg(long)]
    pub cols: Option<usize>,
    /// Upscale factor for each tile (nearest neighbour).
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
}

/// `ganscope interpolate`.
#[derive(Args, Debug)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Keyframe seeds, in order: S1,S2[,S3...] (or give --keyframes).
    #[arg(long, value_delimiter = ',', required_unless_present = "keyframes", conflicts_with = "keyframes")]
    pub seeds: Vec<u64>,
    /// A bookmark saved by the app: renders exactly its latents, mode, ease,
    /// loop, class and export settings; flags given here override all but the latents.
    #[arg(long, value_name = "FILE.json")]
    pub keyframes: Option<PathBuf>,
    /// slerp (great circle) or lerp (straight line) [default: slerp].
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<Mode>,
    /// Frames in the whole path [default: 60].
    #[arg(long, conflicts_with = "seconds")]
    pub frames: Option<usize>,
    /// Length in seconds instead of --frames (frames = seconds x fps).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Frames per second of the MP4 or GIF (GIF delays are whole centiseconds,
    /// alternated so the length is exact) [default: 30].
    #[arg(long)]
    pub fps: Option<f64>,
    /// Close the path back to the first keyframe, seamlessly: the last frame
    /// leads into the first by the same step as every other.
    #[arg(long = "loop")]
    pub looped: bool,
    /// Side of each image in pixels [default: the smallest multiple of the
    /// model's resolution >= 256]. MP4 needs an even size.
    #[arg(long)]
    pub size: Option<u32>,
    /// Upscaling filter: nearest (crisp pixels) or smooth (bilinear) [default: nearest].
    #[arg(long)]
    pub filter: Option<crate::export::Filter>,
    /// Easing along each segment: linear or ease-in-out [default: linear].
    #[arg(long, value_parser = parse_ease)]
    pub ease: Option<Ease>,
    /// Slerp on the left, lerp on the right, labelled, 2px divider between.
    /// --latents-out then lists two rows per frame: slerp, then lerp.
    #[arg(long)]
    pub side_by_side: bool,
    /// Output: FILE.mp4 (H.264), FILE.gif (looping) or a folder of PNG frames.
    /// Written under a temporary name and renamed when complete.
    #[arg(long)]
    pub out: PathBuf,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    Mode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| format!("`{s}` is not slerp or lerp"))
}

fn parse_ease(s: &str) -> Result<Ease, String> {
    match s {
        "linear" => Ok(Ease::Linear),
        "ease-in-out" => Ok(Ease::EaseInOut),
        _ => Err(format!("`{s}` is not linear or ease-in-out")),
    }
}

/// Loads a model by spec: none is the default, `builtin:NAME` a shipped one,
/// anything else a file or run directory.
pub fn load_model(spec: Option<&str>, device: &candle_core::Device) -> Result<Model> {
    let spec = spec.unwrap_or("builtin:emoji");
    if let Some(name) = spec.strip_prefix("builtin:") {
        let m = crate::assets::model(name).with_context(|| {
            let names: Vec<&str> = crate::assets::MODELS.iter().map(|m| m.name).collect();
            format!("no built-in model `{name}` (have: {})", names.join(", "))
        })?;
        return Ok(model_file::load_bytes(m.bytes, spec, device)?);
    }
    Ok(model_file::load(Path::new(spec), device)?)
}

/// Runs a headless subcommand.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Train(a) => train(a),
        Command::Sample(a) => sample(a),
        Command::Interpolate(a) => interpolate(a),
        Command::Info { model, json } => info(model.as_deref(), json),
        Command::Datasets => datasets(),
        Command::Bench(a) => bench(a),
        Command::Explore { .. } => bail!("this build has no GUI (built without the `gui` feature)"),
    }
}

/// Assembles the config from defaults, --config, --preset, --data, --steps and --set.
fn train_config(a: &TrainArgs, base: Option<TrainConfig>) -> Result<TrainConfig> {
    let mut cfg = match (&a.config, base) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            TrainConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        (None, Some(b)) => b,
        (None, None) => TrainConfig::default(),
    };
    if let Some(name) = &a.preset {
        let preset = Preset::ALL
            .into_iter()
            .find(|p| {
                p.name().replace(['(', ')'], "").replace(' ', "-").starts_with(name.as_str()) || preset_key(*p) == name
            })
            .with_context(|| format!("unknown preset `{name}` (plain-dcgan, recommended, conditional)"))?;
        cfg = preset.apply(&cfg);
    }
    if let Some(d) = &a.data {
        cfg.data = d.clone();
    }
    if let Some(s) = a.steps {
        cfg.set("steps", &s.to_string()).map_err(|e| anyhow::anyhow!("--steps: {e}"))?;
    }
    for kv in &a.sets {
        let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        cfg.set(k.trim(), v.trim()).map_err(|e| anyhow::anyhow!("--set {kv}: {e}"))?;
    }
    cfg.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
    Ok(cfg)
}

fn preset_key(p: Preset) -> &'static str {
    match p {
        Preset::PlainDcgan => "plain-dcgan",
        Preset::Recommended => "recommended",
        Preset::Conditional => "conditional",
    }
}

fn train(a: TrainArgs) -> Result<()> {
    if a.print_config {
        print!("{}", train_config(&a, None)?.to_commented_toml());
        return Ok(());
    }
    let out = a.out.clone().context("--out RUN_DIR is required")?;
    let base = if a.resume { Some(run::read_config(&out).context("--resume")?) } else { None };
    let cfg = train_config(&a, base)?;
    let chosen = device::select(a.device)?;
    device::set_tf32(a.tf32)?;
    let data = run::load_data(&cfg)?;
    if data.skipped_count > 0 {
        let names: Vec<String> = data.skipped.iter().map(|p| p.display().to_string()).collect();
        eprintln!("warning: skipped {} unreadable file(s), e.g. {}", data.skipped_count, names.join(", "));
    }
    eprintln!(
        "training on {} ({} images, {} classes, {}x{}x{}) on {}",
        data.name,
        data.len(),
        data.classes.len(),
        data.channels,
        data.resolution,
        data.resolution,
        chosen.description
    );
    let data = Arc::new(data);
    let mut session = if a.resume {
        Session::resume(cfg.clone(), data, &chosen.device, &out)?
    } else {
        Session::create(cfg.clone(), data, &chosen.device, &out)?
    };
    session.trainer.keep_pool_awake(true);
    let start = session.trainer.step_count();
    if start >= cfg.steps {
        eprintln!("{} is already at step {start} of {}: nothing to do (raise --steps)", out.display(), cfg.steps);
        return Ok(());
    }
    let bar = ProgressBar::new(cfg.steps).with_position(start);
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let outcome = loop {
        match session.advance() {
            Ok(adv) => {
                for alarm in &adv.stats.alarms {
                    bar.println(format!(
                        "alarm at step {}: {:?} since step {}: {}. Try: {}",
                        adv.stats.step, alarm.kind, alarm.since, alarm.measured, alarm.advice
                    ));
                }
                let alarms = session.trainer.alarms().len();
                bar.set_message(format!(
                    "D {:.3} G {:.3} | {:.0} img/s{}",
                    adv.stats.d_loss,
                    adv.stats.g_loss,
                    adv.images_per_sec,
                    if alarms > 0 { format!(" | {alarms} alarm(s)") } else { String::new() }
                ));
                bar.set_position(adv.stats.step);
                if adv.finished {
                    break Ok(adv);
                }
            }
            Err(e) => break Err(e),
        }
    };
    bar.finish();
    let adv = outcome?;
    eprintln!(
        "done: step {} D {:.3} G {:.3}; model in {}",
        adv.stats.step,
        adv.stats.d_loss,
        adv.stats.g_loss,
        out.join("model.safetensors").display()
    );
    Ok(())
}

/// Refuses to overwrite nothing but checks the target's folder exists and is
/// writable before any work is done.
fn check_writable(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("{}: folder {} does not exist", path.display(), dir.display()))?;
    if meta.permissions().readonly() {
        bail!("{}: folder {} is not writable", path.display(), dir.display());
    }
    Ok(())
}

fn write_latents(path: &Path, dim: usize, latents: &[Vec<f32>]) -> Result<()> {
    let body = serde_json::to_vec(&json!({ "dim": dim, "latents": latents }))?;
    store::write_atomic(path, &body)?;
    Ok(())
}

fn sample(a: SampleArgs) -> Result<()> {
    if a.count == 0 || a.count > 4096 {
        bail!("--count {} is out of range 1..=4096", a.count);
    }
    if !(1..=64).contains(&a.scale) {
        bail!("--scale {} is out of range 1..=64", a.scale);
    }
    check_writable(&a.out)?;
    if let Some(p) = &a.model.latents_out {
        check_writable(p)?;
    }
    let chosen = device::select(a.model.device)?;
    let model = load_model(a.model.model.as_deref(), &chosen.device)?;
    let dim = model.config.z_dim;
    let latents: Vec<Vec<f32>> =
        (0..a.count as u64).map(|k| latent::from_seed(a.seed + k, dim, Prior::Sphere)).collect();
    let flat: Vec<f32> = latents.concat();
    let pixels = model.generate(&flat, a.model.class, None)?;
    let tiles: Vec<_> = grid::batch_to_rgb(&pixels, model.config.channels, model.config.resolution)
        .iter()
        .map(|t| grid::upscale(t, a.scale))
        .collect();
    let cols = a.cols.unwrap_or_else(|| (a.count as f64).sqrt().ceil() as usize);
    let img = if a.count == 1 { tiles[0].clone() } else { grid::grid(&tiles, cols, 2) };
    grid::save_png(&img, &a.out)?;
    if let Some(p) = &a.model.latents_out {
        write_latents(p, dim, &latents)?;
    }
    Ok(())
}

fn interpolate(a: InterpolateArgs) -> Result<()> {
    use crate::export::{self, Bookmark, frames, target};
    let bookmark = a.keyframes.as_deref().map(Bookmark::load).transpose()?;
    if bookmark.is_none() && a.seeds.len() < 2 {
        bail!("--seeds needs at least two seeds, got {}", a.seeds.len());
    }
    let saved = bookmark.as_ref().and_then(|b| b.export.clone());
    let fps = a.fps.or(saved.as_ref().map(|s| s.fps)).unwrap_or(frames::DEFAULT_FPS);
    if !(fps > 0.0 && fps <= frames::MAX_FPS) {
        bail!("--fps {fps} is out of range (0, {}]", frames::MAX_FPS);
    }
    let n_frames = match (a.frames, a.seconds) {
        (Some(n), _) => n,
        (None, Some(s)) if s.is_finite() && s > 0.0 => (s * fps).round() as usize,
        (None, Some(s)) => bail!("--seconds {s} is not a positive number"),
        (None, None) => saved.as_ref().map_or(frames::DEFAULT_FRAMES, |s| s.frames),
    };
    if !(2..=frames::MAX_FRAMES).contains(&n_frames) {
        bail!("--frames {n_frames} is out of range 2..={}", frames::MAX_FRAMES);
    }
    // The targets first: a bad one is reported before any model is loaded.
    target::check_target(&a.out)?;
    if let Some(p) = &a.model.latents_out {
        target::check_folder_writable(p)?;
    }
    let chosen = device::select(a.model.device)?;
    let model_spec = a.model.model.as_deref().or(bookmark.as_ref().and_then(|b| b.model.as_deref()));
    let model = load_model(model_spec, &chosen.device)?;
    let dim = model.config.z_dim;
    let res = model.config.resolution as u32;
    let mut spec = match (&bookmark, &a.keyframes) {
        (Some(b), Some(path)) => {
            if b.model_hash != model.hash {
                eprintln!(
                    "warning: {} was saved with model {}, rendering with model {}",
                    path.display(),
                    b.model_hash,
                    model.hash
                );
            }
            b.frame_spec(dim, res).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        _ => frames::FrameSpec {
            keys: a.seeds.iter().map(|s| latent::from_seed(*s, dim, Prior::Sphere)).collect(),
            frames: n_frames,
            mode: Mode::Slerp,
            ease: Ease::Linear,
            looped: false,
            side_by_side: false,
            size: frames::default_size(res),
            filter: export::Filter::Nearest,
            class: None,
        },
    };
    spec.frames = n_frames;
    spec.mode = a.mode.unwrap_or(spec.mode);
    spec.ease = a.ease.unwrap_or(spec.ease);
    spec.looped |= a.looped;
    spec.side_by_side |= a.side_by_side;
    spec.size = a.size.unwrap_or(spec.size);
    spec.filter = a.filter.unwrap_or(spec.filter);
    spec.class = a.model.class.or(spec.class);
    let bar = ProgressBar::new(n_frames as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} frames [{elapsed_precise}<{eta_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The CLI has no cancel button; Ctrl-C kills the process, which leaves
    // only the hidden temporary file, never a partial file at --out.
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let summary = export::export(&model, &spec, fps, &a.out, &cancel, |p| bar.set_position(p.done as u64));
    bar.finish_and_clear();
    let summary = summary?;
    if let Some(p) = &a.model.latents_out {
        write_latents(p, dim, &spec.latents())?;
    }
    let (w, h) = summary.dimensions;
    eprintln!(
        "wrote {} ({}, {} frames of {w}x{h}) in {:.2} s: {:.1} frames/s",
        a.out.display(),
        summary.format.name(),
        summary.frames,
        summary.seconds,
        summary.frames as f64 / summary.seconds.max(1e-9)
    );
    Ok(())
}

fn info(spec: Option<&str>, as_json: bool) -> Result<()> {
    let model = load_model(spec, &candle_core::Device::Cpu)?;
    let c = &model.config;
    if as_json {
        let v = json!({
            "model": spec.unwrap_or("builtin:emoji"),
            "hash": model.hash,
            "parameters": model.parameters,
            "config": c,
            "provenance": model.provenance,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let p = &model.provenance;
    println!("model       {} (sha256 {}...)", spec.unwrap_or("builtin:emoji"), model.hash);
    println!("output      {}x{} x {} channel(s), z_dim {}", c.resolution, c.resolution, c.channels, c.z_dim);
    println!(
        "generator   width {}, norm {:?}, upsample {:?}, dropout {} in {} layer(s)",
        c.g_width, c.g_norm, c.upsample, c.g_dropout, c.g_dropout_layers
    );
    println!("parameters  {}", model.parameters);
    if c.conditional() {
        println!("classes     {} ({})", c.num_classes, p.classes.join(", "));
    }
    println!("trained on  {} for {} steps{}", p.dataset, p.steps, if p.ema { " (EMA weights)" } else { "" });
    Ok(())
}

fn datasets() -> Result<()> {
    for d in data::builtins() {
        println!(
            "builtin:{:<8} {:>6} images {}x{}x{}  {}",
            d.name, d.count, d.channels, d.native_resolution, d.native_resolution, d.description
        );
        if !d.classes.is_empty() {
            println!("                 classes: {}", d.classes.join(", "));
        }
        println!("                 license: {}", d.license);
    }
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    if let Some(bad) = a.resolutions.iter().find(|r| ![28, 32, 64].contains(*r)) {
        bail!("--resolutions: {bad} is not one of 28, 32, 64");
    }
    let chosen = device::select(a.device)?;
    device::set_tf32(a.tf32)?;
    eprintln!("benchmarking on {}{}", chosen.description, if a.tf32 { " with TF32 matmuls" } else { "" });
    let opts = crate::bench::Options { quick: a.quick, stock: a.stock, ops: a.ops };
    let mut report = crate::bench::run(&a.resolutions, &chosen.device, opts)?;
    report.tf32 = a.tf32;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "matmul ceiling {:.1} GFLOP/s, {} thread(s), {}",
            report.matmul_gflops, report.threads, report.backend
        );
    }
    Ok(())
}
