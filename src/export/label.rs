//! Small text labels burnt into exported frames ("SLERP", "LERP"), drawn
//! from a built-in 5x7 bitmap font so no font crate is needed. Only the
//! capital letters the exporter uses are defined; others draw as blanks.

use image::{Rgb, RgbImage};

/// Glyph width and height in font pixels.
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;

/// Rows of a glyph, top to bottom; bit 4 is the leftmost column.
fn glyph(c: char) -> Option<[u8; 7]> {
    Some(match c {
        'E' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
        'L' => [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
        'P' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000],
        'R' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
        'S' => [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
        _ => return None,
    })
}

/// Font pixel size for a pane `side` pixels wide: about 1/20 of the pane
/// for the text height, at least one image pixel per font pixel.
pub fn scale_for(side: u32) -> u32 {
    (side / 160).max(1)
}

/// Width and height in image pixels of `text` at `scale`, without the box.
pub fn text_size(text: &str, scale: u32) -> (u32, u32) {
    let n = text.chars().count() as u32;
    (n.saturating_mul(GLYPH_W + 1).saturating_sub(1) * scale, GLYPH_H * scale)
}

/// Draws `text` in white on a dark box whose top-left corner is at (x, y);
/// whatever falls outside the image is clipped.
pub fn draw(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32) {
    let scale = scale.max(1);
    let pad = scale;
    let (tw, th) = text_size(text, scale);
    fill(img, x, y, tw + 2 * pad, th + 2 * pad, Rgb([16, 16, 20]));
    for (k, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        let gx = x + pad + k as u32 * (GLYPH_W + 1) * scale;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                    fill(img, gx + col * scale, y + pad + r as u32 * scale, scale, scale, Rgb([240, 240, 240]));
                }
            }
        }
    }
}

/// Fills a rectangle, clipped to the image.
fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: Rgb<u8>) {
    let (iw, ih) = img.dimensions();
    for yy in y.min(ih)..(y.saturating_add(h)).min(ih) {
        for xx in x.min(iw)..(x.saturating_add(w)).min(iw) {
            img.put_pixel(xx, yy, color);
        }
    }
}
