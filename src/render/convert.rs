//! CPU side of the upload: the generator's NCHW floats become RGBA texels
//! of half floats, one texture layer per image. No colour mapping happens
//! here (the shader does `[-1, 1] -> sRGB`); grey images keep their value
//! in R and the shader replicates it.

/// Converts an `f32` to IEEE 754 binary16 bits, rounding to nearest even.
/// Overflow becomes infinity, NaN stays NaN.
pub fn f16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let man = x & 0x007f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x0200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal half (or zero): value = m16 * 2^-24.
        if e < -10 {
            return sign;
        }
        let m = man | 0x0080_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let up = rem > halfway || (rem == halfway && half & 1 == 1);
        return sign | (half + u32::from(up)) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let up = rem > 0x1000 || (rem == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa correctly bumps the exponent.
    sign | (half + u32::from(up)) as u16
}

/// Texels of `count` NCHW images as RGBA half floats, image after image
/// (the layers of a 2D-array texture). Missing channels are zero, alpha is 1.
/// Returns the bytes to upload (`count * height * width * 8`).
pub fn nchw_to_rgba_f16(pixels: &[f32], count: usize, channels: usize, height: usize, width: usize) -> Vec<u8> {
    let plane = height * width;
    let one = f16_bits(1.0).to_le_bytes();
    let mut out = vec![0u8; count * plane * 8];
    for n in 0..count {
        let image = &pixels[n * channels * plane..(n + 1) * channels * plane];
        let texels = &mut out[n * plane * 8..(n + 1) * plane * 8];
        for (i, texel) in texels.chunks_exact_mut(8).enumerate() {
            for c in 0..channels.min(3) {
                texel[c * 2..c * 2 + 2].copy_from_slice(&f16_bits(image[c * plane + i]).to_le_bytes());
            }
            texel[6..8].copy_from_slice(&one);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_match_known_bit_patterns() {
        // Reference values from the IEEE 754 binary16 table.
        assert_eq!(f16_bits(0.0), 0x0000);
        assert_eq!(f16_bits(-0.0), 0x8000);
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-1.0), 0xbc00);
        assert_eq!(f16_bits(0.5), 0x3800);
        assert_eq!(f16_bits(65504.0), 0x7bff);
        assert_eq!(f16_bits(1e6), 0x7c00);
        assert_eq!(f16_bits(f32::NAN) & 0x7c00, 0x7c00);
        assert_eq!(f16_bits(5.960_464_5e-8), 0x0001); // smallest subnormal
        assert_eq!(f16_bits(0.333_333_34), 0x3555);
    }

    #[test]
    fn grey_and_rgb_images_land_in_their_layers() {
        let grey = [-1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0];
        let bytes = nchw_to_rgba_f16(&grey, 2, 1, 2, 2);
        assert_eq!(bytes.len(), 2 * 4 * 8);
        assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]), 0xbc00);
        assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]), 0x3800);
        assert_eq!(u16::from_le_bytes([bytes[32], bytes[33]]), 0x3c00);
        let rgb = [0.0, 0.5, -1.0]; // one 1x1 RGB image
        let bytes = nchw_to_rgba_f16(&rgb, 1, 3, 1, 1);
        let halves: Vec<u16> = bytes.chunks(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        assert_eq!(halves, vec![0x0000, 0x3800, 0xbc00, 0x3c00]);
    }
}
