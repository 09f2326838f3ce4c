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

use candle_core::{DType, Device, Result, Tensor};

use super::activation::Act;
use super::{FAST, conv, kept};

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
/// `A W Aᵀ` for each (o, c), as two GEMMs so autograd carries `w`'s gradient.
pub fn fold_kernel(w: &Tensor) -> Result<Tensor> {
    let (o, c, kh, kw) = w.dims4()?;
    if (kh, kw) != (3, 3) {
        candle_core::bail!("upsampling convolution: a {kh}x{kw} kernel, want 3x3");
    }
    let at = Tensor::new(&FOLD, w.device())?.to_dtype(w.dtype())?.t()?;
    // (o, c, row, col) -> (o, c, row, col'), then with rows last -> (o, c, col', row').
    let cols = w.reshape((o * c * 3, 3))?.matmul(&at)?;
    let rows_last = cols.reshape((o, c, 3, 4))?.transpose(2, 3)?.contiguous()?;
    let folded = rows_last.reshape((o * c * 4, 3))?.matmul(&at)?;
    folded.reshape((o, c, 4, 4))?.permute((1, 0, 3, 2))?.contiguous()
}
