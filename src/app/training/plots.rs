//! The live plots of a run: losses, D's verdicts, gradient norms against
//! the explosion limit, and the instance-noise schedule. All share the step
//! axis; alarms and setting changes are drawn on it as vertical markers.

use eframe::egui;
use egui::{Color32, RichText};
use egui_plot::{HLine, Legend, Line, LineStyle, Plot, PlotPoint, Text, VLine};

use crate::train::history::Curves;
use crate::train::trainer::StepStats;

/// Most points drawn per line; longer curves are thinned evenly.
const MAX_POINTS: usize = 1500;

const D_COLOR: Color32 = Color32::from_rgb(236, 104, 90);
const G_COLOR: Color32 = Color32::from_rgb(92, 176, 236);
const ALARM_COLOR: Color32 = Color32::from_rgb(255, 96, 96);
const SETTING_COLOR: Color32 = Color32::from_rgb(236, 196, 72);

/// One line: a name, a colour and what it reads from a step.
type Series = (&'static str, Color32, fn(&StepStats) -> f32);

/// The plots, top to bottom: title, hover text, lines.
const PLOTS: [(&str, &str, &[Series]); 4] = [
    (
        "Losses",
        "D's loss (real + fake batches) and G's loss",
        &[("D loss", D_COLOR, |s| s.d_loss), ("G loss", G_COLOR, |s| s.g_loss)],
    ),
    (
        "D(x) and D(G(z))",
        "D's mean probability that real images are real, and that fakes are. \
         D(x) near 1 with D(G(z)) near 0 means D wins.",
        &[("D(x)", D_COLOR, |s| s.d_real), ("D(G(z))", G_COLOR, |s| s.d_fake)],
    ),
    (
        "Gradient norms",
        "Global gradient norms of G and D; over the limit line is an explosion (tip 10)",
        &[("|grad D|", D_COLOR, |s| s.d_grad_norm), ("|grad G|", G_COLOR, |s| s.g_grad_norm)],
    ),
    (
        "Instance noise",
        "Std of the Gaussian noise on D's inputs (tip 13), decaying to zero",
        &[("noise std", Color32::from_rgb(128, 204, 96), |s| s.instance_noise)],
    ),
];

/// Shows the four plots in `height` points; `grad_limit` is the
/// health monitor's gradient-norm limit.
pub fn show(ui: &mut egui::Ui, curves: &Curves, grad_limit: f64, height: f32) {
    let stride = curves.points.len().div_ceil(MAX_POINTS).max(1);
    let shown: Vec<&StepStats> = curves.points.iter().step_by(stride).collect();
    let link = ui.scope_id().with("training_plots");
    let each = (height / PLOTS.len() as f32 - 22.0).max(60.0);
    for (i, (title, hover, series)) in PLOTS.iter().enumerate() {
        ui.label(RichText::new(*title).strong()).on_hover_text(*hover);
        let mut plot = Plot::new(("training_plot", i))
            .height(each)
            .legend(Legend::default().position(egui_plot::Corner::LeftTop))
            .link_axis(link, [true, false])
            .link_cursor(link, [true, false])
            .include_x(0.0)
            .include_y(0.0)
            .show_axes([i + 1 == PLOTS.len(), true]);
        if i == 1 {
            plot = plot.include_y(1.0);
        }
        let lines: Vec<(&str, Color32, Vec<[f64; 2]>)> = series
            .iter()
            .map(|(name, color, read)| (*name, *color, shown.iter().map(|s| [s.step as f64, read(s) as f64]).collect()))
            .collect();
        // Marker labels sit at the data's extremes: placed at the plot's own
        // bounds they would widen them, frame after frame.
        let ys = lines.iter().flat_map(|(_, _, pts)| pts.iter().map(|p| p[1])).filter(|y| y.is_finite());
        let (lo, hi) = ys.fold((0.0f64, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
        plot.show(ui, |p| {
            for (name, color, pts) in lines {
                p.line(Line::new(name, pts).color(color).width(1.5));
            }
            if i == 2 {
                let name = format!("limit {grad_limit}");
                p.hline(HLine::new(name, grad_limit).color(Color32::LIGHT_GRAY).style(LineStyle::dashed_dense()));
            }
            markers(p, curves, (i == 0).then_some((lo, hi)));
        });
    }
}

/// Alarms (red) and setting changes (yellow, dashed) at their steps; with
/// `labels` (the data's lowest and highest value) they are named too.
fn markers(p: &mut egui_plot::PlotUi<'_>, curves: &Curves, labels: Option<(f64, f64)>) {
    for s in curves.points.iter().filter(|s| !s.alarms.is_empty()) {
        p.vline(VLine::new("", s.step as f64).color(ALARM_COLOR));
        if let Some((_, top)) = labels {
            let names: Vec<String> = s.alarms.iter().map(|a| a.kind.title().to_string()).collect();
            let text = RichText::new(format!(" {}", names.join(", "))).small().color(ALARM_COLOR);
            p.text(Text::new("", PlotPoint::new(s.step as f64, top), text).anchor(egui::Align2::LEFT_TOP));
        }
    }
    for c in &curves.settings {
        p.vline(VLine::new("", c.step as f64).color(SETTING_COLOR).style(LineStyle::dashed_loose()));
        if let Some((bottom, _)) = labels {
            let text = RichText::new(format!(" {} = {}", c.key, c.value)).small().color(SETTING_COLOR);
            p.text(Text::new("", PlotPoint::new(c.step as f64, bottom), text).anchor(egui::Align2::LEFT_BOTTOM));
        }
    }
}
