//! Choosing where tensors live: `--device auto|cpu|cuda|metal`.

use std::sync::OnceLock;

use candle_core::Device;
use serde::{Deserialize, Serialize};

/// The user's device choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// A GPU when this build has one and it works, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first NVIDIA GPU (needs a `--features cuda` build).
    Cuda,
    /// The Apple GPU (needs a `--features metal` build).
    Metal,
}

/// A device and a line saying which one and why.
pub struct Chosen {
    /// The device.
    pub device: Device,
    /// E.g. "cpu (this build has no GPU support)".
    pub description: String,
}

/// Opens the chosen device. An explicit GPU that cannot be opened is an
/// error; `auto` falls back to the CPU and says why.
pub fn select(choice: DeviceChoice) -> anyhow::Result<Chosen> {
    match choice {
        DeviceChoice::Cpu => Ok(Chosen { device: Device::Cpu, description: "cpu".into() }),
        DeviceChoice::Cuda => cuda().map(|device| Chosen { device, description: "cuda:0".into() }),
        DeviceChoice::Metal => metal().map(|device| Chosen { device, description: "metal:0".into() }),
        DeviceChoice::Auto => {
            let gpu = if cfg!(feature = "cuda") {
                cuda().map(|d| (d, "cuda:0"))
            } else if cfg!(feature = "metal") {
                metal().map(|d| (d, "metal:0"))
            } else {
                Err(anyhow::anyhow!("this build has no GPU support"))
            };
            Ok(match gpu {
                Ok((device, name)) => Chosen { device, description: format!("{name} (auto)") },
                Err(e) => Chosen { device: Device::Cpu, description: format!("cpu (auto: {e:#})") },
            })
        }
    }
}

/// The app's device (`ganscope explore --device`), set once at start-up.
static APP_DEVICE: OnceLock<DeviceChoice> = OnceLock::new();

/// Sets the device the app's threads (generator, trainer, export) open;
/// a second call changes nothing.
pub fn set_app_device(choice: DeviceChoice) {
    let _ = APP_DEVICE.set(choice);
}

/// Opens the app's device ([`set_app_device`], else `auto`), or the CPU
/// with the reason when that fails: the app keeps working and its status
/// bar says why it runs on the CPU.
pub fn select_for_app() -> Chosen {
    select_or_cpu(APP_DEVICE.get().copied().unwrap_or_default())
}

fn select_or_cpu(choice: DeviceChoice) -> Chosen {
    select(choice).unwrap_or_else(|e| Chosen { device: Device::Cpu, description: format!("cpu ({e:#})") })
}

/// cudarc panics instead of returning an error when libcuda is missing, so
/// the call is fenced with `catch_unwind`.
fn cuda() -> anyhow::Result<Device> {
    if !cfg!(feature = "cuda") {
        anyhow::bail!("this build has no CUDA support: rebuild with `--features cuda`");
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| Device::new_cuda(0));
    std::panic::set_hook(hook);
    match r {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot open CUDA device 0: {e}")),
        Err(_) => Err(anyhow::anyhow!("cannot open CUDA device 0: the CUDA driver library could not be loaded")),
    }
}

/// Lets cuBLAS run f32 matmuls on TF32 tensor cores: inputs rounded to a
/// 10-bit mantissa, sums in f32, several times the f32 rate on an H100.
/// Process-wide, like PyTorch's `allow_tf32`; only CUDA builds have it.
pub fn set_tf32(on: bool) -> anyhow::Result<()> {
    #[cfg(feature = "cuda")]
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(on);
    #[cfg(not(feature = "cuda"))]
    if on {
        anyhow::bail!("--tf32 needs a CUDA build (`--features cuda`)");
    }
    Ok(())
}

fn metal() -> anyhow::Result<Device> {
    if !cfg!(feature = "metal") {
        anyhow::bail!("this build has no Metal support: rebuild with `--features metal`");
    }
    Device::new_metal(0).map_err(|e| anyhow::anyhow!("cannot open Metal device 0: {e}"))
}

/// Pause instructions candle's pool threads spin after an op before they
/// park, unless the user sets `CANDLE_BARRIER_POOL_SPIN_LIMIT` (candle's
/// default is 25,000).
const CANDLE_POOL_SPIN: &str = "500";

/// Sets candle's CPU pool up for ganscope, leaving alone whatever the user
/// set: candle's elementwise ops run on the calling thread, and a pool the
/// user asks for parks its threads soon after an op.
///
/// Why: candle parallelizes elementwise ops (the gradient sums of
/// `backward`, mostly) on a barrier pool of its own, whose threads spin
/// for ~25k pause instructions (up to a millisecond) after every op. Our
/// convolutions run on rayon, so that spin takes a core from a rayon
/// worker right when the next convolution wants both: two-thread 32 px
/// transposed-conv steps on a 2-core EPYC took 14-20% less time with a
/// 500-pause spin than with candle's default (BENCHMARKS.md). In the app
/// the pool's threads also fight the renderer: training lost 27-34% with
/// the pool, 9-11% without ("The training panel"). Headless training
/// keeps rayon's other workers spinning between ops instead
/// ([`crate::train::Trainer::keep_pool_awake`]), which pays only with
/// candle's ops on the step's thread (on a 2-core Xeon, two-thread 32 px
/// transposed-conv steps ran 3-5% slower spinning with candle's pool,
/// 3-7% faster spinning without it).
///
/// # Safety
/// Sets environment variables: call it before any other thread exists
/// (first thing in `main`).
pub unsafe fn tune_candle_pool() {
    for (key, value) in candle_pool_defaults(|key| std::env::var_os(key).is_some()) {
        // SAFETY: the caller guarantees no other thread reads the environment.
        unsafe { std::env::set_var(key, value) };
    }
}

/// The candle pool settings [`tune_candle_pool`] makes, minus those the
/// user `has_set`.
fn candle_pool_defaults(has_set: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    let mut defaults = vec![("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_POOL_SPIN), ("CANDLE_NUM_THREADS", "1")];
    defaults.retain(|(key, _)| !has_set(key));
    defaults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_that_cannot_open_falls_back_to_the_cpu_with_the_reason() {
        for choice in [DeviceChoice::Cuda, DeviceChoice::Metal] {
            // Only where this build cannot open that GPU (every CI machine).
            let Err(reason) = select(choice) else { continue };
            let chosen = select_or_cpu(choice);
            assert!(chosen.device.is_cpu());
            assert_eq!(chosen.description, format!("cpu ({reason:#})"));
        }
        assert_eq!(select_or_cpu(DeviceChoice::Cpu).description, "cpu");
    }

    #[test]
    fn candle_pool_defaults_leave_the_users_settings_alone() {
        let spin = ("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_POOL_SPIN);
        let serial = ("CANDLE_NUM_THREADS", "1");
        assert_eq!(candle_pool_defaults(|_| false), [spin, serial]);
        assert_eq!(candle_pool_defaults(|k| k == "CANDLE_NUM_THREADS"), [spin]);
        assert_eq!(candle_pool_defaults(|k| k == spin.0), [serial]);
        assert!(candle_pool_defaults(|_| true).is_empty());
    }
}
