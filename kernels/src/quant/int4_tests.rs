use super::*;
use crate::test_util::Rng;

#[test]
fn int4_values_are_twos_complement() {
    let want = [0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1];
    for (n, &v) in want.iter().enumerate() {
        assert_eq!(int4_value(n as u8), v);
        // Only the low nibble counts.
        assert_eq!(int4_value(n as u8 | 0xA0), v);
    }
}

#[test]
fn dequant_hand_built() {
    // One row, 4 columns, group 2: byte 0 = (col 0: 7, col 1: -8), byte 1 = (col 2: -1, col 3: 1).
    let w = [0x87u8, 0x1F];
    let scale = [f32_to_bf16(0.5), f32_to_bf16(-2.0)];
    let mut out = [0.0f32; 4];
    dequant_int4_groups(&w, &scale, 1, 4, 2, &mut out);
    assert_eq!(out, [3.5, -4.0, 2.0, -2.0]);
}

/// Packs codes `q` (row-major, `-8..=7`) in the INT4 nibble order.
fn pack(q: &[i8]) -> Vec<u8> {
    q.chunks(2)
        .map(|p| (p[0] as u8 & 0x0F) | ((p[1] as u8 & 0x0F) << 4))
        .collect()
}

#[test]
fn round_trip_is_exact_when_groups_reach_the_range_ends() {
    // Groups that contain both 7 and -8 times a positive bf16 scale are reproduced exactly.
    let mut rng = Rng::new(41);
    let (rows, cols, group) = (5, 96, 32);
    let mut q: Vec<i8> = (0..rows * cols).map(|_| rng.below(16) as i8 - 8).collect();
    for g in q.chunks_mut(group) {
        g[3] = 7;
        g[20] = -8;
    }
    let scales: Vec<u16> = (0..rows * cols / group)
        .map(|_| f32_to_bf16(0.001 + rng.uniform().abs()))
        .collect();
    let mut x = vec![0.0; rows * cols];
    dequant_int4_groups(&pack(&q), &scales, rows, cols, group, &mut x);
    let (w2, s2) = quant_int4_groups(&x, rows, cols, group);
    let mut back = vec![0.0; rows * cols];
    dequant_int4_groups(&w2, &s2, rows, cols, group, &mut back);
    assert_eq!(back, x);
    assert_eq!((w2, s2), (pack(&q), scales));
}

/// Standard normal samples (Box-Muller).
fn gaussian(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1 = (rng.uniform() as f64 * 0.5 + 0.5).max(1e-12);
            let u2 = rng.uniform() as f64 * 0.5 + 0.5;
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// Laplace samples (heavier tails, like real weight groups with outliers).
fn laplace(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u = rng.uniform() as f64 * 0.5;
            (-u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()) as f32
        })
        .collect()
}

/// RMS error of quantizing every group of `x` with the scale `rule(group)` (before bf16 rounding).
fn rms_with(x: &[f32], group: usize, rule: impl Fn(&[f32]) -> f64) -> f64 {
    let mut sum = 0.0;
    for g in x.chunks(group) {
        let s = bf16_to_f32(f32_to_bf16(rule(g) as f32)) as f64;
        sum += group_error(g, s);
    }
    (sum / x.len() as f64).sqrt()
}

/// Largest |x|, with its sign.
fn signed_amax(g: &[f32]) -> f64 {
    g.iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m }) as f64
}

#[test]
fn chosen_scale_rule_beats_the_simple_rules() {
    let mut rng = Rng::new(42);
    let n = 32 * 4096;
    for (name, x) in [
        ("gaussian", gaussian(&mut rng, n)),
        ("laplace", laplace(&mut rng, n)),
    ] {
        let amax7 = rms_with(&x, 32, |g| signed_amax(g).abs() / 7.0);
        let amax8 = rms_with(&x, 32, |g| signed_amax(g).abs() / 8.0);
        let q4_0 = rms_with(&x, 32, |g| signed_amax(g) / -8.0);
        let no_clip = rms_with(&x, 32, |g| {
            let hi = g.iter().fold(0.0f32, |m, &v| m.max(v)) as f64;
            let lo = g.iter().fold(0.0f32, |m, &v| m.min(v)) as f64;
            let (p, m) = ((hi / 7.0).max(-lo / 8.0), (hi / 8.0).max(-lo / 7.0));
            if p <= m { p } else { -m }
        });
        let (w, s) = quant_int4_groups(&x, n / 32, 32, 32);
        let mut deq = vec![0.0; n];
        dequant_int4_groups(&w, &s, n / 32, 32, 32, &mut deq);
        let chosen = (x
            .iter()
            .zip(&deq)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt();
        let rms = (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64).sqrt();
        println!(
            "{name}: relative RMS error amax/7 {:.4}, amax/8 clamped {:.4}, signed amax/-8 (Q4_0) \
             {:.4}, no-clip two-sided {:.4}, chosen (search + refit) {:.4}",
            amax7 / rms,
            amax8 / rms,
            q4_0 / rms,
            no_clip / rms,
            chosen / rms
        );
        for other in [amax7, amax8, q4_0, no_clip] {
            assert!(chosen < other, "{name}: {chosen} vs {other}");
        }
    }
}

#[test]
fn zero_and_non_finite_inputs() {
    // All-zero group: scale 0, codes 0.
    let (w, s) = quant_int4_groups(&[0.0; 64], 1, 64, 32);
    assert_eq!((w, s), (vec![0; 32], vec![0; 2]));
    // NaN encodes as 0 and infinities saturate without affecting the scale.
    let mut x = vec![1.0f32; 32];
    x[0] = f32::NAN;
    x[1] = f32::INFINITY;
    x[2] = f32::NEG_INFINITY;
    x[3] = -8.0;
    let (w, s) = quant_int4_groups(&x, 1, 32, 32);
    let mut deq = vec![0.0; 32];
    dequant_int4_groups(&w, &s, 1, 32, 32, &mut deq);
    assert_eq!(bf16_to_f32(s[0]), 1.0);
    assert_eq!(&deq[..5], &[0.0, 7.0, -8.0, -8.0, 1.0]);
    // Empty shapes.
    assert_eq!(quant_int4_groups(&[], 0, 64, 32), (vec![], vec![]));
    dequant_int4_groups(&[], &[], 3, 0, 32, &mut []);
}

#[test]
#[should_panic(expected = "group must divide cols")]
fn group_must_divide_cols() {
    quant_int4_groups(&[0.0; 48], 1, 48, 32);
}
