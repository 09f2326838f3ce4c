//! The convolution entry points every network layer calls, and the fast CPU
//! kernels behind them (see [`conv`]), plus a fused training-mode BatchNorm
//! ([`batch_norm`]). On other devices candle's own ops run.

pub mod batch_norm;
pub mod conv;

use candle_core::{Result, Tensor};

/// 2D convolution of `x` (N, C, H, W) with `w` (O, C, K, K) plus bias `b` (O).
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    conv::conv2d(x, w, stride, pad)?.broadcast_add(&b.reshape((1, (), 1, 1))?)
}

/// Transposed 2D convolution of `x` (N, C, H, W) with `w` (C, O, K, K) plus bias `b` (O).
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    conv::conv_transpose2d(x, w, stride, pad)?.broadcast_add(&b.reshape((1, (), 1, 1))?)
}
