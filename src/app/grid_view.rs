//! The Grid view: 8x8 samples from consecutive seeds. Page through seeds,
//! reshuffle to a random base seed, click a sample to make it an anchor.

use eframe::egui;
use egui::{Align2, FontId, Rect, Stroke, StrokeKind, pos2, vec2};

use super::{Action, View};
use crate::latent::{self, Prior};
use crate::render::{self, GridLayout, ImageSource};

/// Samples per side.
pub const GRID_SIDE: usize = 8;
/// Samples per page.
pub const GRID_COUNT: usize = GRID_SIDE * GRID_SIDE;

/// Which seeds the grid shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GridState {
    /// Seed of the first sample of page 0.
    pub base: u64,
    /// Page number.
    pub page: u64,
    changed: bool,
}

impl GridState {
    /// Seed of sample `i` on the current page.
    pub fn seed(&self, i: usize) -> u64 {
        self.base.wrapping_add(self.page * GRID_COUNT as u64).wrapping_add(i as u64)
    }

    /// The page's latents, as rows.
    pub fn latents(&self, dim: usize) -> Vec<f32> {
        (0..GRID_COUNT).flat_map(|i| latent::from_seed(self.seed(i), dim, Prior::Sphere)).collect()
    }

    /// Whether the seeds changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Shows the controls and the grid. Returns the grid rect and actions.
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        source: Option<&ImageSource>,
        smooth: bool,
        has_wgpu: bool,
        has_model: bool,
    ) -> (Option<Rect>, Vec<Action>) {
        let mut actions = Vec::new();
        ui.horizontal(|ui| {
            ui.heading("Samples");
            ui.label(format!("seeds {} to {}", self.seed(0), self.seed(GRID_COUNT - 1)));
            ui.separator();
            if ui.add_enabled(self.page > 0, egui::Button::new("Previous page")).clicked() {
                self.page -= 1;
                self.changed = true;
            }
            if ui.button("Next page").clicked() {
                self.page += 1;
                self.changed = true;
            }
            if ui.button("Shuffle").on_hover_text("Jump to a random base seed").clicked() {
                self.base = super::random_seed();
                self.page = 0;
                self.changed = true;
            }
            ui.separator();
            ui.label(egui::RichText::new("Click a sample to add it as an anchor.").weak());
        });
        ui.add_space(6.0);
        let avail = ui.available_size();
        let gap = 3.0;
        let cell = ((avail.x.min(avail.y) - gap * (GRID_SIDE - 1) as f32) / GRID_SIDE as f32).floor().max(8.0);
        let side = cell * GRID_SIDE as f32 + gap * (GRID_SIDE - 1) as f32;
        let (row, _) = ui.allocate_exact_size(vec2(avail.x, side), egui::Sense::hover());
        let rect =
            Rect::from_min_size(pos2((row.center().x - side / 2.0).round(), row.top().round()), vec2(side, side));
        let response = ui.interact(rect, ui.scope_id().with("grid_cells"), egui::Sense::click());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Grid, true, "Sample grid"));
        let layout = GridLayout { cols: GRID_SIDE, rows: GRID_SIDE, first: 0, gap };
        let painter = ui.painter();
        match source {
            Some(src) if has_wgpu => render::paint(painter, rect, "grid", src, layout, smooth),
            _ => {
                painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
                let text = if !has_wgpu {
                    "no wgpu renderer: images cannot be shown"
                } else if has_model {
                    "generating\u{2026}"
                } else {
                    "loading the model\u{2026}"
                };
                painter.text(
                    rect.center(),
                    Align2::CENTER_CENTER,
                    text,
                    FontId::proportional(14.0),
                    ui.visuals().weak_text_color(),
                );
            }
        }
        if let Some(cell) = response.hover_pos().and_then(|p| layout.cell_at(rect, p)) {
            let r = layout.cell_rect(rect, cell);
            painter.rect_stroke(r, 0.0, Stroke::new(2.0, ui.visuals().selection.stroke.color), StrokeKind::Outside);
            let seed = self.seed(cell);
            let response = response.on_hover_text_at_pointer(format!("seed {seed}: click to add it as an anchor"));
            if response.clicked() {
                actions.push(Action::AddAnchor(seed));
                actions.push(Action::ShowView(View::Explore));
            }
        }
        (Some(rect), actions)
    }
}
