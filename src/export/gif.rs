//! Looping GIFs from RGB frames, via the `gif` crate (NeuQuant palettes).
//!
//! Colour quantisation and LZW compression dominate the cost, and each frame
//! is independent, so [`GifWriter::push`] does both for a batch of frames in
//! parallel (rayon) and only the final byte copy is sequential.

use std::io::Write;
use std::path::Path;

use image::RgbImage;
use rayon::prelude::*;

use crate::store::{self, StoreError};

/// NeuQuant sampling speed: 1 is best quality, 30 fastest; 10 is the
/// crate's own recommendation for a good palette at reasonable cost.
const QUANT_SPEED: i32 = 10;

/// Shortest delay we write: browsers show 0 and 1 centisecond as 10.
const MIN_DELAY_CS: u64 = 2;

/// A streaming, infinitely looping GIF encoder.
pub struct GifWriter<W: Write> {
    enc: gif::Encoder<W>,
    width: u16,
    height: u16,
    fps: f64,
    written: u64,
}

impl<W: Write> GifWriter<W> {
    /// Starts a GIF of `width` x `height` frames shown at `fps`.
    pub fn new(out: W, width: u32, height: u32, fps: f64) -> Result<Self, gif::EncodingError> {
        let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
            return Err(invalid(format!("{width}x{height} is larger than GIF allows (65535)")));
        };
        let mut enc = gif::Encoder::new(out, w, h, &[])?;
        enc.set_repeat(gif::Repeat::Infinite)?;
        Ok(GifWriter { enc, width: w, height: h, fps: fps.max(0.01), written: 0 })
    }

    /// Delay of frame `i` in centiseconds. GIF delays are whole
    /// centiseconds, so each delay is the rounded end time minus the rounded
    /// start time: 30 fps alternates 3 and 4 cs and `n` frames last exactly
    /// `n / fps` seconds (to 1 cs) instead of playing 10% fast at 3 cs each.
    fn delay(fps: f64, i: u64) -> u16 {
        let at = |k: u64| (k as f64 * 100.0 / fps).round() as u64;
        (at(i + 1).saturating_sub(at(i))).clamp(MIN_DELAY_CS, u16::MAX as u64) as u16
    }

    /// Quantises and compresses `frames` in parallel, then appends them.
    pub fn push(&mut self, frames: &[RgbImage]) -> Result<(), gif::EncodingError> {
        let (w, h) = (self.width, self.height);
        if let Some(f) = frames.iter().find(|f| f.dimensions() != (w as u32, h as u32)) {
            return Err(invalid(format!("frame is {}x{}, the GIF is {w}x{h}", f.width(), f.height())));
        }
        let (first, fps) = (self.written, self.fps);
        let encoded: Vec<gif::Frame<'static>> = frames
            .par_iter()
            .enumerate()
            .map(|(k, f)| {
                let mut frame = gif::Frame::from_rgb_speed(w, h, f.as_raw(), QUANT_SPEED);
                frame.delay = Self::delay(fps, first + k as u64);
                frame.make_lzw_pre_encoded();
                frame
            })
            .collect();
        for frame in &encoded {
            self.enc.write_lzw_pre_encoded_frame(frame)?;
            self.written += 1;
        }
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.written
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(self) -> Result<W, gif::EncodingError> {
        self.enc.into_inner()
    }
}

/// A usage error, in the encoder's error type.
fn invalid(msg: String) -> gif::EncodingError {
    gif::EncodingError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg))
}

/// Encodes `frames` as an infinitely looping GIF at `fps` and writes it
/// atomically (see [`GifWriter`] for the timing).
pub fn save_gif(frames: &[RgbImage], fps: f64, path: &Path) -> Result<(), StoreError> {
    let err = |reason: String| StoreError::Content { path: path.display().to_string(), reason };
    let first = frames.first().ok_or_else(|| err("no frames to write".into()))?;
    let mut gif = GifWriter::new(Vec::new(), first.width(), first.height(), fps).map_err(|e| err(e.to_string()))?;
    gif.push(frames).map_err(|e| err(e.to_string()))?;
    let bytes = gif.finish().map_err(|e| err(e.to_string()))?;
    store::write_atomic(path, &bytes)
}
