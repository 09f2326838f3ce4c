//! F(4x4, 3x3): the 3x3 stride-1 convolutions of images whose sides are
//! multiples of 4, each 4x4 output tile from a 6x6 input tile by 36
//! products per (c, o) pair, where F(2x2, 3x3) takes 64 for the same 16
//! outputs (1.78x fewer multiply-adds in the GEMMs, which are most of a
//! call), and its input and output transforms move 36 values per 16
//! outputs instead of 64.
//!
//! The interpolation points are 0, 1, -1, 2, ½ and ∞ (Lavin & Gray use
//! ±2). Why: that set is closed under x → 1/x, so the transform of a
//! flipped kernel is the transform with its positions permuted along each
//! axis ([`FLIP`]) once G's rows are scaled to match (a point p's row
//! times p², ½'s four times 2's), and a layer's input gradient reads its
//! forward's transform as the 3x3 path does ([`Transformed::transposed`]).
//! Its f32 error against the direct sums is that of the ±2 set: at most
//! 1.7e-5 of the largest output over 64 channels of N(0, 1) values in a
//! NumPy check (1.6e-5 with ±2), within the equivalence tests' 1e-4.
//!
//! Why only some sizes ([`pays`]): an image whose sides are not multiples
//! of 4 wastes a ring of tiles, and 2x2 tiles waste at most one row.
//!
//! [`Transformed::transposed`]: super::Transformed::transposed

use std::array;

use wide::f32x8;

use super::taps::sandwich;
use super::{Lanes, Tiles, apply_across};

/// Where each of G's rows goes when the kernel is reversed: 0 and ∞, 2
/// and ½ trade places.
pub(super) const FLIP: [usize; 6] = [5, 1, 2, 4, 3, 0];

/// Whether an image of H x W pixels runs by F(4x4, 3x3): its sides are
/// multiples of 4, so that the 4x4 tiles cover it exactly.
pub(super) fn pays(h: usize, w: usize) -> bool {
    h.is_multiple_of(4) && w.is_multiple_of(4) && h * w > 0
}

/// G times a column of 3 taps, G = [9 0 0; 9 9 9; 1 -1 1; 1 2 4; 4 2 1;
/// 0 0 9] / 18: the taps' polynomial at 0, 1, -1, 2, ½ and ∞, scaled.
#[inline(always)]
fn g_rows([a, b, c]: [f32x8; 3]) -> [f32x8; 6] {
    let (half, eighteenth, four) = (f32x8::splat(0.5), f32x8::splat(1.0 / 18.0), f32x8::splat(4.0));
    let (ac, b2) = (a + c, b + b);
    [
        a * half,
        (ac + b) * half,
        (ac - b) * eighteenth,
        (a + b2 + c * four) * eighteenth,
        (a * four + b2 + c) * eighteenth,
        c * half,
    ]
}

/// Gᵀ times a column of 6 values: a transform's gradient back to taps.
#[inline(always)]
fn g_t_rows([p0, p1, p2, p3, p4, p5]: [f32x8; 6]) -> [f32x8; 3] {
    let (half, eighteenth, two, four) =
        (f32x8::splat(0.5), f32x8::splat(1.0 / 18.0), f32x8::splat(2.0), f32x8::splat(4.0));
    [
        (p0 + p1) * half + (p2 + p3 + p4 * four) * eighteenth,
        p1 * half + ((p3 + p4) * two - p2) * eighteenth,
        (p1 + p5) * half + (p2 + p3 * four + p4) * eighteenth,
    ]
}

/// A times a column of 4 output gradients (Aᵀ's transpose): the
/// gradient at the 6 products that made them.
#[inline(always)]
fn a_rows([y0, y1, y2, y3]: [f32x8; 4]) -> [f32x8; 6] {
    let (two, four, eight) = (f32x8::splat(2.0), f32x8::splat(4.0), f32x8::splat(8.0));
    let (even, odd) = (y0 + y2, y1 + y3);
    [y0, even + odd, even - odd, y0 + y1 * two + y2 * four + y3 * eight, y0 * eight + y1 * four + y2 * two + y3, y3]
}

/// Bᵀ times a column of 6 values: Bᵀ = [2 -5 0 5 -2 0; 0 -2 3 3 -2 0; 0
/// -2 7 -7 2 0; 0 1 -2 -1 2 0; 0 2 -1 -2 1 0; 0 -2 5 0 -5 2], all integers
/// (exact for the inputs' magnitudes).
#[inline(always)]
fn b_rows([x0, x1, x2, x3, x4, x5]: [f32x8; 6]) -> [f32x8; 6] {
    let (two, three, five, seven) = (f32x8::splat(2.0), f32x8::splat(3.0), f32x8::splat(5.0), f32x8::splat(7.0));
    let (d13, d42) = (x1 - x3, x4 - x2);
    [
        (x0 - x4) * two + (x3 - x1) * five,
        (x2 + x3) * three - (x1 + x4) * two,
        (x2 - x3) * seven + (x4 - x1) * two,
        d13 + d42 * two,
        d13 * two + d42,
        (x5 - x1) * two + (x2 - x4) * five,
    ]
}

/// Aᵀ times a column of 6 products, back to 4 outputs: Aᵀ = [1 1 1 1 8
/// 0; 0 1 -1 2 4 0; 0 1 1 4 2 0; 0 1 -1 8 1 1].
#[inline(always)]
pub(super) fn output_rows([x0, x1, x2, x3, x4, x5]: [f32x8; 6]) -> [f32x8; 4] {
    let (two, four, eight) = (f32x8::splat(2.0), f32x8::splat(4.0), f32x8::splat(8.0));
    let (p, q) = (x1 + x2, x1 - x2);
    [x0 + p + x3 + x4 * eight, q + x3 * two + x4 * four, p + x3 * four + x4 * two, q + x3 * eight + x4 + x5]
}

/// A 3x3 kernel's 9 taps (row by row) to its 36 positions, `G g Gᵀ`.
pub(super) struct Positions;

impl Lanes<9, 36> for Positions {
    #[inline(always)]
    fn apply(&self, t: [f32x8; 9]) -> [f32x8; 36] {
        let u = sandwich(g_rows, &[[t[0], t[1], t[2]], [t[3], t[4], t[5]], [t[6], t[7], t[8]]]);
        u.as_flattened().try_into().expect("6 x 6 positions")
    }
}

/// [`Positions`] of the kernel read in reverse: a transposed
/// convolution's (C, O) kernel is the convolution's flipped.
pub(super) struct FlippedPositions;

impl Lanes<9, 36> for FlippedPositions {
    #[inline(always)]
    fn apply(&self, mut taps: [f32x8; 9]) -> [f32x8; 36] {
        taps.reverse();
        Positions.apply(taps)
    }
}

/// A transform's gradient at its 36 positions back to the kernel's 9
/// taps, `Gᵀ du G`: the transpose of [`Positions`].
pub(super) struct Taps;

impl Lanes<36, 9> for Taps {
    #[inline(always)]
    fn apply(&self, d: [f32x8; 36]) -> [f32x8; 9] {
        let grid: [[f32x8; 6]; 6] = array::from_fn(|i| array::from_fn(|j| d[6 * i + j]));
        sandwich(g_t_rows, &grid).as_flattened().try_into().expect("3 x 3 taps")
    }
}

/// A tile's 16 output gradients (row by row) to the gradient at its 36
/// products, `A dy Aᵀ`.
pub(super) struct OutputGradient;

impl Lanes<16, 36> for OutputGradient {
    #[inline(always)]
    fn apply(&self, y: [f32x8; 16]) -> [f32x8; 36] {
        let grid: [[f32x8; 4]; 4] = array::from_fn(|i| array::from_fn(|j| y[4 * i + j]));
        sandwich(a_rows, &grid).as_flattened().try_into().expect("6 x 6 positions")
    }
}

/// `Bᵀ d B` of each 6x6 tile of `x` (C x H x W), 4 pixels apart, into `v`
/// as tiles x 36 x C, tile after tile `ts` (36 C or more) values apart;
/// `xp` holds the padded image, `bd` (36 x C) `Bᵀ d` column by column.
/// Both passes are [`apply_across`] of Bᵀ, along columns, then rows.
pub(super) fn transform_input(
    tiles: &Tiles,
    x: &[f32],
    c: usize,
    xp: &mut [f32],
    bd: &mut [f32],
    v: &mut [f32],
    ts: usize,
) {
    tiles.pad(x, c, xp);
    let line = (4 * tiles.tw + 2) * c;
    for (t, out) in v.chunks_exact_mut(ts).take(tiles.count()).enumerate() {
        let at = 4 * (t / tiles.tw) * line + 4 * (t % tiles.tw) * c;
        // (Bᵀ d)[i][j] at (6 j + i) C: column j's six values side by side.
        for (j, col) in bd[..36 * c].chunks_exact_mut(6 * c).enumerate() {
            let mut dst = col.chunks_exact_mut(c);
            let src = array::from_fn(|i| &xp[at + i * line + j * c..][..c]);
            apply_across(src, array::from_fn(|_| dst.next().expect("6 rows")), None, &b_rows);
        }
        for (i, row) in out[..36 * c].chunks_exact_mut(6 * c).enumerate() {
            let mut dst = row.chunks_exact_mut(c);
            let src = array::from_fn(|j| &bd[(6 * j + i) * c..][..c]);
            apply_across(src, array::from_fn(|_| dst.next().expect("6 columns")), None, &b_rows);
        }
    }
}
