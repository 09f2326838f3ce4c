//! The Explore view: the anchor canvas and anchor list on the left; on the
//! right the slerp and lerp images under the probe, a plot of |z| along
//! the anchor path in both modes, and a strip of frames along each path.

use eframe::egui;
use egui::{Align2, FontId, Pos2, Rect, RichText, pos2, vec2};

use super::Action;
use super::canvas::{self, Grab};
use super::norm_plot;
use super::probe::{self, Anchor, Blend};
use super::theme;
use crate::latent::{self, Mode};
use crate::render::{self, GridLayout, ImageSource};
use crate::worker::Target;

/// Width of the left panel, in points.
pub const SIDE_PANEL_WIDTH: f32 = 384.0;
/// Frames per path in the strip.
pub const STRIP_FRAMES: usize = 8;

/// Free spots for new anchors, tried in order.
const SPOTS: [(f32, f32); 8] =
    [(0.1, 0.5), (0.9, 0.5), (0.5, 0.1), (0.5, 0.9), (0.15, 0.15), (0.85, 0.85), (0.85, 0.15), (0.15, 0.85)];

/// Help text on how the probe maps to a latent.
const BLEND_HELP: &str = "How the probe picks a latent:\n\
    - two anchors: the probe is projected onto the segment A-B, giving t in [0, 1]; \
    slerp follows the great circle (|z| stays on the sphere), lerp the straight chord (|z| dips).\n\
    - three or more: inverse-distance-squared weights w_i = 1/d_i^2 (normalized); \
    lerp is the weighted mean of the anchor latents, slerp rescales that mean back onto \
    the sphere (a normalized weighted sum).\n\
    The plot and the frame strips follow the polyline through the anchors in order.";

/// A few lines for a first-time user, under the anchor list.
const ABOUT: &str = "Each anchor is a seed: its latent z is drawn from N(0, I) and scaled onto \
    the sphere of radius sqrt(dim), where nearly all of the prior's mass lies. \
    Slerp moves between anchors along that sphere; lerp takes the straight chord \
    through its inside, where |z| shrinks and images tend to wash out. \
    Grid view: click any sample to add it here.";

/// Hover text of an anchor that holds an exact latent.
const EXACT_HELP: &str = "This anchor holds an exact latent from a bookmark, one no seed gives. \
    New seed replaces it with a seed's latent.";

/// What the main view shows this frame.
pub struct Shown<'a> {
    /// The `[slerp, lerp]` probe images.
    pub probe: Option<&'a ImageSource>,
    /// The strip frames: slerp row, then lerp row.
    pub strip: Option<&'a ImageSource>,
    /// Smooth (bilinear) filtering.
    pub smooth: bool,
    /// Whether wgpu is there to draw images.
    pub has_wgpu: bool,
    /// No model yet.
    pub waiting: bool,
}

/// Anchors, probe and the latents they stand for.
pub struct ExploreState {
    /// The anchors, in path order.
    pub anchors: Vec<Anchor>,
    /// The probe, in canvas units.
    pub probe: Pos2,
    grab: Option<Grab>,
    /// Latents of the anchors for `cache_key`.
    cache: Vec<Vec<f32>>,
    cache_key: (Vec<Anchor>, usize),
    changes: Vec<Target>,
}

impl Default for ExploreState {
    fn default() -> Self {
        Self {
            // With the embedded emoji model, seed 28 is a smiley and seed 0 a
            // boy: the first view shows lerp's washed-out middle at a glance.
            anchors: vec![Anchor::seeded(28, pos2(0.1, 0.5)), Anchor::seeded(0, pos2(0.9, 0.5))],
            probe: pos2(0.5, 0.5),
            grab: None,
            cache: Vec::new(),
            cache_key: (Vec::new(), 0),
            changes: Vec::new(),
        }
    }
}

impl ExploreState {
    /// Targets whose inputs changed since the last call.
    pub fn take_changes(&mut self) -> Vec<Target> {
        std::mem::take(&mut self.changes)
    }

    fn changed(&mut self, targets: &[Target]) {
        for t in targets {
            if !self.changes.contains(t) {
                self.changes.push(*t);
            }
        }
    }

    /// A new model may have another latent size: drop the cache.
    pub fn model_changed(&mut self) {
        self.cache_key = (Vec::new(), 0);
    }

    /// The anchors' latents for dimension `dim`, in path order: what the
    /// views show and what exports and bookmarks use.
    pub fn latents(&mut self, dim: usize) -> &[Vec<f32>] {
        // Whole anchors as the key (positions too) keep it simple; a few
        // latents recomputed while an anchor is dragged cost next to nothing.
        if self.cache_key.0 != self.anchors || self.cache_key.1 != dim {
            self.cache = self.anchors.iter().map(|a| a.latent(dim)).collect();
            self.cache_key = (self.anchors.clone(), dim);
        }
        &self.cache
    }

    /// Replaces the anchors and the probe (a loaded bookmark).
    pub fn restore(&mut self, anchors: Vec<Anchor>, probe: Pos2) {
        self.anchors = anchors;
        self.probe = probe;
        self.grab = None;
        self.changed(&[Target::Probe, Target::Strip]);
    }

    /// What the probe stands for.
    pub fn blend(&self) -> Blend {
        probe::blend_at(&self.anchors, self.probe)
    }

    /// The two probe latents, slerp then lerp, as rows.
    pub fn probe_latents(&mut self, dim: usize) -> Vec<f32> {
        let blend = self.blend();
        let [s, l] = probe::probe_latents(self.latents(dim), &blend);
        [s, l].concat()
    }

    /// The strip latents: slerp frames, then lerp frames, as rows.
    pub fn strip_latents(&mut self, dim: usize) -> Vec<f32> {
        let keys = self.latents(dim).to_vec();
        let mut rows = probe::path(&keys, STRIP_FRAMES, Mode::Slerp);
        rows.extend(probe::path(&keys, STRIP_FRAMES, Mode::Lerp));
        rows.concat()
    }

    /// Adds an anchor at a free spot; with `probe_on_it` the probe moves
    /// onto it. False when the canvas is full.
    pub fn add_anchor(&mut self, seed: u64, probe_on_it: bool) -> bool {
        if self.anchors.len() >= theme::MAX_ANCHORS {
            return false;
        }
        let free =
            SPOTS.iter().map(|(x, y)| pos2(*x, *y)).find(|p| self.anchors.iter().all(|a| a.pos.distance(*p) > 0.12));
        let pos = free.unwrap_or_else(|| {
            // Deterministic scatter when every preset spot is taken.
            let h = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            pos2(0.1 + 0.8 * ((h >> 11) % 1000) as f32 / 1000.0, 0.1 + 0.8 * ((h >> 31) % 1000) as f32 / 1000.0)
        });
        self.anchors.push(Anchor::seeded(seed, pos));
        if probe_on_it {
            self.probe = pos;
        }
        self.changed(&[Target::Probe, Target::Strip]);
        true
    }

    /// The left panel: canvas, what the probe means, the anchor list.
    /// Returns the canvas rect and actions.
    pub fn show_side(&mut self, ui: &mut egui::Ui, dim: Option<usize>) -> (Rect, Vec<Action>) {
        let mut actions = Vec::new();
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            ui.heading("Latent canvas");
            ui.label(RichText::new("(?)").weak()).on_hover_text(BLEND_HELP);
        });
        ui.label(RichText::new("Drag the probe; drag anchors to move them.").weak());
        ui.add_space(4.0);
        let side = ui.available_width();
        let blend = self.blend();
        let (rect, change) = canvas::show(ui, side, &mut self.anchors, &mut self.probe, &mut self.grab, &blend);
        if change.probe {
            self.changed(&[Target::Probe]);
        }
        if change.anchors {
            self.changed(&[Target::Probe, Target::Strip]);
        }
        ui.add_space(6.0);
        let blend = self.blend();
        let line = match &blend {
            Blend::Empty => "No anchors.".to_string(),
            Blend::Single(i) => format!("On anchor {}.", theme::anchor_letter(*i)),
            Blend::Segment { t, .. } => format!("t = {t:.2} from A to B"),
            Blend::Weights(_) => format!("Blend of {} anchors (inverse-distance\u{b2} weights)", self.anchors.len()),
        };
        ui.label(RichText::new(line).strong()).on_hover_text(BLEND_HELP);
        if let Some(dim) = dim {
            let z = self.probe_latents(dim);
            let (s, l) = z.split_at(dim);
            ui.horizontal(|ui| {
                ui.label(RichText::new(format!("slerp |z| = {:.2}", latent::norm(s))).color(theme::SLERP));
                ui.label(RichText::new(format!("lerp |z| = {:.2}", latent::norm(l))).color(theme::LERP));
                ui.label(RichText::new(format!("sphere radius {:.2}", (dim as f32).sqrt())).weak());
            });
        }
        ui.separator();
        self.anchor_list(ui);
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            let buttons = [
                (
                    "Export video\u{2026}",
                    "Render the path through the anchors to MP4, GIF or PNG frames",
                    Action::ShowExport,
                ),
                ("Save bookmark\u{2026}", "Save the anchors, view and export settings to JSON", Action::SaveBookmark),
                ("Load bookmark\u{2026}", "Restore anchors, view and export settings from JSON", Action::LoadBookmark),
            ];
            for (label, help, action) in buttons {
                if ui.button(label).on_hover_text(help).clicked() {
                    actions.push(action);
                }
            }
        });
        ui.add_space(10.0);
        ui.label(RichText::new(ABOUT).weak());
        (rect, actions)
    }

    /// One row per anchor: seed (editable), new random seed, remove.
    fn anchor_list(&mut self, ui: &mut egui::Ui) {
        let mut remove = None;
        let mut reseeded = false;
        let can_remove = self.anchors.len() > 2;
        egui::ScrollArea::vertical().max_height(ui.available_height() - 36.0).show(ui, |ui| {
            egui::Grid::new("anchor_list").num_columns(4).spacing([8.0, 4.0]).show(ui, |ui| {
                for (i, a) in self.anchors.iter_mut().enumerate() {
                    let name = ui.label(
                        RichText::new(format!("Anchor {}", theme::anchor_letter(i)))
                            .color(theme::anchor_color(i))
                            .strong(),
                    );
                    let mut changed = match a.z {
                        Some(_) => {
                            ui.label(RichText::new("exact z").italics()).on_hover_text(EXACT_HELP);
                            false
                        }
                        None => ui
                            .add(egui::DragValue::new(&mut a.seed).speed(0.2).prefix("seed "))
                            .labelled_by(name.id)
                            .on_hover_text("The seed of this anchor's latent: drag or type a number")
                            .changed(),
                    };
                    if ui.button("New seed").on_hover_text("Pick a random seed").clicked() {
                        a.seed = super::random_seed();
                        changed = true;
                    }
                    if changed {
                        a.z = None;
                    }
                    reseeded |= changed;
                    let r = ui
                        .add_enabled(can_remove, egui::Button::new("Remove"))
                        .on_disabled_hover_text("A path needs at least two anchors");
                    if r.clicked() {
                        remove = Some(i);
                    }
                    ui.end_row();
                }
            });
        });
        if let Some(i) = remove {
            self.anchors.remove(i);
            reseeded = true;
        }
        ui.add_space(4.0);
        let full = self.anchors.len() >= theme::MAX_ANCHORS;
        if ui
            .add_enabled(!full, egui::Button::new("Add anchor"))
            .on_hover_text("Add an anchor with a random seed")
            .clicked()
        {
            self.add_anchor(super::random_seed(), false);
        }
        if reseeded {
            self.changed(&[Target::Probe, Target::Strip]);
        }
    }

    /// The right side: probe images, |z| plot, strips. Returns where the
    /// probe images and the strip were drawn.
    pub fn show_main(
        &mut self,
        ui: &mut egui::Ui,
        dim: Option<usize>,
        shown: &Shown<'_>,
    ) -> (Option<[Rect; 2]>, Option<Rect>) {
        let avail = ui.available_size();
        let gap = 24.0;
        let label_w = 48.0;
        let strip_cell = ((avail.x - label_w - 7.0 * 4.0) / STRIP_FRAMES as f32).clamp(24.0, 92.0).floor();
        let strip_h = 2.0 * strip_cell + 4.0;
        let plot_h = (avail.y * 0.22).clamp(110.0, 170.0);
        let mut side = ((avail.x - gap) / 2.0).min(avail.y - strip_h - plot_h - 110.0).max(64.0).floor();
        if let Some(res) = shown.probe.map(|p| p.width as f32).filter(|r| *r > 0.0 && side >= 2.0 * *r) {
            // A whole number of screen pixels per image pixel keeps "Nearest" crisp.
            side = (side / res).floor() * res;
        }

        // Titles over the two images.
        let row_w = 2.0 * side + gap;
        let (title_rect, _) = ui.allocate_exact_size(vec2(avail.x, 22.0), egui::Sense::hover());
        let left = (title_rect.center().x - row_w / 2.0).round();
        let titles = [
            ("slerp \u{b7} along the great circle", theme::SLERP),
            ("lerp \u{b7} along the straight chord", theme::LERP),
        ];
        for (k, (title, color)) in titles.iter().enumerate() {
            let x = left + k as f32 * (side + gap) + side / 2.0;
            ui.painter().text(
                pos2(x, title_rect.center().y),
                Align2::CENTER_CENTER,
                *title,
                FontId::proportional(16.0),
                *color,
            );
        }
        let (row_rect, _) = ui.allocate_exact_size(vec2(avail.x, side), egui::Sense::hover());
        let images_rect = Rect::from_min_size(pos2(left, row_rect.top().round()), vec2(row_w, side));
        let layout = GridLayout::row(2, gap);
        let rects = [layout.cell_rect(images_rect, 0), layout.cell_rect(images_rect, 1)];
        self.paint_images(ui, images_rect, &rects, "probe", shown.probe, layout, shown);
        for (r, c) in rects.iter().zip([theme::SLERP, theme::LERP]) {
            ui.painter().rect_stroke(r.expand(2.0), 2.0, egui::Stroke::new(2.0, c), egui::StrokeKind::Outside);
        }
        ui.add_space(8.0);

        if let Some(dim) = dim {
            let keys = self.latents(dim).to_vec();
            let probe = self.probe_latents(dim);
            norm_plot::show(ui, &keys, &probe, &self.blend(), plot_h);
        }
        ui.add_space(6.0);
        let names: String =
            (0..self.anchors.len()).map(|i| theme::anchor_letter(i).to_string()).collect::<Vec<_>>().join(" - ");
        ui.label(format!("{STRIP_FRAMES} frames along the path {names}"));
        let (strip_row, _) = ui.allocate_exact_size(vec2(avail.x, strip_h), egui::Sense::hover());
        let strip_w = STRIP_FRAMES as f32 * strip_cell + (STRIP_FRAMES - 1) as f32 * 4.0;
        let strip_left = (strip_row.center().x - (strip_w + label_w) / 2.0 + label_w).round();
        let strip_rect = Rect::from_min_size(pos2(strip_left, strip_row.top().round()), vec2(strip_w, strip_h));
        let strip_layout = GridLayout { cols: STRIP_FRAMES, rows: 2, first: 0, gap: 4.0 };
        let cells: Vec<Rect> = (0..2 * STRIP_FRAMES).map(|i| strip_layout.cell_rect(strip_rect, i)).collect();
        self.paint_images(ui, strip_rect, &cells, "strip", shown.strip, strip_layout, shown);
        for (row, (name, color)) in [("slerp", theme::SLERP), ("lerp", theme::LERP)].iter().enumerate() {
            let y = cells[row * STRIP_FRAMES].center().y;
            ui.painter().text(
                pos2(strip_left - 8.0, y),
                Align2::RIGHT_CENTER,
                *name,
                FontId::proportional(14.0),
                *color,
            );
        }
        (Some(rects), Some(strip_rect))
    }

    /// Draws a batch, or a placeholder while there is none.
    #[allow(clippy::too_many_arguments)]
    fn paint_images(
        &self,
        ui: &egui::Ui,
        rect: Rect,
        cells: &[Rect],
        slot: &'static str,
        source: Option<&ImageSource>,
        layout: GridLayout,
        shown: &Shown<'_>,
    ) {
        let painter = ui.painter();
        match source {
            Some(src) if shown.has_wgpu => render::paint(painter, rect, slot, src, layout, shown.smooth),
            _ => {
                for c in cells {
                    painter.rect_filled(*c, 2.0, ui.visuals().extreme_bg_color);
                }
                let text = if !shown.has_wgpu {
                    "no wgpu renderer: images cannot be shown"
                } else if shown.waiting {
                    "loading the model\u{2026}"
                } else {
                    "generating\u{2026}"
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
    }
}
