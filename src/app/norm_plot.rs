//! The plot of |z| along the anchor path in both modes: slerp stays on the
//! sphere of radius sqrt(dim), lerp dips toward the origin between anchors.
//! Dots mark the strip's frames; a dashed line marks the probe.

use eframe::egui;
use egui::{Align2, Color32, RichText};
use egui_plot::{HLine, Legend, Line, LineStyle, Plot, PlotPoint, Points, Text, VLine};

use super::explore::STRIP_FRAMES;
use super::probe::{self, Blend};
use super::theme;
use crate::latent::{self, Mode};

/// Samples per path segment.
const PLOT_SAMPLES: usize = 48;

/// Shows the plot: `keys` are the anchor latents in path order, `probe` the
/// slerp and lerp probe latents as two rows, `blend` what the probe means.
pub fn show(ui: &mut egui::Ui, keys: &[Vec<f32>], probe: &[f32], blend: &Blend, height: f32) {
    let dim = probe.len() / 2;
    let slerp = probe::norm_curve(keys, PLOT_SAMPLES, Mode::Slerp);
    let lerp = probe::norm_curve(keys, PLOT_SAMPLES, Mode::Lerp);
    let segments = keys.len().saturating_sub(1).max(1) as f64;
    let frames: Vec<f64> = (0..STRIP_FRAMES).map(|i| i as f64 / (STRIP_FRAMES - 1) as f64 * segments).collect();
    let at = |curve: &[[f64; 2]], x: f64| {
        let i = ((x * PLOT_SAMPLES as f64).round() as usize).min(curve.len().saturating_sub(1));
        curve.get(i).copied().unwrap_or([x, 0.0])
    };
    let slerp_frames: Vec<[f64; 2]> = frames.iter().map(|x| at(&slerp, *x)).collect();
    let lerp_frames: Vec<[f64; 2]> = frames.iter().map(|x| at(&lerp, *x)).collect();
    let radius = (dim as f64).sqrt();
    let (zs, zl) = probe.split_at(dim);
    let (ns, nl) = (latent::norm(zs) as f64, latent::norm(zl) as f64);
    ui.label(RichText::new("|z| along the path").strong())
            .on_hover_text("Sphere latents have |z| = sqrt(dim). Slerp stays on the sphere; lerp cuts inside it, where the prior has almost no mass, and its images wash out.");
    Plot::new("norm_plot")
        .height(height)
        .legend(Legend::default().position(egui_plot::Corner::LeftBottom))
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .include_y(0.0)
        .include_y(radius * 1.1)
        .include_x(0.0)
        .include_x(segments)
        .x_axis_label("position along the path (anchors at 0, 1, ...)")
        .y_axis_label("|z|")
        .y_grid_spacer(egui_plot::uniform_grid_spacer(move |_| {
            // Labelled ticks every ~quarter of the sphere radius.
            let step = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0].into_iter().find(|s| radius / s <= 5.0).unwrap_or(100.0);
            [step / 2.0, step, step * 2.0]
        }))
        .show(ui, |plot| {
            plot.line(Line::new("slerp", slerp).color(theme::SLERP).width(2.0));
            plot.line(Line::new("lerp", lerp).color(theme::LERP).width(2.0));
            // Same names as the lines: one legend entry per mode.
            plot.points(Points::new("slerp", slerp_frames).color(theme::SLERP).radius(3.0));
            plot.points(Points::new("lerp", lerp_frames).color(theme::LERP).radius(3.0));
            // The probe: unnamed (kept out of the legend), labelled in place.
            let dashed = LineStyle::dashed_dense();
            let label = |text: String, x: f64, y: f64, anchor: Align2, color: Color32| {
                Text::new("", PlotPoint::new(x, y), RichText::new(text).small().color(color)).anchor(anchor)
            };
            match *blend {
                Blend::Segment { t, .. } => {
                    let t = t as f64;
                    plot.vline(VLine::new("", t).color(Color32::WHITE).style(dashed));
                    let anchor = if t < 0.85 * segments { Align2::LEFT_BOTTOM } else { Align2::RIGHT_BOTTOM };
                    plot.text(label(format!(" probe t = {t:.2} "), t, 0.1 * radius, anchor, Color32::WHITE));
                }
                Blend::Weights(_) => {
                    for (n, color) in [(ns, theme::SLERP), (nl, theme::LERP)] {
                        plot.hline(HLine::new("", n).color(color).style(dashed));
                        plot.text(label(format!("probe |z| = {n:.2} "), segments, n, Align2::RIGHT_BOTTOM, color));
                    }
                }
                Blend::Single(i) => {
                    plot.vline(VLine::new("", i as f64).color(Color32::WHITE).style(dashed));
                }
                Blend::Empty => {}
            }
        });
}
