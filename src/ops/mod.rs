//! The layer ops every network calls, and the fast CPU kernels behind them:
//! convolutions with their bias ([`conv`]), a fused training-mode BatchNorm
//! and the activation after it ([`batch_norm`]), both as one op in a
//! training layer ([`conv_bn`]), the per-channel bias
//! gradient and scale-and-shift ([`bias`]), LeakyReLU and tanh
//! ([`activation`]), pixel shuffle ([`shuffle`]), each a candle custom op
//! with its backward, Adam's update in place ([`adam`]) and the gradients'
//! squared norm ([`reduce`]). Every custom op's CPU pass records its time
//! for `bench --ops` ([`profile`]). Nearest
//! upsampling and a 3x3 convolution run as one transposed convolution
//! ([`upsample`]); batches run 3x3 stride-1 and 4x4 stride-2 convolutions
//! by Winograd's F(2x2, 3x3) and F(2x2, 2x2) (`winograd`), whose products
//! by a kernel read as a convolution's run, on AVX-512, over transforms
//! packed once (`packed`); one image of a
//! constant 4x4-pixel layer (a generator's first, in the explorer) runs an
//! AVX-512 kernel over panels of its weights (`narrow`). On CUDA, each
//! convolution is one op of batch-wide patch kernels and cuBLAS GEMMs
//! (`gemm_conv`; as candle ops, [`unfold`], for the gradient penalty) and
//! BatchNorm with its activation two kernels and two per-channel
//! reductions, all in `kernels.cu`. Elsewhere, and for other
//! dtypes, candle's own ops run. A training step or a batch runs on the
//! rayon pool, and one image with the pool's other threads spinning
//! (`pool`).

pub mod activation;
pub mod adam;
pub mod batch_norm;
pub mod bias;
pub mod conv;
pub mod conv_bn;
#[cfg(feature = "cuda")]
mod cuda;
pub mod dense;
#[cfg(feature = "cuda")]
mod gemm_conv;
mod narrow;
mod packed;
mod pool;
pub mod profile;
pub mod reduce;
pub mod shuffle;
mod transpose;
pub mod unfold;
pub mod upsample;
mod winograd;

pub use pool::{on_cpu_pool, on_cpu_pool_awake, on_this_thread};

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub use conv::{conv_transpose2d, conv2d};
pub use winograd::RecentTransforms;

/// Off only to measure candle's stock path against ours (`ganscope bench --stock`).
static FAST: AtomicBool = AtomicBool::new(true);

/// Turns the fast ops (CPU kernels, CUDA GEMM convolutions) on or off for
/// the whole process.
pub fn set_fast(enabled: bool) {
    FAST.store(enabled, Ordering::Relaxed);
}

/// Whether this CPU has AVX-512F, which `narrow`'s and `packed`'s kernels need.
fn avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the fast CPU ops apply: f32 tensors on the CPU.
fn fast(ts: &[&Tensor]) -> bool {
    all_f32_on(ts, |d| d.is_cpu())
}

/// Whether the CUDA formulations apply: f32 tensors on a CUDA device.
fn fast_cuda(ts: &[&Tensor]) -> bool {
    all_f32_on(ts, |d| d.is_cuda())
}

fn all_f32_on(ts: &[&Tensor], device: impl Fn(&candle_core::Device) -> bool) -> bool {
    FAST.load(Ordering::Relaxed) && ts.iter().all(|t| device(t.device()) && t.dtype() == candle_core::DType::F32)
}

/// The value `cell` keeps, made by `make` on the first call (a kernel
/// derived from constant weights). Callers racing may each make it; the
/// first one stored is what all of them get.
fn kept<T: Clone>(cell: &OnceLock<T>, make: impl FnOnce() -> Result<T>) -> Result<T> {
    if let Some(v) = cell.get() {
        return Ok(v.clone());
    }
    let v = make()?;
    Ok(cell.get_or_init(|| v).clone())
}

/// `grad()` when autograd wants a gradient for `arg`, else None.
///
/// Why: candle calls a custom op's backward for every argument, frozen or
/// not, and adds each returned gradient into a zeroed tensor. The frozen
/// D of a G step, for one, would pay a full weight gradient per layer
/// that nobody reads.
fn tracked(arg: &Tensor, grad: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if arg.track_op() { grad().map(Some) } else { Ok(None) }
}

/// The contiguous f32 data of a custom-op argument; `what` names the op in errors.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{what}: the fast CPU ops take f32") };
    Ok(&v[contiguous(l, what)?])
}

/// As [`slice()`], for the destination of an in-place op.
fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{what}: the fast CPU ops take f32") };
    Ok(&mut v[contiguous(l, what)?])
}

/// Where a contiguous argument's values lie in its storage.
fn contiguous(l: &Layout, what: &str) -> Result<Range<usize>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => candle_core::bail!("{what}: the fast CPU ops take contiguous tensors"),
    }
}

/// (N, C, H*W) of `x` (N, C, H, W), checked against a per-channel argument
/// of C values; `what` names the op in errors.
fn planes(lx: &Layout, lc: &Layout, what: &str) -> Result<(usize, usize, usize)> {
    let (n, c, h, w) = lx.shape().dims4()?;
    if lc.shape().dims1()? != c {
        candle_core::bail!("{what}: {c} channels but a per-channel argument of shape {:?}", lc.dims());
    }
    Ok((n, c, h * w))
}

/// Values per chunk of elementwise work on rayon.
const CHUNK: usize = 1 << 15;

/// Chunks of `chunk` values per rayon job: about [`CHUNK`] values, so that
/// a small tensor stays on the calling thread (handing it to the pool and
/// back costs ~50 us) and small chunks are not split one by one.
fn min_chunks(chunk: usize) -> usize {
    (CHUNK / chunk.max(1)).max(1)
}

/// A vector of `len` values made chunk by chunk in parallel: chunk `i`
/// (`chunk` values, fewer at the end) is `values(i, range)`.
///
/// Why not `vec![0.0; len]` and fill it: once the allocator reuses memory,
/// the zeroing is a pass of its own (a third of an elementwise op's time
/// here); rayon's `collect` does not vectorize (3x slower).
fn par_chunked<I>(len: usize, chunk: usize, values: impl Fn(usize, Range<usize>) -> I + Sync) -> Vec<f32>
where
    I: ExactSizeIterator<Item = f32>,
{
    let chunk = chunk.max(1);
    // SAFETY: each chunk's values are as many as its slots (asserted), and
    // each is written.
    unsafe {
        par_written(len, (chunk, min_chunks(chunk)), |i, slots| {
            let start = i * chunk;
            let vals = values(i, start..start + slots.len());
            assert_eq!(vals.len(), slots.len(), "par_chunked: chunk {i} has the wrong length");
            slots.iter_mut().zip(vals).for_each(|(s, v)| {
                s.write(v);
            });
        })
    }
}

/// `slots` set to zero, as the initialized values they then are.
fn zeroed(slots: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    slots.fill(MaybeUninit::new(0.0));
    // SAFETY: every slot was just written; a `MaybeUninit<f32>` has the
    // layout of an `f32`.
    unsafe { &mut *(slots as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A vector of `len` values written chunk by chunk in parallel, at least
/// `min_len` chunks per rayon job: chunk `i` (`chunk` values, fewer at the
/// end) is handed, uninitialized, to `write(i, chunk)`, which sets every
/// value of it (a GEMM that does not accumulate, a transpose that sets).
///
/// Why not `vec![0.0; len]` and fill it: that zeroes on the calling thread
/// while the pool waits (~7% of a two-thread training step's wall time
/// once, `perf`), and even zeroed chunk by chunk on the pool, the zeroing
/// passes were 2.4% of a one-thread 32 px step (`memset` 5.2% → 2.8%
/// without them). Why rayon items of `min_len` chunks, looped over
/// within: as one item per chunk, a 4x4 plane's (16 values) cost ~9 ns,
/// most of it rayon's per-item work (BENCHMARKS.md, 2026-12-03).
///
/// # Safety
///
/// `write(i, chunk)` must initialize every value of `chunk`.
unsafe fn par_written(
    len: usize,
    (chunk, min_len): (usize, usize),
    write: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    let (chunk, min_len) = (chunk.max(1), min_len.max(1));
    out.spare_capacity_mut().par_chunks_mut(chunk * min_len).enumerate().for_each(|(item, slots)| {
        for (q, slots) in slots.chunks_mut(chunk).enumerate() {
            write(item * min_len + q, slots);
        }
    });
    // SAFETY: the chunks cover all `len` slots, each written in full, as
    // the caller promised (a panic unwinds before this line).
    unsafe { out.set_len(len) };
    out
}

/// A linear map between 4-d tensors that knows its adjoint, which is its
/// backward: pixel shuffle and its inverse, the nearest-conv kernel fold.
trait LinearMap: Copy + Send + Sync + 'static {
    fn name(self) -> &'static str;

    fn adjoint(self) -> Self;

    /// The image of `x` (its four dims given), and its shape.
    fn run(self, x: &[f32], dims: (usize, usize, usize, usize)) -> Result<(Vec<f32>, Shape)>;

    /// [`Self::run`] on CUDA, for maps with a kernel there (pixel shuffle;
    /// the kernel fold's callers take other ops on a GPU).
    #[cfg(feature = "cuda")]
    fn run_cuda(
        self,
        _dev: &candle_core::CudaDevice,
        _x: &cuda::CudaView<'_, f32>,
        _dims: (usize, usize, usize, usize),
    ) -> Result<(cuda::CudaSlice<f32>, Shape)> {
        candle_core::bail!("{}: no CUDA kernel", self.name())
    }
}

/// A [`LinearMap`] as a candle op.
struct MapOp<M>(M);

impl<M: LinearMap> CustomOp1 for MapOp<M> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = profile::Timer::start(self.name(), &[l]);
        let (y, shape) = self.0.run(slice(s, l, self.0.name())?, l.shape().dims4()?)?;
        Ok((CpuStorage::F32(y), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let x = cuda::view(s, l, self.0.name())?;
        let (y, shape) = self.0.run_cuda(&s.device, &x, l.shape().dims4()?)?;
        Ok((cuda::storage(y, &s.device), shape))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1(MapOp(self.0.adjoint()))?))
    }
}
