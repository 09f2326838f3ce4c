//! Where exported frames go: an MP4 or GIF encoder writing a staged file, or
//! a staged folder of PNGs. [`Sink::finish`] renames the result into place;
//! dropping an unfinished sink removes what it wrote.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use image::RgbImage;
use rayon::prelude::*;

use super::ExportError;
use super::gif::GifWriter;
use super::mp4::Mp4Writer;
use super::target::{self, Format, Staged};

/// An open output.
pub(crate) enum Sink {
    /// H.264 in MP4 (boxed: the encoder state is large).
    Mp4(Box<Mp4Writer<BufWriter<File>>>, Staged),
    /// Looping GIF.
    Gif(Box<GifWriter<BufWriter<File>>>, Staged),
    /// PNG frames in a folder.
    Png(Staged),
}

impl Sink {
    /// Opens the staged output for `format` at `out`.
    pub(crate) fn create(format: Format, out: &Path, width: u32, height: u32, fps: f64) -> Result<Sink, ExportError> {
        Ok(match format {
            Format::Mp4 => {
                let (staged, f) = Staged::file(out)?;
                let w =
                    Mp4Writer::new(BufWriter::new(f), width, height, fps).map_err(|e| ExportError::encode(out, e))?;
                Sink::Mp4(Box::new(w), staged)
            }
            Format::Gif => {
                let (staged, f) = Staged::file(out)?;
                let w =
                    GifWriter::new(BufWriter::new(f), width, height, fps).map_err(|e| ExportError::encode(out, e))?;
                Sink::Gif(Box::new(w), staged)
            }
            Format::PngFolder => Sink::Png(Staged::folder(out)?),
        })
    }

    /// Appends `frames`, the first of which is frame number `first`.
    pub(crate) fn push(&mut self, frames: &[RgbImage], first: usize) -> Result<(), ExportError> {
        match self {
            Sink::Mp4(w, s) => w.push(frames).map_err(|e| ExportError::encode(s.target(), e)),
            Sink::Gif(w, s) => w.push(frames).map_err(|e| ExportError::encode(s.target(), e)),
            Sink::Png(s) => frames.par_iter().enumerate().try_for_each(|(k, f)| {
                let path = s.path().join(target::frame_name(first + k));
                let mut bytes = Vec::new();
                f.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
                    .map_err(|e| ExportError::encode(&path, e))?;
                std::fs::write(&path, &bytes).map_err(|e| ExportError::io(&path, e))
            }),
        }
    }

    /// Completes the output and renames it to the target path.
    pub(crate) fn finish(self) -> Result<(), ExportError> {
        match self {
            Sink::Mp4(w, s) => {
                let out = w.finish().map_err(|e| ExportError::encode(s.target(), e))?;
                close(out, &s)?;
                s.commit()
            }
            Sink::Gif(w, s) => {
                let out = w.finish().map_err(|e| ExportError::encode(s.target(), e))?;
                close(out, &s)?;
                s.commit()
            }
            Sink::Png(s) => s.commit(),
        }
    }
}

/// Flushes and syncs a staged file before it is renamed.
fn close(out: BufWriter<File>, staged: &Staged) -> Result<(), ExportError> {
    let io = |e| ExportError::io(staged.target(), e);
    let mut out = out;
    out.flush().map_err(io)?;
    let f = out.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)
}
