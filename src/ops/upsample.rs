//! Nearest 2x upsampling followed by a 3x3 convolution with padding 1 (the
//! "resize-convolution" of Odena et al. 2016), computed as the 4x4 stride-2
//! transposed convolution it equals.
//!
//! Why: each output pixel of the upsampled image sees at most two distinct
//! input rows and two input columns through the 3x3 kernel. Output row 2i
//! takes input row i-1 through kernel row 0 and row i through rows 1 and 2;
//! row 2i+1 takes row i through rows 0 and 1 and row i+1 through row 2. A
//! transposed convolution (stride 2, padding 1) has exactly these taps, so
//! its 4x4 kernel is the 3x3 one with rows and columns summed that way:
//! `K = A W Aᵀ` with `A` = `FOLD`. That is 16 multiply-adds per input
//! pixel and output channel instead of 36 (9 at each of 4 output pixels),
//! 2.25x fewer, with no upsampled tensor in memory; the borders agree
//! because the zero padding of the upsampled image is the transposed
//! convolution's missing input rows. The result differs from the literal
//! formulation only in the order of the f32 sums.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use candle_core::{DType, Device, Result, Shape, Tensor};
use rayon::prelude::*;

use super::activation::Act;
use super::{FAST, LinearMap, MapOp, conv, fast, kept};

/// Row `t` of the transposed kernel sums these rows of the 3x3 one.
const FOLD: [[f32; 3]; 4] = [[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]];

/// `x` (N, C, H, W) upsampled to 2H x 2W by repetition, then convolved with
/// `w` (O, C, 3, 3) at padding 1, plus bias `b` (O), then `act`.
///
/// `frozen`, given only for weights that never change (see
/// [`crate::gan::params::Params::constant`]), keeps their transposed kernel
/// and the forms of it that [`conv::KeptKernel`] keeps: folding the largest
/// 64 px layer's weights costs about as much as that layer's convolution
/// of one image, the explorer's case. Other weights are folded on every
/// call, which a batch amortizes.
pub fn upsample_conv3x3(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    frozen: Option<&(OnceLock<Tensor>, conv::KeptKernel)>,
    act: Act,
) -> Result<Tensor> {
    if !folds_on(x.device()) || [x, w, b].iter().any(|t| t.dtype() != DType::F32) {
        let (_, _, h, wd) = x.dims4()?;
        return conv::conv2d(&x.upsample_nearest2d(2 * h, 2 * wd)?, w, b, 1, 1, act, None);
    }
    let Some((folded, forms)) = frozen else {
        return conv::conv_transpose2d(x, &fold_kernel(w)?, b, 2, 1, act, None);
    };
    let kernel = kept(folded, || fold_kernel(w))?;
    conv::conv_transpose2d(x, &kernel, b, 2, 1, act, Some(forms))
}

/// Whether f32 upsampling convolutions on `device` run folded: where the
/// fast ops run (the CPU, CUDA) and they are on (`ops::set_fast`).
pub fn folds_on(device: &Device) -> bool {
    FAST.load(Ordering::Relaxed) && (device.is_cpu() || device.is_cuda())
}

/// The transposed convolution's kernel (C, O, 4, 4) for `w` (O, C, 3, 3):
/// `A W Aᵀ` for each (o, c). On the CPU one op (`Fold`); elsewhere two
/// GEMMs, so that autograd carries `w`'s gradient.
pub fn fold_kernel(w: &Tensor) -> Result<Tensor> {
    let (o, c, kh, kw) = w.dims4()?;
    if (kh, kw) != (3, 3) {
        candle_core::bail!("upsampling convolution: a {kh}x{kw} kernel, want 3x3");
    }
    if fast(&[w]) {
        return w.contiguous()?.apply_op1(MapOp(Fold::Kernel));
    }
    let at = Tensor::new(&FOLD, w.device())?.to_dtype(w.dtype())?.t()?;
    // (o, c, row, col) -> (o, c, row, col'), then with rows last -> (o, c, col', row').
    let cols = w.reshape((o * c * 3, 3))?.matmul(&at)?;
    let rows_last = cols.reshape((o, c, 3, 4))?.transpose(2, 3)?.contiguous()?;
    let folded = rows_last.reshape((o * c * 4, 3))?.matmul(&at)?;
    folded.reshape((o, c, 4, 4))?.permute((1, 0, 3, 2))?.contiguous()
}

/// [`fold_kernel`] on the CPU, and its adjoint, which is its backward.
///
/// Why not the GEMMs: their inner dimension is 3, candle's matmul
/// backward runs two more such GEMMs and the transposes between them copy
/// the kernel each time; a nearest-conv training step spent ~30 ms of
/// ~230 there on two threads (`bench --ops`, BENCHMARKS.md, 2026-12-03).
#[derive(Debug, Clone, Copy)]
enum Fold {
    /// (O, C, 3, 3) -> (C, O, 4, 4): `K[c, o] = A W[o, c] Aᵀ`.
    Kernel,
    /// (C, O, 4, 4) -> (O, C, 3, 3): `dW[o, c] = Aᵀ dK[c, o] A`.
    Adjoint,
}

impl LinearMap for Fold {
    fn name(self) -> &'static str {
        match self {
            Fold::Kernel => "ganscope-fold-kernel",
            Fold::Adjoint => "ganscope-fold-kernel-adjoint",
        }
    }

    fn adjoint(self) -> Self {
        match self {
            Fold::Kernel => Fold::Adjoint,
            Fold::Adjoint => Fold::Kernel,
        }
    }

    fn run(self, x: &[f32], (a, b, h, w): (usize, usize, usize, usize)) -> Result<(Vec<f32>, Shape)> {
        let (side, out_side) = match self {
            Fold::Kernel => (3, 4),
            Fold::Adjoint => (4, 3),
        };
        if (h, w) != (side, side) {
            candle_core::bail!("{}: {h}x{w} kernels, want {side}x{side}", self.name());
        }
        // Input kernel (i, j) of `a` x `b` goes to output kernel (j, i) of `b` x `a`.
        let (len, out_len) = (side * side, out_side * out_side);
        let mut y = vec![0f32; a * b * out_len];
        y.par_chunks_mut(a * out_len).enumerate().for_each(|(j, row)| {
            for (i, dst) in row.chunks_exact_mut(out_len).enumerate() {
                let src = &x[(i * b + j) * len..][..len];
                match self {
                    // A's rows as sums of a kernel row's taps (see FOLD) ...
                    Fold::Kernel => rows_then_columns(src, dst, |[p, q, r]: [f32; 3]| [r, q + r, p + q, p]),
                    // ... and Aᵀ's.
                    Fold::Adjoint => rows_then_columns(src, dst, |[p, q, r, t]: [f32; 4]| [r + t, q + r, p + q]),
                }
            }
        });
        Ok((y, Shape::from((b, a, out_side, out_side))))
    }
}

/// `M X Mᵀ` for the S x S matrix `x` (row-major) into the T x T `dst`,
/// where `m` maps a vector by M.
fn rows_then_columns<const S: usize, const T: usize>(x: &[f32], dst: &mut [f32], m: impl Fn([f32; S]) -> [f32; T]) {
    // X Mᵀ: each row mapped.
    let rows: [[f32; T]; S] = std::array::from_fn(|r| m(std::array::from_fn(|c| x[r * S + c])));
    // M (X Mᵀ): each column of that mapped.
    for c in 0..T {
        for (r, v) in m(std::array::from_fn(|k| rows[k][c])).into_iter().enumerate() {
            dst[r * T + c] = v;
        }
    }
}
