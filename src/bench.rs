//! `ganscope bench`: generator inference at batch 1 and 64 and a full
//! training step at batch 64 for the shipped architectures, with FLOP rates
//! against the machine's measured matmul ceiling. The PyTorch reference in
//! `benches/reference/torch_dcgan.py` measures the same things.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::data::Dataset;
use crate::gan::config::Upsample;
use crate::gan::params::{FreshParams, LoadedParams};
use crate::gan::{Generator, ModelConfig, Pass};
use crate::train::config::Preset;
use crate::train::{TrainConfig, Trainer};

/// One benchmarked architecture.
#[derive(Debug, Clone, Serialize)]
pub struct ArchResult {
    /// e.g. "dcgan64-conv_transpose".
    pub name: String,
    /// Image side.
    pub resolution: usize,
    /// Upsampling kind.
    pub upsample: Upsample,
    /// G forward at batch 1, milliseconds (median).
    pub g_batch1_ms: f64,
    /// G forward at batch 64, milliseconds (median).
    pub g_batch64_ms: f64,
    /// Training images per second at batch 64 (one D step + one G step).
    pub train_images_per_sec: f64,
    /// GFLOP/s reached in the training step.
    pub train_gflops: f64,
    /// `train_gflops` over the measured matmul ceiling.
    pub train_ceiling_share: f64,
    /// With `--ops`: the step's time op by op, longest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<StepOps>,
    /// With `--ops`: one batch-1 generation's time op by op (the
    /// explorer's case), as [`Self::ops`] with a generation for a step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub g_batch1_ops: Option<StepOps>,
}

/// Where a training step's time went, op by op ([`crate::ops::profile`]),
/// over steps run after the timed ones.
#[derive(Debug, Clone, Serialize)]
pub struct StepOps {
    /// The recorded steps' mean wall time, ms.
    pub step_ms: f64,
    /// Per op and argument shapes, longest first.
    pub ops: Vec<OpShare>,
    /// The step's time no op recorded, ms: candle's own ops (the zeroing
    /// and adding of each gradient in `backward` among them), losses,
    /// bookkeeping.
    pub rest_ms: f64,
}

/// One op's part of a step.
#[derive(Debug, Clone, Serialize)]
pub struct OpShare {
    /// The op's name and its arguments' shapes.
    pub op: String,
    pub calls_per_step: f64,
    pub ms_per_step: f64,
}

/// What to measure besides the speeds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Fewer repetitions (a smoke run).
    pub quick: bool,
    /// candle's stock ops instead of ganscope's.
    pub stock: bool,
    /// A step's time op by op ([`StepOps`]).
    pub ops: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "candle+ganscope-ops" or "candle-stock".
    pub backend: String,
    /// Whether CUDA matmuls ran on TF32 tensor cores.
    pub tf32: bool,
    /// Threads used by rayon (our ops) and candle.
    pub threads: usize,
    /// GFLOP/s of a 1024^3 f32 matmul on this machine: the ceiling.
    pub matmul_gflops: f64,
    /// Per architecture.
    pub archs: Vec<ArchResult>,
}

/// The benchmarked architecture: classic DCGAN widths (64 at full
/// resolution), z = 100, BatchNorm, at `res` with `up`.
pub fn arch(res: usize, up: Upsample) -> ModelConfig {
    ModelConfig {
        resolution: res,
        channels: if res == 28 { 1 } else { 3 },
        z_dim: 100,
        g_width: 64,
        d_width: 64,
        upsample: up,
        ..ModelConfig::default()
    }
}

/// Forward FLOPs (multiply-adds x 2) of G and D at batch `n`, as computed:
/// with `folded`, nearest-conv upsampling runs as the transposed
/// convolution it equals ([`crate::ops::upsample`]), 2.25x fewer.
pub fn forward_flops(m: &ModelConfig, n: usize, folded: bool) -> (f64, f64) {
    let levels = m.levels();
    let base = m.base_size();
    let gw = |l: usize| m.g_width << (levels - 1 - l);
    let upsample = match m.upsample {
        Upsample::NearestConv if folded => Upsample::ConvTranspose,
        up => up,
    };
    let mut g = 2.0 * (m.z_dim * gw(0) * base * base) as f64;
    for l in 0..levels {
        let cin = gw(l);
        let cout = if l + 1 == levels { m.channels } else { gw(l + 1) };
        let hi = base << l;
        g += match upsample {
            Upsample::ConvTranspose => 2.0 * (cin * cout * 16 * hi * hi) as f64,
            Upsample::PixelShuffle => 2.0 * (cin * cout * 4 * 9 * hi * hi) as f64,
            Upsample::NearestConv => 2.0 * (cin * cout * 9 * 4 * hi * hi) as f64,
        };
    }
    let mut d = 0.0;
    let mut cin = m.channels;
    for l in 0..levels {
        let cout = m.d_width << l;
        let ho = m.resolution >> (l + 1);
        d += 2.0 * (cin * cout * 16 * ho * ho) as f64;
        cin = cout;
    }
    d += 2.0 * (cin * base * base) as f64;
    (g * n as f64, d * n as f64)
}

/// A training step's FLOPs: D step = G fwd + 2 D fwd + D bwd (2x);
/// G step = G fwd + D fwd + D input-grad bwd + G bwd (2x). In all 4 G + 8 D.
pub fn train_flops(m: &ModelConfig, n: usize, folded: bool) -> f64 {
    let (g, d) = forward_flops(m, n, folded);
    4.0 * g + 8.0 * d
}

/// Times `f` `reps` times after one warm-up call: (median, fastest), in ms.
fn time_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], t[0]))
}

/// GFLOP/s of a 1024^3 f32 matmul through candle (the gemm crate), the
/// fastest of 10: a ceiling is the best the machine does, and on a shared
/// machine the median of 5 had come out at half the one-thread figure on
/// two threads.
pub fn matmul_ceiling(device: &Device) -> Result<f64> {
    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let (_, ms) = time_ms(10, || {
        a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok(2.0 * (n * n * n) as f64 / (ms * 1e-3) / 1e9)
}

/// Random images in [-1, 1] standing in for a dataset: the benchmark
/// measures compute, not data loading.
fn synthetic(m: &ModelConfig, count: usize) -> Arc<Dataset> {
    let len = m.channels * m.resolution * m.resolution;
    let images = (0..count * len).map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0).collect();
    Arc::new(Dataset {
        name: "synthetic".into(),
        images,
        labels: vec![0; count],
        classes: Vec::new(),
        channels: m.channels,
        resolution: m.resolution,
        skipped: Vec::new(),
        skipped_count: 0,
    })
}

/// Benchmarks one architecture.
pub fn run_arch(m: &ModelConfig, device: &Device, opts: Options) -> Result<ArchResult> {
    use rand::SeedableRng;
    let quick = opts.quick;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let g = {
        let mut p = FreshParams::new(&mut rng, device);
        Generator::new(m, &mut p)?;
        let map = p.vars.iter().map(|(n, v, _)| (n.clone(), v.as_tensor().detach())).collect();
        Generator::new(m, &mut LoadedParams::new(map, device))?
    };
    // One batch through G, its sum read back (so a device's work is done).
    let generate = |z: &Tensor| -> Result<()> {
        g.forward(z, None, &mut Pass::eval())?.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    };
    let latents = |n: usize| Tensor::randn(0f32, 1.0, (n, m.z_dim), device);
    let (z1, reps1) = (latents(1)?, if quick { 10 } else { 50 });
    let (g1, _) = time_ms(reps1, || generate(&z1))?;
    let g1_ops = if opts.ops { Some(recorded(reps1, || generate(&z1))?) } else { None };
    let z64 = latents(64)?;
    let (g64, _) = time_ms(if quick { 2 } else { 5 }, || generate(&z64))?;
    // The plain DCGAN step the PyTorch reference runs: no label smoothing or
    // noise, instance noise, replay or EMA.
    let base = TrainConfig { model: m.clone(), ..TrainConfig::default() };
    let cfg = TrainConfig { batch_size: 64, ..Preset::PlainDcgan.apply(&base) };
    let mut t = Trainer::new(cfg, synthetic(m, 256), device)?;
    // As `ganscope train` runs its steps.
    t.keep_pool_awake(true);
    let steps = if quick { 2 } else { 5 };
    let (step_ms, _) = time_ms(steps, || {
        t.step()?;
        Ok(())
    })?;
    let ops = if opts.ops { Some(recorded(steps, || Ok(t.step().map(drop)?))?) } else { None };
    let ips = 64.0 / (step_ms * 1e-3);
    let gflops = train_flops(m, 64, crate::ops::upsample::folds_on(device)) / (step_ms * 1e-3) / 1e9;
    Ok(ArchResult {
        name: format!("dcgan{}-{}", m.resolution, serde_json::to_value(m.upsample)?.as_str().unwrap_or("")),
        resolution: m.resolution,
        upsample: m.upsample,
        g_batch1_ms: g1,
        g_batch64_ms: g64,
        train_images_per_sec: ips,
        train_gflops: gflops,
        train_ceiling_share: 0.0,
        ops,
        g_batch1_ops: g1_ops,
    })
}

/// Runs `steps` steps (training steps or generations) with the ops
/// recording their time.
fn recorded(steps: usize, mut step: impl FnMut() -> Result<()>) -> Result<StepOps> {
    crate::ops::profile::start();
    let since = Instant::now();
    let ran = (0..steps).try_for_each(|_| step());
    let wall = since.elapsed();
    let rows = crate::ops::profile::stop();
    ran?;
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let ops: Vec<OpShare> = rows
        .into_iter()
        .map(|r| OpShare { op: r.op, calls_per_step: r.calls as f64 / steps as f64, ms_per_step: per_step(r.total) })
        .collect();
    let step_ms = per_step(wall);
    let rest_ms = step_ms - ops.iter().map(|o| o.ms_per_step).sum::<f64>();
    Ok(StepOps { step_ms, ops, rest_ms })
}

/// Benchmarks the given resolutions with every upsampling kind.
pub fn run(resolutions: &[usize], device: &Device, opts: Options) -> Result<Report> {
    crate::ops::set_fast(!opts.stock);
    let ceiling = matmul_ceiling(device)?;
    let mut archs = Vec::new();
    for &res in resolutions {
        for up in [Upsample::ConvTranspose, Upsample::PixelShuffle, Upsample::NearestConv] {
            let mut r = run_arch(&arch(res, up), device, opts)?;
            r.train_ceiling_share = r.train_gflops / ceiling;
            eprintln!(
                "{:<26} G b1 {:>7.2} ms  G b64 {:>8.1} ms  train {:>7.1} img/s  {:>6.1} GFLOP/s ({:>4.1}% of matmul)",
                r.name,
                r.g_batch1_ms,
                r.g_batch64_ms,
                r.train_images_per_sec,
                r.train_gflops,
                100.0 * r.train_ceiling_share
            );
            if let Some(ops) = &r.g_batch1_ops {
                print_ops(ops, "a batch-1 generation", "candle's ops (the projection, reshapes), bookkeeping");
            }
            if let Some(ops) = &r.ops {
                print_ops(ops, "a step", "candle's ops (gradient zeroing and sums), losses, bookkeeping");
            }
            archs.push(r);
        }
    }
    crate::ops::set_fast(true);
    Ok(Report {
        backend: if opts.stock { "candle-stock" } else { "candle+ganscope-ops" }.into(),
        tf32: false,
        threads: rayon::current_num_threads(),
        matmul_gflops: ceiling,
        archs,
    })
}

/// [`StepOps`] of each `what` as a table on stderr, rows under 0.5% of it
/// summed into one (`--json` has them all), then what no op recorded.
fn print_ops(s: &StepOps, what: &str, rest: &str) {
    eprintln!("  {what}, {:.3} ms: ms, calls, op", s.step_ms);
    let (big, small): (Vec<_>, Vec<_>) = s.ops.iter().partition(|o| o.ms_per_step >= 0.005 * s.step_ms);
    for o in big {
        eprintln!("  {:>8.3} {:>5.1}  {}", o.ms_per_step, o.calls_per_step, o.op);
    }
    if !small.is_empty() {
        let ms: f64 = small.iter().map(|o| o.ms_per_step).sum();
        eprintln!("  {ms:>8.3}        {} smaller rows", small.len());
    }
    eprintln!("  {:>8.3}        the rest: {rest}", s.rest_ms);
}
