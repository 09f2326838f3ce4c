//! A fully connected layer as a convolution op: a generator's projection
//! of z to its first feature map, which runs as one op with the BatchNorm
//! after it ([`super::conv_bn`]), and a discriminator's head, a
//! convolution whose kernel covers its whole input (stride 1, no padding,
//! one output pixel), which runs as one op with the BatchNorm layer
//! before it.
//!
//! Why not the convolution op (`conv::Conv`) for the head: that path
//! copies patches for a kernel that slides, here K values per image in
//! one place, and took 2.4 ms for a 64 x 4096 head, against one GEMM of
//! N x O x K here.
//! Why not candle's matmul for the projection: its output, bias sum and
//! reshape are then three nodes of candle's graph, whose backward zeroes
//! and adds a gradient of the feature map's size for each, and sums the
//! bias gradient over the batch with its generic strided reduction.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::batch_norm::BatchNormTrain;
use super::conv::{Arg, Convolution, Operand, matmul};
use super::{conv_bn, slice, tracked};

/// `y = x (N, K) * w (O, K)^T`, x and w read flat, y shaped (N, C, H, W)
/// with C H W = O.
pub(super) struct Dense {
    /// (C, H, W) of each output.
    pub(super) out: (usize, usize, usize),
}

impl Dense {
    /// Whether a kernel (O, C, KH, KW) at stride 1 without padding covers
    /// an input of `dims` (N, C, H, W): then the convolution is a [`Dense`]
    /// with outputs (O, 1, 1).
    pub(super) fn covers((_, c, h, w): (usize, usize, usize, usize), kernel: &[usize], geom: (usize, usize)) -> bool {
        kernel.get(1..) == Some(&[c, h, w][..]) && geom == (1, 0)
    }
}

/// `x` (N, din) by the weight `w` (dout, din) plus `b` (dout), shaped (N,
/// C, H, W) with `out` = (C, H, W), into the training-mode BatchNorm `bn`
/// and its LeakyReLU as one op: the fast CPU path only, None elsewhere.
pub fn linear_batch_norm(
    x: &Tensor,
    (w, b): (&Tensor, &Tensor),
    out: (usize, usize, usize),
    bn: &conv_bn::NormArgs,
) -> Result<Option<BatchNormTrain>> {
    if !conv_bn::applies(&[x, w, b, bn.gamma, bn.beta]) {
        return Ok(None);
    }
    conv_bn::apply(Dense { out }, x, (w, b), bn)
}

impl Convolution for Dense {
    const BIASED: &'static str = "ganscope-dense-bias";
    const NORMED: &'static str = "ganscope-dense-batch-norm";

    fn forward(&self, (s1, l1): Arg, (s2, l2): Arg, bias: Option<Arg>) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "dense input")?, slice(s2, l2, "dense kernel")?);
        let (n, o) = (l1.dims().first().copied().unwrap_or(0), l2.dims().first().copied().unwrap_or(0));
        let (c, h, wd) = self.out;
        let k = x.len() / n.max(1);
        if n == 0 || o == 0 || n * k != x.len() || o * k != w.len() || c * h * wd != o {
            candle_core::bail!("dense: kernel {:?} does not fit input {:?} into {:?}", l2.dims(), l1.dims(), self.out);
        }
        let mut y = vec![0f32; n * o];
        let add = match bias {
            Some((s3, l3)) => {
                let b = slice(s3, l3, "dense bias")?;
                if b.len() != o {
                    candle_core::bail!("dense: {o} outputs but {} biases", b.len());
                }
                y.chunks_exact_mut(o).for_each(|row| row.copy_from_slice(b));
                true
            }
            None => false,
        };
        matmul(n, o, k, &mut y, add, Operand::plain(x, k), Operand::transposed(w, k));
        Ok((CpuStorage::F32(y), Shape::from((n, c, h, wd))))
    }

    /// `dy` summed over the batch, one value per output (not per channel).
    fn bias_grad(&self, dy: &Tensor) -> Result<Tensor> {
        let ((_, o), dy_device) = (dy.flatten_from(1)?.dims2()?, dy.device());
        let dy: Vec<f32> = dy.flatten_all()?.to_vec1()?;
        let mut sums = vec![0f64; o];
        for row in dy.chunks_exact(o) {
            sums.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v));
        }
        Tensor::from_vec(sums.into_iter().map(|s| s as f32).collect(), o, dy_device)
    }
}

impl CustomOp2 for Dense {
    fn name(&self) -> &'static str {
        "ganscope-dense"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2]);
        self.forward((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.flatten_from(1)?;
        let dx = tracked(x, || dy.matmul(&w.flatten_from(1)?)?.reshape(x.shape()))?;
        let dw = tracked(w, || dy.t()?.matmul(&x.flatten_from(1)?)?.reshape(w.shape()))?;
        Ok((dx, dw))
    }
}
