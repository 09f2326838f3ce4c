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

/// Runs candle's elementwise CPU ops on the calling thread, unless the
/// user set `CANDLE_NUM_THREADS`; the app calls it, headless commands don't.
///
/// Why: candle parallelizes elementwise ops on a barrier pool whose
/// threads spin for ~25k pause instructions (about a millisecond) after
/// every op, and whose caller spin-waits for them. These ops are memory
/// bound and small next to our convolutions (which use rayon): headless,
/// 100 digits steps take about the same wall time either way but 13.7 s of
/// CPU instead of 17.0 s. In the app the spinning threads fight the
/// renderer for the cores and training lost 27-34% instead of 9-11%
/// (BENCHMARKS.md, "The training panel").
///
/// # Safety
/// Sets an environment variable: call it before any other thread exists
/// (first thing in `main`).
pub unsafe fn serial_candle_elementwise() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees no other thread reads the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
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
}
