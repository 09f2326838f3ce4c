//! Bookmarks: the explorer's anchors and view saved as JSON, so a path can
//! be reopened in the app or rendered by `ganscope interpolate --keyframes`
//! to exactly the same frames.
//!
//! Each anchor keeps its exact latent `z`, not just its seed: f32 values are
//! written in their shortest round-trip form, so reading them back gives the
//! same bits. The model is named by its hash ([`crate::gan::Model::hash`]).
//!
//! ```json
//! { "version": 1, "model_hash": "3f2a...", "model": "builtin:emoji",
//!   "mode": "slerp", "ease": "linear", "loop": true,
//!   "anchors": [ { "seed": 1, "z": [0.12, ...], "pos": [0.1, 0.5] }, ... ],
//!   "view": { "probe": [0.5, 0.5], "smooth": false },
//!   "export": { "frames": 300, "fps": 30.0, "size": 512, "filter": "nearest", "side_by_side": false } }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ExportError;
use super::frames::{self, Filter, FrameSpec};
use crate::latent::{self, Ease, Mode, Prior};
use crate::store;

/// The bookmark format version this build writes and reads.
pub const VERSION: u32 = 1;

/// One anchor of the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyframe {
    /// The seed the latent came from, if it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The exact latent. May be left out by hand-written bookmarks that give
    /// a seed: it is then drawn from the seed (sphere prior).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub z: Vec<f32>,
    /// Where the anchor sits on the explorer's canvas, each coordinate in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos: Option<[f32; 2]>,
}

/// What the explorer showed; the CLI ignores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// The probe's canvas position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<[f32; 2]>,
    /// Smooth (bilinear) display filtering.
    #[serde(default)]
    pub smooth: bool,
    /// Anything else the app stores, kept as is.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Export settings saved with a bookmark; command-line flags override them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSettings {
    /// Frames in the whole path.
    pub frames: usize,
    /// Frames per second.
    pub fps: f64,
    /// Side of each image in pixels (default: the exporter's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Upscaling filter.
    #[serde(default)]
    pub filter: Filter,
    /// Slerp and lerp side by side.
    #[serde(default)]
    pub side_by_side: bool,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            frames: frames::DEFAULT_FRAMES,
            fps: frames::DEFAULT_FPS,
            size: None,
            filter: Filter::Nearest,
            side_by_side: false,
        }
    }
}

/// A saved path through latent space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bookmark {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Hash of the model the anchors were chosen with.
    pub model_hash: String,
    /// How to load that model (`builtin:NAME` or a path), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Interpolation mode.
    #[serde(default)]
    pub mode: Mode,
    /// Easing along each segment.
    #[serde(default)]
    pub ease: Ease,
    /// Whether the path closes back to the first anchor.
    #[serde(default, rename = "loop")]
    pub looped: bool,
    /// Class of a conditional model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<u32>,
    /// The anchors, in path order.
    pub anchors: Vec<Keyframe>,
    /// What the explorer showed.
    #[serde(default)]
    pub view: View,
    /// Export settings, if the bookmark was saved from the export dialog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSettings>,
}

impl Bookmark {
    /// A bookmark of sphere latents drawn from `seeds`.
    pub fn from_seeds(model_hash: &str, dim: usize, seeds: &[u64], mode: Mode) -> Bookmark {
        let anchors = seeds
            .iter()
            .map(|s| Keyframe { seed: Some(*s), z: latent::from_seed(*s, dim, Prior::Sphere), pos: None })
            .collect();
        Bookmark {
            version: VERSION,
            model_hash: model_hash.to_string(),
            model: None,
            mode,
            ease: Ease::Linear,
            looped: false,
            class: None,
            anchors,
            view: View::default(),
            export: None,
        }
    }

    /// Reads and checks a bookmark file.
    pub fn load(path: &Path) -> Result<Bookmark, ExportError> {
        let bad = |reason: String| ExportError::Bookmark { path: path.display().to_string(), reason };
        let bytes = store::read_limited(path)?;
        let b: Bookmark = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a bookmark: {e}")))?;
        b.check().map_err(bad)?;
        Ok(b)
    }

    /// Writes the bookmark as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<(), ExportError> {
        self.check().map_err(|reason| ExportError::Bookmark { path: path.display().to_string(), reason })?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| ExportError::Bookmark { path: path.display().to_string(), reason: e.to_string() })?;
        store::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Checks what does not depend on the model.
    fn check(&self) -> Result<(), String> {
        if self.version == 0 || self.version > VERSION {
            return Err(format!("bookmark version {} (this ganscope reads version {VERSION})", self.version));
        }
        if self.anchors.len() < 2 {
            return Err(format!("a path needs at least two anchors, found {}", self.anchors.len()));
        }
        for (i, a) in self.anchors.iter().enumerate() {
            if a.z.is_empty() && a.seed.is_none() {
                return Err(format!("anchor {i} has neither `z` nor `seed`"));
            }
            if a.z.iter().any(|v| !v.is_finite()) {
                return Err(format!("anchor {i}: `z` holds NaN or infinite values"));
            }
        }
        if let Some(e) = &self.export
            && (e.frames < 2 || !(e.fps.is_finite() && e.fps > 0.0))
        {
            return Err(format!("export settings: {} frames at {} fps", e.frames, e.fps));
        }
        Ok(())
    }

    /// The anchors' latents for a model with latent size `dim`: the stored
    /// `z` exactly, or drawn from the seed where `z` is absent.
    pub fn latents(&self, dim: usize) -> Result<Vec<Vec<f32>>, String> {
        self.anchors
            .iter()
            .enumerate()
            .map(|(i, a)| match (a.z.is_empty(), a.seed) {
                (false, _) if a.z.len() != dim => {
                    Err(format!("anchor {i} has a {}-d latent, the model's is {dim}-d", a.z.len()))
                }
                (false, _) => Ok(a.z.clone()),
                (true, Some(s)) => Ok(latent::from_seed(s, dim, Prior::Sphere)),
                (true, None) => Err(format!("anchor {i} has neither `z` nor `seed`")),
            })
            .collect()
    }

    /// The frames this bookmark stands for, for a model with latent size
    /// `dim` and image side `resolution`: its exact latents, mode, ease and
    /// loop, and its export settings (or the defaults). The app's export and
    /// `ganscope interpolate --keyframes` both start from this.
    pub fn frame_spec(&self, dim: usize, resolution: u32) -> Result<FrameSpec, String> {
        let e = self.export.clone().unwrap_or_default();
        Ok(FrameSpec {
            keys: self.latents(dim)?,
            frames: e.frames,
            mode: self.mode,
            ease: self.ease,
            looped: self.looped,
            side_by_side: e.side_by_side,
            size: e.size.unwrap_or_else(|| frames::default_size(resolution)),
            filter: e.filter,
            class: self.class,
        })
    }
}
