//! Training images: built-in datasets, folders of image files and MNIST-style
//! IDX files, all turned into one NCHW `f32` buffer in [-1, 1] (GANHACKS
//! tip 1: the generator ends in tanh, so real images must live in its range)
//! plus one class label per image.
//!
//! Every source goes through the same `prepare` step (composite alpha on a
//! background, centre-crop to a square, resize, grey or RGB), so a model sees
//! the same kind of pixels whichever way its data arrived.

mod builtin;
mod folder;
mod idx;

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, GrayImage, RgbImage};

pub use builtin::{BuiltinInfo, builtins};

/// How many unreadable file names a [`Dataset`] keeps for the error report.
pub const SKIPPED_NAMES_KEPT: usize = 5;

/// Largest image side accepted in [`LoadOptions::resolution`]; far above what a
/// DCGAN trains at, low enough that a typo cannot ask for terabytes.
pub const MAX_RESOLUTION: usize = 1024;

/// How to turn raw images into training tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Side of the square output images in pixels (the DCGAN sizes are 28, 32, 64;
    /// any size from 1 to [`MAX_RESOLUTION`] works).
    pub resolution: usize,
    /// 1 for grey (luma), 3 for RGB.
    pub channels: usize,
    /// Transparent images are composited on this colour before anything else.
    pub background: [u8; 3],
}

impl Default for LoadOptions {
    /// 64x64 RGB on white, the look emoji and icons are drawn for.
    fn default() -> Self {
        Self { resolution: 64, channels: 3, background: [255, 255, 255] }
    }
}

impl LoadOptions {
    /// Values per image: channels * resolution * resolution.
    pub fn image_len(&self) -> usize {
        self.channels * self.resolution * self.resolution
    }

    fn validate(&self, spec: &str) -> Result<(), DataError> {
        if self.channels != 1 && self.channels != 3 {
            return Err(DataError::Options {
                spec: spec.to_owned(),
                reason: format!("channels must be 1 (grey) or 3 (RGB), not {}", self.channels),
            });
        }
        if self.resolution == 0 || self.resolution > MAX_RESOLUTION {
            return Err(DataError::Options {
                spec: spec.to_owned(),
                reason: format!("resolution must be between 1 and {MAX_RESOLUTION}, not {}", self.resolution),
            });
        }
        Ok(())
    }
}

/// Images ready for training, all in memory.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Where it came from, e.g. "builtin:digits" or the folder path.
    pub name: String,
    /// N * C * H * W values in [-1, 1], image after image.
    pub images: Vec<f32>,
    /// One class index per image; all 0 when there are no classes.
    pub labels: Vec<u32>,
    /// Class names, indexed by label; empty when unlabelled.
    pub classes: Vec<String>,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Side of the square images.
    pub resolution: usize,
    /// The first few files that could not be read.
    pub skipped: Vec<PathBuf>,
    /// How many files could not be read.
    pub skipped_count: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image: C * H * W.
    pub fn image_len(&self) -> usize {
        self.channels * self.resolution * self.resolution
    }

    /// Image `i` as a C*H*W slice. Panics when `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Copies the chosen images into one contiguous NCHW buffer + their labels.
    /// Both outputs are cleared first and reuse their capacity, so a training
    /// loop can call this every step without allocating.
    pub fn gather(&self, indices: &[usize], out: &mut Vec<f32>, labels: &mut Vec<u32>) {
        out.clear();
        labels.clear();
        out.reserve(indices.len() * self.image_len());
        labels.reserve(indices.len());
        for &i in indices {
            out.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
    }

    /// Images per class, indexed by label (one entry when unlabelled).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len().max(1)];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// What can go wrong loading a dataset. Every message names the path or spec.
#[derive(thiserror::Error, Debug)]
pub enum DataError {
    /// The folder or file does not exist.
    #[error("{path}: no such file or folder")]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// Reading failed for a reason other than a bad image.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Nothing usable was found.
    #[error("{spec}: no readable images ({skipped} unreadable files skipped)")]
    Empty {
        /// The dataset spec as given.
        spec: String,
        /// How many image files could not be read.
        skipped: usize,
    },
    /// `builtin:NAME` with a name we do not ship.
    #[error("builtin:{name}: no such built-in dataset (known: {known})")]
    UnknownBuiltin {
        /// The name after `builtin:`.
        name: String,
        /// The names we ship, comma-separated.
        known: String,
    },
    /// A built-in dataset's embedded files disagree with each other.
    #[error("builtin:{name}: damaged built-in dataset ({reason})")]
    Builtin {
        /// The dataset name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An IDX file with a bad header or the wrong size.
    #[error("{path}: not a usable IDX file ({reason})")]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The load options cannot be satisfied.
    #[error("{spec}: {reason}")]
    Options {
        /// The dataset spec as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
}

/// The channel count `spec`'s images have: a built-in's own, 1 for IDX
/// files, and for an image folder 1 when its first images are all grey,
/// else 3. What a new run on `spec` should train at unless told otherwise.
pub fn native_channels(spec: &str) -> Result<usize, DataError> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        return builtins()
            .into_iter()
            .find(|b| b.name == name)
            .map(|b| b.channels)
            .ok_or_else(|| builtin::unknown(name));
    }
    let path = Path::new(spec);
    if path.is_file() || (path.is_dir() && idx::find(path)?.is_some()) {
        return Ok(1);
    }
    folder::native_channels(path)
}

/// Loads a dataset.
///
/// `spec` is "builtin:NAME" (see [`builtins`]), a folder of images (searched
/// recursively; when two or more immediate sub-folders hold images they become
/// the class labels), or a folder holding MNIST-style IDX files
/// (`*-images-idx3-ubyte[.gz]` plus optional `*-labels-idx1-ubyte[.gz]`), or
/// one such IDX image file.
pub fn load(spec: &str, opts: &LoadOptions) -> Result<Dataset, DataError> {
    opts.validate(spec)?;
    if let Some(name) = spec.strip_prefix("builtin:") {
        return builtin::load(name, opts);
    }
    let path = Path::new(spec);
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound { path: path.to_owned() },
        _ => DataError::Io { path: path.to_owned(), source },
    })?;
    let data = if meta.is_file() {
        idx::load_file(path, opts)?
    } else if let Some(pairs) = idx::find(path)? {
        idx::load_pairs(path, &pairs, opts)?
    } else {
        folder::load(path, opts)?
    };
    if data.is_empty() {
        return Err(DataError::Empty { spec: spec.to_owned(), skipped: data.skipped_count });
    }
    tracing::info!(
        "loaded {}: {} images {}x{}x{}, {} classes, {} skipped",
        data.name,
        data.len(),
        data.channels,
        data.resolution,
        data.resolution,
        data.classes.len(),
        data.skipped_count
    );
    Ok(data)
}

/// Brings any decoded image to the training format: alpha composited on the
/// background, centre-cropped to a square, resized to `resolution`, grey or RGB.
///
/// Compositing comes first: resizing straight alpha would mix the colour of
/// invisible pixels into the edges. The filter is `Triangle` both ways, the
/// antialiased bilinear that PIL and torchvision use by default: it does not
/// ring (Lanczos overshoots on hard edges, and digits and emoji are all hard
/// edges) and its support widens when shrinking, so downscaled photos do not alias.
pub(crate) fn prepare(img: DynamicImage, opts: &LoadOptions) -> DynamicImage {
    let flat = if img.color().has_alpha() { DynamicImage::ImageRgb8(composite(&img, opts.background)) } else { img };
    let flat = match (opts.channels, flat) {
        (1, DynamicImage::ImageLuma8(g)) => DynamicImage::ImageLuma8(g),
        (1, other) => DynamicImage::ImageLuma8(other.to_luma8()),
        (_, DynamicImage::ImageRgb8(c)) => DynamicImage::ImageRgb8(c),
        (_, other) => DynamicImage::ImageRgb8(other.to_rgb8()),
    };
    let (w, h) = flat.dimensions();
    let side = w.min(h);
    let square = if w == h { flat } else { flat.crop_imm((w - side) / 2, (h - side) / 2, side, side) };
    let res = opts.resolution as u32;
    if side == res { square } else { square.resize_exact(res, res, FilterType::Triangle) }
}

/// Alpha-blends any image onto an opaque background colour.
fn composite(img: &DynamicImage, background: [u8; 3]) -> RgbImage {
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src.0[3]);
        for ((d, &s), &b) in dst.0.iter_mut().zip(&src.0[..3]).zip(&background) {
            let v = u32::from(s) * a + u32::from(b) * (255 - a);
            // Rounded division by 255; the result is at most 255.
            *d = ((v + 127) / 255) as u8;
        }
    }
    out
}

/// Appends a prepared image (Luma8 or Rgb8 from [`prepare`]) as planar CHW
/// values in [-1, 1]: 0 maps to -1, 255 to 1.
pub(crate) fn push_chw(img: &DynamicImage, out: &mut Vec<f32>) {
    match img {
        DynamicImage::ImageLuma8(g) => push_grey(g, out),
        other => {
            let rgb = match other {
                DynamicImage::ImageRgb8(c) => std::borrow::Cow::Borrowed(c),
                _ => std::borrow::Cow::Owned(other.to_rgb8()),
            };
            for c in 0..3 {
                out.extend(rgb.pixels().map(|p| to_unit(p.0[c])));
            }
        }
    }
}

fn push_grey(g: &GrayImage, out: &mut Vec<f32>) {
    out.extend(g.as_raw().iter().map(|&v| to_unit(v)));
}

/// Maps a byte to [-1, 1].
#[inline]
pub(crate) fn to_unit(v: u8) -> f32 {
    f32::from(v) / 127.5 - 1.0
}

/// Runs `convert` on every item on all cores and returns the images in input
/// order, so results do not depend on the thread count. `convert` appends one
/// image's values (`image_len` of them) and returns true, or returns false to
/// skip the item. Returns the kept images' values and, per item, whether it
/// was kept.
///
/// Each item owns a slot in one preallocated buffer and skipped slots are
/// squeezed out at the end, so peak memory is the dataset plus one image per
/// thread, not twice the dataset as concatenating per-thread buffers would be.
pub(crate) fn par_convert<T, F>(items: &[T], image_len: usize, convert: F) -> (Vec<f32>, Vec<bool>)
where
    T: Sync,
    F: Fn(&T, &mut Vec<f32>) -> bool + Sync,
{
    let mut values = vec![0.0f32; items.len() * image_len];
    let mut kept = vec![false; items.len()];
    if items.is_empty() || image_len == 0 {
        return (Vec::new(), kept);
    }
    let run = |part: &[T], slots: &mut [f32], flags: &mut [bool]| {
        let mut scratch = Vec::with_capacity(image_len);
        for ((item, slot), flag) in part.iter().zip(slots.chunks_mut(image_len)).zip(flags) {
            scratch.clear();
            // A wrong length would be a bug in `convert`; skip rather than misalign.
            *flag = convert(item, &mut scratch) && scratch.len() == image_len;
            if *flag {
                slot.copy_from_slice(&scratch);
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Small jobs are not worth a thread each.
    let threads = threads.min(items.len().div_ceil(256)).max(1);
    if threads == 1 {
        run(items, &mut values, &mut kept);
    } else {
        let chunk = items.len().div_ceil(threads);
        std::thread::scope(|s| {
            let jobs = items.chunks(chunk).zip(values.chunks_mut(chunk * image_len)).zip(kept.chunks_mut(chunk));
            for ((part, slots), flags) in jobs {
                s.spawn(move || run(part, slots, flags));
            }
        });
    }
    // Squeeze out the skipped slots, keeping order.
    let mut write = 0;
    for (i, _) in kept.iter().enumerate().filter(|(_, k)| **k) {
        if write != i {
            values.copy_within(i * image_len..(i + 1) * image_len, write * image_len);
        }
        write += 1;
    }
    values.truncate(write * image_len);
    (values, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    #[test]
    fn composite_blends_alpha() {
        let mut img = RgbaImage::new(2, 1);
        img.put_pixel(0, 0, Rgba([255, 0, 0, 0]));
        img.put_pixel(1, 0, Rgba([255, 0, 0, 255]));
        let out = composite(&DynamicImage::ImageRgba8(img), [0, 0, 255]);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [255, 0, 0]);
    }

    #[test]
    fn prepare_crops_resizes_and_converts() {
        // A wide image: the centre square is white, the sides black.
        let mut img = RgbImage::new(30, 10);
        for (x, _, p) in img.enumerate_pixels_mut() {
            p.0 = if (10..20).contains(&x) { [255; 3] } else { [0; 3] };
        }
        let opts = LoadOptions { resolution: 5, channels: 1, background: [0; 3] };
        let out = prepare(DynamicImage::ImageRgb8(img), &opts);
        assert_eq!(out.dimensions(), (5, 5));
        let mut values = Vec::new();
        push_chw(&out, &mut values);
        assert_eq!(values.len(), 25);
        assert!(values.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{values:?}");
    }

    #[test]
    fn push_chw_is_planar_and_in_range() {
        let img = RgbImage::from_raw(2, 1, vec![0, 128, 255, 10, 20, 30]).expect("2x1 rgb");
        let mut values = Vec::new();
        push_chw(&DynamicImage::ImageRgb8(img), &mut values);
        let bytes: Vec<u8> = values.iter().map(|v| ((v + 1.0) * 127.5).round() as u8).collect();
        assert_eq!(bytes, [0, 10, 128, 20, 255, 30]);
        assert_eq!(values[0], -1.0);
        assert_eq!(values[4], 1.0);
    }

    #[test]
    fn par_convert_keeps_order_and_skips() {
        let items: Vec<u32> = (0..2000).collect();
        let (values, kept) = par_convert(&items, 1, |&i, out| {
            if i % 7 == 0 {
                return false;
            }
            out.push(i as f32);
            true
        });
        let expected: Vec<f32> = items.iter().filter(|&&i| i % 7 != 0).map(|&i| i as f32).collect();
        assert_eq!(values, expected);
        assert_eq!(kept.iter().filter(|&&k| !k).count(), items.len().div_ceil(7));
    }

    #[test]
    fn gather_copies_images_and_labels() {
        let data = Dataset {
            name: "t".into(),
            images: (0..12).map(|v| v as f32).collect(),
            labels: vec![0, 1, 2],
            classes: vec!["a".into(), "b".into(), "c".into()],
            channels: 1,
            resolution: 2,
            ..Default::default()
        };
        let (mut out, mut labels) = (vec![9.0], vec![9]);
        data.gather(&[2, 0], &mut out, &mut labels);
        assert_eq!(out, [8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0]);
        assert_eq!(labels, [2, 0]);
        assert_eq!(data.class_counts(), [1, 1, 1]);
    }

    #[test]
    fn bad_options_are_refused() {
        let opts = LoadOptions { channels: 2, ..Default::default() };
        let err = load("builtin:digits", &opts).expect_err("2 channels");
        assert!(err.to_string().contains("channels"), "{err}");
        let opts = LoadOptions { resolution: 0, ..Default::default() };
        assert!(matches!(load("builtin:digits", &opts), Err(DataError::Options { .. })));
    }

    #[test]
    fn missing_path_is_not_found() {
        let err = load("/no/such/ganscope/folder", &LoadOptions::default()).expect_err("missing");
        assert!(matches!(err, DataError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("/no/such/ganscope/folder"));
    }
}
