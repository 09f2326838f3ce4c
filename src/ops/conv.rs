//! Convolution and transposed convolution on the CPU as im2col/col2im plus
//! one GEMM per image, written as candle custom ops with their backward.
//!
//! Why not candle's own: on the CPU, candle's `conv_transpose2d` is a direct
//! loop (6-16 GFLOP/s here) and conv2d's input gradient goes through it, so
//! a DCGAN step spends most of its time there. Three primitives cover
//! forward and backward of both ops:
//!
//! - `conv(x, w)`: y[n] = W (O x CKK) * im2col(x[n]) (CKK x HoWo)
//! - `conv_t(x, w)`: y[n] = col2im(W^T (OKK x C) * x[n] (C x HiWi))
//! - `weight_grad(a, b)`: sum_n b[n] (B x HoWo) * im2col(a[n])^T (HoWo x AKK)
//!
//! conv's input gradient is a transposed convolution and vice versa; both
//! weight gradients are `weight_grad` with the roles of the tensors swapped.
//! Images of a batch run in parallel on rayon, each with its own scratch.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry of one convolution (square kernel, equal stride/padding on both axes).
#[derive(Debug, Clone, Copy)]
struct Geom {
    k: usize,
    stride: usize,
    pad: usize,
}

impl Geom {
    /// Output side of a convolution over `size` input pixels.
    fn conv_out(&self, size: usize) -> usize {
        (size + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Copies the patches of `x` (C x H x W) into `cols` (C*K*K x Ho*Wo).
    fn im2col(&self, x: &[f32], c: usize, h: usize, w: usize, cols: &mut [f32]) {
        let (ho, wo) = (self.conv_out(h), self.conv_out(w));
        let k = self.k;
        for ci in 0..c {
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for kh in 0..k {
                for kw in 0..k {
                    let row = &mut cols[((ci * k + kh) * k + kw) * ho * wo..][..ho * wo];
                    for oh in 0..ho {
                        let ih = (oh * self.stride + kh) as isize - self.pad as isize;
                        let out = &mut row[oh * wo..(oh + 1) * wo];
                        if ih < 0 || ih >= h as isize {
                            out.fill(0.0);
                            continue;
                        }
                        let src = &plane[ih as usize * w..(ih as usize + 1) * w];
                        for (ow, o) in out.iter_mut().enumerate() {
                            let iw = (ow * self.stride + kw) as isize - self.pad as isize;
                            *o = if iw >= 0 && iw < w as isize { src[iw as usize] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }

    /// Adds `cols` (C*K*K x Hi*Wi, the patches a conv over `y` would see)
    /// back into `y` (C x H x W): the adjoint of `im2col`.
    fn col2im(&self, cols: &[f32], c: usize, h: usize, w: usize, y: &mut [f32]) {
        let (hi, wi) = (self.conv_out(h), self.conv_out(w));
        let k = self.k;
        y.fill(0.0);
        for ci in 0..c {
            let plane = &mut y[ci * h * w..(ci + 1) * h * w];
            for kh in 0..k {
                for kw in 0..k {
                    let row = &cols[((ci * k + kh) * k + kw) * hi * wi..][..hi * wi];
                    for ih in 0..hi {
                        let oh = (ih * self.stride + kh) as isize - self.pad as isize;
                        if oh < 0 || oh >= h as isize {
                            continue;
                        }
                        let dst = &mut plane[oh as usize * w..(oh as usize + 1) * w];
                        let src = &row[ih * wi..(ih + 1) * wi];
                        for (iw, v) in src.iter().enumerate() {
                            let ow = (iw * self.stride + kw) as isize - self.pad as isize;
                            if ow >= 0 && ow < w as isize {
                                dst[ow as usize] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Row-major `dst (m x n) = [dst +] a (m x k) * b (k x n)`, where `a` and `b`
/// may be transposed views (given by their strides).
#[allow(clippy::too_many_arguments)]
fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, a: &[f32], a_t: bool, b: &[f32], b_t: bool) {
    debug_assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    let (a_cs, a_rs) = if a_t { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if b_t { (k as isize, 1) } else { (1, n as isize) };
    // SAFETY: the slices hold at least m*n, m*k and k*n elements (checked
    // above in debug builds; every caller sizes them from the same dims), and
    // the strides describe row-major or transposed views inside them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The contiguous f32 data of a custom-op argument.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{what}: fast conv ops take f32") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: fast conv ops take contiguous tensors"),
    }
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// `conv(x, w)`: x (N, C, H, W), w (O, C, K, K) -> (N, O, Ho, Wo).
struct Conv(Geom);

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "ganscope-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "conv2d input")?, slice(s2, l2, "conv2d kernel")?);
        let ((n, c, h, wd), (o, c2, k, _)) = (dims4(l1)?, dims4(l2)?);
        if c != c2 || k != self.0.k {
            candle_core::bail!("conv2d: input has {c} channels, kernel {c2}x{k}x{k}");
        }
        let (ho, wo) = (self.0.conv_out(h), self.0.conv_out(wd));
        let ckk = c * k * k;
        let mut y = vec![0f32; n * o * ho * wo];
        y.par_chunks_mut(o * ho * wo).enumerate().for_each_init(
            || vec![0f32; ckk * ho * wo],
            |cols, (i, out)| {
                self.0.im2col(&x[i * c * h * wd..(i + 1) * c * h * wd], c, h, wd, cols);
                matmul(o, ho * wo, ckk, out, false, w, false, cols, false);
            },
        );
        Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2(w, ConvT { g: self.0, out_h: h, out_w: wd })?;
        let dw = x.apply_op2(&dy, WeightGrad(self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `conv_t(x, w)`: x (N, C, Hi, Wi), w (C, O, K, K) -> (N, O, out_h, out_w).
struct ConvT {
    g: Geom,
    out_h: usize,
    out_w: usize,
}

impl CustomOp2 for ConvT {
    fn name(&self) -> &'static str {
        "ganscope-conv-transpose2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "conv_transpose2d input")?, slice(s2, l2, "conv_transpose2d kernel")?);
        let ((n, c, hi, wi), (c2, o, k, _)) = (dims4(l1)?, dims4(l2)?);
        if c != c2 || k != self.g.k {
            candle_core::bail!("conv_transpose2d: input has {c} channels, kernel {c2}x{o}x{k}x{k}");
        }
        let (h, wd) = (self.out_h, self.out_w);
        if self.g.conv_out(h) != hi || self.g.conv_out(wd) != wi {
            candle_core::bail!("conv_transpose2d: output {h}x{wd} does not match input {hi}x{wi}");
        }
        let okk = o * k * k;
        let mut y = vec![0f32; n * o * h * wd];
        y.par_chunks_mut(o * h * wd).enumerate().for_each_init(
            || vec![0f32; okk * hi * wi],
            |cols, (i, out)| {
                matmul(okk, hi * wi, c, cols, false, w, true, &x[i * c * hi * wi..(i + 1) * c * hi * wi], false);
                self.g.col2im(cols, o, h, wd, out);
            },
        );
        Ok((CpuStorage::F32(y), Shape::from((n, o, h, wd))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2(w, Conv(self.g))?;
        let dw = dy.apply_op2(x, WeightGrad(self.g))?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `weight_grad(a, b)`: a (N, A, H, W), b (N, B, Ho, Wo) -> (B, A, K, K).
struct WeightGrad(Geom);

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "ganscope-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(s1, l1, "weight grad input")?, slice(s2, l2, "weight grad output")?);
        let ((n, ca, h, w), (n2, cb, ho, wo)) = (dims4(l1)?, dims4(l2)?);
        let k = self.0.k;
        if n != n2 || self.0.conv_out(h) != ho || self.0.conv_out(w) != wo {
            candle_core::bail!("weight grad: shapes {:?} and {:?} do not match", l1.dims(), l2.dims());
        }
        let akk = ca * k * k;
        let threads = rayon::current_num_threads().max(1);
        let per = n.div_ceil(threads);
        let partials: Vec<Vec<f32>> = (0..n.div_ceil(per))
            .into_par_iter()
            .map(|t| {
                let mut acc = vec![0f32; cb * akk];
                let mut cols = vec![0f32; akk * ho * wo];
                for i in t * per..((t + 1) * per).min(n) {
                    self.0.im2col(&a[i * ca * h * w..(i + 1) * ca * h * w], ca, h, w, &mut cols);
                    matmul(
                        cb,
                        akk,
                        ho * wo,
                        &mut acc,
                        true,
                        &b[i * cb * ho * wo..(i + 1) * cb * ho * wo],
                        false,
                        &cols,
                        true,
                    );
                }
                acc
            })
            .collect();
        let mut dw = vec![0f32; cb * akk];
        for p in partials {
            dw.iter_mut().zip(p).for_each(|(d, v)| *d += v);
        }
        Ok((CpuStorage::F32(dw), Shape::from((cb, ca, k, k))))
    }
}

/// Off only to measure candle's stock path against ours (`ganscope bench --stock`).
static FAST_CPU: AtomicBool = AtomicBool::new(true);

/// Turns the fast CPU path on or off for the whole process.
pub fn set_fast_cpu(enabled: bool) {
    FAST_CPU.store(enabled, Ordering::Relaxed);
}

/// Whether the fast path applies: f32 tensors on the CPU.
fn fast(x: &Tensor, w: &Tensor) -> bool {
    FAST_CPU.load(Ordering::Relaxed)
        && x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && w.dtype() == candle_core::DType::F32
}

/// Convolution without bias: the fast op on the CPU, candle's elsewhere.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if !fast(x, w) {
        return x.conv2d(w, pad, stride, 1, 1);
    }
    let k = w.dim(3)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, Conv(Geom { k, stride, pad }))
}

/// Transposed convolution without bias (output padding 0).
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if !fast(x, w) {
        return x.conv_transpose2d(w, pad, 0, stride, 1);
    }
    let (_, _, hi, wi) = x.dims4()?;
    let k = w.dim(3)?;
    let out = |s: usize| (s - 1) * stride + k - 2 * pad;
    let op = ConvT { g: Geom { k, stride, pad }, out_h: out(hi), out_w: out(wi) };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}
