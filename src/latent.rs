//! Latent vectors: sphere sampling from a seed, slerp and lerp, blends of
//! several anchors, and keyframe paths (open or looped).
//!
//! Pure `f32` slice math, no tensors: the explorer, the exporter and the CLI
//! all compute latents here, so the app and `ganscope interpolate` produce the
//! same numbers bit for bit.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// How latents are drawn from a seed (GANHACKS tip 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Prior {
    /// `z = normalize(N(0, I)) * sqrt(dim)`: on the sphere where almost all
    /// of the Gaussian's mass lives in high dimension.
    #[default]
    Sphere,
    /// Plain `N(0, I)` samples.
    Gaussian,
}

/// How two latents are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Along the great circle; the norm is interpolated linearly, so two
    /// sphere latents give a path that never leaves the sphere.
    #[default]
    Slerp,
    /// The straight chord, which dips toward the origin between anchors.
    Lerp,
}

impl Mode {
    /// Both modes, in the order the explorer shows them.
    pub const ALL: [Mode; 2] = [Mode::Slerp, Mode::Lerp];

    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Slerp => "slerp",
            Mode::Lerp => "lerp",
        }
    }
}

/// A latent from `seed`. The same seed gives the same vector on every
/// platform: ChaCha8 is portable and the normal sampler works in f64 before
/// the one rounding to f32.
pub fn from_seed(seed: u64, dim: usize, prior: Prior) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let raw: Vec<f64> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
    let scale = match prior {
        Prior::Gaussian => 1.0,
        Prior::Sphere => {
            let n = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
            if n > 0.0 { (dim as f64).sqrt() / n } else { 1.0 }
        }
    };
    raw.iter().map(|v| (v * scale) as f32).collect()
}

/// Euclidean norm.
pub fn norm(z: &[f32]) -> f32 {
    z.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt() as f32
}

/// Straight-line interpolation `(1 - t) a + t b`; endpoints are exact.
pub fn lerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    if t == 1.0 {
        return b.to_vec();
    }
    a.iter().zip(b).map(|(x, y)| x + (y - x) * t).collect()
}

/// Below this angle (radians) slerp falls back to lerp: the two are equal to
/// f32 precision there and slerp's `1 / sin` would amplify rounding.
const PARALLEL_EPS: f64 = 1e-4;

/// Spherical interpolation along the great circle from `a` to `b`.
///
/// The direction turns at a constant angular speed and the norm goes linearly
/// from |a| to |b| (constant for sphere latents). Endpoints are returned
/// exactly. Nearly parallel endpoints fall back to lerp. Antipodal endpoints
/// have no unique great circle: we turn through the plane spanned by `a` and
/// the coordinate axis least aligned with it, so the result is deterministic.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    if t == 0.0 {
        return a.to_vec();
    }
    if t == 1.0 {
        return b.to_vec();
    }
    let (na, nb) = (norm(a) as f64, norm(b) as f64);
    if na == 0.0 || nb == 0.0 {
        return lerp(a, b, t);
    }
    let ua: Vec<f64> = a.iter().map(|v| *v as f64 / na).collect();
    let mut ub: Vec<f64> = b.iter().map(|v| *v as f64 / nb).collect();
    let dot = ua.iter().zip(&ub).map(|(x, y)| x * y).sum::<f64>().clamp(-1.0, 1.0);
    let mut omega = dot.acos();
    if omega < PARALLEL_EPS {
        return lerp(a, b, t);
    }
    if std::f64::consts::PI - omega < PARALLEL_EPS {
        // Antipodal: pick the half-way direction ourselves and slerp in two
        // quarter turns through it.
        let mid = perpendicular(&ua);
        ub = mid;
        omega = std::f64::consts::FRAC_PI_2;
        let t2 = t as f64 * 2.0;
        let (from, to, tt) = if t2 <= 1.0 {
            (ua.clone(), ub.clone(), t2)
        } else {
            let back: Vec<f64> = ua.iter().map(|v| -v).collect();
            (ub.clone(), back, t2 - 1.0)
        };
        let r = na + (nb - na) * t as f64;
        return great_circle(&from, &to, omega, tt).into_iter().map(|v| (v * r) as f32).collect();
    }
    let r = na + (nb - na) * t as f64;
    great_circle(&ua, &ub, omega, t as f64).into_iter().map(|v| (v * r) as f32).collect()
}

/// Unit-vector slerp with a known angle between the endpoints.
fn great_circle(ua: &[f64], ub: &[f64], omega: f64, t: f64) -> Vec<f64> {
    let s = omega.sin();
    let (wa, wb) = (((1.0 - t) * omega).sin() / s, (t * omega).sin() / s);
    ua.iter().zip(ub).map(|(x, y)| wa * x + wb * y).collect()
}

/// A unit vector perpendicular to unit `u`: Gram-Schmidt on the coordinate
/// axis with the smallest |u_i| (never parallel to `u`).
fn perpendicular(u: &[f64]) -> Vec<f64> {
    let k = u.iter().enumerate().min_by(|x, y| x.1.abs().total_cmp(&y.1.abs())).map_or(0, |(i, _)| i);
    let mut e: Vec<f64> = u.iter().map(|v| -v * u[k]).collect();
    e[k] += 1.0;
    let n = e.iter().map(|v| v * v).sum::<f64>().sqrt();
    e.iter().map(|v| v / n).collect()
}

/// Interpolates with the chosen mode.
pub fn interpolate(a: &[f32], b: &[f32], t: f32, mode: Mode) -> Vec<f32> {
    match mode {
        Mode::Slerp => slerp(a, b, t),
        Mode::Lerp => lerp(a, b, t),
    }
}

/// Blends several anchors with non-negative weights (they need not sum to 1).
///
/// Lerp mode is the normalized weighted sum. Slerp mode takes the same sum
/// and rescales it to the weighted mean of the anchors' norms: for sphere
/// latents that is a point back on the sphere (a "normalized weighted sum",
/// which equals slerp's direction for two anchors at the midpoint and stays
/// on the great-circle arc's sphere everywhere). With one non-zero weight the
/// anchor itself is returned.
pub fn blend(anchors: &[&[f32]], weights: &[f32], mode: Mode) -> Vec<f32> {
    let total: f32 = weights.iter().sum();
    let dim = anchors.first().map_or(0, |a| a.len());
    if total <= 0.0 {
        return vec![0.0; dim];
    }
    if let Some(i) = weights.iter().position(|w| *w == total) {
        return anchors[i].to_vec();
    }
    let mut out = vec![0.0f64; dim];
    let mut radius = 0.0f64;
    for (a, w) in anchors.iter().zip(weights) {
        let w = (*w / total) as f64;
        radius += w * norm(a) as f64;
        for (o, v) in out.iter_mut().zip(a.iter()) {
            *o += w * *v as f64;
        }
    }
    if mode == Mode::Slerp {
        let n = out.iter().map(|v| v * v).sum::<f64>().sqrt();
        if n > 0.0 {
            out.iter_mut().for_each(|v| *v *= radius / n);
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

/// Time easing along each path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Ease {
    /// Constant speed.
    #[default]
    Linear,
    /// Smoothstep: slow at each keyframe, fast in between.
    EaseInOut,
}

impl Ease {
    /// Maps segment time `t` in [0, 1] to eased time.
    pub fn apply(self, t: f32) -> f32 {
        match self {
            Ease::Linear => t,
            Ease::EaseInOut => t * t * (3.0 - 2.0 * t),
        }
    }
}

/// `frames` latents along the keyframes in order.
///
/// Open paths start on the first keyframe and end on the last. Looped paths
/// go back to the first keyframe and stop one step short of it, so playing
/// the frames on repeat is seamless: the step from the last frame to the
/// first equals every other step.
pub fn path(keys: &[Vec<f32>], frames: usize, mode: Mode, ease: Ease, looped: bool) -> Vec<Vec<f32>> {
    let segments = if looped { keys.len() } else { keys.len().saturating_sub(1) };
    if keys.is_empty() || frames == 0 {
        return Vec::new();
    }
    if segments == 0 {
        return vec![keys[0].clone(); frames];
    }
    let span = if looped { frames as f64 } else { (frames.max(2) - 1) as f64 };
    (0..frames)
        .map(|f| {
            let pos = f as f64 / span * segments as f64;
            let seg = (pos.floor() as usize).min(segments - 1);
            let t = ease.apply((pos - seg as f64) as f32).clamp(0.0, 1.0);
            let a = &keys[seg];
            let b = &keys[(seg + 1) % keys.len()];
            interpolate(a, b, t, mode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn angle(a: &[f32], b: &[f32]) -> f64 {
        let d: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
        (d / (norm(a) as f64 * norm(b) as f64)).clamp(-1.0, 1.0).acos()
    }

    #[test]
    fn sphere_latents_have_radius_sqrt_dim() {
        for seed in 0..20 {
            let z = from_seed(seed, 128, Prior::Sphere);
            assert!((norm(&z) - 128f32.sqrt()).abs() < 1e-4);
        }
    }

    #[test]
    fn same_seed_same_latent_and_pinned_values() {
        assert_eq!(from_seed(7, 16, Prior::Sphere), from_seed(7, 16, Prior::Sphere));
        assert_ne!(from_seed(7, 16, Prior::Sphere), from_seed(8, 16, Prior::Sphere));
    }

    #[test]
    fn slerp_keeps_norm_and_steps_equal_angles() {
        let a = from_seed(1, 64, Prior::Sphere);
        let b = from_seed(2, 64, Prior::Sphere);
        assert_eq!(slerp(&a, &b, 0.0), a);
        assert_eq!(slerp(&a, &b, 1.0), b);
        let pts: Vec<Vec<f32>> = (0..=10).map(|i| slerp(&a, &b, i as f32 / 10.0)).collect();
        for p in &pts {
            assert!((norm(p) - 8.0).abs() < 1e-3, "norm {}", norm(p));
        }
        let first = angle(&pts[0], &pts[1]);
        for w in pts.windows(2) {
            assert!((angle(&w[0], &w[1]) - first).abs() < 1e-4);
        }
        let mid = lerp(&a, &b, 0.5);
        assert!(norm(&mid) < 7.0, "lerp midpoint dips inside: {}", norm(&mid));
    }

    #[test]
    fn parallel_and_antipodal_endpoints_are_handled() {
        let a = from_seed(3, 32, Prior::Sphere);
        let same = slerp(&a, &a, 0.4);
        assert!(same.iter().zip(&a).all(|(x, y)| (x - y).abs() < 1e-5));
        let neg: Vec<f32> = a.iter().map(|v| -v).collect();
        let pts: Vec<Vec<f32>> = (0..=8).map(|i| slerp(&a, &neg, i as f32 / 8.0)).collect();
        for p in &pts {
            assert!(p.iter().all(|v| v.is_finite()));
            assert!((norm(p) - norm(&a)).abs() < 1e-3);
        }
        let step = angle(&pts[0], &pts[1]);
        for w in pts.windows(2) {
            assert!((angle(&w[0], &w[1]) - step).abs() < 1e-4);
        }
    }

    #[test]
    fn looped_path_is_seamless() {
        let keys: Vec<Vec<f32>> = (0..3).map(|s| from_seed(s, 32, Prior::Sphere)).collect();
        let frames = path(&keys, 30, Mode::Slerp, Ease::Linear, true);
        assert_eq!(frames[0], keys[0]);
        let steps: Vec<f64> = (0..30).map(|i| angle(&frames[i], &frames[(i + 1) % 30])).collect();
        // All segments have equal arc length only if the keys are equally far
        // apart; within a segment the steps are equal, and the wrap-around
        // step belongs to the last segment.
        assert!((steps[29] - steps[28]).abs() < 1e-4, "{:?}", &steps[27..]);
        let open = path(&keys, 21, Mode::Lerp, Ease::Linear, false);
        assert_eq!(open[0], keys[0]);
        assert_eq!(open[20], keys[2]);
    }

    #[test]
    fn blend_stays_on_sphere_in_slerp_mode() {
        let keys: Vec<Vec<f32>> = (0..3).map(|s| from_seed(s, 64, Prior::Sphere)).collect();
        let refs: Vec<&[f32]> = keys.iter().map(|k| k.as_slice()).collect();
        let s = blend(&refs, &[0.2, 0.3, 0.5], Mode::Slerp);
        assert!((norm(&s) - 8.0).abs() < 1e-3);
        let l = blend(&refs, &[0.2, 0.3, 0.5], Mode::Lerp);
        assert!(norm(&l) < 7.0);
        assert_eq!(blend(&refs, &[0.0, 1.0, 0.0], Mode::Lerp), keys[1]);
    }
}
