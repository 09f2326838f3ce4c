//! Whole-tensor reductions the trainer takes every step: the squared norm
//! of the gradients.

use candle_core::{Result, Storage, Tensor};
use rayon::prelude::*;
use wide::f32x8;

use super::{CHUNK, fast, slice};

/// Σ x² over every value of `ts`, when all are f32 on the CPU or all on
/// a CUDA device (`cuda::sum_of_squares`); None otherwise (the caller then
/// uses candle's ops).
///
/// Why: `sqr()?.sum_all()` per gradient wrote a full squared copy of it
/// and summed that on one thread while the pool's others waited, 0.5-0.8
/// ms of a two-thread 32 px pixel-shuffle step (~100 ms). Here chunks of
/// 32K values (`CHUNK`) are summed in parallel, each in f32 lanes, and the
/// chunks' sums added in order in f64, so the result does not depend on
/// the thread count.
pub fn sum_of_squares(ts: &[&Tensor]) -> Result<Option<f64>> {
    #[cfg(feature = "cuda")]
    if super::fast_cuda(ts) {
        return super::cuda::sum_of_squares(ts).map(Some);
    }
    if !fast(ts) {
        return Ok(None);
    }
    let mut total = 0f64;
    for t in ts {
        let t = t.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("sum of squares: a tensor left the CPU") };
        let chunks: Vec<f64> = slice(cpu, layout, "sum of squares")?.par_chunks(CHUNK).map(squares).collect();
        total += chunks.iter().sum::<f64>();
    }
    Ok(Some(total))
}

/// Σ x² over `v`, eight lanes at a time.
fn squares(v: &[f32]) -> f64 {
    let mut eights = v.chunks_exact(8);
    let lanes = eights.by_ref().fold(f32x8::ZERO, |acc, e| {
        let e = f32x8::new(e.try_into().expect("chunks of eight"));
        acc + e * e
    });
    let rest: f32 = eights.remainder().iter().map(|x| x * x).sum();
    f64::from(lanes.reduce_add()) + f64::from(rest)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::sum_of_squares;

    #[test]
    fn sum_of_squares_matches_candle_over_several_tensors() -> candle_core::Result<()> {
        // Lengths off the lanes and over a chunk, and a strided view.
        let a = Tensor::randn(0f32, 1.0, (3, 7), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 2.0, super::CHUNK + 13, &Device::Cpu)?;
        let c = Tensor::randn(0f32, 1.0, (5, 6), &Device::Cpu)?.t()?;
        let ours = sum_of_squares(&[&a, &b, &c])?.expect("f32 on the CPU");
        let candle: f32 =
            [&a, &b, &c].iter().map(|t| t.sqr()?.sum_all()?.to_scalar::<f32>()).sum::<candle_core::Result<f32>>()?;
        assert!((ours - f64::from(candle)).abs() <= 1e-4 * ours, "{ours} vs {candle}");
        assert_eq!(sum_of_squares(&[])?, Some(0.0));
        Ok(())
    }

    #[test]
    fn sum_of_squares_leaves_other_dtypes_to_candle() -> candle_core::Result<()> {
        let x = Tensor::ones(4, candle_core::DType::F64, &Device::Cpu)?;
        assert_eq!(sum_of_squares(&[&x])?, None);
        Ok(())
    }
}
