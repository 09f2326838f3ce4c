//! D's targets: soft labels drawn from ranges and occasional flips (tip 6).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Targets for one batch: each drawn uniformly from `range`, then, with
/// probability `flip`, replaced by a draw from `other` (a noisy label).
/// Returns the targets and how many were flipped.
pub fn targets(rng: &mut ChaCha8Rng, n: usize, range: [f64; 2], other: [f64; 2], flip: f64) -> (Vec<f32>, usize) {
    let draw = |rng: &mut ChaCha8Rng, [lo, hi]: [f64; 2]| (if hi > lo { rng.random_range(lo..=hi) } else { lo }) as f32;
    let mut flipped = 0;
    let t = (0..n)
        .map(|_| {
            if flip > 0.0 && rng.random_bool(flip) {
                flipped += 1;
                draw(rng, other)
            } else {
                draw(rng, range)
            }
        })
        .collect();
    (t, flipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn smoothed_targets_fall_in_their_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (t, flipped) = targets(&mut rng, 10_000, [0.7, 1.2], [0.0, 0.3], 0.0);
        assert_eq!(flipped, 0);
        assert!(t.iter().all(|v| (0.7..=1.2).contains(v)));
        let mean = t.iter().sum::<f32>() / t.len() as f32;
        assert!((mean - 0.95).abs() < 0.01, "uniform over the range: mean {mean}");
    }

    #[test]
    fn flips_happen_at_the_configured_rate() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (t, flipped) = targets(&mut rng, 20_000, [1.0, 1.0], [0.0, 0.0], 0.05);
        let zeros = t.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros, flipped);
        let rate = flipped as f64 / 20_000.0;
        assert!((rate - 0.05).abs() < 0.006, "flip rate {rate}");
    }
}
