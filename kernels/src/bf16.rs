//! bfloat16 <-> f32 conversion.
//!
//! A bf16 value is the upper 16 bits of an IEEE-754 binary32, so widening is exact and narrowing is
//! a rounding of the low 16 mantissa bits.

/// Widens a bf16 bit pattern to f32. Exact for every input (NaN payloads are preserved).
#[inline]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Narrows an f32 to bf16 with round-to-nearest, ties-to-even.
///
/// Finite values too large for bf16 round to +-infinity (as IEEE rounding prescribes), infinities
/// stay infinities and NaN stays NaN (made quiet, sign kept).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        // Keep sign and the top of the payload, force the quiet bit so truncation cannot produce an
        // infinity.
        return ((bits >> 16) as u16) | 0x0040;
    }
    // Adding 0x7FFF plus the lowest kept bit rounds to nearest with ties to even; a carry out of
    // the mantissa correctly bumps the exponent (up to infinity).
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7FFF + lsb) >> 16) as u16
}

/// Widens a slice of bf16 bit patterns into `dst`.
///
/// # Panics
/// Panics if `src.len() != dst.len()`.
pub fn bf16_slice_to_f32(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "bf16_slice_to_f32: length mismatch");
    // A plain shift loop; the compiler vectorizes it.
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_to_f32(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widen_known_values() {
        assert_eq!(bf16_to_f32(0x3F80), 1.0);
        assert_eq!(bf16_to_f32(0xC000), -2.0);
        assert_eq!(bf16_to_f32(0x0000), 0.0);
        assert!(bf16_to_f32(0x8000).is_sign_negative());
        assert_eq!(bf16_to_f32(0x7F80), f32::INFINITY);
        assert!(bf16_to_f32(0x7FC0).is_nan());
        // Smallest subnormal.
        assert_eq!(bf16_to_f32(0x0001), f32::from_bits(0x0001_0000));
    }

    #[test]
    fn round_to_nearest_even() {
        // Exactly representable.
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1.0 (even mantissa) and 1 + 2^-7: ties to even -> 1.0.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80);
        // Halfway between 0x3F81 (odd) and 0x3F82: ties to even -> 0x3F82.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
        // Just above / below halfway.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_7FFF)), 0x3F80);
        // Negative values round symmetrically.
        assert_eq!(f32_to_bf16(f32::from_bits(0xBF81_8000)), 0xBF82);
        // Mantissa carry into the exponent.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3FFF_FFFF)), 0x4000);
        // Overflow to infinity, infinities and signed zero preserved.
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xFF80);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        // Subnormals round too.
        assert_eq!(f32_to_bf16(f32::from_bits(0x0000_8000)), 0x0000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x0001_8000)), 0x0002);
    }

    #[test]
    fn nan_stays_nan() {
        for bits in [
            0x7FC0_0000u32,
            0x7F80_0001,
            0xFF80_0001,
            0x7FFF_FFFF,
            0x7F80_FFFF,
        ] {
            let b = f32_to_bf16(f32::from_bits(bits));
            assert!(bf16_to_f32(b).is_nan(), "{bits:#x} -> {b:#x}");
        }
    }

    #[test]
    fn round_trip_every_non_nan_pattern() {
        for b in 0..=u16::MAX {
            let f = bf16_to_f32(b);
            if !f.is_nan() {
                assert_eq!(f32_to_bf16(f), b);
            }
        }
    }

    #[test]
    fn slice_conversion() {
        let src = [0x3F80u16, 0xC000, 0x0000, 0x4049];
        let mut dst = [0.0f32; 4];
        bf16_slice_to_f32(&src, &mut dst);
        assert_eq!(dst, [1.0, -2.0, 0.0, bf16_to_f32(0x4049)]);
    }

    #[test]
    #[should_panic]
    fn slice_length_mismatch_panics() {
        let mut dst = [0.0f32; 3];
        bf16_slice_to_f32(&[0u16; 4], &mut dst);
    }
}
