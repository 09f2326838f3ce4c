//! Turning generator output into pictures: [-1, 1] NCHW floats to RGB
//! images, and images tiled into a grid PNG.

use std::path::Path;

use image::{RgbImage, imageops};

use crate::store::{self, StoreError};

/// One image of a batch, RGB8, from `pixels` (C*H*W floats in [-1, 1]; grey
/// is replicated to RGB).
pub fn to_rgb(pixels: &[f32], channels: usize, size: usize) -> RgbImage {
    let plane = size * size;
    let byte = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5) + 0.5) as u8;
    RgbImage::from_fn(size as u32, size as u32, |x, y| {
        let i = y as usize * size + x as usize;
        let c = |k: usize| byte(pixels[(if channels == 1 { 0 } else { k }) * plane + i]);
        image::Rgb([c(0), c(1), c(2)])
    })
}

/// All images of an NCHW batch.
pub fn batch_to_rgb(batch: &[f32], channels: usize, size: usize) -> Vec<RgbImage> {
    batch.chunks_exact(channels * size * size).map(|p| to_rgb(p, channels, size)).collect()
}

/// Tiles images into `cols` columns with a `pad`-pixel dark border.
pub fn grid(images: &[RgbImage], cols: usize, pad: u32) -> RgbImage {
    let cols = cols.max(1).min(images.len().max(1));
    let rows = images.len().div_ceil(cols);
    let (w, h) = images.first().map_or((1, 1), |i| i.dimensions());
    let mut out =
        RgbImage::from_pixel(cols as u32 * (w + pad) + pad, rows as u32 * (h + pad) + pad, image::Rgb([24, 24, 28]));
    for (k, img) in images.iter().enumerate() {
        let (x, y) = ((k % cols) as u32, (k / cols) as u32);
        imageops::replace(&mut out, img, (pad + x * (w + pad)) as i64, (pad + y * (h + pad)) as i64);
    }
    out
}

/// Upscales by an integer factor with nearest-neighbour (crisp pixels).
pub fn upscale(img: &RgbImage, factor: u32) -> RgbImage {
    if factor <= 1 {
        return img.clone();
    }
    imageops::resize(img, img.width() * factor, img.height() * factor, imageops::FilterType::Nearest)
}

/// Encodes a PNG in memory and writes it atomically.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), StoreError> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| StoreError::Content { path: path.display().to_string(), reason: e.to_string() })?;
    store::write_atomic(path, &bytes)
}
