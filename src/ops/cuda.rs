//! Launching the kernels of `src/ops/kernels.cu` on candle's CUDA storage.

use std::sync::Arc;

use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::cublas::{result::gemm_ex, sys};
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaStream, DevicePtr, DevicePtrMut, LaunchArgs, LaunchConfig, PushKernelArg,
};
pub(super) use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};

/// The kernels, compiled to PTX by build.rs.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));

// The PTX comes from `kernels.cu` as it is now. Why check: cargo once kept
// an old PTX after `kernels.cu` changed (BENCHMARKS.md, 2026-12-04), and
// the binary launched kernels with arguments they did not take.
const _: () = assert!(
    same_bytes(include_bytes!(concat!(env!("OUT_DIR"), "/kernels.cu")), include_bytes!("kernels.cu")),
    "the PTX is older than src/ops/kernels.cu: delete target/*/release/build/ganscope-*/out and build again"
);

const fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

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

/// Pushes `v`, or a null pointer where there is none (the kernels test for
/// it: an optional bias).
pub(super) fn arg_or_null<'a, 'c: 'a>(args: &mut LaunchArgs<'a>, v: Option<&'a CudaView<'c, f32>>) {
    static NULL: u64 = 0;
    match v {
        Some(v) => args.arg(v),
        None => args.arg(&NULL),
    };
}

/// Threads per block.
const BLOCK: u32 = 256;

/// Threads per block of the per-channel reductions: a channel holds up to
/// N*H*W = 64 * 64 * 64 values here, summed by one block.
const CHANNEL_BLOCK: u32 = 512;

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

    /// Launches `args` with `parts` blocks per channel of `c` (as many as
    /// CUDA allows; the kernel strides over the rest).
    fn launch_per_channel(&self, mut args: LaunchArgs<'_>, c: u32, parts: u32) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (c.clamp(1, u16::MAX.into()), parts.clamp(1, u16::MAX.into()), 1),
            block_dim: (CHANNEL_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as in `launch_rows`.
        unsafe { args.launch(cfg) }.w()?;
        Ok(())
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

/// Per-channel reductions of `x` (N, C, ...) by the kernel `name`, which
/// reads `with` (contiguous f32 on the GPU) beside `x` and writes `rows`
/// values per channel, (rows, C), after taking (N, C, P) and `scalars`
/// (see `kernels.cu`). No gradient flows through it.
pub(super) fn channel_reduce(
    name: &'static str,
    x: &Tensor,
    with: &[&Tensor],
    rows: usize,
    scalars: &[f32],
) -> Result<Tensor> {
    let op = ChannelReduce { name, with: with.iter().map(|&t| t.clone()).collect(), rows, scalars: scalars.to_vec() };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

/// Sums of `x` (N, C, P) per channel into `sums` (C values).
///
/// Why in parts: with a block per channel, an RGB layer's bias gradient
/// (3 channels of 128 x 64 x 64 values) ran on 3 of an H200's 132
/// multiprocessors. A channel of many values is split into up to
/// [`PARTS_PER_GPU`] / C parts of at least [`PART_VALUES`] each, summed
/// by a block each, and the parts' sums are added by a second launch (in a
/// fixed order: the result is the same on every run).
pub(super) fn channel_sums_into(
    dev: &CudaDevice,
    x: &CudaView<'_, f32>,
    (n, c, p): (usize, usize, usize),
    sums: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let parts = PARTS_PER_GPU.div_ceil(c.max(1)).min((n * p).div_ceil(PART_VALUES)).max(1);
    if parts == 1 {
        return launch_reduce(dev, CHANNEL_SUMS, (x, &[]), sums, (n, c, p), &[], 1);
    }
    let mut partial = output(dev, count(c * parts, CHANNEL_SUMS)?)?;
    launch_reduce(dev, CHANNEL_SUMS, (x, &[]), &mut partial.slice_mut(..), (n, c, p), &[], parts as u32)?;
    add_parts(dev, &partial, (c, parts), sums)
}

/// The kernel that sums channels, or parts of them.
const CHANNEL_SUMS: &str = "ganscope_channel_sums_f32";

/// `sums` (C values) = the sums of `partial`'s `parts` partial sums per
/// channel, laid out (C, parts), by one launch.
fn add_parts(
    dev: &CudaDevice,
    partial: &CudaSlice<f32>,
    (c, parts): (usize, usize),
    sums: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    launch_reduce(dev, CHANNEL_SUMS, (&partial.slice(..), &[]), sums, (1, c, parts), &[], 1)
}

/// Σ x² over every value of `ts` (f32 on one CUDA device): each tensor's
/// squares summed in parts (as [`channel_sums_into`]'s) into one buffer,
/// the parts added by one more launch, one copy to the host.
///
/// Why: candle's `sqr()?.sum_all()` per gradient wrote a squared copy of
/// it and summed that in one block: 7.6% of a 64 px training step's GPU
/// time on an H200 (BENCHMARKS.md), for the trainer's gradient norms.
pub(super) fn sum_of_squares(ts: &[&Tensor]) -> Result<f64> {
    const NAME: &str = "ganscope_square_sums_f32";
    let Some(first) = ts.first() else { return Ok(0.0) };
    let candle_core::Device::Cuda(dev) = first.device() else {
        candle_core::bail!("{NAME}: a tensor is not on the GPU")
    };
    let ts = ts.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let parts: Vec<usize> = ts.iter().map(|t| t.elem_count().div_ceil(PART_VALUES).clamp(1, PARTS_PER_GPU)).collect();
    let mut partial = output(dev, count(parts.iter().sum(), NAME)?)?;
    let mut at = 0;
    for (t, &parts) in ts.iter().zip(&parts) {
        let (s, l) = t.storage_and_layout();
        let Storage::Cuda(s) = &*s else { candle_core::bail!("{NAME}: a tensor is not on the GPU") };
        let x = view(s, l, NAME)?;
        let n = count(x.len(), NAME)?;
        let k = Kernel::new(dev, NAME, n)?;
        let mut dst = partial.slice_mut(at..at + parts);
        let mut args = k.args();
        args.arg(&x).arg(&mut dst).arg(&n);
        k.launch_per_channel(args, 1, parts as u32)?;
        at += parts;
    }
    let mut total = output(dev, 1)?;
    add_parts(dev, &partial, (1, at), &mut total.slice_mut(..))?;
    Ok(f64::from(dev.clone_dtoh(&total)?[0]))
}

/// Blocks that keep an H100 or H200 busy in a reduction (two per
/// multiprocessor), and the fewest values worth a block of their own.
const PARTS_PER_GPU: usize = 264;
const PART_VALUES: usize = 8192;

/// Launches the reduction kernel `name` over `x` (N, C, P), reading `with`
/// beside it, into `out`, then taking `scalars`, with `parts` blocks per
/// channel (a kernel that sums in parts).
fn launch_reduce(
    dev: &CudaDevice,
    name: &str,
    (x, with): (&CudaView<'_, f32>, &[CudaView<'_, f32>]),
    out: &mut CudaViewMut<'_, f32>,
    (n, c, p): (usize, usize, usize),
    scalars: &[f32],
    parts: u32,
) -> Result<()> {
    if x.len() != n * c * p {
        candle_core::bail!("{name}: {} values are not {n}x{c}x{p}", x.len());
    }
    count(x.len(), name)?;
    let k = Kernel::new(dev, name, count(out.len(), name)?)?;
    let [n, c, p] = [n, c, p].map(|d| d as u32);
    let mut args = k.args();
    args.arg(x);
    with.iter().for_each(|v| {
        args.arg(v);
    });
    args.arg(out).arg(&n).arg(&c).arg(&p);
    scalars.iter().for_each(|v| {
        args.arg(v);
    });
    k.launch_per_channel(args, c, parts)
}

/// [`channel_reduce`] as a candle op.
struct ChannelReduce {
    name: &'static str,
    with: Vec<Tensor>,
    rows: usize,
    scalars: Vec<f32>,
}

impl CustomOp1 for ChannelReduce {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: CUDA only", self.name)
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dims = l.dims();
        if dims.len() < 2 {
            candle_core::bail!("{}: expected (N, C, ...), got {dims:?}", self.name);
        }
        let (n, c, p) = (dims[0], dims[1], dims[2..].iter().product::<usize>());
        let x = view(s, l, self.name)?;
        let mut sums = output(&s.device, count(self.rows * c, self.name)?)?;
        with_views(&self.with.iter().collect::<Vec<_>>(), |with| {
            launch_reduce(&s.device, self.name, (&x, with), &mut sums.slice_mut(..), (n, c, p), &self.scalars, 1)
        })?;
        Ok((storage(sums, &s.device), Shape::from((self.rows, c))))
    }
}

/// `c = a b` for row-major f32 matrices, `a` m x k (stored k x m when
/// `ta`), `b` k x n (stored n x k when `tb`), `c` m x n, by cuBLAS on
/// candle's stream; on TF32 tensor cores when candle's matmuls are
/// (`--tf32`).
pub(super) fn gemm(
    dev: &CudaDevice,
    (a, ta): (&CudaView<'_, f32>, bool),
    (b, tb): (&CudaView<'_, f32>, bool),
    c: &mut CudaViewMut<'_, f32>,
    (m, n, k): (usize, usize, usize),
) -> Result<()> {
    if a.len() != m * k || b.len() != k * n || c.len() != m * n {
        candle_core::bail!("gemm: {m}x{k} by {k}x{n} into {m}x{n} got {}, {} and {} values", a.len(), b.len(), c.len());
    }
    let int = |v: usize| match i32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => candle_core::bail!("gemm: a size of {v} is more than cuBLAS indexes"),
    };
    let op = |t: bool| if t { sys::cublasOperation_t::CUBLAS_OP_T } else { sys::cublasOperation_t::CUBLAS_OP_N };
    let compute = if candle_core::cuda_backend::gemm_reduced_precision_f32() {
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
    } else {
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
    };
    let f32s = sys::cudaDataType_t::CUDA_R_32F;
    let (alpha, beta) = (1f32, 0f32);
    let (blas, stream) = (dev.cublas_handle(), dev.cuda_stream());
    let (pa, _a) = a.device_ptr(&stream);
    let (pb, _b) = b.device_ptr(&stream);
    let (pc, _c) = c.device_ptr_mut(&stream);
    // Row-major c = a b is column-major c' = b' a': cuBLAS takes b first.
    // SAFETY: the pointers are live views of the sizes checked above, on the
    // stream the handle runs on; alpha and beta are host scalars.
    unsafe {
        gemm_ex(
            *blas.handle(),
            op(tb),
            op(ta),
            int(n)?,
            int(m)?,
            int(k)?,
            (&alpha as *const f32).cast(),
            pb as *const _,
            f32s,
            int(if tb { k } else { n })?,
            pa as *const _,
            f32s,
            int(if ta { m } else { k })?,
            (&beta as *const f32).cast(),
            pc as *mut _,
            f32s,
            int(n)?,
            compute,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
        )
    }
    .w()
}
