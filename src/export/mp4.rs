//! MP4 video: H.264 from Cisco's OpenH264 (the `openh264` crate, built from
//! its bundled C source) in an MP4 container written by the pure-Rust
//! `muxide` crate (fast start: `moov` before `mdat`, so browsers can play
//! it while it loads).
//!
//! Constrained-baseline H.264 in MP4 plays in every browser and common
//! player. Colour: OpenH264 converts RGB with the BT.601 limited-range
//! matrix, and the stream says so (VUI), so players show the right colours.

use std::io::Write;

use image::RgbImage;
use muxide::api::{Muxer, MuxerBuilder, VideoCodec};
use openh264::OpenH264API;
use openh264::Timestamp;
use openh264::encoder::{
    Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use rayon::prelude::*;

/// Largest frame OpenH264 encodes (H.264 level 5.2).
pub const MAX_WIDTH: u32 = 3840;
/// Largest frame height OpenH264 encodes.
pub const MAX_HEIGHT: u32 = 2160;

/// Seconds between keyframes (for seeking).
const KEYFRAME_SECONDS: f64 = 2.0;

/// An encoder or muxer failure, with its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mp4Error(String);

/// Why `width` x `height` cannot be an H.264 frame here, if it cannot.
pub fn check_dimensions(width: u32, height: u32) -> Result<(), String> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(format!("MP4 (H.264 4:2:0) needs even frame dimensions, got {width}x{height}"));
    }
    if width.max(height) > MAX_WIDTH || width.min(height) > MAX_HEIGHT {
        return Err(format!("{width}x{height} is larger than H.264 level 5.2 allows ({MAX_WIDTH}x{MAX_HEIGHT})"));
    }
    Ok(())
}

/// A streaming MP4 writer: RGB frames in, H.264 samples out, the container
/// written by [`Mp4Writer::finish`].
pub struct Mp4Writer<W: Write> {
    enc: Encoder,
    mux: Muxer<W>,
    width: u32,
    height: u32,
    fps: f64,
    written: u64,
}

impl<W: Write> Mp4Writer<W> {
    /// Starts a video of `width` x `height` (both even) frames at exactly
    /// `fps` frames per second.
    pub fn new(out: W, width: u32, height: u32, fps: f64) -> Result<Self, Mp4Error> {
        check_dimensions(width, height).map_err(Mp4Error)?;
        if !(fps.is_finite() && fps > 0.0) {
            return Err(Mp4Error(format!("frame rate {fps} is not positive")));
        }
        let config = EncoderConfig::new()
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            // Rate control off: constant quality (OpenH264's base QP, 26,
            // lowered on P frames by adaptive quantisation) and no frame is
            // ever skipped, so the video has exactly one sample per frame.
            // The rate-controlled modes either skip frames or, with skipping
            // off, cannot hold their bitrate and warn on stderr.
            .skip_frames(false)
            .rate_control_mode(RateControlMode::Off)
            .usage_type(UsageType::CameraVideoRealTime)
            .intra_frame_period(IntraFramePeriod::from_num_frames((fps * KEYFRAME_SECONDS).round().max(1.0) as u32))
            .vui(VuiConfig::bt601());
        let enc = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| Mp4Error(e.to_string()))?;
        let mux = MuxerBuilder::new(out)
            .video(VideoCodec::H264, width, height, fps)
            .with_fast_start(true)
            .build()
            .map_err(|e| Mp4Error(e.to_string()))?;
        Ok(Mp4Writer { enc, mux, width, height, fps, written: 0 })
    }

    /// Converts `frames` to YUV in parallel, then encodes and muxes them in order.
    pub fn push(&mut self, frames: &[RgbImage]) -> Result<(), Mp4Error> {
        let (w, h) = (self.width, self.height);
        if let Some(f) = frames.iter().find(|f| f.dimensions() != (w, h)) {
            return Err(Mp4Error(format!("frame is {}x{}, the video is {w}x{h}", f.width(), f.height())));
        }
        let yuv: Vec<YUVBuffer> = frames
            .par_iter()
            .map(|f| YUVBuffer::from_rgb8_source(RgbSliceU8::new(f.as_raw(), (w as usize, h as usize))))
            .collect();
        let mut sample = Vec::new();
        for frame in &yuv {
            let i = self.written;
            // Exact presentation times: frame i is shown at i / fps seconds
            // (muxide's 90 kHz clock holds 24, 25, 30, 50, 60 fps exactly).
            let pts = i as f64 / self.fps;
            let stream = self
                .enc
                .encode_at(frame, Timestamp::from_millis((pts * 1000.0).round() as u64))
                .map_err(|e| Mp4Error(format!("frame {i}: {e}")))?;
            let key = stream.frame_type() == FrameType::IDR;
            sample.clear();
            stream.write_vec(&mut sample);
            if sample.is_empty() {
                return Err(Mp4Error(format!("frame {i}: the encoder produced no data")));
            }
            self.mux.write_video(pts, &sample, key).map_err(|e| Mp4Error(format!("frame {i}: {e}")))?;
            self.written += 1;
        }
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.written
    }

    /// Writes the container (sample tables first, then the frames) and
    /// returns the writer.
    pub fn finish(mut self) -> Result<W, Mp4Error> {
        if self.written == 0 {
            return Err(Mp4Error("no frames to write".into()));
        }
        self.mux.finish_in_place().map_err(|e| Mp4Error(e.to_string()))?;
        Ok(self.mux.into_writer())
    }
}
