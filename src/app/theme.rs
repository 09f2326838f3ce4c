//! Colours and sizes shared by the explorer's views.

use eframe::egui;
use egui::Color32;

/// Colour of everything slerp (labels, plot line, strip row).
pub const SLERP: Color32 = Color32::from_rgb(96, 170, 255);
/// Colour of everything lerp.
pub const LERP: Color32 = Color32::from_rgb(255, 152, 72);
/// Error text.
pub const ERROR: Color32 = Color32::from_rgb(255, 96, 96);

/// Anchor colours, in anchor order (the list repeats past its end).
pub const ANCHORS: [Color32; 8] = [
    Color32::from_rgb(236, 104, 90),
    Color32::from_rgb(92, 176, 236),
    Color32::from_rgb(128, 204, 96),
    Color32::from_rgb(236, 196, 72),
    Color32::from_rgb(188, 120, 228),
    Color32::from_rgb(72, 204, 192),
    Color32::from_rgb(240, 146, 196),
    Color32::from_rgb(176, 176, 176),
];

/// Most anchors the canvas offers.
pub const MAX_ANCHORS: usize = 8;

/// Colour of anchor `i`.
pub fn anchor_color(i: usize) -> Color32 {
    ANCHORS[i % ANCHORS.len()]
}

/// Letter of anchor `i` (A, B, ...).
pub fn anchor_letter(i: usize) -> char {
    (b'A' + (i % 26) as u8) as char
}
