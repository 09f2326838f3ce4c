//! A convolution whose kernel covers its whole input (stride 1, no
//! padding, one output pixel): a discriminator's linear head over its last
//! features, written as the convolution it equals so that it runs as one
//! op with the BatchNorm layer before it ([`super::conv_bn`]).
//!
//! Why not [`super::conv::Conv`]: that path copies patches for a kernel
//! that slides, here K values per image in one place, and took 2.4 ms for
//! a 64 x 4096 head, against one GEMM of N x O x K here.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::conv::{Arg, Convolution, Operand, matmul};
use super::{slice, tracked};

/// `y (N, O, 1, 1) = x (N, K) * w (O, K)^T`, x and w read flat.
pub(super) struct Dense;

impl Dense {
    /// Whether a kernel (O, C, KH, KW) at stride 1 without padding covers
    /// an input of `dims` (N, C, H, W): then the convolution is [`Dense`].
    pub(super) fn covers((_, c, h, w): (usize, usize, usize, usize), kernel: &[usize], geom: (usize, usize)) -> bool {
        kernel[1..] == [c, h, w] && geom == (1, 0)
    }
}

impl Convolution for Dense {
    const BIASED: &'static str = "ganscope-dense-bias";
    const NORMED: &'static str = "ganscope-dense-batch-norm";

    fn forward(&self, (s1, l1): Arg, (s2, l2): Arg, bias: Option<Arg>) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "dense input")?, slice(s2, l2, "dense kernel")?);
        let ((n, c, h, wd), (o, ck, kh, kw)) = (l1.shape().dims4()?, l2.shape().dims4()?);
        if (ck, kh, kw) != (c, h, wd) {
            candle_core::bail!("dense: kernel {:?} does not cover input {:?}", l2.dims(), l1.dims());
        }
        let k = c * h * wd;
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
        Ok((CpuStorage::F32(y), Shape::from((n, o, 1, 1))))
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
