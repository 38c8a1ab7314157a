//! The crate's seeded PRNG: [`Xoshiro256StarStar`] (Blackman & Vigna, "xoshiro256**" 1.0),
//! whose 256-bit state is filled from a 64-bit seed by four successive outputs of
//! [`splitmix64`] (Steele, Lea & Flood; the seeding recommended by the xoshiro authors).
//!
//! Used by sampling (one stream per sequence) and by the random checkpoint generator (one
//! stream per tensor row). Everything is integer arithmetic plus exactly specified IEEE
//! operations (`ln`/`sqrt` aside in [`Xoshiro256StarStar::fill_normal`]), so a given seed
//! produces the same values on every platform.

/// SplitMix64 step: advances `state` by the golden gamma and returns the mixed
/// output (Steele, Lea & Flood 2014; constants as in Vigna's reference code).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** 1.0 (Blackman & Vigna). Seeded from a `u64` through SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xoshiro256StarStar {
    s: [u64; 4],
}

impl Xoshiro256StarStar {
    /// State words are four successive SplitMix64 outputs starting from `seed`
    /// (never all zero, since SplitMix64 is a bijection of a changing counter).
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Xoshiro256StarStar { s }
    }

    /// Construct from a raw state (must not be all zero).
    pub fn from_state(s: [u64; 4]) -> Self {
        debug_assert!(s != [0; 4], "xoshiro256** state must not be all zero");
        Xoshiro256StarStar { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits: `(next_u64() >> 11) * 2^-53`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (`n > 0`) by multiply-shift of one `next_u64()`; the bias
    /// is below `n / 2^64`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fill `out` with N(0, std²) samples (Marsaglia's polar method, both outputs of each
    /// accepted pair used; an odd tail uses the first one).
    pub fn fill_normal(&mut self, out: &mut [f32], std: f32) {
        let std = std as f64;
        for pair in out.chunks_mut(2) {
            let (u, v, s) = loop {
                let u = 2.0 * self.next_f64() - 1.0;
                let v = 2.0 * self.next_f64() - 1.0;
                let s = u * u + v * v;
                if s > 0.0 && s < 1.0 {
                    break (u, v, s);
                }
            };
            let m = (-2.0 * s.ln() / s).sqrt() * std;
            pair[0] = (u * m) as f32;
            if let Some(x) = pair.get_mut(1) {
                *x = (v * m) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_known_answers() {
        // SplitMix64 reference: first outputs from state 0.
        let mut st = 0u64;
        assert_eq!(splitmix64(&mut st), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut st), 0x6E78_9E6A_A1B9_65F4);
        // xoshiro256** reference vector for state [1, 2, 3, 4].
        let mut r = Xoshiro256StarStar::from_state([1, 2, 3, 4]);
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, vec![11520, 0, 1509978240, 1215971899390074240]);
        let mut r = Xoshiro256StarStar::seed_from_u64(42);
        for _ in 0..1000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Xoshiro256StarStar::seed_from_u64(5);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            let x = r.below(7);
            assert!(x < 7);
            seen[x as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn fill_normal_moments_and_odd_length() {
        let mut r = Xoshiro256StarStar::seed_from_u64(9);
        let mut v = vec![0f32; 20_001];
        r.fill_normal(&mut v, 2.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.05, "{}", var.sqrt());
        assert!(v.iter().all(|x| x.is_finite()));
        // Same seed, same values.
        let mut w = vec![0f32; 20_001];
        Xoshiro256StarStar::seed_from_u64(9).fill_normal(&mut w, 2.0);
        assert_eq!(v, w);
    }
}
