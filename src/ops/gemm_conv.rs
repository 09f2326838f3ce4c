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
//! is one node. Its forward keeps the operand the kernel's gradient needs
//! (the patch matrix, or the swapped input), which it made anyway, when the
//! kernel takes a gradient; its backward writes the gradients it is asked
//! for into one buffer and skips the rest (a frozen D's kernels in a G step).
//!
//! The backward is not differentiable again: inside
//! [`super::conv_bn::twice_differentiable`] (the gradient penalty) layers
//! take the formulation of candle ops.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv::Geom;
use super::cuda::{CudaSlice, CudaView, CudaViewMut, channel_sums_into, count, gemm, output, storage, view};
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
    let conv = GemmConv { x: (n, c, h, wd), o, g: Geom { k, stride, pad }, transposed };
    let op = LayerOp { conv, kept: w.track_op().then(Mutex::default) };
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

/// A [`GemmConv`] as a candle op, with room for the operand of its
/// kernel's gradient (`Some` when the kernel takes one) between the forward
/// and the backward.
struct LayerOp {
    conv: GemmConv,
    kept: Option<Mutex<Option<CudaSlice<f32>>>>,
}

impl LayerOp {
    /// Keeps `operand` for the backward, if it will need it.
    fn keep(&self, operand: CudaSlice<f32>) {
        if let Some(kept) = &self.kept {
            *kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(operand);
        }
    }

    /// The kept operand, once; `None` when nothing was kept (a second
    /// backward of the same graph then computes it again).
    fn take(&self) -> Option<CudaSlice<f32>> {
        self.kept.as_ref()?.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl CustomOp3 for LayerOp {
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
        let (l, dev) = (&self.conv, &s1.device);
        let [x, w, b] = l.views(self.name(), [(s1, l1), (s2, l2), (s3, l3)], l.o)?;
        let (n, c, h, wd) = l.x;
        let (_, o, ho, wo) = l.y();
        let ((rows, cols), (nx, _, ny)) = (l.patch_dims(), l.sizes());
        let mut patches = output(dev, count(rows * cols, self.name())?)?;
        let mut y = output(dev, count(ny, self.name())?)?;
        if l.transposed {
            // patches (OKK, N Hi Wi) = w' (OKK, C) x (C, N Hi Wi), folded.
            let mut xs = output(dev, count(nx, self.name())?)?;
            Swap { dims: (n, c, h * wd) }.launch(dev, &x, None, &mut xs.slice_mut(..))?;
            gemm(dev, (&w, true), (&xs.slice(..), false), &mut patches.slice_mut(..), (rows, cols, c))?;
            l.patches(true).launch(dev, &patches.slice(..), Some(&b), &mut y.slice_mut(..))?;
            self.keep(xs);
        } else {
            // (O, N Ho Wo) = w (O, CKK) x patches (CKK, N Ho Wo), as images.
            l.patches(false).launch(dev, &x, None, &mut patches.slice_mut(..))?;
            let mut product = output(dev, count(o * cols, self.name())?)?;
            gemm(dev, (&w, false), (&patches.slice(..), false), &mut product.slice_mut(..), (o, cols, rows))?;
            Swap { dims: (o, n, ho * wo) }.launch(dev, &product.slice(..), Some(&b), &mut y.slice_mut(..))?;
            self.keep(patches);
        }
        Ok((storage(y, dev), Shape::from(l.y())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = GemmConvGrad {
            conv: self.conv,
            wants: [x.track_op(), w.track_op(), b.track_op()],
            kept: Mutex::new(self.take()),
        };
        let grads = x.apply_op3_no_bwd(w, &dy.contiguous()?, &op)?;
        let [dx, dw, db] = op.zones();
        let part = |r: Range<usize>| grads.narrow(0, r.start, r.len());
        let dw = tracked(w, || part(dw)?.reshape(w.shape()))?;
        let db = tracked(b, || part(db))?;
        let dx = tracked(x, || part(dx)?.reshape(x.shape()))?;
        Ok((dx, dw, db))
    }
}

/// The gradients of a [`GemmConv`] from (x, kernel, dy) that `wants`
/// names (x, kernel, bias), as one buffer [dw | db | dx], each part empty
/// when not wanted; `kept` holds the forward's operand for dw, if any.
struct GemmConvGrad {
    conv: GemmConv,
    wants: [bool; 3],
    kept: Mutex<Option<CudaSlice<f32>>>,
}

impl GemmConvGrad {
    /// Where dx, dw and db lie in the buffer.
    fn zones(&self) -> [Range<usize>; 3] {
        let (nx, nw, _) = self.conv.sizes();
        let [x, w, b] = self.wants.map(usize::from);
        let (dw, db) = (w * nw, b * self.conv.o);
        [dw + db..dw + db + x * nx, 0..dw, dw..dw + db]
    }

    /// The forward's operand for dw if it was kept; else `len` values,
    /// written by `make` when dw is wanted (else scratch for dx).
    fn operand(
        &self,
        dev: &CudaDevice,
        len: usize,
        make: impl FnOnce(&mut CudaViewMut<'_, f32>) -> Result<()>,
    ) -> Result<CudaSlice<f32>> {
        if let Some(kept) = self.kept.lock().unwrap_or_else(PoisonError::into_inner).take() {
            return Ok(kept);
        }
        let mut operand = output(dev, count(len, "ganscope-gemm-conv-grad")?)?;
        if self.wants[1] {
            make(&mut operand.slice_mut(..))?;
        }
        Ok(operand)
    }

    /// A convolution's: dw = dy (O, N Ho Wo) x patches', dx = fold(w' x dy).
    fn conv(&self, dev: &CudaDevice, [x, w, dy]: &[CudaView<'_, f32>; 3], out: &mut CudaSlice<f32>) -> Result<()> {
        let (l, what) = (&self.conv, "ganscope-gemm-conv-grad");
        let (n, o, ho, wo) = l.y();
        let (rows, cols) = l.patch_dims();
        let [dx, dw, _] = self.zones();
        let mut dys = output(dev, count(o * cols, what)?)?;
        Swap { dims: (n, o, ho * wo) }.launch(dev, dy, None, &mut dys.slice_mut(..))?;
        let mut patches = self.operand(dev, rows * cols, |p| l.patches(false).launch(dev, x, None, p))?;
        if !dw.is_empty() {
            gemm(dev, (&dys.slice(..), false), (&patches.slice(..), true), &mut out.slice_mut(dw), (o, rows, cols))?;
        }
        if !dx.is_empty() {
            // The patch matrix's buffer takes its gradient.
            gemm(dev, (w, true), (&dys.slice(..), false), &mut patches.slice_mut(..), (rows, cols, o))?;
            l.patches(true).launch(dev, &patches.slice(..), None, &mut out.slice_mut(dx))?;
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
        let (nx, _, _) = l.sizes();
        let [dx, dw, _] = self.zones();
        let mut patches = output(dev, count(rows * cols, what)?)?;
        l.patches(false).launch(dev, dy, None, &mut patches.slice_mut(..))?;
        let mut xs = self.operand(dev, nx, |xs| Swap { dims: (n, c, h * wd) }.launch(dev, x, None, xs))?;
        if !dw.is_empty() {
            gemm(dev, (&xs.slice(..), false), (&patches.slice(..), true), &mut out.slice_mut(dw), (c, rows, cols))?;
        }
        if !dx.is_empty() {
            // The swapped input's buffer takes its gradient.
            gemm(dev, (w, false), (&patches.slice(..), false), &mut xs.slice_mut(..), (c, cols, rows))?;
            Swap { dims: (c, n, h * wd) }.launch(dev, &xs.slice(..), None, &mut out.slice_mut(dx))?;
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
        let (_, _, ny) = l.sizes();
        let args = l.views(self.name(), [(s1, l1), (s2, l2), (s3, l3)], ny)?;
        let [dx, _, db] = self.zones();
        let mut out = output(dev, count(dx.end, self.name())?)?;
        if !db.is_empty() {
            let (n, o, ho, wo) = l.y();
            channel_sums_into(dev, &args[2], (n, o, ho * wo), &mut out.slice_mut(db))?;
        }
        if l.transposed {
            self.transposed(dev, &args, &mut out)?
        } else {
            self.conv(dev, &args, &mut out)?
        }
        Ok((storage(out, dev), Shape::from(dx.end)))
    }
}
