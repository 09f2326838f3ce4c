//! Generated pixels to the screen through wgpu: a texture cache in
//! egui-wgpu's callback resources and a paint callback that draws a batch
//! of images as a grid with the WGSL shader in `shaders/display.wgsl`.
//!
//! Usage: call [`install`] once with the app's render state, then each
//! frame call [`paint`] with a rect and an [`ImageSource`]. The texture is
//! re-uploaded only when the source's `key` changes. This module knows
//! nothing of candle or of the worker: sources are plain NCHW floats.

mod callback;
pub mod convert;
pub mod pipeline;
pub mod texture_cache;

use std::sync::Arc;

use eframe::egui;
use egui_wgpu::RenderState;

pub use callback::DisplayCallback;
pub use texture_cache::TextureCache;

/// A batch of images to show: NCHW floats in [-1, 1].
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// Content key: a new key means new pixels (the worker's request id).
    pub key: u64,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Number of images.
    pub count: usize,
    /// `count * channels * height * width` floats.
    pub pixels: Arc<[f32]>,
}

/// Which images of a batch to draw, and how to lay them out in the rect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridLayout {
    /// Columns.
    pub cols: usize,
    /// Rows.
    pub rows: usize,
    /// First image shown.
    pub first: usize,
    /// Gap between cells in points.
    pub gap: f32,
}

impl GridLayout {
    /// One row of `cols` images starting at the first.
    pub fn row(cols: usize, gap: f32) -> Self {
        Self { cols, rows: 1, first: 0, gap }
    }

    /// The rect of cell `i` (counted from `first`) inside `rect`.
    pub fn cell_rect(&self, rect: egui::Rect, i: usize) -> egui::Rect {
        let (cols, rows) = (self.cols.max(1) as f32, self.rows.max(1) as f32);
        let w = (rect.width() - self.gap * (cols - 1.0)) / cols;
        let h = (rect.height() - self.gap * (rows - 1.0)) / rows;
        let (c, r) = ((i % self.cols.max(1)) as f32, (i / self.cols.max(1)) as f32);
        egui::Rect::from_min_size(rect.min + egui::vec2(c * (w + self.gap), r * (h + self.gap)), egui::vec2(w, h))
    }

    /// The cell under `pos`, if any (gaps count as no cell).
    pub fn cell_at(&self, rect: egui::Rect, pos: egui::Pos2) -> Option<usize> {
        (0..self.cols * self.rows).find(|&i| self.cell_rect(rect, i).contains(pos))
    }
}

/// Creates the display pipeline and texture cache for this render state.
/// Call once at start-up; calling again replaces the cache.
pub fn install(render_state: &RenderState) {
    let pipeline = pipeline::DisplayPipeline::new(&render_state.device, render_state.target_format);
    render_state.renderer.write().callback_resources.insert(TextureCache::new(pipeline));
}

/// Number of texture uploads so far (0 without a cache).
pub fn upload_count(render_state: &RenderState) -> u64 {
    render_state.renderer.read().callback_resources.get::<TextureCache>().map_or(0, |c| c.uploads)
}

/// Draws `source` into `rect` as a grid of `layout`, in display slot
/// `slot` (one slot per on-screen batch; a slot may be drawn once a frame).
/// Images beyond the batch are left empty.
pub fn paint(
    painter: &egui::Painter,
    rect: egui::Rect,
    slot: &'static str,
    source: &ImageSource,
    layout: GridLayout,
    smooth: bool,
) {
    let cells = layout.cols * layout.rows;
    let count = cells.min(source.count.saturating_sub(layout.first));
    if count == 0 || source.pixels.len() < source.count * source.channels * source.width * source.height {
        return;
    }
    let gap_ndc = [2.0 * layout.gap / rect.width().max(1.0), 2.0 * layout.gap / rect.height().max(1.0)];
    let uniform = pipeline::ViewUniform {
        cols: layout.cols as u32,
        rows: layout.rows as u32,
        first: layout.first as u32,
        count: count as u32,
        gap: gap_ndc,
        channels: source.channels as u32,
        srgb_target: 0,
    };
    painter.add(egui_wgpu::Callback::new_paint_callback(
        rect,
        DisplayCallback { slot, source: source.clone(), uniform, smooth },
    ));
}
