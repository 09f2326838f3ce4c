//! Every fast CPU op matches candle's reference op in values and gradients,
//! on random shapes including odd sizes. Tolerance: 1e-4 relative to the
//! largest magnitude (f32 sums of up to a few thousand terms, in a different
//! order).

use candle_core::{Device, Result, Tensor, Var};
use ganscope::ops::conv;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// Values and both gradients of `fast` and `reference` agree, with a random
/// upstream gradient so every output element matters.
fn check(
    what: &str,
    x: &Tensor,
    w: &Tensor,
    rng: &mut ChaCha8Rng,
    fast: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    reference: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<()> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let yf = fast(xv.as_tensor(), wv.as_tensor())?;
    let yr = reference(xv.as_tensor(), wv.as_tensor())?;
    assert_close(&format!("{what} forward"), &yf, &yr)?;
    let up = rand_tensor(rng, yr.dims())?;
    let gf = (yf * &up)?.sum_all()?.backward()?;
    let gr = (yr * &up)?.sum_all()?.backward()?;
    for (name, v) in [("dx", &xv), ("dw", &wv)] {
        let (a, b) = (gf.get(v).expect("fast grad"), gr.get(v).expect("reference grad"));
        assert_close(&format!("{what} {name}"), a, b)?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_candle() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // (n, c, h, w, o, k, stride, pad): DCGAN's shapes plus odd ones.
    let cases = [
        (2, 3, 8, 8, 4, 4, 2, 1),
        (3, 5, 7, 9, 2, 3, 1, 1),
        (1, 1, 5, 5, 3, 3, 2, 0),
        (4, 6, 13, 11, 5, 4, 2, 1),
        (2, 2, 6, 6, 3, 1, 1, 0),
    ];
    for (n, c, h, w, o, k, s, p) in cases {
        let x = rand_tensor(&mut rng, &[n, c, h, w])?;
        let wt = rand_tensor(&mut rng, &[o, c, k, k])?;
        check(
            &format!("conv2d {n}x{c}x{h}x{w} k{k} s{s} p{p}"),
            &x,
            &wt,
            &mut rng,
            |x, w| conv::conv2d(x, w, s, p),
            |x, w| x.conv2d(w, p, s, 1, 1),
        )?;
    }
    Ok(())
}

#[test]
fn conv_transpose2d_matches_candle() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let cases = [
        (2, 4, 4, 4, 3, 4, 2, 1),
        (3, 3, 5, 7, 2, 4, 2, 1),
        (1, 2, 7, 7, 1, 3, 1, 1),
        (2, 5, 3, 3, 4, 3, 2, 0),
        (2, 3, 6, 5, 2, 1, 1, 0),
    ];
    for (n, c, h, w, o, k, s, p) in cases {
        let x = rand_tensor(&mut rng, &[n, c, h, w])?;
        let wt = rand_tensor(&mut rng, &[c, o, k, k])?;
        check(
            &format!("conv_transpose2d {n}x{c}x{h}x{w} k{k} s{s} p{p}"),
            &x,
            &wt,
            &mut rng,
            |x, w| conv::conv_transpose2d(x, w, s, p),
            |x, w| x.conv_transpose2d(w, p, 0, s, 1),
        )?;
    }
    Ok(())
}
