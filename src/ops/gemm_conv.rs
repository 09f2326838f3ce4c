//! Convolutions and transposed convolutions on CUDA as one candle op each:
//! a patch or layout kernel, one cuBLAS GEMM over the whole batch, and the
//! kernel that lays the product out as images (with the bias), forward; the
//! same pieces for the three gradients, backward.
//!
//! Why: as candle ops ([`super::unfold`]'s formulation) a layer was five
//! graph nodes (patches, kernel reshape, matmul, swap, reshape), and
//! candle's backward zeroes a gradient for each and adds into it, the
//! patch matrix's K*K times the size of the input: such adds were 19% of a
//! 64 px training step's GPU time on an H200 (BENCHMARKS.md). Here a layer
//! is one node. Its backward recomputes the patch matrix (or the swapped
//! input) rather than keeping it, and writes the gradients into one buffer.
//!
//! The backward is not differentiable again: inside
//! [`super::conv_bn::twice_differentiable`] (the gradient penalty) layers
//! take the formulation of candle ops.

use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv::Geom;
use super::cuda::{CudaSlice, CudaView, channel_sums_into, count, gemm, output, storage, view};
use super::tracked;
use super::unfold::{Patches, Swap};

/// A convolution of `x` (N, C, H, W) with `w` (O, C, K, K), or a transposed
/// one with `w` (C, O, K, K) (output padding 0), plus bias `b` (O), with
/// `(stride, pad)`.
pub(super) fn layer(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    (stride, pad): (usize, usize),
    transposed: bool,
) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (w0, w1, k, k1) = w.dims4()?;
    let (wc, o) = if transposed { (w0, w1) } else { (w1, w0) };
    if wc != c || k != k1 || b.dims1()? != o {
        candle_core::bail!("gemm conv: input {:?}, kernel {:?} and bias {:?} do not fit", x.dims(), w.dims(), b.dims());
    }
    let op = GemmConv { x: (n, c, h, wd), o, g: Geom { k, stride, pad }, transposed };
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, op)
}

/// A layer as one op: its input (N, C, H, W), O output channels, the
/// geometry, and whether it is a transposed convolution.
#[derive(Debug, Clone, Copy)]
struct GemmConv {
    x: (usize, usize, usize, usize),
    o: usize,
    g: Geom,
    transposed: bool,
}

impl GemmConv {
    /// Output (N, O, Ho, Wo).
    fn y(&self) -> (usize, usize, usize, usize) {
        let (n, _, h, w) = self.x;
        let out = |v| if self.transposed { self.g.conv_t_out(v) } else { self.g.conv_out(v) };
        (n, self.o, out(h), out(w))
    }

    /// The patch op between images and the patch matrix: over the input of
    /// a convolution, over the output of a transposed one.
    fn patches(&self, fold: bool) -> Patches {
        let (n, c, h, w) = self.x;
        let (_, o, ho, wo) = self.y();
        Patches { g: self.g, image: if self.transposed { (n, o, ho, wo) } else { (n, c, h, w) }, fold }
    }

    /// The patch matrix's rows (C or O, times K*K) and columns (N times the
    /// pixels of a convolution's output or of a transposed one's input).
    fn patch_dims(&self) -> (usize, usize) {
        let (n, c, h, w) = self.x;
        let (_, o, ho, wo) = self.y();
        let kk = self.g.k * self.g.k;
        if self.transposed { (o * kk, n * h * w) } else { (c * kk, n * ho * wo) }
    }

    /// Values of (x, kernel, output).
    fn sizes(&self) -> (usize, usize, usize) {
        let (n, c, h, w) = self.x;
        let (_, o, ho, wo) = self.y();
        (n * c * h * w, c * o * self.g.k * self.g.k, n * o * ho * wo)
    }

    /// The three arguments' values, checked against the layer's sizes
    /// (the third: a bias for the forward op, the output's gradient for
    /// the backward one).
    fn views<'a>(
        &self,
        what: &str,
        [(s1, l1), (s2, l2), (s3, l3)]: [(&'a CudaStorage, &Layout); 3],
        third: usize,
    ) -> Result<[CudaView<'a, f32>; 3]> {
        let (nx, nw, _) = self.sizes();
        let v = [view(s1, l1, what)?, view(s2, l2, what)?, view(s3, l3, what)?];
        if v[0].len() != nx || v[1].len() != nw || v[2].len() != third {
            candle_core::bail!("{what}: arguments of {:?}, {:?}, {:?} for {self:?}", l1.dims(), l2.dims(), l3.dims());
        }
        Ok(v)
    }
}

impl CustomOp3 for GemmConv {
    fn name(&self) -> &'static str {
        "ganscope-gemm-conv"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: CUDA only", self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let [x, w, b] = self.views(self.name(), [(s1, l1), (s2, l2), (s3, l3)], self.o)?;
        let dev = &s1.device;
        let (n, c, h, wd) = self.x;
        let (_, o, ho, wo) = self.y();
        let ((rows, cols), (nx, _, ny)) = (self.patch_dims(), self.sizes());
        let mut patches = output(dev, count(rows * cols, self.name())?)?;
        let mut y = output(dev, count(ny, self.name())?)?;
        if self.transposed {
            // patches (OKK, N Hi Wi) = w' (OKK, C) x (C, N Hi Wi), folded.
            let mut xs = output(dev, count(nx, self.name())?)?;
            Swap { dims: (n, c, h * wd) }.launch(dev, &x, None, &mut xs.slice_mut(..))?;
            gemm(dev, (&w, true), (&xs.slice(..), false), &mut patches.slice_mut(..), (rows, cols, c))?;
            self.patches(true).launch(dev, &patches.slice(..), Some(&b), &mut y.slice_mut(..))?;
        } else {
            // (O, N Ho Wo) = w (O, CKK) x patches (CKK, N Ho Wo), as images.
            self.patches(false).launch(dev, &x, None, &mut patches.slice_mut(..))?;
            let mut product = output(dev, count(o * cols, self.name())?)?;
            gemm(dev, (&w, false), (&patches.slice(..), false), &mut product.slice_mut(..), (o, cols, rows))?;
            Swap { dims: (o, n, ho * wo) }.launch(dev, &product.slice(..), Some(&b), &mut y.slice_mut(..))?;
        }
        Ok((storage(y, dev), Shape::from(self.y())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (nx, nw, _) = self.sizes();
        let op = GemmConvGrad { conv: *self, input: x.track_op() };
        // [dw | db | dx], dx only where the input takes a gradient.
        let grads = x.apply_op3_no_bwd(w, &dy.contiguous()?, &op)?;
        let dw = tracked(w, || grads.narrow(0, 0, nw)?.reshape(w.shape()))?;
        let db = tracked(b, || grads.narrow(0, nw, self.o))?;
        let dx = tracked(x, || grads.narrow(0, nw + self.o, nx)?.reshape(x.shape()))?;
        Ok((dx, dw, db))
    }
}

/// The gradients of a [`GemmConv`] from (x, kernel, dy), as one buffer
/// [dw | db | dx]; dx only when `input`.
struct GemmConvGrad {
    conv: GemmConv,
    input: bool,
}

impl GemmConvGrad {
    /// A convolution's: dw = dy (O, N Ho Wo) x patches', dx = fold(w' x dy).
    fn conv(&self, dev: &CudaDevice, [x, w, dy]: &[CudaView<'_, f32>; 3], out: &mut CudaSlice<f32>) -> Result<()> {
        let (l, what) = (&self.conv, "ganscope-gemm-conv-grad");
        let (n, o, ho, wo) = l.y();
        let (rows, cols) = l.patch_dims();
        let (_, nw, _) = l.sizes();
        let mut dys = output(dev, count(o * cols, what)?)?;
        Swap { dims: (n, o, ho * wo) }.launch(dev, dy, None, &mut dys.slice_mut(..))?;
        let mut patches = output(dev, count(rows * cols, what)?)?;
        l.patches(false).launch(dev, x, None, &mut patches.slice_mut(..))?;
        gemm(dev, (&dys.slice(..), false), (&patches.slice(..), true), &mut out.slice_mut(..nw), (o, rows, cols))?;
        if self.input {
            // The patch matrix's buffer takes its gradient.
            gemm(dev, (w, true), (&dys.slice(..), false), &mut patches.slice_mut(..), (rows, cols, o))?;
            l.patches(true).launch(dev, &patches.slice(..), None, &mut out.slice_mut(nw + o..))?;
        }
        Ok(())
    }

    /// A transposed convolution's: with patches = unfold(dy) (OKK, N Hi
    /// Wi) and x as (C, N Hi Wi), dw = x x patches', dx = w x patches.
    fn transposed(
        &self,
        dev: &CudaDevice,
        [x, w, dy]: &[CudaView<'_, f32>; 3],
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (l, what) = (&self.conv, "ganscope-gemm-conv-grad");
        let (n, c, h, wd) = l.x;
        let (rows, cols) = l.patch_dims();
        let (nx, nw, _) = l.sizes();
        let mut patches = output(dev, count(rows * cols, what)?)?;
        l.patches(false).launch(dev, dy, None, &mut patches.slice_mut(..))?;
        let mut xs = output(dev, count(nx, what)?)?;
        Swap { dims: (n, c, h * wd) }.launch(dev, x, None, &mut xs.slice_mut(..))?;
        gemm(dev, (&xs.slice(..), false), (&patches.slice(..), true), &mut out.slice_mut(..nw), (c, rows, cols))?;
        if self.input {
            // The swapped input's buffer takes its gradient.
            gemm(dev, (w, false), (&patches.slice(..), false), &mut xs.slice_mut(..), (c, cols, rows))?;
            Swap { dims: (c, n, h * wd) }.launch(dev, &xs.slice(..), None, &mut out.slice_mut(nw + l.o..))?;
        }
        Ok(())
    }
}

impl CustomOp3 for GemmConvGrad {
    fn name(&self) -> &'static str {
        "ganscope-gemm-conv-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: CUDA only", self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (l, dev) = (&self.conv, &s1.device);
        let (nx, nw, ny) = l.sizes();
        let args = l.views(self.name(), [(s1, l1), (s2, l2), (s3, l3)], ny)?;
        let len = nw + l.o + if self.input { nx } else { 0 };
        let mut out = output(dev, count(len, self.name())?)?;
        let (n, o, ho, wo) = l.y();
        channel_sums_into(dev, &args[2], (n, o, ho * wo), &mut out.slice_mut(nw..nw + o))?;
        if l.transposed {
            self.transposed(dev, &args, &mut out)?
        } else {
            self.conv(dev, &args, &mut out)?
        }
        Ok((storage(out, dev), Shape::from(len)))
    }
}
