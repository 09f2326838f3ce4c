//! The latent canvas: anchor points and the probe on a 2D square. Press
//! anywhere to put the probe there and drag it; press on an anchor to drag
//! the anchor instead.

use eframe::egui;
use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, Vec2, pos2};

use super::probe::{Anchor, Blend};
use super::theme;

/// Radius of an anchor's disc, in points.
const ANCHOR_RADIUS: f32 = 10.0;
/// Radius of the probe's ring, in points.
const PROBE_RADIUS: f32 = 7.0;

/// What the pointer is holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grab {
    /// The probe.
    Probe,
    /// Anchor `i`.
    Anchor(usize),
}

/// What changed on the canvas this frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CanvasChange {
    /// The probe moved.
    pub probe: bool,
    /// An anchor moved.
    pub anchors: bool,
}

/// Maps canvas units ([0, 1]^2) to screen points inside `rect` (inset so
/// anchors at the border stay visible).
fn to_screen(rect: Rect, p: Pos2) -> Pos2 {
    let r = rect.shrink(ANCHOR_RADIUS + 2.0);
    pos2(r.left() + p.x * r.width(), r.top() + p.y * r.height())
}

/// The inverse of [`to_screen`], clamped to the canvas.
fn from_screen(rect: Rect, p: Pos2) -> Pos2 {
    let r = rect.shrink(ANCHOR_RADIUS + 2.0);
    pos2(
        ((p.x - r.left()) / r.width().max(1.0)).clamp(0.0, 1.0),
        ((p.y - r.top()) / r.height().max(1.0)).clamp(0.0, 1.0),
    )
}

/// Shows the canvas in a `side` x `side` square; moves the probe or an
/// anchor under the pointer. Returns the canvas rect and what changed.
pub fn show(
    ui: &mut egui::Ui,
    side: f32,
    anchors: &mut [Anchor],
    probe: &mut Pos2,
    grab: &mut Option<Grab>,
    blend: &Blend,
) -> (Rect, CanvasChange) {
    let (rect, response) = ui.allocate_exact_size(Vec2::splat(side), Sense::click_and_drag());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Latent canvas"));
    let mut change = CanvasChange::default();

    if response.is_pointer_button_down_on() {
        if let Some(pointer) = response.interact_pointer_pos() {
            let held = *grab.get_or_insert_with(|| {
                let origin = ui.input(|i| i.pointer.press_origin()).unwrap_or(pointer);
                anchors
                    .iter()
                    .rposition(|a| to_screen(rect, a.pos).distance(origin) <= ANCHOR_RADIUS + 3.0)
                    .map_or(Grab::Probe, Grab::Anchor)
            });
            let p = from_screen(rect, pointer);
            match held {
                Grab::Probe if *probe != p => {
                    *probe = p;
                    change.probe = true;
                }
                Grab::Anchor(i) if anchors.get(i).is_some_and(|a| a.pos != p) => {
                    anchors[i].pos = p;
                    change.anchors = true;
                }
                _ => {}
            }
        }
    } else {
        *grab = None;
    }
    if response.hovered() {
        let over_anchor = ui
            .input(|i| i.pointer.hover_pos())
            .is_some_and(|h| anchors.iter().any(|a| to_screen(rect, a.pos).distance(h) <= ANCHOR_RADIUS + 3.0));
        let icon = match (*grab, over_anchor) {
            (Some(_), _) => egui::CursorIcon::Grabbing,
            (None, true) => egui::CursorIcon::Grab,
            (None, false) => egui::CursorIcon::Crosshair,
        };
        ui.ctx().set_cursor_icon(icon);
    }
    paint(ui, rect, anchors, *probe, blend);
    (rect, change)
}

/// Draws background, path, weights, anchors and probe.
fn paint(ui: &egui::Ui, rect: Rect, anchors: &[Anchor], probe: Pos2, blend: &Blend) {
    let painter = ui.painter_at(rect);
    let visuals = ui.visuals();
    painter.rect_filled(rect, 6.0, visuals.extreme_bg_color);
    let faint = Stroke::new(1.0, visuals.widgets.noninteractive.bg_stroke.color.gamma_multiply(0.5));
    let inner = rect.shrink(ANCHOR_RADIUS + 2.0);
    for k in 0..=10 {
        let f = k as f32 / 10.0;
        let x = inner.left() + f * inner.width();
        let y = inner.top() + f * inner.height();
        painter.line_segment([pos2(x, inner.top()), pos2(x, inner.bottom())], faint);
        painter.line_segment([pos2(inner.left(), y), pos2(inner.right(), y)], faint);
    }
    painter.rect_stroke(rect, 6.0, visuals.widgets.noninteractive.bg_stroke, StrokeKind::Inside);

    let screen: Vec<Pos2> = anchors.iter().map(|a| to_screen(rect, a.pos)).collect();
    let path_stroke = Stroke::new(2.0, visuals.text_color().gamma_multiply(0.45));
    for w in screen.windows(2) {
        painter.line_segment([w[0], w[1]], path_stroke);
    }
    let p = to_screen(rect, probe);
    let text = visuals.text_color();
    match blend {
        Blend::Segment { t, at } => {
            let at = to_screen(rect, *at);
            painter.extend(egui::Shape::dashed_line(&[p, at], Stroke::new(1.0, text.gamma_multiply(0.6)), 4.0, 3.0));
            painter.circle_filled(at, 4.0, text);
            // Beside the segment, on the side away from the probe.
            let below = if p.y > at.y + 1.0 || (at.y > inner.bottom() - 30.0) { -24.0 } else { 24.0 };
            painter.text(
                at + egui::vec2(0.0, below),
                Align2::CENTER_CENTER,
                format!("t = {t:.2}"),
                FontId::proportional(13.0),
                text,
            );
        }
        Blend::Weights(w) => {
            for (i, (a, wi)) in screen.iter().zip(w).enumerate() {
                let color = theme::anchor_color(i).gamma_multiply(0.25 + 0.75 * wi.sqrt());
                painter.line_segment([p, *a], Stroke::new(1.0 + 5.0 * wi, color));
            }
        }
        Blend::Single(_) | Blend::Empty => {}
    }
    for (i, (a, at)) in anchors.iter().zip(&screen).enumerate() {
        painter.circle(*at, ANCHOR_RADIUS, theme::anchor_color(i), Stroke::new(1.5, Color32::WHITE));
        painter.text(*at, Align2::CENTER_CENTER, theme::anchor_letter(i), FontId::proportional(13.0), Color32::BLACK);
        let mut label = a.label();
        if let Blend::Weights(w) = blend {
            label = format!("{label} \u{b7} {:.0}%", 100.0 * w[i]);
        }
        let below = a.pos.y < 0.85;
        let offset = if below { ANCHOR_RADIUS + 9.0 } else { -ANCHOR_RADIUS - 9.0 };
        let galley_pos = *at + egui::vec2(0.0, offset);
        let anchor_align = if a.pos.x < 0.15 {
            Align2::LEFT_CENTER
        } else if a.pos.x > 0.85 {
            Align2::RIGHT_CENTER
        } else {
            Align2::CENTER_CENTER
        };
        let dx = match anchor_align {
            Align2::LEFT_CENTER => -ANCHOR_RADIUS,
            Align2::RIGHT_CENTER => ANCHOR_RADIUS,
            _ => 0.0,
        };
        painter.text(galley_pos + egui::vec2(dx, 0.0), anchor_align, label, FontId::proportional(12.0), text);
    }
    painter.circle_stroke(p, PROBE_RADIUS, Stroke::new(3.0, Color32::BLACK));
    painter.circle_stroke(p, PROBE_RADIUS, Stroke::new(2.0, Color32::WHITE));
    for d in [egui::vec2(1.0, 0.0), egui::vec2(0.0, 1.0)] {
        painter.line_segment(
            [p + d * (PROBE_RADIUS + 2.0), p + d * (PROBE_RADIUS + 7.0)],
            Stroke::new(1.5, Color32::WHITE),
        );
        painter.line_segment(
            [p - d * (PROBE_RADIUS + 2.0), p - d * (PROBE_RADIUS + 7.0)],
            Stroke::new(1.5, Color32::WHITE),
        );
    }
}

/// Screen position of a canvas point, for tests and tooltips.
pub fn canvas_to_screen(rect: Rect, p: Pos2) -> Pos2 {
    to_screen(rect, p)
}
