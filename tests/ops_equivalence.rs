//! Every fast CPU op matches candle's reference op in values and gradients,
//! on random shapes including odd sizes. Tolerance: 1e-4 relative to the
//! largest magnitude (f32 sums of up to a few thousand terms, in a different
//! order).
//!
//! The fast convolutions batch images into groups of at least 256 GEMM
//! columns (128 on more than one thread), capped at an even share per rayon
//! thread; small spatial sizes with odd
//! batches (5, 7) give groups of several images and a short last group. Each
//! case runs in the default pool and in a one-thread pool, where the groups
//! are largest. The cases take in turn the activations a convolution's op
//! applies to its output (none, LeakyReLU at slopes 0.2 and 0, tanh).
//!
//! Bias and LeakyReLU split their work into rayon jobs of whole planes or
//! fixed chunks; the shapes include planes of one value, many planes per
//! job and planes longer than a job.
//!
//! The fused BatchNorm is checked against the candle-op formulation it
//! replaces in `Norm::forward`, and its second-order gradient (the WGAN
//! gradient penalty differentiates through D) against central differences
//! in f64: candle's own double backprop through that formulation disagrees
//! with finite differences, so it cannot serve as the reference there.

use candle_core::{DType, Device, Result, Tensor, Var};
use ganscope::ops::activation::Act;
use ganscope::ops::{activation, adam, batch_norm, bias, conv, conv_bn, dense, reduce, shuffle, unfold, upsample};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::ThreadPoolBuilder;

fn rand_tensor(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    let g: Vec<f32> = got.flatten_all()?.to_vec1()?;
    let w: Vec<f32> = want.flatten_all()?.to_vec1()?;
    let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max error {worst} vs scale {scale}");
    Ok(())
}

/// Values and the gradients of every named input of `fast` (run on
/// `device`) and `reference` (on the CPU) agree, with a random upstream
/// gradient so every output element matters.
fn check(
    device: &Device,
    what: &str,
    inputs: &[(&str, Tensor)],
    rng: &mut ChaCha8Rng,
    fast: impl Fn(&[&Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[&Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let vars = |d: &Device| inputs.iter().map(|(_, t)| Var::from_tensor(&t.to_device(d)?)).collect::<Result<Vec<_>>>();
    let (vf, vr) = (vars(device)?, vars(&Device::Cpu)?);
    let tf: Vec<&Tensor> = vf.iter().map(Var::as_tensor).collect();
    let tr: Vec<&Tensor> = vr.iter().map(Var::as_tensor).collect();
    let (yf, yr) = (fast(&tf)?, reference(&tr)?);
    assert_close(&format!("{what} forward"), &yf.to_device(&Device::Cpu)?, &yr)?;
    let up = rand_tensor(rng, yr.dims())?;
    let gf = (yf * up.to_device(device)?)?.sum_all()?.backward()?;
    let gr = (yr * &up)?.sum_all()?.backward()?;
    for (((name, _), f), r) in inputs.iter().zip(tf).zip(tr) {
        let (a, b) = (gf.get(f).expect("fast grad"), gr.get(r).expect("reference grad"));
        assert_close(&format!("{what} d{name}"), &a.to_device(&Device::Cpu)?, b)?;
    }
    Ok(())
}

/// candle's per-channel bias add.
fn add_bias(y: Tensor, b: &Tensor) -> Result<Tensor> {
    y.broadcast_add(&b.reshape((1, (), 1, 1))?)
}

/// (n, c, h, w, o, k, stride, pad) of one convolution case.
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

// DCGAN's shapes, odd ones, then grouped ones: outputs of 2x2, 3x3, 1x1
// and 5x4 with batches of 5 and 7 that do not divide into the groups.
// 3x3 stride-1 ones into fewer than 16 channels, (3, 5, 7, 9, 2, ...) and
// (7, 4, 3, 3, 5, ...) here and the input gradients of such transposed
// ones, run as nine shifted GEMMs over padded planes.
// Batches of 4+ images (and one per thread) copy patches channels-last
// when they make 16+ channels, as do their input gradients from 16+
// channels: (6, 8, 8, 6, ...) and (4, 6, 5, 3, ...), but not stride-2
// ones from fewer than 8 (D's first layer): (6, 3, 10, 8, ...) stays
// planar, its patches copied by phases. From 32+ into 64+
// channels, 3x3 stride-1 and 4x4 stride-2 ones and their input and weight
// gradients run by Winograd instead: (6, 64, 8, 6, ...), (4, 64, 5, 3,
// ...) and the odd-sized (5, 64, 9, 7, ...) and (5, 40, 9, 7, ...), whose
// tiles overhang the right and bottom edges (the last one's input
// gradient, 9 x 7 from 4 x 3, keeps patches).
// (1, 32, 48, 47, ...) is a single image big enough (2^23+ multiply-adds)
// to split its output channels between threads. The next two are wider,
// the 4x4 stride-2 one with tiles overhanging. The next three are single
// images of 4x4 output pixels, which a kept kernel on an AVX-512 CPU
// multiplies from its panels (`narrow`): 20 and 33 output channels leave
// a last panel part empty, and 1000 is big enough to split, in whole
// panels, between threads; the 3x3 ones run tap by tap, skipping the
// padding, and the image after them, 16 pixels too but 2x8, by patches.
// With a kept kernel on such a CPU, fewer images
// than make a batch, of 3x3 stride-1 layers into 16+ channels and more
// than 4x4 pixels, run by Winograd with 16 tiles per GEMM column block
// (`winograd::single`): (1, 32, 48, 47, ...) in 36 blocks and the last two
// here, 7x7 pixels in exactly 16 tiles, and two images of 11 x 9 pixels
// in a whole block and a part of one, into 40 and 48 channels (parts of
// panels; split between threads, whole panels per part); then one image
// of 16 x 20 pixels by F(4x4, 3x3), its 20 tiles in a block and a part. Last, two
// batches whose sides are multiples of 4, which run by F(4x4, 3x3): 8x12
// pixels in 6 tiles each, and 4x4 as the generators' first 3x3 layer; and
// two stride-2 batches of 128 channels or more whose kernel gradients run
// by F(4x4, 2x2), their outputs 8x8 and 8x12.
const CONV_CASES: [Case; 30] = [
    (2, 3, 8, 8, 4, 4, 2, 1),
    (3, 5, 7, 9, 2, 3, 1, 1),
    (1, 1, 5, 5, 3, 3, 2, 0),
    (4, 6, 13, 11, 5, 4, 2, 1),
    (2, 2, 6, 6, 3, 1, 1, 0),
    (5, 3, 4, 4, 6, 4, 2, 1),
    (7, 4, 3, 3, 5, 3, 1, 1),
    (5, 6, 4, 4, 1, 4, 1, 0),
    (5, 2, 9, 7, 3, 3, 2, 1),
    (6, 8, 8, 6, 18, 4, 2, 1),
    (6, 3, 10, 8, 24, 4, 2, 1),
    (4, 6, 5, 3, 20, 3, 1, 1),
    (6, 64, 8, 6, 65, 4, 2, 1),
    (4, 64, 5, 3, 66, 3, 1, 1),
    (1, 32, 48, 47, 67, 3, 1, 1),
    (5, 64, 9, 7, 64, 3, 1, 1),
    (5, 40, 9, 7, 64, 4, 2, 1),
    (5, 128, 9, 7, 256, 4, 2, 1),
    (4, 256, 5, 3, 256, 3, 1, 1),
    (1, 8, 4, 4, 20, 3, 1, 1),
    (1, 5, 8, 8, 33, 4, 2, 1),
    (1, 64, 4, 4, 1000, 3, 1, 1),
    (1, 8, 2, 8, 24, 3, 1, 1),
    (1, 128, 7, 7, 40, 3, 1, 1),
    (2, 24, 11, 9, 48, 3, 1, 1),
    (1, 32, 16, 20, 48, 3, 1, 1),
    (4, 64, 8, 12, 64, 3, 1, 1),
    (4, 96, 4, 4, 128, 3, 1, 1),
    (4, 128, 16, 16, 128, 4, 2, 1),
    (4, 128, 16, 24, 160, 4, 2, 1),
];

// As [`CONV_CASES`], for transposed convolutions: the grouped cases read
// 1x1 to 3x3 inputs, the next two are single images whose channels split
// between threads; then a batch into 7 channels, as G's RGB layer, which
// stays planar (stride 2 into fewer than 8), one into 9 that copies
// patches channels-last and, from 32+ into 64+ channels, batches
// that run by Winograd (weight gradients too), the last with tiles
// overhanging both edges, then two wider ones. Stride-1 batches into
// 16+ channels that do not run by Winograd run as the convolution by the
// flipped kernel: (5, 12, 6, 5, ...), the pixel-shuffle RGB layer's input
// gradient, and (4, 1, 1, 1, ...), a discriminator's last layer's, from 1x1
// to 4x4 (padded by 3). The last one is a single
// image of 4x4 input pixels, which a kept kernel on an AVX-512 CPU
// multiplies from its panels (`narrow`), as (1, 3, 4, 4, ...) above; split
// between three threads its parts start 27 and 54 rows in, off the panels'
// 16, and those parts take the GEMM instead. Last, G's RGB layer at
// 64 px on a batch of 8: 3 channels of 32K values, whose bias gradient
// CUDA sums in parts; a batch of 8x4 pixels by F(4x4, 3x3); and 128
// channels at 8x8 to 16x16, whose kernel gradient runs by F(4x4, 2x2).
const CONV_T_CASES: [Case; 24] = [
    (2, 4, 4, 4, 3, 4, 2, 1),
    (3, 3, 5, 7, 2, 4, 2, 1),
    (1, 2, 7, 7, 1, 3, 1, 1),
    (2, 5, 3, 3, 4, 3, 2, 0),
    (2, 3, 6, 5, 2, 1, 1, 0),
    (5, 4, 2, 2, 3, 4, 2, 1),
    (7, 3, 3, 3, 2, 3, 1, 1),
    (5, 6, 1, 1, 4, 4, 1, 0),
    (5, 2, 3, 2, 3, 3, 2, 1),
    (1, 3, 4, 4, 5, 4, 2, 1),
    (1, 6, 3, 5, 8, 3, 1, 1),
    (6, 18, 3, 4, 7, 4, 2, 1),
    (6, 18, 3, 4, 9, 4, 2, 1),
    (6, 64, 3, 4, 65, 4, 2, 1),
    (5, 64, 4, 2, 64, 3, 1, 1),
    (6, 64, 7, 11, 64, 3, 1, 1),
    (6, 256, 3, 4, 128, 4, 2, 1),
    (5, 256, 4, 3, 256, 3, 1, 1),
    (5, 12, 6, 5, 20, 3, 1, 1),
    (4, 1, 1, 1, 24, 4, 1, 0),
    (1, 6, 4, 4, 7, 3, 1, 1),
    (8, 16, 32, 32, 3, 4, 2, 1),
    (4, 80, 8, 4, 64, 3, 1, 1),
    (4, 128, 8, 8, 128, 4, 2, 1),
];

/// Runs `body` in rayon's default pool, in a one-thread pool, where each
/// thread's share of the batch, and so the largest group, is biggest, and
/// in a three-thread pool, where a batch smaller than the pool splits its
/// output channels unevenly between threads.
fn in_each_pool(body: impl Fn() -> Result<()> + Send + Sync) -> Result<()> {
    body()?;
    for threads in [1, 3] {
        let pool = ThreadPoolBuilder::new().num_threads(threads).build().map_err(candle_core::Error::wrap)?;
        pool.install(&body)?;
    }
    Ok(())
}

/// Which of the two convolutions a case runs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Conv,
    ConvT,
}

/// The activations a convolution's op can apply, taken in turn by its cases.
const ACTS: [Act; 4] = [Act::Identity, Act::Leaky(0.2), Act::Tanh, Act::Leaky(0.0)];

/// `act` written with candle ops.
fn act_reference(y: Tensor, act: Act) -> Result<Tensor> {
    match act {
        Act::Identity => Ok(y),
        Act::Leaky(slope) => leaky_reference(&y, slope),
        Act::Tanh => y.tanh(),
    }
}

/// `op(x, w, b, stride, pad, act)` on `device` agrees with candle's
/// convolution of `kind` plus bias, then the activation, on the CPU, for
/// each of that kind's cases, which take the activations of [`ACTS`] in turn.
fn check_convs(
    device: &Device,
    kind: Kind,
    seed: u64,
    op: impl Fn(&Tensor, &Tensor, &Tensor, usize, usize, Act) -> Result<Tensor>,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cases = match kind {
        Kind::Conv => &CONV_CASES[..],
        Kind::ConvT => &CONV_T_CASES[..],
    };
    for (&(n, c, h, w, o, k, s, p), act) in cases.iter().zip(ACTS.iter().cycle()) {
        let x = rand_tensor(&mut rng, &[n, c, h, w])?;
        let wt = rand_tensor(&mut rng, &if let Kind::Conv = kind { [o, c, k, k] } else { [c, o, k, k] })?;
        let b = rand_tensor(&mut rng, &[o])?;
        let reference = |t: &[&Tensor]| {
            let y = match kind {
                Kind::Conv => t[0].conv2d(t[1], p, s, 1, 1)?,
                Kind::ConvT => t[0].conv_transpose2d(t[1], p, 0, s, 1)?,
            };
            act_reference(add_bias(y, t[2])?, *act)
        };
        check(
            device,
            &format!("{kind:?} {n}x{c}x{h}x{w} o{o} k{k} s{s} p{p} {act:?} on {device:?}"),
            &[("x", x), ("w", wt), ("b", b)],
            &mut rng,
            |t| op(t[0], t[1], t[2], s, p, *act),
            reference,
        )?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_candle() -> Result<()> {
    in_each_pool(|| {
        check_convs(&Device::Cpu, Kind::Conv, 11, |x, w, b, s, p, act| conv::conv2d(x, w, b, s, p, act, None))
    })
}

/// As [`conv2d_matches_candle`], with a kept kernel (made fresh for each
/// call, as a frozen layer makes it once): batches of wide 3x3 layers run
/// by its Winograd transform.
#[test]
fn conv2d_from_kept_kernels_matches_candle() -> Result<()> {
    in_each_pool(|| {
        check_convs(&Device::Cpu, Kind::Conv, 25, |x, w, b, s, p, act| {
            conv::conv2d(x, w, b, s, p, act, Some(&conv::KeptKernel::default()))
        })
    })
}

#[test]
fn conv_transpose2d_matches_candle() -> Result<()> {
    in_each_pool(|| {
        check_convs(&Device::Cpu, Kind::ConvT, 12, |x, w, b, s, p, act| {
            conv::conv_transpose2d(x, w, b, s, p, act, None)
        })
    })
}

/// As [`conv_transpose2d_matches_candle`], with a kept kernel (made fresh
/// for each call, as a frozen layer makes it once): small batches multiply
/// by its rows, in one part or split between threads, batches of wide
/// layers by its Winograd transform.
#[test]
fn conv_transpose2d_from_kept_kernels_matches_candle() -> Result<()> {
    in_each_pool(|| {
        check_convs(&Device::Cpu, Kind::ConvT, 23, |x, w, b, s, p, act| {
            conv::conv_transpose2d(x, w, b, s, p, act, Some(&conv::KeptKernel::default()))
        })
    })
}

/// One kept kernel serves every later call of its layer, whichever form a
/// call needs: single images and batches in turn match candle, for a
/// transposed convolution (its rows, its Winograd transform) and a 3x3
/// convolution (its transform). The forms are kept: handed other weights
/// of the same shape, the layer still computes with the first ones where
/// it has a form (which is why only constant weights get a kept kernel).
/// In a one-thread pool, where 1 image runs planar and 6 as a batch on
/// every machine.
#[test]
fn kept_kernel_serves_later_calls() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let (wt, bt) = (rand_tensor(&mut rng, &[64, 64, 4, 4])?, rand_tensor(&mut rng, &[64])?);
    let (w3, b3) = (rand_tensor(&mut rng, &[64, 32, 3, 3])?, rand_tensor(&mut rng, &[64])?);
    let (other_t, other_3) = (rand_tensor(&mut rng, &[64, 64, 4, 4])?, rand_tensor(&mut rng, &[64, 32, 3, 3])?);
    let (kept_t, kept_3) = (conv::KeptKernel::default(), conv::KeptKernel::default());
    let conv_t = |x: &Tensor, w: &Tensor| conv::conv_transpose2d(x, w, &bt, 2, 1, Act::Identity, Some(&kept_t));
    let conv_3 = |x: &Tensor, w: &Tensor| conv::conv2d(x, w, &b3, 1, 1, Act::Identity, Some(&kept_3));
    let ref_t = |x: &Tensor, w: &Tensor| add_bias(x.conv_transpose2d(w, 1, 0, 2, 1)?, &bt);
    let ref_3 = |x: &Tensor, w: &Tensor| add_bias(x.conv2d(w, 1, 1, 1, 1)?, &b3);
    let pool = ThreadPoolBuilder::new().num_threads(1).build().map_err(candle_core::Error::wrap)?;
    pool.install(|| {
        for (round, n) in [1, 6, 1, 5, 1, 6].into_iter().enumerate() {
            let (xt, x3) = (rand_tensor(&mut rng, &[n, 64, 3, 5])?, rand_tensor(&mut rng, &[n, 32, 5, 6])?);
            // The first four rounds make the forms; the last two hand other weights.
            let (given_t, given_3) = if round < 4 { (&wt, &w3) } else { (&other_t, &other_3) };
            // A 3x3 convolution keeps only the batches' form.
            let used_3 = if n == 1 { given_3 } else { &w3 };
            assert_close(&format!("transposed, round {round}"), &conv_t(&xt, given_t)?, &ref_t(&xt, &wt)?)?;
            assert_close(&format!("3x3, round {round}"), &conv_3(&x3, given_3)?, &ref_3(&x3, used_3)?)?;
        }
        Ok(())
    })
}

/// A kept 3x3 kernel whose first call is a batch of 8x8 images (by
/// F(4x4, 3x3), 36 positions) still serves single images (whose path
/// takes F(2x2, 3x3)'s 16) and later batches, all matching candle.
#[test]
fn kept_kernel_serves_one_image_after_a_large_tile_batch() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    let (w, b) = (rand_tensor(&mut rng, &[64, 32, 3, 3])?, rand_tensor(&mut rng, &[64])?);
    let kept = conv::KeptKernel::default();
    let pool = ThreadPoolBuilder::new().num_threads(1).build().map_err(candle_core::Error::wrap)?;
    pool.install(|| {
        for n in [6, 1, 6, 1] {
            let x = rand_tensor(&mut rng, &[n, 32, 8, 8])?;
            let got = conv::conv2d(&x, &w, &b, 1, 1, Act::Identity, Some(&kept))?;
            assert_close(&format!("{n} images"), &got, &add_bias(x.conv2d(&w, 1, 1, 1, 1)?, &b)?)?;
        }
        Ok(())
    })
}

/// Trainable weights written in place between two calls, as the optimizer
/// writes them, are what the second call computes with, for each
/// Winograd kind (3x3, 4x4 stride 2, its transpose), though the first
/// call's transform is kept for later calls with the same weights (in a
/// training step's scope).
#[test]
fn winograd_convolutions_see_weights_written_in_place() -> Result<()> {
    // As in a training step, which keeps transforms between calls.
    let kept = std::sync::Arc::new(ganscope::ops::RecentTransforms::default());
    ganscope::ops::RecentTransforms::keeping(&kept, written_in_place)
}

fn written_in_place() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    let b = rand_tensor(&mut rng, &[64])?;
    // (input, kernel, stride, transposed)
    let cases = [
        ([4, 32, 6, 5], [64, 32, 3, 3], 1, false),
        ([4, 32, 8, 8], [64, 32, 4, 4], 2, false),
        ([4, 32, 4, 3], [32, 64, 4, 4], 2, true),
    ];
    for (xs, ws, s, transposed) in cases {
        let x = rand_tensor(&mut rng, &xs)?;
        let w = Var::from_tensor(&rand_tensor(&mut rng, &ws)?)?;
        let ours = |w: &Tensor| match transposed {
            false => conv::conv2d(&x, w, &b, s, 1, Act::Identity, None),
            true => conv::conv_transpose2d(&x, w, &b, s, 1, Act::Identity, None),
        };
        let reference = |w: &Tensor| match transposed {
            false => add_bias(x.conv2d(w, 1, s, 1, 1)?, &b),
            true => add_bias(x.conv_transpose2d(w, 1, 0, s, 1)?, &b),
        };
        let what = format!("{xs:?} by {ws:?}");
        let before = w.as_tensor().copy()?;
        assert_close(&format!("{what}, first call"), &ours(w.as_tensor())?, &reference(&before)?)?;
        assert_close(&format!("{what}, same weights"), &ours(w.as_tensor())?, &reference(&before)?)?;
        w.set(&(w.as_tensor() * -0.5)?)?;
        let after = w.as_tensor().copy()?;
        assert_close(&format!("{what}, written in place"), &ours(w.as_tensor())?, &reference(&after)?)?;
    }
    Ok(())
}

/// The CUDA formulation (patch matrix + one GEMM), run with its CPU patch copies.
#[test]
fn unfolded_convolutions_match_candle() -> Result<()> {
    check_convs(&Device::Cpu, Kind::Conv, 16, |x, w, b, s, p, act| act.apply(&unfold::conv2d(x, w, b, s, p)?))?;
    check_convs(&Device::Cpu, Kind::ConvT, 17, |x, w, b, s, p, act| {
        act.apply(&unfold::conv_transpose2d(x, w, b, s, p)?)
    })
}

/// On CUDA the convolutions run our patch kernels and cuBLAS (as one op
/// each, and as candle ops), BatchNorm (and its second order) our kernels, Adam and LeakyReLU our kernels,
/// upsampling a broadcast: all checked
/// against candle on the CPU. Skipped, with a note, where no GPU opens.
#[cfg(feature = "cuda")]
#[test]
fn cuda_ops_match_cpu() -> Result<()> {
    let gpu = match ganscope::device::select(ganscope::device::DeviceChoice::Cuda) {
        Ok(chosen) => chosen.device,
        Err(e) => {
            eprintln!("cuda_ops_match_cpu: skipped, no CUDA device ({e})");
            return Ok(());
        }
    };
    check_convs(&gpu, Kind::Conv, 18, |x, w, b, s, p, act| conv::conv2d(x, w, b, s, p, act, None))?;
    check_convs(&gpu, Kind::ConvT, 19, |x, w, b, s, p, act| conv::conv_transpose2d(x, w, b, s, p, act, None))?;
    // The formulation of candle ops the layers take for the gradient penalty.
    check_convs(&gpu, Kind::Conv, 23, |x, w, b, s, p, act| act.apply(&unfold::conv2d(x, w, b, s, p)?))?;
    check_convs(&gpu, Kind::ConvT, 24, |x, w, b, s, p, act| act.apply(&unfold::conv_transpose2d(x, w, b, s, p)?))?;
    check_batch_norm(&gpu)?;
    check_batch_norm_second_order(&gpu)?;
    check_adam(&gpu)?;
    check_frozen_weights(&gpu)?;
    check_sum_of_squares(&gpu)?;
    check_pixel_shuffle(&gpu)?;
    check_leaky_relu(&gpu)?;
    check_upsample_conv(&gpu, 20, false)
}

/// Odd sizes, one plane per image, and batches with many planes per rayon job.
const SHUFFLE_CASES: [(usize, usize, usize, usize); 4] = [(2, 8, 3, 5), (1, 4, 1, 1), (3, 12, 4, 7), (64, 16, 2, 2)];

#[test]
fn pixel_shuffle_matches_candle() -> Result<()> {
    in_each_pool(|| check_pixel_shuffle(&Device::Cpu))
}

/// [`pixel_shuffle_matches_candle`] on `device` (its backward, the
/// unshuffle, through the gradient).
fn check_pixel_shuffle(device: &Device) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for (n, c, h, w) in SHUFFLE_CASES {
        let x = rand_tensor(&mut rng, &[n, c, h, w])?;
        let what = format!("pixel shuffle {n}x{c}x{h}x{w} on {device:?}");
        check(
            device,
            &what,
            &[("x", x)],
            &mut rng,
            |t| shuffle::pixel_shuffle(t[0]),
            |t| pixel_shuffle_reference(t[0]),
        )?;
    }
    Ok(())
}

/// Nearest 2x upsampling then candle's 3x3 convolution, the formulation
/// [`upsample::upsample_conv3x3`] replaces.
fn upsample_conv_reference(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    add_bias(x.upsample_nearest2d(2 * h, 2 * wd)?.conv2d(w, 1, 1, 1, 1)?, b)
}

/// The folded transposed convolution on `device` matches the upsampling and
/// convolution on the CPU, values and gradients, on odd sizes, a single
/// pixel and DCGAN's 4x4 first level; `frozen`: through a fresh
/// kept-kernel cache per call (the fold and, for small batches, its rows).
fn check_upsample_conv(device: &Device, seed: u64, frozen: bool) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cases = [(2, 3, 3, 5, 4), (1, 1, 1, 1, 1), (3, 5, 4, 7, 2), (8, 32, 4, 4, 16)];
    for ((n, c, h, w, o), act) in cases.into_iter().zip(ACTS) {
        let inputs = [
            ("x", rand_tensor(&mut rng, &[n, c, h, w])?),
            ("w", rand_tensor(&mut rng, &[o, c, 3, 3])?),
            ("b", rand_tensor(&mut rng, &[o])?),
        ];
        check(
            device,
            &format!("upsample conv {n}x{c}x{h}x{w} to {o} {act:?} frozen {frozen}"),
            &inputs,
            &mut rng,
            |t| upsample::upsample_conv3x3(t[0], t[1], t[2], frozen.then(Default::default).as_ref(), act),
            |t| act_reference(upsample_conv_reference(t[0], t[1], t[2])?, act),
        )?;
    }
    Ok(())
}

#[test]
fn upsample_conv_matches_candle() -> Result<()> {
    in_each_pool(|| check_upsample_conv(&Device::Cpu, 15, false))?;
    in_each_pool(|| check_upsample_conv(&Device::Cpu, 22, true))
}

/// Frozen weights are folded once and the kept kernel (and its rows)
/// reused; without the cache every call folds anew, so an update in place
/// is seen.
#[test]
fn upsample_conv_keeps_only_frozen_kernels() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let x = rand_tensor(&mut rng, &[1, 3, 4, 5])?;
    let (w, b) = (rand_tensor(&mut rng, &[2, 3, 3, 3])?, rand_tensor(&mut rng, &[2])?);
    let frozen = Default::default();
    let first = upsample::upsample_conv3x3(&x, &w, &b, Some(&frozen), Act::Identity)?;
    assert_close("frozen weights, folded", &first, &upsample_conv_reference(&x, &w, &b)?)?;
    assert!(frozen.0.get().is_some(), "frozen weights: the folded kernel is kept");
    let again = upsample::upsample_conv3x3(&x, &w, &b, Some(&frozen), Act::Identity)?;
    assert_close("frozen weights, kept", &again, &first)?;

    let var = Var::from_tensor(&w)?;
    upsample::upsample_conv3x3(&x, var.as_tensor(), &b, None, Act::Identity)?;
    let w2 = rand_tensor(&mut rng, &[2, 3, 3, 3])?;
    var.set(&w2)?;
    let after = upsample::upsample_conv3x3(&x, var.as_tensor(), &b, None, Act::Identity)?;
    assert_close("trainable weights, updated", &after, &upsample_conv_reference(&x, &w2, &b)?)
}

/// Training-mode BatchNorm written with candle ops, as `Norm::forward` does
/// off the fast path: output, batch mean and biased batch variance.
fn batch_norm_reference(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let flat = x.transpose(0, 1)?.reshape((c, n * h * w))?;
    let m = flat.mean(1)?;
    let v = flat.broadcast_sub(&m.unsqueeze(1)?)?.sqr()?.mean(1)?;
    let scale = (gamma / (&v + 1e-5)?.sqrt()?)?;
    let shift = (beta - (&m * &scale)?)?;
    let y = x.broadcast_mul(&scale.reshape((1, (), 1, 1))?)?.broadcast_add(&shift.reshape((1, (), 1, 1))?)?;
    Ok((y, m, v))
}

/// The fused BatchNorm on `device` matches the candle formulation on the
/// CPU: statistics, output and gradients, alone (slope 1) and with the
/// ReLU or LeakyReLU it fuses.
fn check_batch_norm(device: &Device) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    // (n, c, h, w, offset): odd shapes, 1x1 planes, a large mean to catch
    // cancellation in the variance, and planes large enough (40x40) that
    // the sums' lanes are flushed between the images of one job.
    let cases = [
        (5, 3, 4, 4, 0.0),
        (2, 7, 3, 5, 0.0),
        (3, 2, 1, 1, 0.0),
        (16, 8, 8, 8, 20.0),
        (4, 5, 7, 9, -3.0),
        (6, 2, 40, 40, 5.0),
    ];
    for (n, c, h, w, offset) in cases {
        for slope in [1.0, 0.0, 0.2] {
            let fused = |t: &[&Tensor]| -> Result<batch_norm::BatchNormTrain> {
                Ok(batch_norm::train(t[0], t[1], t[2], 1e-5, slope)?.expect("a fused BatchNorm on this device"))
            };
            let what = format!("batch_norm {n}x{c}x{h}x{w} slope {slope} on {device:?}");
            let x = (rand_tensor(&mut rng, &[n, c, h, w])? + offset)?;
            let gamma = (rand_tensor(&mut rng, &[c])? + 1.0)?;
            let beta = rand_tensor(&mut rng, &[c])?;
            let on = |t: &Tensor| t.to_device(device);
            let got = fused(&[&on(&x)?, &on(&gamma)?, &on(&beta)?])?;
            let (_, m, v) = batch_norm_reference(&x, &gamma, &beta)?;
            assert_close(&format!("{what} mean"), &got.mean.to_device(&Device::Cpu)?, &m)?;
            assert_close(&format!("{what} var"), &got.var.to_device(&Device::Cpu)?, &v)?;
            check(
                device,
                &what,
                &[("x", x), ("gamma", gamma), ("beta", beta)],
                &mut rng,
                |t| Ok(fused(t)?.y),
                |t| activated(&batch_norm_reference(t[0], t[1], t[2])?.0, slope),
            )?;
        }
    }
    Ok(())
}

#[test]
fn batch_norm_matches_candle() -> Result<()> {
    check_batch_norm(&Device::Cpu)
}

/// The same values, bit for bit.
fn assert_same(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    let (g, w): (Vec<f32>, Vec<f32>) = (got.flatten_all()?.to_vec1()?, want.flatten_all()?.to_vec1()?);
    let differ = g.iter().zip(&w).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{what}: {differ} of {} values differ", w.len());
    Ok(())
}

// A convolution into a BatchNorm as one op runs the two ops' kernels in
// their order, so it must match them exactly: a Winograd stride-2 batch, a
// 3x3 one into the BatchNorm of its pixel shuffle, a transposed one, and
// small planar and odd-sized ones.
#[test]
fn conv_batch_norm_matches_the_two_ops() -> Result<()> {
    // (kind, (n, c, h, w, o, k, stride, pad), slope, shuffled)
    let cases: [(Kind, Case, f64, bool); 5] = [
        (Kind::Conv, (6, 64, 8, 6, 64, 4, 2, 1), 0.2, false),
        (Kind::Conv, (4, 32, 5, 3, 64, 3, 1, 1), 0.0, true),
        (Kind::ConvT, (5, 64, 4, 3, 64, 4, 2, 1), 0.0, false),
        (Kind::Conv, (3, 5, 7, 9, 8, 3, 1, 1), 0.2, false),
        (Kind::ConvT, (2, 3, 5, 4, 6, 4, 2, 1), 1.0, false),
    ];
    in_each_pool(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        for (kind, (n, c, h, w, o, k, stride, pad), slope, shuffled) in cases {
            let what = format!("{kind:?} {n}x{c}x{h}x{w} into {o}, slope {slope}, shuffled {shuffled}");
            let kernel = match kind {
                Kind::Conv => [o, c, k, k],
                Kind::ConvT => [c, o, k, k],
            };
            let normed = if shuffled { o / 4 } else { o };
            let inputs = [
                rand_tensor(&mut rng, &[n, c, h, w])?,
                rand_tensor(&mut rng, &kernel)?,
                rand_tensor(&mut rng, &[o])?,
                (rand_tensor(&mut rng, &[normed])? + 1.0)?,
                rand_tensor(&mut rng, &[normed])?,
            ];
            let up = {
                let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
                let t: Vec<&Tensor> = vars.iter().map(Var::as_tensor).collect();
                let z = match kind {
                    Kind::Conv => conv::conv2d(t[0], t[1], t[2], stride, pad, Act::Identity, None)?,
                    Kind::ConvT => conv::conv_transpose2d(t[0], t[1], t[2], stride, pad, Act::Identity, None)?,
                };
                let two = if shuffled {
                    batch_norm::train_shuffled(&z, t[3], t[4], 1e-5, slope)?
                } else {
                    batch_norm::train(&z, t[3], t[4], 1e-5, slope)?
                };
                let two = two.expect("the CPU BatchNorm op");
                let up = rand_tensor(&mut rng, two.y.dims())?;
                let grads = (&two.y * &up)?.sum_all()?.backward()?;
                let want: Vec<Tensor> = t.iter().map(|v| grads.get(v).expect("a gradient").clone()).collect();
                (two, want, up)
            };
            let (two, want, up) = up;
            let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
            let t: Vec<&Tensor> = vars.iter().map(Var::as_tensor).collect();
            let bn = conv_bn::NormArgs { gamma: t[3], beta: t[4], eps: 1e-5, slope, shuffled };
            let transposed = matches!(kind, Kind::ConvT);
            let layer = conv::Layer { w: t[1], b: t[2], geom: (stride, pad), transposed, kept: None };
            let one = conv::conv_batch_norm(t[0], layer, &bn)?.expect("the fused op on the CPU");
            let (h4, w4) = (two.y.dim(2)?, two.y.dim(3)?);
            assert_eq!(one.count, n * h4 * w4, "{what}: values per channel");
            assert_same(&format!("{what}: output"), &one.y, &two.y)?;
            assert_same(&format!("{what}: mean"), &one.mean, &two.mean)?;
            assert_same(&format!("{what}: variance"), &one.var, &two.var)?;
            let grads = (&one.y * &up)?.sum_all()?.backward()?;
            for ((name, v), want) in ["x", "w", "b", "gamma", "beta"].iter().zip(&t).zip(&want) {
                assert_same(&format!("{what}: d{name}"), grads.get(v).expect("a gradient"), want)?;
            }
        }
        Ok(())
    })
}

// A layer without a norm chained into a normed one as one op runs the two
// layers' ops as they run alone: a discriminator's first two layers, the
// second by Winograd, and a small planar pair with a 3x3 first layer.
#[test]
fn chained_layers_match_the_layers_alone() -> Result<()> {
    // (n, c, h, w), first (o, k, stride, pad), second (o, k, stride, pad), slope
    type Layers = ((usize, usize, usize, usize), [usize; 4], [usize; 4], f64);
    let cases: [Layers; 2] =
        [((6, 3, 16, 16), [64, 4, 2, 1], [64, 4, 2, 1], 0.2), ((2, 3, 9, 7), [5, 3, 1, 1], [4, 4, 2, 1], 0.0)];
    in_each_pool(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(37);
        for ((n, c, h, w), [o0, k0, s0, p0], [o, k, s, p], slope) in cases {
            let what = format!("{n}x{c}x{h}x{w} into {o0} into {o}");
            let inputs = [
                rand_tensor(&mut rng, &[n, c, h, w])?,
                rand_tensor(&mut rng, &[o0, c, k0, k0])?,
                rand_tensor(&mut rng, &[o0])?,
                rand_tensor(&mut rng, &[o, o0, k, k])?,
                rand_tensor(&mut rng, &[o])?,
                (rand_tensor(&mut rng, &[o])? + 1.0)?,
                rand_tensor(&mut rng, &[o])?,
            ];
            let run =
                |chained: bool, up: Option<&Tensor>| -> Result<(batch_norm::BatchNormTrain, Vec<Tensor>, Tensor)> {
                    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
                    let t: Vec<&Tensor> = vars.iter().map(Var::as_tensor).collect();
                    let bn = conv_bn::NormArgs { gamma: t[5], beta: t[6], eps: 1e-5, slope, shuffled: false };
                    let act = Act::Leaky(slope);
                    let first = conv::Layer { w: t[1], b: t[2], geom: (s0, p0), transposed: false, kept: None };
                    let second = conv::Layer { w: t[3], b: t[4], geom: (s, p), transposed: false, kept: None };
                    let out = if chained {
                        conv::conv2d_then_batch_norm(t[0], (first, act), second, &bn)?
                    } else {
                        let y0 = conv::conv2d(t[0], t[1], t[2], s0, p0, act, None)?;
                        conv::conv_batch_norm(&y0, second, &bn)?
                    };
                    let out = out.expect("the fused ops on the CPU");
                    let up = match up {
                        Some(up) => up.clone(),
                        None => rand_tensor(&mut ChaCha8Rng::seed_from_u64(41), out.y.dims())?,
                    };
                    let grads = (&out.y * &up)?.sum_all()?.backward()?;
                    let grads = t.iter().map(|v| grads.get(v).expect("a gradient").clone()).collect();
                    Ok((out, grads, up))
                };
            let (two, want, up) = run(false, None)?;
            let (one, got, _) = run(true, Some(&up))?;
            assert_same(&format!("{what}: output"), &one.y, &two.y)?;
            assert_same(&format!("{what}: mean"), &one.mean, &two.mean)?;
            assert_same(&format!("{what}: variance"), &one.var, &two.var)?;
            for ((name, got), want) in ["x", "w0", "b0", "w", "b", "gamma", "beta"].iter().zip(&got).zip(&want) {
                assert_same(&format!("{what}: d{name}"), got, want)?;
            }
        }
        Ok(())
    })
}

// A normed layer chained into a layer without a norm as one op runs the
// two layers' ops as they run alone: a generator's last hidden layer into
// its RGB layer (transposed by Winograd, or 3x3 into the BatchNorm of its
// pixel shuffle), a small planar pair, and a discriminator's last layer
// into its head, whose kernel covers its input (a matrix product there,
// a convolution alone: equal within the tolerance, not bit for bit).
#[test]
fn normed_layers_into_plain_ones_match_the_layers_alone() -> Result<()> {
    /// Two layers: the input's dims, each layer's (o, k, stride, pad).
    struct Pair {
        input: (usize, usize, usize, usize),
        first: [usize; 4],
        shuffled: bool,
        second: [usize; 4],
        transposed: bool,
        slope: f64,
        act: Act,
        /// Bit for bit, or within the tolerance.
        exact: bool,
    }
    let pair = |input, first, shuffled, second, transposed, (slope, act), exact| Pair {
        input,
        first,
        shuffled,
        second,
        transposed,
        slope,
        act,
        exact,
    };
    let cases = [
        pair((5, 64, 4, 3), [64, 4, 2, 1], false, [3, 4, 2, 1], true, (0.0, Act::Tanh), true),
        pair((4, 32, 5, 3), [64, 3, 1, 1], true, [12, 3, 1, 1], false, (0.0, Act::Tanh), true),
        pair((3, 5, 7, 9), [8, 3, 1, 1], false, [4, 3, 2, 1], false, (0.2, Act::Leaky(0.2)), true),
        pair((6, 64, 8, 8), [64, 4, 2, 1], false, [1, 4, 1, 0], false, (0.2, Act::Identity), false),
        pair((2, 3, 4, 4), [5, 4, 2, 1], false, [2, 2, 1, 0], false, (0.0, Act::Identity), false),
    ];
    in_each_pool(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(43);
        for Pair { input: (n, c, h, w), first, shuffled, second, transposed, slope, act, exact } in &cases {
            let ([o0, k0, s0, p0], [o, k, s, p], (shuffled, transposed)) = (*first, *second, (*shuffled, *transposed));
            let what = format!("{n}x{c}x{h}x{w} into {o0} into {o}, transposed {transposed}");
            let kernel = |o: usize, c: usize, k: usize| if transposed { [c, o, k, k] } else { [o, c, k, k] };
            let normed = if shuffled { o0 / 4 } else { o0 };
            let inputs = [
                rand_tensor(&mut rng, &[*n, *c, *h, *w])?,
                rand_tensor(&mut rng, &kernel(o0, *c, k0))?,
                rand_tensor(&mut rng, &[o0])?,
                (rand_tensor(&mut rng, &[normed])? + 1.0)?,
                rand_tensor(&mut rng, &[normed])?,
                rand_tensor(&mut rng, &kernel(o, normed, k))?,
                rand_tensor(&mut rng, &[o])?,
            ];
            let run = |chained: bool| -> Result<(batch_norm::BatchNormTrain, Vec<Tensor>)> {
                let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
                let t: Vec<&Tensor> = vars.iter().map(Var::as_tensor).collect();
                let bn = conv_bn::NormArgs { gamma: t[3], beta: t[4], eps: 1e-5, slope: *slope, shuffled };
                let first = conv::Layer { w: t[1], b: t[2], geom: (s0, p0), transposed, kept: None };
                let second = conv::Layer { w: t[5], b: t[6], geom: (s, p), transposed, kept: None };
                let out = if chained {
                    conv::batch_norm_then(t[0], first, &bn, (second, *act))?.expect("the fused ops on the CPU")
                } else {
                    let mid = conv::conv_batch_norm(t[0], first, &bn)?.expect("the fused op on the CPU");
                    let y = if transposed {
                        conv::conv_transpose2d(&mid.y, t[5], t[6], s, p, *act, None)?
                    } else {
                        conv::conv2d(&mid.y, t[5], t[6], s, p, *act, None)?
                    };
                    batch_norm::BatchNormTrain { y, ..mid }
                };
                // A fixed random weight per output value, so that every one matters.
                let up = rand_tensor(&mut ChaCha8Rng::seed_from_u64(41), out.y.dims())?;
                let grads = (&out.y * &up)?.sum_all()?.backward()?;
                let grads = t.iter().map(|v| grads.get(v).expect("a gradient").clone()).collect();
                Ok((out, grads))
            };
            let (two, want) = run(false)?;
            let (one, got) = run(true)?;
            let same = |name: &str, got: &Tensor, want: &Tensor| {
                let what = format!("{what}: {name}");
                if *exact { assert_same(&what, got, want) } else { assert_close(&what, got, want) }
            };
            same("output", &one.y, &two.y)?;
            assert_same(&format!("{what}: mean"), &one.mean, &two.mean)?;
            assert_same(&format!("{what}: variance"), &one.var, &two.var)?;
            assert_eq!(one.count, two.count, "{what}: values per channel");
            for ((name, got), want) in ["x", "w", "b", "gamma", "beta", "w1", "b1"].iter().zip(&got).zip(&want) {
                same(&format!("d{name}"), got, want)?;
            }
        }
        Ok(())
    })
}

/// candle's pixel shuffle: a reshape, a permute and a copy.
fn pixel_shuffle_reference(x: &Tensor) -> Result<Tensor> {
    let (n, c4, h, w) = x.dims4()?;
    x.reshape((n, c4 / 4, 2, 2, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, c4 / 4, 2 * h, 2 * w))
}

/// The BatchNorm of a pixel shuffle as one op matches the shuffle then
/// the BatchNorm in candle ops: statistics, output and the gradients of
/// the unshuffled input, gamma and beta.
#[test]
fn batch_norm_of_a_shuffle_matches_candle() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    // (n, 4c, h, w, offset): odd sizes, 1x1 planes, a generator's shapes.
    let cases = [(3, 8, 3, 5, 0.0), (2, 4, 1, 1, 0.0), (5, 12, 4, 4, 3.0), (16, 32, 8, 8, -2.0)];
    for (n, c4, h, w, offset) in cases {
        for slope in [1.0, 0.2] {
            let what = format!("batch_norm of a shuffle {n}x{c4}x{h}x{w} slope {slope}");
            let fused = |t: &[&Tensor]| -> Result<batch_norm::BatchNormTrain> {
                Ok(batch_norm::train_shuffled(t[0], t[1], t[2], 1e-5, slope)?.expect("a fused BatchNorm on the CPU"))
            };
            let z = (rand_tensor(&mut rng, &[n, c4, h, w])? + offset)?;
            let gamma = (rand_tensor(&mut rng, &[c4 / 4])? + 1.0)?;
            let beta = rand_tensor(&mut rng, &[c4 / 4])?;
            let got = fused(&[&z, &gamma, &beta])?;
            let (_, m, v) = batch_norm_reference(&pixel_shuffle_reference(&z)?, &gamma, &beta)?;
            assert_close(&format!("{what} mean"), &got.mean, &m)?;
            assert_close(&format!("{what} var"), &got.var, &v)?;
            check(
                &Device::Cpu,
                &what,
                &[("z", z), ("gamma", gamma), ("beta", beta)],
                &mut rng,
                |t| Ok(fused(t)?.y),
                |t| activated(&batch_norm_reference(&pixel_shuffle_reference(t[0])?, t[1], t[2])?.0, slope),
            )?;
        }
    }
    Ok(())
}

/// Planes of no pixels: an empty output, as candle's ops give, not a panic.
#[test]
fn batch_norm_of_empty_planes_is_empty() -> Result<()> {
    let x = Tensor::zeros((2, 3, 0, 4), DType::F32, &Device::Cpu)?;
    let gamma = Tensor::ones(3, DType::F32, &Device::Cpu)?;
    let fused = batch_norm::train(&x, &gamma, &gamma.zeros_like()?, 1e-5, 0.2)?.expect("a fused BatchNorm on the CPU");
    assert_eq!(fused.y.dims(), x.dims());
    Ok(())
}

/// The penalty `|d(sum(y * up))/dx|^2` of a BatchNorm and the activation
/// with `slope`, in f64 through the candle-op formulation, and its gradient
/// in `x` and `gamma` by central differences.
fn penalty_grad_fd(x: &Tensor, gamma: &Tensor, beta: &Tensor, up: &Tensor, slope: f64) -> Result<(Tensor, Tensor)> {
    let f64s = |t: &Tensor| -> Result<Vec<f64>> { t.to_dtype(DType::F64)?.flatten_all()?.to_vec1() };
    let (beta, up) = (beta.to_dtype(DType::F64)?, up.to_dtype(DType::F64)?);
    let penalty = |x: &[f64], gamma: &[f64]| -> Result<f64> {
        let xv = Var::from_vec(x.to_vec(), up.dims(), &Device::Cpu)?;
        let gv = Tensor::from_slice(gamma, gamma.len(), &Device::Cpu)?;
        let y = activated(&batch_norm_reference(xv.as_tensor(), &gv, &beta)?.0, slope)?;
        let g = (y * &up)?.sum_all()?.backward()?;
        g.get(xv.as_tensor()).expect("dx").sqr()?.sum_all()?.to_scalar::<f64>()
    };
    let (mut xs, mut gs) = (f64s(x)?, f64s(gamma)?);
    let h = 1e-5;
    let mut central = |which: bool, i: usize| -> Result<f64> {
        let mut at = |d: f64| -> Result<f64> {
            if which {
                xs[i] += d
            } else {
                gs[i] += d
            }
            let p = penalty(&xs, &gs);
            if which {
                xs[i] -= d
            } else {
                gs[i] -= d
            }
            p
        };
        Ok((at(h)? - at(-h)?) / (2.0 * h))
    };
    let dx: Vec<f64> = (0..x.elem_count()).map(|i| central(true, i)).collect::<Result<_>>()?;
    let dg: Vec<f64> = (0..gamma.elem_count()).map(|i| central(false, i)).collect::<Result<_>>()?;
    let dx = Tensor::from_vec(dx, x.dims(), &Device::Cpu)?.to_dtype(DType::F32)?;
    Ok((dx, Tensor::from_vec(dg, gamma.dims(), &Device::Cpu)?.to_dtype(DType::F32)?))
}

#[test]
fn batch_norm_second_order_matches_finite_differences() -> Result<()> {
    check_batch_norm_second_order(&Device::Cpu)
}

/// The gradient penalty's gradient through the fused BatchNorm (and
/// activation) on `device` matches finite differences on the CPU.
fn check_batch_norm_second_order(device: &Device) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for ((n, c, h, w), slope) in [((5, 3, 4, 4), 1.0), ((3, 2, 3, 1), 1.0), ((5, 3, 4, 4), 0.2)] {
        let what = format!("batch_norm {n}x{c}x{h}x{w} slope {slope} on {device:?}");
        let x = rand_tensor(&mut rng, &[n, c, h, w])?;
        let gamma = (rand_tensor(&mut rng, &[c])? + 1.0)?;
        let beta = rand_tensor(&mut rng, &[c])?;
        let up = rand_tensor(&mut rng, &[n, c, h, w])?;
        let (xv, gv) = (Var::from_tensor(&x.to_device(device)?)?, Var::from_tensor(&gamma.to_device(device)?)?);
        let fused = batch_norm::train(xv.as_tensor(), gv.as_tensor(), &beta.to_device(device)?, 1e-5, slope)?
            .expect("a fused BatchNorm on this device");
        let g = (&fused.y * &up.to_device(device)?)?.sum_all()?.backward()?;
        let second = g.get(xv.as_tensor()).expect("dx").sqr()?.sum_all()?.backward()?;
        let (want_x, want_gamma) = penalty_grad_fd(&x, &gamma, &beta, &up, slope)?;
        let got = |t: &Var, d: &str| second.get(t.as_tensor()).expect(d).to_device(&Device::Cpu);
        assert_close(&format!("{what} d2x"), &got(&xv, "d2x")?, &want_x)?;
        assert_close(&format!("{what} d2gamma"), &got(&gv, "d2gamma")?, &want_gamma)?;
    }
    Ok(())
}

/// The second order of the BatchNorm of a shuffle (whose backward runs on
/// views of its input and the unshuffled gradient) matches finite
/// differences of the penalty on the shuffled tensor, unshuffled: the
/// shuffle only moves values.
#[test]
fn batch_norm_of_a_shuffle_second_order_matches_finite_differences() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for ((n, c4, h, w), slope) in [((3, 8, 2, 3), 1.0), ((4, 4, 3, 3), 0.2)] {
        let what = format!("batch_norm of a shuffle {n}x{c4}x{h}x{w} slope {slope}");
        let z = Var::from_tensor(&rand_tensor(&mut rng, &[n, c4, h, w])?)?;
        let gamma = Var::from_tensor(&(rand_tensor(&mut rng, &[c4 / 4])? + 1.0)?)?;
        let beta = rand_tensor(&mut rng, &[c4 / 4])?;
        let up = rand_tensor(&mut rng, &[n, c4 / 4, 2 * h, 2 * w])?;
        let (zt, gt) = (z.as_tensor(), gamma.as_tensor());
        let fused = batch_norm::train_shuffled(zt, gt, &beta, 1e-5, slope)?.expect("fast path on the CPU");
        let g = (&fused.y * &up)?.sum_all()?.backward()?;
        let second = g.get(zt).expect("dz").sqr()?.sum_all()?.backward()?;
        let (want_x, want_gamma) = penalty_grad_fd(&pixel_shuffle_reference(zt)?, gt, &beta, &up, slope)?;
        // The inverse permutation of `pixel_shuffle_reference`.
        let want_z = want_x.reshape((n, c4 / 4, h, 2, w, 2))?.permute((0, 1, 3, 5, 2, 4))?.reshape((n, c4, h, w))?;
        assert_close(&format!("{what} d2z"), second.get(zt).expect("d2z"), &want_z)?;
        assert_close(&format!("{what} d2gamma"), second.get(gt).expect("d2gamma"), &want_gamma)?;
    }
    Ok(())
}

/// A frozen D in a G step: the weights are plain tensors and only the input
/// wants a gradient. The fast ops return none for the weights (candle's
/// would spend a full weight gradient there) and the same input gradient.
/// And the other way round, D's first layer on real images: only the
/// weights want gradients.
#[test]
fn frozen_weights_get_no_gradient() -> Result<()> {
    check_frozen_weights(&Device::Cpu)
}

/// [`frozen_weights_get_no_gradient`] with the fast ops on `device`.
fn check_frozen_weights(device: &Device) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let x = rand_tensor(&mut rng, &[3, 4, 8, 8])?;
    let (w, wt) = (rand_tensor(&mut rng, &[5, 4, 4, 4])?, rand_tensor(&mut rng, &[5, 4, 4, 4])?);
    let (b, bt) = (rand_tensor(&mut rng, &[5])?, rand_tensor(&mut rng, &[4])?);
    let (gamma, beta) = ((rand_tensor(&mut rng, &[5])? + 1.0)?, rand_tensor(&mut rng, &[5])?);
    let fast = |t: &[Tensor]| -> Result<Tensor> {
        // The activation lets the bias reach past BatchNorm's mean.
        let y = conv::conv2d(&t[0], &t[1], &t[2], 2, 1, Act::Leaky(0.2), None)?;
        let y = batch_norm::train(&y, &t[5], &t[6], 1e-5, 0.2)?.expect("a fast path").y;
        conv::conv_transpose2d(&y, &t[3], &t[4], 2, 1, Act::Identity, None)
    };
    let reference = |t: &[Tensor]| -> Result<Tensor> {
        let y = activated(&add_bias(t[0].conv2d(&t[1], 1, 2, 1, 1)?, &t[2])?, 0.2)?;
        let y = activated(&batch_norm_reference(&y, &t[5], &t[6])?.0, 0.2)?;
        add_bias(y.conv_transpose2d(&t[3], 1, 0, 2, 1)?, &t[4])
    };
    let names = ["x", "w", "b", "wt", "bt", "gamma", "beta"];
    let values = [x, w, b, wt, bt, gamma, beta];
    let up = rand_tensor(&mut rng, &[3, 4, 8, 8])?;
    // Which arguments take gradients: the input alone, then all but it.
    for learns in [&[0][..], &[1, 2, 3, 4, 5, 6]] {
        let args = |on: &Device| -> Result<Vec<Tensor>> {
            let on_device = values.iter().map(|v| v.to_device(on)).collect::<Result<Vec<_>>>()?;
            let as_var = |(i, v): (usize, Tensor)| {
                if learns.contains(&i) { Ok(Var::from_tensor(&v)?.as_tensor().clone()) } else { Ok(v) }
            };
            on_device.into_iter().enumerate().map(as_var).collect()
        };
        let (fa, ra) = (args(device)?, args(&Device::Cpu)?);
        let gf = (fast(&fa)? * up.to_device(device)?)?.sum_all()?.backward()?;
        let gr = (reference(&ra)? * &up)?.sum_all()?.backward()?;
        for (i, name) in names.iter().enumerate() {
            let what = format!("frozen stack on {device:?}, learning {learns:?}: d{name}");
            match (learns.contains(&i), gf.get(&fa[i])) {
                (true, Some(got)) => {
                    assert_close(&what, &got.to_device(&Device::Cpu)?, gr.get(&ra[i]).expect("reference grad"))?
                }
                (learns, got) => {
                    assert!(!learns && got.is_none(), "{what}: learns {learns}, gradient {}", got.is_some())
                }
            }
        }
    }
    Ok(())
}

/// Scale and shift, alone (slope 1) and with the activation it fuses; its
/// shift gradient is the convolutions' bias gradient, so the shapes cover
/// planes of one value, many planes per job, and planes longer than a job.
#[test]
fn scale_shift_matches_candle() -> Result<()> {
    in_each_pool(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let shapes = [(2, 3, 4, 4), (5, 7, 3, 1), (1, 1, 1, 1), (64, 9, 4, 4), (2, 3, 130, 130)];
        for ((n, c, h, w), slope) in shapes.into_iter().zip([1.0, 0.0, 1.0, 0.2, 0.0]) {
            let x = rand_tensor(&mut rng, &[n, c, h, w])?;
            let (a, b) = (rand_tensor(&mut rng, &[c])?, rand_tensor(&mut rng, &[c])?);
            let per_channel = |t: &Tensor| t.reshape((1, (), 1, 1));
            check(
                &Device::Cpu,
                &format!("scale_shift {n}x{c}x{h}x{w} slope {slope}"),
                &[("x", x), ("scale", a), ("shift", b)],
                &mut rng,
                |t| bias::scale_shift(t[0], t[1], t[2], slope),
                |t| activated(&t[0].broadcast_mul(&per_channel(t[1])?)?.broadcast_add(&per_channel(t[2])?)?, slope),
            )?;
        }
        Ok(())
    })
}

/// candle's LeakyReLU, as the layers wrote it before the fused op.
fn leaky_reference(v: &Tensor, slope: f64) -> Result<Tensor> {
    if slope == 0.0 { v.relu() } else { v.maximum(&v.affine(slope, 0.0)?) }
}

/// [`leaky_reference`], where slope 1 (the fused ops' "no activation") is `v`.
fn activated(v: &Tensor, slope: f64) -> Result<Tensor> {
    if slope == 1.0 { Ok(v.clone()) } else { leaky_reference(v, slope) }
}

/// `leaky(x * s)`: the product gives the op's input a second tensor to
/// differentiate against, as a layer's weights would.
/// LeakyReLU on `device` matches candle's `maximum` formulation on the CPU.
fn check_leaky_relu(device: &Device) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for shape in [[2, 3, 4, 4], [1, 1, 1, 1], [3, 5, 7, 9], [4, 8, 33, 65]] {
        for slope in [0.0, 0.2] {
            let x = rand_tensor(&mut rng, &shape)?;
            let s = rand_tensor(&mut rng, &shape)?;
            check(
                device,
                &format!("leaky_relu({slope}) {shape:?} on {device:?}"),
                &[("x", x), ("s", s)],
                &mut rng,
                |t| activation::leaky_relu(&(t[0] * t[1])?, slope),
                |t| leaky_reference(&(t[0] * t[1])?, slope),
            )?;
        }
    }
    Ok(())
}

#[test]
fn leaky_relu_matches_candle() -> Result<()> {
    in_each_pool(|| check_leaky_relu(&Device::Cpu))
}

/// The gradient of `|d(sum(leaky(x * s) * up))/dx|^2` in `s`: what the
/// WGAN gradient penalty differentiates, through the op's backward.
#[test]
fn leaky_relu_second_order_matches_candle() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for slope in [0.0, 0.2] {
        let x = Var::from_tensor(&rand_tensor(&mut rng, &[3, 4, 5, 6])?)?;
        let s = Var::from_tensor(&rand_tensor(&mut rng, &[3, 4, 5, 6])?)?;
        let up = rand_tensor(&mut rng, &[3, 4, 5, 6])?;
        let fast = penalty_grad(&x, &s, &up, &|x| activation::leaky_relu(&(x * s.as_tensor())?, slope))?;
        let want = penalty_grad(&x, &s, &up, &|x| leaky_reference(&(x * s.as_tensor())?, slope))?;
        assert_close(&format!("leaky_relu({slope}) d2s"), &fast, &want)?;
    }
    Ok(())
}

/// The gradient in `wrt` of `|d(sum(f(x) * up))/dx|²`, what the WGAN
/// gradient penalty differentiates; checked not to be trivially zero.
fn penalty_grad(x: &Var, wrt: &Var, up: &Tensor, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let g = (f(x.as_tensor())? * up)?.sum_all()?.backward()?;
    let penalty = g.get(x.as_tensor()).expect("dx").sqr()?.sum_all()?;
    let grad = penalty.backward()?.get(wrt.as_tensor()).expect("second-order gradient").clone();
    assert!(grad.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "the second-order gradient is not trivially zero");
    Ok(grad)
}

/// The WGAN gradient penalty differentiates D twice, through its first
/// layer: a convolution with its LeakyReLU fused into its op. The gradient
/// of `|d(sum(conv(x) * up))/dx|²` in the weights matches that of the same
/// convolution followed by LeakyReLU as an op of its own. (Only D is
/// differentiated twice; candle detaches each gradient between two ops, so
/// through a separate tanh the second-order term of tanh's slope would be
/// dropped, where the fused op keeps it.)
#[test]
fn fused_leaky_relu_second_order_matches_separate_op() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for slope in [0.0, 0.2] {
        let x = Var::from_tensor(&rand_tensor(&mut rng, &[3, 4, 8, 8])?)?;
        let w = Var::from_tensor(&rand_tensor(&mut rng, &[6, 4, 4, 4])?)?;
        let b = rand_tensor(&mut rng, &[6])?;
        let up = rand_tensor(&mut rng, &[3, 6, 4, 4])?;
        let conv = |x: &Tensor, act| conv::conv2d(x, w.as_tensor(), &b, 2, 1, act, None);
        let fused = penalty_grad(&x, &w, &up, &|x| conv(x, Act::Leaky(slope)))?;
        let separate = penalty_grad(&x, &w, &up, &|x| activation::leaky_relu(&conv(x, Act::Identity)?, slope))?;
        assert_close(&format!("conv + leaky_relu({slope}) d2w"), &fused, &separate)?;
    }
    Ok(())
}

/// tanh matches candle's, values and gradients, on a tensor larger than one
/// rayon chunk, and so does the gradient of `|d(sum(tanh(x * s) * up))/dx|²`
/// in `s`, as for LeakyReLU. With `CANDLE_GRAD_DO_NOT_DETACH=1` candle
/// also differentiates that penalty in `x`, through the op's backward
/// (`TanhGrad`'s own backward), and the test compares that too.
#[test]
fn tanh_matches_candle() -> Result<()> {
    in_each_pool(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(19);
        for shape in [[1, 1, 1, 1], [3, 3, 7, 9], [2, 3, 130, 131]] {
            let x = (rand_tensor(&mut rng, &shape)? * 3.0)?;
            let s = rand_tensor(&mut rng, &shape)?;
            let what = format!("tanh {shape:?}");
            check(
                &Device::Cpu,
                &what,
                &[("x", x), ("s", s)],
                &mut rng,
                |t| activation::tanh(&(t[0] * t[1])?),
                |t| (t[0] * t[1])?.tanh(),
            )?;
        }
        let x = Var::from_tensor(&rand_tensor(&mut rng, &[3, 4, 5, 6])?)?;
        let s = Var::from_tensor(&rand_tensor(&mut rng, &[3, 4, 5, 6])?)?;
        let up = rand_tensor(&mut rng, &[3, 4, 5, 6])?;
        let d2 = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<(Option<Tensor>, Tensor)> {
            let y = f(&(x.as_tensor() * s.as_tensor())?)?;
            let g = (y * &up)?.sum_all()?.backward()?;
            let penalty = g.get(x.as_tensor()).expect("dx").sqr()?.sum_all()?.backward()?;
            Ok((penalty.get(x.as_tensor()).cloned(), penalty.get(s.as_tensor()).expect("d2s").clone()))
        };
        let (fast, want) = (d2(&activation::tanh)?, d2(&Tensor::tanh)?);
        assert_close("tanh d2s", &fast.1, &want.1)?;
        match (fast.0, want.0) {
            (Some(f), Some(w)) => assert_close("tanh d2x", &f, &w),
            (f, w) => {
                assert_eq!(f.is_some(), w.is_some(), "d2x exists on one side only");
                Ok(())
            }
        }
    })
}

/// Three Adam steps in place against the same steps written with candle
/// ops, from random moments, on a tensor larger than one rayon chunk.
/// Three Adam steps of the in-place ops on `device` match candle's ops on the CPU.
fn check_adam(device: &Device) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let shape = [70_001];
    let (p, m) = (rand_tensor(&mut rng, &shape)?, rand_tensor(&mut rng, &shape)?);
    let v = rand_tensor(&mut rng, &shape)?.sqr()?;
    let (fp, fm, fv) = (p.to_device(device)?.copy()?, m.to_device(device)?.copy()?, v.to_device(device)?.copy()?);
    let (mut rp, mut rm, mut rv) = (p, m, v);
    let (lr, b1, b2, eps) = (2e-4, 0.5, 0.999, 1e-8);
    for t in 1..=3 {
        let g = rand_tensor(&mut rng, &shape)?;
        let (c1, c2) = (1.0 - f64::powi(b1, t), 1.0 - f64::powi(b2, t));
        let step = adam::Step { lr, beta1: b1, beta2: b2, c1, c2, eps };
        assert!(adam::update(&fp, &fm, &fv, &g.to_device(device)?, step)?, "in-place Adam on {device:?}");
        rm = ((&rm * b1)? + (&g * (1.0 - b1))?)?;
        rv = ((&rv * b2)? + (g.sqr()? * (1.0 - b2))?)?;
        let update = ((&rm / c1)? / ((&rv / c2)?.sqrt()? + eps)?)?;
        rp = (rp - (update * lr)?)?;
    }
    for (name, got, want) in [("p", &fp, &rp), ("m", &fm, &rm), ("v", &fv, &rv)] {
        assert_close(&format!("adam {name} on {device:?}"), &got.to_device(&Device::Cpu)?, want)?;
    }
    Ok(())
}

/// The gradient norm's sum of squares on `device` against candle's on the
/// CPU: a tensor of one value, one of more values than its parts take
/// blocks, and a strided view.
fn check_sum_of_squares(device: &Device) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let ts = [rand_tensor(&mut rng, &[1])?, rand_tensor(&mut rng, &[3_000_007])?, rand_tensor(&mut rng, &[5, 6])?.t()?];
    let on_device = ts.iter().map(|t| t.to_device(device)).collect::<Result<Vec<_>>>()?;
    let got = reduce::sum_of_squares(&on_device.iter().collect::<Vec<_>>())?.expect("a fast path");
    let want: f32 = ts.iter().map(|t| t.sqr()?.sum_all()?.to_scalar::<f32>()).sum::<Result<f32>>()?;
    assert!((got - f64::from(want)).abs() <= 1e-4 * got, "sum of squares on {device:?}: {got} vs {want}");
    Ok(())
}

#[test]
fn sum_of_squares_matches_candle() -> Result<()> {
    check_sum_of_squares(&Device::Cpu)
}

#[test]
fn adam_update_matches_candle_ops() -> Result<()> {
    check_adam(&Device::Cpu)
}

// A generator's projection into its BatchNorm as one op computes the
// matrix product, its reshape and the BatchNorm op: within the tolerance
// (the products' summation orders differ), gradients of every input too.
#[test]
fn linear_batch_norm_matches_the_two_ops() -> Result<()> {
    // (n, din, (c, h, w), slope)
    let cases = [(6, 10, (8, 4, 4), 0.0), (3, 7, (5, 3, 2), 0.2), (2, 4, (3, 1, 1), 1.0)];
    in_each_pool(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(71);
        for (n, din, (c, h, w), slope) in cases {
            let what = format!("{n}x{din} into {c}x{h}x{w}");
            let inputs = [
                rand_tensor(&mut rng, &[n, din])?,
                rand_tensor(&mut rng, &[c * h * w, din])?,
                rand_tensor(&mut rng, &[c * h * w])?,
                (rand_tensor(&mut rng, &[c])? + 1.0)?,
                rand_tensor(&mut rng, &[c])?,
            ];
            let up = rand_tensor(&mut rng, &[n, c, h, w])?;
            let run = |fused: bool| -> Result<(batch_norm::BatchNormTrain, Vec<Tensor>)> {
                let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
                let t: Vec<&Tensor> = vars.iter().map(Var::as_tensor).collect();
                let out = if fused {
                    let bn = conv_bn::NormArgs { gamma: t[3], beta: t[4], eps: 1e-5, slope, shuffled: false };
                    dense::linear_batch_norm(t[0], (t[1], t[2]), (c, h, w), &bn)?.expect("the fused op on the CPU")
                } else {
                    let z = t[0].matmul(&t[1].t()?)?.broadcast_add(t[2])?.reshape((n, c, h, w))?;
                    batch_norm::train(&z, t[3], t[4], 1e-5, slope)?.expect("the CPU BatchNorm op")
                };
                let grads = (&out.y * &up)?.sum_all()?.backward()?;
                Ok((out, t.iter().map(|v| grads.get(v).expect("a gradient").clone()).collect()))
            };
            let ((one, got), (two, want)) = (run(true)?, run(false)?);
            assert_close(&format!("{what}: output"), &one.y, &two.y)?;
            assert_close(&format!("{what}: mean"), &one.mean, &two.mean)?;
            assert_close(&format!("{what}: variance"), &one.var, &two.var)?;
            assert_eq!(one.count, n * h * w, "{what}: values per channel");
            for ((name, got), want) in ["x", "w", "b", "gamma", "beta"].iter().zip(&got).zip(&want) {
                assert_close(&format!("{what}: d{name}"), got, want)?;
            }
        }
        Ok(())
    })
}

/// Whole networks in training, their layers fused where they can and run
/// apart (`conv_bn::twice_differentiable`): D's verdicts on G's images and
/// the gradients of every weight of both agree, for each upsampling kind
/// and with spectral norm, so the networks hand each chain the right
/// layers, kernels and activations. The head's matrix product differs in
/// summation order only.
#[test]
fn fused_networks_compute_what_their_layers_compute_apart() -> Result<()> {
    use ganscope::gan::config::{NormKind, Upsample};
    use ganscope::gan::params::{FreshParams, Role};
    use ganscope::gan::{Discriminator, Generator, ModelConfig, Pass};

    let kinds = [Upsample::ConvTranspose, Upsample::PixelShuffle, Upsample::NearestConv];
    for (upsample, spectral_norm) in kinds.into_iter().map(|u| (u, false)).chain([(Upsample::ConvTranspose, true)]) {
        let cfg = ModelConfig {
            resolution: 32,
            z_dim: 8,
            g_width: 16,
            d_width: 8,
            g_norm: NormKind::Batch,
            d_norm: NormKind::Batch,
            upsample,
            spectral_norm,
            ..Default::default()
        };
        let what = format!("{upsample:?}, spectral norm {spectral_norm}");
        let mut rng = ChaCha8Rng::seed_from_u64(53);
        let mut params = FreshParams::new(&mut rng, &Device::Cpu);
        let (g, d) = (Generator::new(&cfg, &mut params)?, Discriminator::new(&cfg, &mut params)?);
        let (vars, buffers): (Vec<_>, Vec<_>) =
            params.vars.into_iter().partition(|(_, _, role)| *role == Role::Trainable);
        // Every weight away from its initial value (biases start at zero).
        let mut noise = ChaCha8Rng::seed_from_u64(67);
        for (_, v, _) in &vars {
            v.set(&(v.as_tensor() + (rand_tensor(&mut noise, v.dims())? * 0.1)?)?)?;
        }
        // The buffers as they start: each forward moves the running
        // statistics and spectral norm's vectors, whose one power iteration
        // per pass sets the weights the pass uses.
        let start: Vec<(Var, Tensor)> =
            buffers.into_iter().map(|(_, v, _)| Ok((v.clone(), v.as_tensor().copy()?))).collect::<Result<_>>()?;
        let z = rand_tensor(&mut ChaCha8Rng::seed_from_u64(59), &[4, 8])?;
        let up = rand_tensor(&mut ChaCha8Rng::seed_from_u64(61), &[4])?;
        let run = || -> Result<(Tensor, Vec<Tensor>)> {
            for (v, t) in &start {
                v.set(t)?;
            }
            let fake = g.forward(&z, None, &mut Pass { train: true, dropout: false, rng: None })?;
            let logits = d.forward(&fake, None, true)?.logits;
            let grads = (&logits * &up)?.sum_all()?.backward()?;
            let grads =
                vars.iter().map(|(name, v, _)| grads.get(v).cloned().unwrap_or_else(|| panic!("{name}: no gradient")));
            Ok((logits, grads.collect()))
        };
        // On a worker, where G runs its layers too: the switch to layers
        // apart holds for the thread that sets it.
        let pool = ThreadPoolBuilder::new().num_threads(2).build().map_err(candle_core::Error::wrap)?;
        let (fused, fused_grads) = pool.install(run)?;
        let (apart, apart_grads) = pool.install(|| conv_bn::twice_differentiable(run))?;
        assert_close(&format!("{what}: logits"), &fused, &apart)?;
        for ((name, _, _), (got, want)) in vars.iter().zip(fused_grads.iter().zip(&apart_grads)) {
            assert_close(&format!("{what}: d {name}"), got, want)?;
        }
    }
    Ok(())
}
