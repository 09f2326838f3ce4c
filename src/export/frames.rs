//! The frame pipeline: keyframe latents -> a path -> generator batches ->
//! upscaled RGB frames (optionally slerp | lerp side by side, labelled) ->
//! an encoder, with a progress callback and a cancel flag.
//!
//! The app's export dialog and `ganscope interpolate` both call [`export`]
//! with a [`FrameSpec`], so the same spec gives the same frames bit for bit
//! (same latents from [`crate::latent::path`], same batch size, same
//! resizing).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use image::{RgbImage, imageops};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::sink::Sink;
use super::target::{self, Format};
use super::{ExportError, grid, label, mp4};
use crate::gan::Model;
use crate::latent::{self, Ease, Mode};

/// Most frames in one export.
pub const MAX_FRAMES: usize = 100_000;
/// Largest image side.
pub const MAX_SIZE: u32 = 4096;
/// Highest frame rate.
pub const MAX_FPS: f64 = 240.0;
/// Width of the divider between side-by-side panes.
pub const DIVIDER: u32 = 2;
/// Frames generated per batch. Fixed, so every caller gets the same
/// generator batches and therefore the same pixels.
pub const BATCH: usize = 16;
/// Frames in a path when nothing says otherwise.
pub const DEFAULT_FRAMES: usize = 60;
/// Frame rate when nothing says otherwise.
pub const DEFAULT_FPS: f64 = 30.0;
/// Default output side: the smallest multiple of the model's resolution at
/// least this large.
pub const DEFAULT_MIN_SIZE: u32 = 256;

/// Divider colour, a neutral grey visible on light and dark images.
const DIVIDER_RGB: [u8; 3] = [96, 96, 104];

/// How images are scaled up to the output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Nearest neighbour: crisp square pixels.
    #[default]
    Nearest,
    /// Bilinear (triangle) filtering, as the explorer's smooth display.
    Smooth,
}

impl Filter {
    /// Both filters.
    pub const ALL: [Filter; 2] = [Filter::Nearest, Filter::Smooth];

    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Nearest => "nearest",
            Filter::Smooth => "smooth",
        }
    }

    fn image_filter(self) -> imageops::FilterType {
        match self {
            Filter::Nearest => imageops::FilterType::Nearest,
            Filter::Smooth => imageops::FilterType::Triangle,
        }
    }
}

impl std::str::FromStr for Filter {
    type Err = String;

    fn from_str(s: &str) -> Result<Filter, String> {
        Filter::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| format!("`{s}` is not nearest or smooth"))
    }
}

/// The default output side for a model of `resolution`.
pub fn default_size(resolution: u32) -> u32 {
    let r = resolution.max(1);
    DEFAULT_MIN_SIZE.div_ceil(r) * r
}

/// Everything that decides the frames' pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSpec {
    /// Keyframe latents, in path order (at least two).
    pub keys: Vec<Vec<f32>>,
    /// Frames in the whole path.
    pub frames: usize,
    /// Interpolation mode (ignored side by side, which shows both).
    pub mode: Mode,
    /// Easing along each segment.
    pub ease: Ease,
    /// Close the path back to the first keyframe, seamlessly.
    pub looped: bool,
    /// Slerp on the left, lerp on the right, labelled, with a divider.
    pub side_by_side: bool,
    /// Side of each image (pane) in pixels.
    pub size: u32,
    /// Upscaling filter.
    pub filter: Filter,
    /// Class of a conditional model.
    pub class: Option<u32>,
}

impl FrameSpec {
    /// The modes shown in each frame, left to right.
    pub fn panes(&self) -> Vec<Mode> {
        if self.side_by_side { Mode::ALL.to_vec() } else { vec![self.mode] }
    }

    /// The path in one mode: one latent per frame.
    pub fn path(&self, mode: Mode) -> Vec<Vec<f32>> {
        latent::path(&self.keys, self.frames, mode, self.ease, self.looped)
    }

    /// Every generated image's latent in output order: frame by frame, and
    /// within a frame pane by pane (left to right).
    pub fn latents(&self) -> Vec<Vec<f32>> {
        let paths: Vec<Vec<Vec<f32>>> = self.panes().into_iter().map(|m| self.path(m)).collect();
        (0..self.frames).flat_map(|f| paths.iter().map(move |p| p[f].clone())).collect()
    }

    /// Width and height of a frame.
    pub fn dimensions(&self) -> (u32, u32) {
        if self.side_by_side { (2 * self.size + DIVIDER, self.size) } else { (self.size, self.size) }
    }

    /// Checks the spec against `model` and the target `format`, before any work.
    pub fn check(&self, model: &Model, format: Format) -> Result<(), ExportError> {
        let bad = |m: String| Err(ExportError::Settings(m));
        let dim = model.config.z_dim;
        if self.keys.len() < 2 {
            return bad(format!("a path needs at least two keyframes, got {}", self.keys.len()));
        }
        if let Some((i, k)) = self.keys.iter().enumerate().find(|(_, k)| k.len() != dim) {
            return bad(format!("keyframe {i} has a {}-d latent, the model's is {dim}-d", k.len()));
        }
        if self.keys.iter().flatten().any(|v| !v.is_finite()) {
            return bad("a keyframe latent holds NaN or infinite values".into());
        }
        if !(2..=MAX_FRAMES).contains(&self.frames) {
            return bad(format!("{} frames is out of range 2..={MAX_FRAMES}", self.frames));
        }
        if !(1..=MAX_SIZE).contains(&self.size) {
            return bad(format!("size {} is out of range 1..={MAX_SIZE}", self.size));
        }
        let classes = model.config.num_classes;
        match self.class {
            Some(c) if classes == 0 => return bad(format!("class {c} given, but the model is not conditional")),
            Some(c) if c as usize >= classes => return bad(format!("class {c} is out of range 0..{classes}")),
            _ => {}
        }
        if format == Format::Mp4 {
            let (w, h) = self.dimensions();
            mp4::check_dimensions(w, h).map_err(|m| ExportError::Settings(format!("size {}: {m}", self.size)))?;
        }
        Ok(())
    }
}

/// How far an export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Frames generated and encoded.
    pub done: usize,
    /// Frames in all.
    pub total: usize,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The format written.
    pub format: Format,
    /// Frames written.
    pub frames: usize,
    /// Frame width and height.
    pub dimensions: (u32, u32),
    /// Wall time from the first batch to the renamed file, in seconds.
    pub seconds: f64,
}

/// Composes one frame from its panes' generator output (`panes` images of
/// C*H*W floats in [-1, 1]).
fn compose(pixels: &[f32], spec: &FrameSpec, channels: usize, resolution: usize) -> RgbImage {
    let plane = channels * resolution * resolution;
    let size = spec.size;
    let scaled: Vec<RgbImage> = pixels
        .chunks_exact(plane)
        .map(|p| {
            let img = grid::to_rgb(p, channels, resolution);
            if img.dimensions() == (size, size) {
                img
            } else {
                imageops::resize(&img, size, size, spec.filter.image_filter())
            }
        })
        .collect();
    if !spec.side_by_side {
        return scaled.into_iter().next().unwrap_or_default();
    }
    let (w, h) = spec.dimensions();
    let mut out = RgbImage::from_pixel(w, h, image::Rgb(DIVIDER_RGB));
    let scale = label::scale_for(size);
    for (k, (img, mode)) in scaled.iter().zip(spec.panes()).enumerate() {
        let x = k as u32 * (size + DIVIDER);
        imageops::replace(&mut out, img, x as i64, 0);
        label::draw(&mut out, x + 2 * scale, 2 * scale, &mode.name().to_ascii_uppercase(), scale);
    }
    out
}

/// Generates the frames of `spec` in batches of [`BATCH`] and hands each
/// batch, in order, to `sink`. Checks `cancel` before every batch.
pub fn render(
    model: &Model,
    spec: &FrameSpec,
    cancel: &AtomicBool,
    mut sink: impl FnMut(&[RgbImage]) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let (channels, resolution) = (model.config.channels, model.config.resolution);
    let per_frame = spec.panes().len();
    let latents = spec.latents();
    for batch in latents.chunks(BATCH * per_frame) {
        if cancel.load(Ordering::Relaxed) {
            return Err(ExportError::Cancelled);
        }
        let pixels = model.generate(&batch.concat(), spec.class, None)?;
        let frames: Vec<RgbImage> = pixels
            .par_chunks_exact(per_frame * model.image_len())
            .map(|p| compose(p, spec, channels, resolution))
            .collect();
        sink(&frames)?;
    }
    Ok(())
}

/// Renders `spec` into `out`: an `.mp4`, a `.gif` or a folder of PNGs,
/// chosen by the path (see [`Format::from_path`]), at `fps` frames per
/// second (ignored for PNGs).
///
/// The target and settings are checked before any frame is generated. The
/// output is written next to `out` under a hidden temporary name and
/// renamed to `out` only when complete: when `cancel` is raised or anything
/// fails, nothing is left at `out` (and the temporary file is removed).
/// `progress` is called after every batch.
pub fn export(
    model: &Model,
    spec: &FrameSpec,
    fps: f64,
    out: &Path,
    cancel: &AtomicBool,
    mut progress: impl FnMut(Progress),
) -> Result<Summary, ExportError> {
    let format = target::check_target(out)?;
    spec.check(model, format)?;
    if !(fps.is_finite() && fps > 0.0 && fps <= MAX_FPS) {
        return Err(ExportError::Settings(format!("{fps} fps is out of range (0, {MAX_FPS}]")));
    }
    let start = Instant::now();
    let (w, h) = spec.dimensions();
    let mut sink = Sink::create(format, out, w, h, fps)?;
    let total = spec.frames;
    let mut done = 0;
    progress(Progress { done, total });
    render(model, spec, cancel, |frames| {
        sink.push(frames, done)?;
        done += frames.len();
        progress(Progress { done, total });
        if cancel.load(Ordering::Relaxed) { Err(ExportError::Cancelled) } else { Ok(()) }
    })?;
    if cancel.load(Ordering::Relaxed) {
        return Err(ExportError::Cancelled);
    }
    sink.finish()?;
    Ok(Summary { format, frames: done, dimensions: (w, h), seconds: start.elapsed().as_secs_f64() })
}
