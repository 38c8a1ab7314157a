use super::*;
use crate::test_util::Rng;

/// Independent E4M3 formula: (-1)^s * 2^(e-7) * (1 + m/8), subnormal (-1)^s * 2^-6 * m/8.
fn e4m3_formula(b: u8) -> f64 {
    let s = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((b >> 3) & 0xF) as i32;
    let m = (b & 7) as f64;
    if e == 0 {
        s * 2f64.powi(-6) * (m / 8.0)
    } else {
        s * 2f64.powi(e - 7) * (1.0 + m / 8.0)
    }
}

#[test]
fn e4m3_decode_all_codes() {
    for b in 0..=255u8 {
        let v = e4m3_to_f32(b);
        if b & 0x7F == 0x7F {
            assert!(v.is_nan(), "{b:#04x}");
        } else {
            assert_eq!(v as f64, e4m3_formula(b), "{b:#04x}");
            assert_eq!(v.is_sign_negative(), b & 0x80 != 0, "{b:#04x}");
        }
        assert_eq!(v.to_bits(), e4m3_decode(b).to_bits());
    }
    assert_eq!(e4m3_to_f32(0x7E), 448.0);
    assert_eq!(e4m3_to_f32(0xFE), -448.0);
    assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
    assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
    assert_eq!(e4m3_to_f32(0x38), 1.0);
    assert_eq!(e4m3_to_f32(0xB8), -1.0);
    assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
}

#[test]
fn e4m3_round_trip_every_code() {
    for b in 0..=255u8 {
        if b & 0x7F != 0x7F {
            assert_eq!(f32_to_e4m3(e4m3_to_f32(b)), b, "{b:#04x}");
        }
    }
}

#[test]
fn e4m3_encode_special_cases() {
    assert_eq!(f32_to_e4m3(f32::NAN), 0x7F);
    assert_eq!(f32_to_e4m3(-f32::NAN), 0x7F);
    assert_eq!(f32_to_e4m3(500.0), 0x7E);
    assert_eq!(f32_to_e4m3(1e30), 0x7E);
    assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7E);
    assert_eq!(f32_to_e4m3(f32::NEG_INFINITY), 0xFE);
    assert_eq!(f32_to_e4m3(-449.0), 0xFE);
    assert_eq!(f32_to_e4m3(0.0), 0x00);
    assert_eq!(f32_to_e4m3(-0.0), 0x80);
    // Ties to even mantissa.
    assert_eq!(f32_to_e4m3(1.0 + 1.0 / 16.0), 0x38);
    assert_eq!(f32_to_e4m3(1.0 + 3.0 / 16.0), 0x3A);
    assert_eq!(f32_to_e4m3(-(1.0 + 3.0 / 16.0)), 0xBA);
    // 1.9375 is halfway between 1.875 (odd) and 2.0: carries into the next binade.
    assert_eq!(f32_to_e4m3(1.9375), 0x40);
    // Subnormal ties: 2^-10 -> 0, 3 * 2^-10 -> 2 * 2^-9, 15 * 2^-10 -> min normal.
    assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0x00);
    assert_eq!(f32_to_e4m3(3.0 * 2f32.powi(-10)), 0x02);
    assert_eq!(f32_to_e4m3(15.0 * 2f32.powi(-10)), 0x08);
    // Far below the smallest subnormal.
    assert_eq!(f32_to_e4m3(1e-30), 0x00);
    assert_eq!(f32_to_e4m3(f32::from_bits(1)), 0x00);
}

/// Brute-force nearest code with ties to the even code (even mantissa), saturating at +-448.
fn e4m3_nearest(x: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = f64::INFINITY;
    for b in 0..=0x7Eu8 {
        let err = (x.abs() as f64 - e4m3_formula(b)).abs();
        if err < best_err || (err == best_err && b & 1 == 0) {
            best = b;
            best_err = err;
        }
    }
    best | if x.is_sign_negative() { 0x80 } else { 0 }
}

#[test]
fn e4m3_encode_matches_brute_force() {
    let mut rng = Rng::new(1);
    // Walk f32 bit patterns densely over the whole FP8 range (and a bit beyond) plus random values.
    let lo = 2f32.powi(-12).to_bits();
    let hi = 470f32.to_bits();
    let mut values: Vec<f32> = (lo..hi).step_by(997).map(f32::from_bits).collect();
    values.extend((0..20_000).map(|_| rng.uniform() * 2f32.powi(rng.below(20) as i32 - 11)));
    for b in 0..0x7Fu8 {
        // Exact midpoints between neighbouring codes.
        values.push(((e4m3_formula(b) + e4m3_formula(b + 1)) / 2.0) as f32);
    }
    for x in values {
        for v in [x, -x] {
            assert_eq!(f32_to_e4m3(v), e4m3_nearest(v), "x = {v:e}");
        }
    }
}

#[test]
fn e8m0_decode() {
    assert_eq!(e8m0_to_f32(127), 1.0);
    assert_eq!(e8m0_to_f32(128), 2.0);
    assert_eq!(e8m0_to_f32(120), 2f32.powi(-7));
    assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
    assert_eq!(e8m0_to_f32(1), 2f32.powi(-126));
    assert_eq!(e8m0_to_f32(0) as f64, 2f64.powi(-127));
    assert!(e8m0_to_f32(255).is_nan());
    for b in 0..255u8 {
        assert_eq!(e8m0_to_f32(b) as f64, 2f64.powi(b as i32 - 127));
    }
}

#[test]
fn e2m1_all_codes() {
    let expected = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    for n in 0..16u8 {
        let v = e2m1_to_f32(n);
        let m = expected[(n & 7) as usize];
        assert_eq!(v, if n & 8 != 0 { -m } else { m }, "{n:#x}");
        assert_eq!(v.is_sign_negative(), n & 8 != 0);
        assert_eq!(f32_to_e2m1(v), n, "round trip {n:#x}");
        // High bits of the byte are ignored.
        assert_eq!(e2m1_to_f32(n | 0xF0).to_bits(), v.to_bits());
    }
}

#[test]
fn e2m1_encode_rounding() {
    let cases: [(f32, u8); 17] = [
        (0.2, 0),
        (0.25, 0), // tie 0 / 0.5 -> code 0 (even)
        (0.3, 1),
        (0.75, 2), // tie 0.5 / 1 -> code 2
        (1.25, 2), // tie 1 / 1.5 -> code 2
        (1.3, 3),
        (1.75, 4), // tie 1.5 / 2 -> code 4
        (2.5, 4),  // tie 2 / 3 -> code 4
        (2.6, 5),
        (3.5, 6), // tie 3 / 4 -> code 6
        (4.9, 6),
        (5.0, 6), // tie 4 / 6 -> code 6
        (5.1, 7),
        (6.0, 7),
        (100.0, 7),
        (f32::INFINITY, 7),
        (f32::NAN, 0),
    ];
    for (x, code) in cases {
        assert_eq!(f32_to_e2m1(x), code, "{x}");
        if !x.is_nan() {
            assert_eq!(f32_to_e2m1(-x), code | 8, "-{x}");
        }
    }
    assert_eq!(f32_to_e2m1(-0.0), 8);
}

#[test]
fn fp8_dequant_hand_built() {
    // rows = 3, cols = 5, block = 2: scale grid [2, 3]; the last row and column blocks are partial.
    let w: Vec<u8> = vec![
        0x38, 0xB8, 0x40, 0x08, 0x7E, //
        0x00, 0x30, 0x48, 0x01, 0x80, //
        0x3C, 0x44, 0xC0, 0x7E, 0x39, //
    ];
    let scale = vec![127u8, 128, 126, 129, 127, 120];
    let s = |b: u8| 2f32.powi(b as i32 - 127);
    let v = |b: u8| e4m3_formula(b) as f32;
    let mut out = vec![f32::NAN; 15];
    dequant_fp8_blocks(&w, &scale, 3, 5, 2, &mut out);
    let block_of = |r: usize, c: usize| scale[(r / 2) * 3 + c / 2];
    for r in 0..3 {
        for c in 0..5 {
            assert_eq!(
                out[r * 5 + c],
                v(w[r * 5 + c]) * s(block_of(r, c)),
                "({r}, {c})"
            );
        }
    }
    // Spot checks written out by hand.
    assert_eq!(out[0], 1.0); // 0x38 * 2^0
    assert_eq!(out[2], 4.0); // 0x40 = 2.0, scale 2^1
    assert_eq!(out[4], 448.0 * 0.5); // 0x7E, scale 2^-1
    assert_eq!(out[10], 1.5 * 4.0); // 0x3C = 1.5, scale 2^2
    assert_eq!(out[14], 1.125 * 2f32.powi(-7)); // 0x39, scale 2^-7
}

#[test]
fn fp4_dequant_nibble_order() {
    // rows = 2, cols = 6, group = 4 -> 2 groups per row (the second partial).
    // Row 0 logical: [0.5, 1, 1.5, -2 | 3, -6] ; codes 1, 2, 3, 0xC | 5, 0xF.
    // Row 1 logical: [6, 0, -0.5, 4 | -1, 2]   ; codes 7, 0, 9, 6 | 0xA, 4.
    let w = vec![0x21, 0xC3, 0xF5, 0x07, 0x69, 0x4A];
    let scale = vec![127, 128, 126, 127]; // row 0: x1, x2 ; row 1: x0.5, x1
    let mut out = vec![f32::NAN; 12];
    dequant_fp4_groups(&w, &scale, 2, 6, 4, &mut out);
    assert_eq!(
        out,
        vec![
            0.5, 1.0, 1.5, -2.0, 6.0, -12.0, 3.0, 0.0, -0.25, 2.0, -1.0, 2.0
        ]
    );
}

#[test]
fn fp8_quant_round_trip_exact() {
    let mut rng = Rng::new(7);
    for &(rows, cols, block) in &[
        (3usize, 5usize, 2usize),
        (130, 257, 128),
        (1, 1, 128),
        (16, 33, 8),
    ] {
        let (rb, cb) = (rows.div_ceil(block), cols.div_ceil(block));
        let scales: Vec<u8> = (0..rb * cb).map(|_| 100 + rng.below(50) as u8).collect();
        let codes: Vec<u8> = (0..rows * cols)
            .map(|_| {
                loop {
                    let b = rng.below(256) as u8;
                    if b & 0x7F != 0x7F {
                        break b;
                    }
                }
            })
            .collect();
        let mut x = vec![0.0; rows * cols];
        dequant_fp8_blocks(&codes, &scales, rows, cols, block, &mut x);
        let (q, s) = quant_fp8_blocks(&x, rows, cols, block);
        let mut y = vec![0.0; rows * cols];
        dequant_fp8_blocks(&q, &s, rows, cols, block, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        // With a +-448 element in every tile the chosen scales, hence the bytes, are the original
        // ones.
        let mut codes2 = codes.clone();
        for r in (0..rows).step_by(block) {
            for c in (0..cols).step_by(block) {
                codes2[r * cols + c] = if rng.below(2) == 0 { 0x7E } else { 0xFE };
            }
        }
        dequant_fp8_blocks(&codes2, &scales, rows, cols, block, &mut x);
        assert_eq!(quant_fp8_blocks(&x, rows, cols, block), (codes2, scales));
    }
}

#[test]
fn fp8_quant_scale_choice() {
    // amax = 448 * 2^3 exactly -> scale 2^3; one ulp more -> 2^4. All-zero tile -> smallest scale.
    let v = 448.0 * 8.0;
    let (_, s) = quant_fp8_blocks(&[v, 1.0, 0.0, 0.0], 1, 4, 2);
    assert_eq!(s, vec![130, 0]);
    let (_, s) = quant_fp8_blocks(&[f32::from_bits(v.to_bits() + 1)], 1, 1, 2);
    assert_eq!(s, vec![131]);
    // Inexact input: nearest FP8 after scaling.
    let (q, s) = quant_fp8_blocks(&[1.0, 0.3], 1, 2, 2);
    assert_eq!(s, vec![127 - 8]); // 1.0 / 2^-8 = 256 <= 448 < 512
    assert_eq!(q[1], f32_to_e4m3(0.3 * 256.0));
}

#[test]
fn fp4_quant_round_trip_exact() {
    let mut rng = Rng::new(11);
    for &(rows, cols, group) in &[
        (2usize, 6usize, 4usize),
        (5, 64, 32),
        (3, 98, 32),
        (1, 2, 32),
    ] {
        let groups = cols.div_ceil(group);
        let scales: Vec<u8> = (0..rows * groups)
            .map(|_| 110 + rng.below(30) as u8)
            .collect();
        let packed: Vec<u8> = (0..rows * cols / 2).map(|_| rng.below(256) as u8).collect();
        let mut x = vec![0.0; rows * cols];
        dequant_fp4_groups(&packed, &scales, rows, cols, group, &mut x);
        let (q, s) = quant_fp4_groups(&x, rows, cols, group);
        let mut y = vec![0.0; rows * cols];
        dequant_fp4_groups(&q, &s, rows, cols, group, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        // With a +-6 in every group the scales and the packed bytes come back unchanged.
        let mut packed2 = packed.clone();
        for r in 0..rows {
            for g in 0..groups {
                let c = g * group;
                let byte = &mut packed2[(r * cols + c) / 2];
                *byte = (*byte & 0xF0) | if rng.below(2) == 0 { 0x7 } else { 0xF };
            }
        }
        dequant_fp4_groups(&packed2, &scales, rows, cols, group, &mut x);
        assert_eq!(quant_fp4_groups(&x, rows, cols, group), (packed2, scales));
    }
}

#[test]
fn quant_dequant_error_is_bounded() {
    // Random (non-representable) data: FP8 relative error per element <= 2^-4 of the tile scale
    // step.
    let mut rng = Rng::new(3);
    let (rows, cols) = (37, 300);
    let x = rng.vec_f32(rows * cols);
    let (q, s) = quant_fp8_blocks(&x, rows, cols, 128);
    let mut y = vec![0.0; rows * cols];
    dequant_fp8_blocks(&q, &s, rows, cols, 128, &mut y);
    for (a, b) in x.iter().zip(&y) {
        assert!(
            (a - b).abs() <= a.abs() / 16.0 + 2f32.powi(-17),
            "{a} vs {b}"
        );
    }
    let (q, s) = quant_fp4_groups(&x, rows, cols, 32);
    let mut y = vec![0.0; rows * cols];
    dequant_fp4_groups(&q, &s, rows, cols, 32, &mut y);
    for (a, b) in x.iter().zip(&y) {
        // Half a step of the coarsest spacing (2 at the top, scale amax/6 <= 2^-2 for |x| < 1 ->
        // 0.25).
        assert!((a - b).abs() <= 0.25 + 1e-6, "{a} vs {b}");
    }
}

#[test]
fn empty_shapes_are_no_ops() {
    let mut out: Vec<f32> = vec![];
    dequant_fp8_blocks(&[], &[], 0, 5, 128, &mut out);
    dequant_fp4_groups(&[], &[], 0, 64, 32, &mut out);
    assert_eq!(quant_fp8_blocks(&[], 0, 0, 128), (vec![], vec![]));
    assert_eq!(quant_fp4_groups(&[], 0, 4, 32), (vec![], vec![]));
}
