//! Looping GIFs from RGB frames, via the `gif` crate (NeuQuant palettes).

use std::path::Path;

use image::RgbImage;

use crate::store::{self, StoreError};

/// NeuQuant sampling speed: 1 is best quality, 30 fastest; 10 is the
/// crate's own recommendation for a good palette at reasonable cost.
const QUANT_SPEED: i32 = 10;

/// Encodes `frames` as an infinitely looping GIF at `fps` and writes it
/// atomically. GIF delays are whole centiseconds, so 30 fps plays at 33.3.
pub fn save_gif(frames: &[RgbImage], fps: f64, path: &Path) -> Result<(), StoreError> {
    let err = |reason: String| StoreError::Content { path: path.display().to_string(), reason };
    let first = frames.first().ok_or_else(|| err("no frames to write".into()))?;
    let (w, h) = (first.width() as u16, first.height() as u16);
    let delay = (100.0 / fps.max(0.01)).round().clamp(1.0, 65535.0) as u16;
    let mut bytes = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut bytes, w, h, &[]).map_err(|e| err(e.to_string()))?;
        enc.set_repeat(gif::Repeat::Infinite).map_err(|e| err(e.to_string()))?;
        for f in frames {
            let mut frame = gif::Frame::from_rgb_speed(w, h, f.as_raw(), QUANT_SPEED);
            frame.delay = delay;
            enc.write_frame(&frame).map_err(|e| err(e.to_string()))?;
        }
    }
    store::write_atomic(path, &bytes)
}
