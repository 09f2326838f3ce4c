//! From the probe's position on the canvas to latents: which blend of the
//! anchors it stands for, and the slerp/lerp latents of that blend.
//!
//! - one anchor: the anchor itself;
//! - two anchors: the probe is projected onto the segment A-B, which gives
//!   the path parameter `t` in [0, 1]; slerp and lerp are taken at `t`;
//! - three or more: inverse-distance-squared weights `w_i = 1 / d_i^2`
//!   (an anchor under the probe takes all the weight), then
//!   [`latent::blend`]: lerp is the weighted mean of the anchor latents,
//!   slerp rescales that mean back to the sphere (a normalized weighted sum).

use std::sync::Arc;

use eframe::egui;
use egui::Pos2;

use crate::latent::{self, Mode, Prior};

/// Distance (canvas units, squared) under which the probe sits on an anchor.
const ON_ANCHOR_D2: f32 = 1e-6;

/// An anchor point: a seed, and where it sits on the canvas ([0, 1]^2).
#[derive(Debug, Clone, PartialEq)]
pub struct Anchor {
    /// The seed of its latent (`latent::from_seed`, sphere prior).
    pub seed: u64,
    /// Position on the canvas, each coordinate in [0, 1].
    pub pos: Pos2,
    /// An exact latent from a bookmark that no seed gives (e.g. one saved
    /// by hand or by another tool). It wins over `seed` while its size fits
    /// the model; editing the seed drops it.
    pub z: Option<Arc<[f32]>>,
}

impl Anchor {
    /// An anchor drawn from `seed`.
    pub fn seeded(seed: u64, pos: Pos2) -> Anchor {
        Anchor { seed, pos, z: None }
    }

    /// Whether its latent is an exact one for a model with latent size `dim`.
    pub fn exact(&self, dim: usize) -> bool {
        self.z.as_ref().is_some_and(|z| z.len() == dim)
    }

    /// Its latent for a model with latent size `dim`.
    pub fn latent(&self, dim: usize) -> Vec<f32> {
        match &self.z {
            Some(z) if z.len() == dim => z.to_vec(),
            _ => latent::from_seed(self.seed, dim, Prior::Sphere),
        }
    }

    /// Its name on the canvas: the seed, or "exact z".
    pub fn label(&self) -> String {
        if self.z.is_some() { "exact z".into() } else { format!("seed {}", self.seed) }
    }
}

/// What the probe's position means.
#[derive(Debug, Clone, PartialEq)]
pub enum Blend {
    /// No anchors.
    Empty,
    /// Exactly this anchor.
    Single(usize),
    /// Two anchors: the path parameter from the first to the second.
    Segment {
        /// Position along A-B in [0, 1].
        t: f32,
        /// The projected point on the canvas.
        at: Pos2,
    },
    /// Three or more anchors: normalized weights, one per anchor.
    Weights(Vec<f32>),
}

/// The blend the probe stands for.
pub fn blend_at(anchors: &[Anchor], probe: Pos2) -> Blend {
    match anchors {
        [] => Blend::Empty,
        [_] => Blend::Single(0),
        [a, b] => {
            let ab = b.pos - a.pos;
            let len2 = ab.length_sq();
            let t = if len2 <= f32::EPSILON { 0.0 } else { ((probe - a.pos).dot(ab) / len2).clamp(0.0, 1.0) };
            Blend::Segment { t, at: a.pos + ab * t }
        }
        _ => {
            let d2: Vec<f32> = anchors.iter().map(|a| (a.pos - probe).length_sq()).collect();
            if let Some(i) = d2.iter().position(|d| *d < ON_ANCHOR_D2) {
                return Blend::Single(i);
            }
            let w: Vec<f32> = d2.iter().map(|d| 1.0 / d).collect();
            let total: f32 = w.iter().sum();
            Blend::Weights(w.iter().map(|x| x / total).collect())
        }
    }
}

/// The probe latents `[slerp, lerp]` for a blend of `latents` (one per anchor).
pub fn probe_latents(latents: &[Vec<f32>], blend: &Blend) -> [Vec<f32>; 2] {
    match blend {
        Blend::Empty => [Vec::new(), Vec::new()],
        Blend::Single(i) => [latents[*i].clone(), latents[*i].clone()],
        Blend::Segment { t, .. } => {
            [latent::slerp(&latents[0], &latents[1], *t), latent::lerp(&latents[0], &latents[1], *t)]
        }
        Blend::Weights(w) => {
            let refs: Vec<&[f32]> = latents.iter().map(Vec::as_slice).collect();
            [latent::blend(&refs, w, Mode::Slerp), latent::blend(&refs, w, Mode::Lerp)]
        }
    }
}

/// `frames` latents along the polyline through the anchors in order.
pub fn path(latents: &[Vec<f32>], frames: usize, mode: Mode) -> Vec<Vec<f32>> {
    latent::path(latents, frames, mode, latent::Ease::Linear, false)
}

/// |z| sampled along the anchor path for one mode: `(x, |z|)` pairs where
/// x runs from 0 (first anchor) to `anchors - 1` (last), `per_segment`
/// samples per segment.
pub fn norm_curve(latents: &[Vec<f32>], per_segment: usize, mode: Mode) -> Vec<[f64; 2]> {
    let segments = latents.len().saturating_sub(1);
    if segments == 0 {
        return latents.first().map(|z| vec![[0.0, latent::norm(z) as f64]]).unwrap_or_default();
    }
    let frames = segments * per_segment + 1;
    path(latents, frames, mode)
        .iter()
        .enumerate()
        .map(|(i, z)| [i as f64 / per_segment as f64, latent::norm(z) as f64])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latent::from_seed;

    fn anchors(points: &[(f32, f32)]) -> Vec<Anchor> {
        points.iter().enumerate().map(|(i, p)| Anchor::seeded(i as u64, Pos2::new(p.0, p.1))).collect()
    }

    #[test]
    fn two_anchors_project_onto_the_segment() {
        let a = anchors(&[(0.0, 0.5), (1.0, 0.5)]);
        let Blend::Segment { t, at } = blend_at(&a, Pos2::new(0.25, 0.9)) else { panic!() };
        assert!((t - 0.25).abs() < 1e-6);
        assert!((at.y - 0.5).abs() < 1e-6);
        let Blend::Segment { t, .. } = blend_at(&a, Pos2::new(-3.0, 0.0)) else { panic!() };
        assert_eq!(t, 0.0);
    }

    #[test]
    fn three_anchors_use_inverse_distance_squared() {
        let a = anchors(&[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]);
        let Blend::Weights(w) = blend_at(&a, Pos2::new(0.5, 0.0)) else { panic!() };
        // d^2 = 0.25, 0.25, 1.25 -> 4, 4, 0.8 -> normalized by 8.8.
        assert!((w[0] - 4.0 / 8.8).abs() < 1e-6 && (w[2] - 0.8 / 8.8).abs() < 1e-6);
        assert_eq!(blend_at(&a, Pos2::new(1.0, 0.0)), Blend::Single(1));
    }

    #[test]
    fn slerp_and_lerp_agree_at_anchors_and_differ_between() {
        let z: Vec<Vec<f32>> = (0..2).map(|s| from_seed(s, 64, Prior::Sphere)).collect();
        let a = anchors(&[(0.0, 0.5), (1.0, 0.5)]);
        let [s, l] = probe_latents(&z, &blend_at(&a, Pos2::new(0.0, 0.5)));
        assert_eq!(s, l);
        let [s, l] = probe_latents(&z, &blend_at(&a, Pos2::new(0.5, 0.5)));
        assert!((latent::norm(&s) - 8.0).abs() < 1e-3 && latent::norm(&l) < 7.0);
        let curve = norm_curve(&z, 10, Mode::Lerp);
        assert_eq!(curve.len(), 11);
        assert!(curve[5][1] < curve[0][1]);
    }
}
