//! `ganscope bench --ops`: the fast ops record their wall time per op and
//! argument shapes while recording is on, and nothing while it is off.
//! A test binary of its own: recording is process-wide.

use candle_core::{Device, Result, Tensor, Var};
use ganscope::ops::activation::Act;
use ganscope::ops::{conv, profile};

/// A convolution's forward and backward: the forward op, then the input
/// gradient (a transposed convolution) and the kernel gradient.
fn conv_step() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, 9, 7), &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (6, 5, 3, 3), &dev)?)?;
    let b = Tensor::zeros(6, candle_core::DType::F32, &dev)?;
    let y = conv::conv2d(x.as_tensor(), w.as_tensor(), &b, 1, 1, Act::Identity, None)?;
    y.sqr()?.sum_all()?.backward()?;
    Ok(())
}

#[test]
fn ops_record_their_time_only_while_recording() -> Result<()> {
    profile::start();
    conv_step()?;
    conv_step()?;
    let rows = profile::stop();
    let row = |op: &str| rows.iter().find(|r| r.op == op).unwrap_or_else(|| panic!("no row {op} in {rows:?}"));
    let forward = row("ganscope-conv2d-bias [3, 5, 9, 7] [6, 5, 3, 3] [6]");
    let input_grad = row("ganscope-conv-transpose2d [3, 6, 9, 7] [6, 5, 3, 3]");
    let kernel_grad = row("ganscope-conv2d-weight-grad [3, 5, 9, 7] [3, 6, 9, 7]");
    for r in [forward, input_grad, kernel_grad] {
        assert_eq!(r.calls, 2, "{r:?}");
        assert!(!r.total.is_zero(), "{r:?}");
    }
    assert!(rows.windows(2).all(|w| w[0].total >= w[1].total), "longest first: {rows:?}");

    conv_step()?;
    let rows = profile::stop();
    assert!(rows.is_empty(), "recorded while off: {rows:?}");
    Ok(())
}
