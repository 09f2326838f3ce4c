//! Launching the kernels of `src/ops/kernels.cu` on candle's CUDA storage.

use std::sync::Arc;

use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchArgs, LaunchConfig,
};
use candle_core::{CudaDevice, CudaStorage, Layout, Result, Storage, Tensor};

/// The kernels, compiled to PTX by build.rs.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));

/// The values of a contiguous f32 argument; `what` names the op in errors.
pub(super) fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    Ok(s.as_cuda_slice::<f32>()?.slice(super::contiguous(l, what)?))
}

/// As [`view`], for the destination of an in-place op.
pub(super) fn view_mut<'a>(s: &'a mut CudaStorage, l: &Layout, what: &str) -> Result<CudaViewMut<'a, f32>> {
    Ok(s.as_cuda_slice_mut::<f32>()?.slice_mut(super::contiguous(l, what)?))
}

/// Runs `f` on the values of `ts`, per-channel vectors an op keeps beside
/// its arguments (contiguous f32 on the op's device).
pub(super) fn with_views<R>(ts: &[&Tensor], f: impl FnOnce(&[CudaView<'_, f32>]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let views = guards
        .iter()
        .map(|(s, l)| match &**s {
            Storage::Cuda(s) => view(s, l, "ganscope cuda op"),
            _ => candle_core::bail!("ganscope cuda op: a per-channel tensor is not on the GPU"),
        })
        .collect::<Result<Vec<_>>>()?;
    f(&views)
}

/// The number of values an op writes, checked against the kernels' 32-bit
/// indices.
pub(super) fn count(n: usize, what: &str) -> Result<u32> {
    match u32::try_from(n) {
        Ok(n) if n < 1 << 31 => Ok(n),
        _ => candle_core::bail!("{what}: {n} values are more than the CUDA kernels index"),
    }
}

/// Threads per block.
const BLOCK: u32 = 256;

/// A kernel of [`PTX`], set up for `n` outputs.
pub(super) struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
    n: u32,
}

impl Kernel {
    /// `name`'s function, loaded once per device, for `n` outputs (from [`count`]).
    pub(super) fn new(dev: &CudaDevice, name: &str, n: u32) -> Result<Self> {
        let func = dev.get_or_load_custom_func(name, "ganscope_kernels", PTX)?.into_cuda_function();
        Ok(Self { func, stream: dev.cuda_stream(), n })
    }

    /// Where the caller pushes the arguments, in the kernel's order.
    pub(super) fn args(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }

    /// Launches `args` with one thread per output; the kernels' grid-stride
    /// loops cover the rest.
    pub(super) fn launch(&self, args: LaunchArgs<'_>) -> Result<()> {
        self.launch_rows(args, 1)
    }

    /// Launches `args` over a grid of `rows` rows (as many as CUDA allows;
    /// the kernel strides over the rest) of one thread per output of a row.
    pub(super) fn launch_rows(&self, mut args: LaunchArgs<'_>, rows: u32) -> Result<()> {
        let per_row = self.n.div_ceil(rows.max(1));
        let cfg = LaunchConfig {
            grid_dim: (per_row.div_ceil(BLOCK).clamp(1, 1 << 16), rows.clamp(1, u16::MAX.into()), 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the caller pushed the kernel's arguments, types and count as declared.
        unsafe { args.launch(cfg) }.w()?;
        Ok(())
    }
}

/// A buffer of `n` values for a kernel to write.
pub(super) fn output(dev: &CudaDevice, n: u32) -> Result<CudaSlice<f32>> {
    // SAFETY: read only after a kernel has written each of its `n` values.
    unsafe { dev.alloc::<f32>(n as usize) }
}

/// A kernel's output as candle storage.
pub(super) fn storage(out: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(out, dev.clone())
}
