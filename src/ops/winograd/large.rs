//! F(4x4, 3x3): the 3x3 stride-1 convolutions of images whose sides are
//! multiples of 4, each 4x4 output tile from a 6x6 input tile by 36
//! products per (c, o) pair, where F(2x2, 3x3) takes 64 for the same 16
//! outputs (1.78x fewer multiply-adds in the GEMMs, which are most of a
//! call), and its input and output transforms move 36 values per 16
//! outputs instead of 64.
//!
//! The interpolation points are 0, 1, -1, ½, -2 and ∞ (Lavin & Gray use
//! ±2). Why: in a NumPy check over 80 channels of uniform values its f32
//! error against the direct sums was at most 4.6e-6 of the largest output,
//! where ±2 gave 1.5e-5 and the sets closed under x → 1/x (0, ±1, 2, ½,
//! ∞) 1.6e-5 and more: with those the equivalence tests' 1e-4 failed for
//! a transposed convolution of 80 channels (1.5e-4).
//!
//! A transposed convolution (a layer's input gradient) correlates with
//! each kernel flipped, which is the correlation by the kernel itself of
//! the input reversed along both axes, reversed back: so it reads the
//! forward's transform as it is ([`SAME`]) and reverses each input tile
//! before `Bᵀ d B` ([`transform_input`]) and each output tile after `Aᵀ m
//! A` ([`mirrored`]). A transform of the flipped kernel instead, made
//! apart from the forward's, cost the 32 px pixel-shuffle generator's
//! 256 → 512 input gradient 4-5 ms of its 9 (its 131072 pairs' 36
//! positions, 19 MB written afresh each step).
//!
//! Why only some sizes ([`pays`]): an image whose sides are not multiples
//! of 4 wastes a ring of tiles, and 2x2 tiles waste at most one row.

use std::array;

use wide::f32x8;

use super::taps::sandwich_rows;
use super::{Lanes, Tiles, apply_across};

/// How a transposed view's positions lie: where the kernel's do.
pub(super) const SAME: [usize; 6] = [0, 1, 2, 3, 4, 5];

/// Whether an image of H x W pixels runs by F(4x4, 3x3): its sides are
/// multiples of 4, so that the 4x4 tiles cover it exactly.
pub(super) fn pays(h: usize, w: usize) -> bool {
    h.is_multiple_of(4) && w.is_multiple_of(4) && h * w > 0
}

/// G times a column of 3 taps: G = [½ 0 0; ⅙ ⅙ ⅙; ⅙ -⅙ ⅙; 16/15 8/15
/// 4/15; 1/30 -1/15 2/15; 0 0 ½], the taps' polynomial at the points,
/// scaled so that Bᵀ has integer entries.
#[inline(always)]
fn g_rows([a, b, c]: [f32x8; 3]) -> [f32x8; 6] {
    let (half, sixth) = (f32x8::splat(0.5), f32x8::splat(1.0 / 6.0));
    let (four_fifteenths, thirtieth) = (f32x8::splat(4.0 / 15.0), f32x8::splat(1.0 / 30.0));
    let (ac, two, four) = (a + c, f32x8::splat(2.0), f32x8::splat(4.0));
    [
        a * half,
        (ac + b) * sixth,
        (ac - b) * sixth,
        (a * four + b * two + c) * four_fifteenths,
        (a - b * two + c * four) * thirtieth,
        c * half,
    ]
}

/// Gᵀ times a column of 6 values: a transform's gradient back to taps.
#[inline(always)]
fn g_t_rows([p0, p1, p2, p3, p4, p5]: [f32x8; 6]) -> [f32x8; 3] {
    let (half, sixth) = (f32x8::splat(0.5), f32x8::splat(1.0 / 6.0));
    let (fifteenth, thirtieth) = (f32x8::splat(1.0 / 15.0), f32x8::splat(1.0 / 30.0));
    let (two, four, eight, sixteen) = (f32x8::splat(2.0), f32x8::splat(4.0), f32x8::splat(8.0), f32x8::splat(16.0));
    let (sum, diff) = ((p1 + p2) * sixth, (p1 - p2) * sixth);
    [
        p0 * half + sum + p3 * sixteen * fifteenth + p4 * thirtieth,
        diff + (p3 * eight - p4) * fifteenth,
        sum + (p3 * four + p4 * two) * fifteenth + p5 * half,
    ]
}

/// A times a column of 4 output gradients (Aᵀ's transpose): the
/// gradient at the 6 products that made them.
#[inline(always)]
fn a_rows([y0, y1, y2, y3]: [f32x8; 4]) -> [f32x8; 6] {
    let (half, quarter, eighth) = (f32x8::splat(0.5), f32x8::splat(0.25), f32x8::splat(0.125));
    let (two, four, eight) = (f32x8::splat(2.0), f32x8::splat(4.0), f32x8::splat(8.0));
    let (even, odd) = (y0 + y2, y1 + y3);
    [
        y0,
        even + odd,
        even - odd,
        y0 + y1 * half + y2 * quarter + y3 * eighth,
        y0 - y1 * two + y2 * four - y3 * eight,
        y3,
    ]
}

/// Bᵀ times a column of 6 values: Bᵀ = [2 -3 -4 3 2 0; 0 -2 1 5 2 0; 0
/// -2 5 -1 -2 0; 0 2 1 -2 -1 0; 0 1 -2 -1 2 0; 0 2 -3 -4 3 2], integers
/// (exact for the inputs' magnitudes).
#[inline(always)]
fn b_rows([x0, x1, x2, x3, x4, x5]: [f32x8; 6]) -> [f32x8; 6] {
    let (two, three, four, five) = (f32x8::splat(2.0), f32x8::splat(3.0), f32x8::splat(4.0), f32x8::splat(5.0));
    [
        (x0 + x4) * two + (x3 - x1) * three - x2 * four,
        (x4 - x1) * two + x2 + x3 * five,
        (x1 + x4) * -two + x2 * five - x3,
        (x1 - x3) * two + x2 - x4,
        (x4 - x2) * two + x1 - x3,
        (x1 + x5) * two + (x4 - x2) * three - x3 * four,
    ]
}

/// Aᵀ times a column of 6 products, back to 4 outputs: Aᵀ = [1 1 1 1 1
/// 0; 0 1 -1 ½ -2 0; 0 1 1 ¼ 4 0; 0 1 -1 ⅛ -8 1].
#[inline(always)]
pub(super) fn output_rows([x0, x1, x2, x3, x4, x5]: [f32x8; 6]) -> [f32x8; 4] {
    let (half, quarter, eighth) = (f32x8::splat(0.5), f32x8::splat(0.25), f32x8::splat(0.125));
    let (two, four, eight) = (f32x8::splat(2.0), f32x8::splat(4.0), f32x8::splat(8.0));
    let (p, q) = (x1 + x2, x1 - x2);
    [x0 + p + x3 + x4, q + x3 * half - x4 * two, p + x3 * quarter + x4 * four, q + x3 * eighth - x4 * eight + x5]
}

/// A 3x3 kernel's 9 taps (row by row) to its 36 positions, `G g Gᵀ`.
pub(super) struct Positions;

impl Lanes<9, 36> for Positions {
    #[inline(always)]
    fn apply(&self, t: [f32x8; 9]) -> [f32x8; 36] {
        sandwich_rows(g_rows, t)
    }
}

/// [`output_rows`] for a transposed convolution: the outputs reversed.
#[inline(always)]
pub(super) fn mirrored(x: [f32x8; 6]) -> [f32x8; 4] {
    let mut y = output_rows(x);
    y.reverse();
    y
}

/// A transform's gradient at its 36 positions back to the kernel's 9
/// taps, `Gᵀ du G`: the transpose of [`Positions`].
pub(super) struct Taps;

impl Lanes<36, 9> for Taps {
    #[inline(always)]
    fn apply(&self, d: [f32x8; 36]) -> [f32x8; 9] {
        sandwich_rows(g_t_rows, d)
    }
}

/// A tile's 16 output gradients (row by row) to the gradient at its 36
/// products, `A dy Aᵀ`.
pub(super) struct OutputGradient;

impl Lanes<16, 36> for OutputGradient {
    #[inline(always)]
    fn apply(&self, y: [f32x8; 16]) -> [f32x8; 36] {
        sandwich_rows(a_rows, y)
    }
}

/// `Bᵀ d B` of each 6x6 tile of `x` (C x H x W), 4 pixels apart, into `v`
/// as tiles x 36 x C, tile after tile `ts` (36 C or more) values apart,
/// each tile reversed along both axes first when `mirror`; `xp` holds the
/// padded image, `bd` (36 x C) `Bᵀ d` column by column. Both passes are
/// [`apply_across`] of Bᵀ, along columns, then rows.
pub(super) fn transform_input(
    tiles: &Tiles,
    (x, c): (&[f32], usize),
    (xp, bd): (&mut [f32], &mut [f32]),
    (v, ts): (&mut [f32], usize),
    mirror: bool,
) {
    tiles.pad(x, c, xp);
    let line = (4 * tiles.tw + 2) * c;
    let at = |i: usize| if mirror { 5 - i } else { i };
    for (t, out) in v.chunks_exact_mut(ts).take(tiles.count()).enumerate() {
        let corner = 4 * (t / tiles.tw) * line + 4 * (t % tiles.tw) * c;
        // (Bᵀ d)[i][j] at (6 j + i) C: column j's six values side by side.
        for (j, col) in bd[..36 * c].chunks_exact_mut(6 * c).enumerate() {
            let mut dst = col.chunks_exact_mut(c);
            let src = array::from_fn(|i| &xp[corner + at(i) * line + at(j) * c..][..c]);
            apply_across(src, array::from_fn(|_| dst.next().expect("6 rows")), None, &b_rows);
        }
        for (i, row) in out[..36 * c].chunks_exact_mut(6 * c).enumerate() {
            let mut dst = row.chunks_exact_mut(c);
            let src = array::from_fn(|j| &bd[(6 * j + i) * c..][..c]);
            apply_across(src, array::from_fn(|_| dst.next().expect("6 columns")), None, &b_rows);
        }
    }
}
