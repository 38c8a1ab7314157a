//! Token sampling: penalties, temperature, top-k / top-p / min-p filtering,
//! a seeded reproducible PRNG, greedy argmax, and stop criteria.
//!
//! # Pipeline (per step, see [`Sampler::sample_with_logprob`])
//!
//! 1. Copy the raw logits; NaN is treated as `-inf`.
//! 2. Penalties (vLLM order):
//!    * `repetition_penalty` (HF / vLLM semantics) on every token that occurred
//!      in the prompt or the generated output: `logit > 0 ? logit / pen : logit * pen`;
//!    * `frequency_penalty` (OpenAI): `logit -= count * frequency_penalty`,
//!      where `count` is the number of times the token was generated;
//!    * `presence_penalty` (OpenAI): `logit -= presence_penalty` if the token
//!      was generated at least once.
//!
//!    Prompt tokens affect the repetition penalty only.
//! 3. Greedy (`temperature == 0`, or `top_k == 1`): the answer is exactly
//!    [`argmax`] of the penalised logits (lowest index wins ties).
//! 4. Otherwise the logits are scaled: `s_i = (z_i - max z) / temperature`
//!    (subtracting the max first makes the division overflow-free). If some
//!    penalised logits are `+inf`, the distribution is uniform over them.
//! 5. Filters, in this order: top-k (partial selection with
//!    `select_nth_unstable_by`), top-p on the renormalised remainder (nucleus:
//!    keep the shortest prefix, in descending order, whose mass reaches
//!    `top_p`; always at least one token; only a geometrically growing prefix
//!    is selected and sorted, never the whole vocabulary unless the nucleus
//!    needs it), then min-p (keep `p >= min_p * p_max`).
//!    Ordering ties are broken by the lower token id, so results are
//!    deterministic for a given seed.
//! 6. One uniform draw from the PRNG (exactly one `u64` per non-greedy step)
//!    selects a token by walking the cumulative weights of the survivors.
//!
//! # PRNG
//!
//! [`Xoshiro256StarStar`] (Blackman & Vigna, "xoshiro256**" 1.0), whose 256-bit
//! state is filled from the 64-bit seed by four successive outputs of
//! SplitMix64 (Steele, Lea & Flood; the same seeding recommended by the
//! xoshiro authors). A uniform `f64` in `[0, 1)` is `(next_u64() >> 11) * 2^-53`.
//! Everything is integer arithmetic plus IEEE operations that are exactly
//! specified (`exp`/`ln` aside, which are only used for weights), so a given
//! seed produces the same token sequence on every platform for the same logits.

use std::collections::{HashMap, HashSet};

/// Parameters controlling token selection. Deserialising fills missing fields
/// from [`SamplingParams::default`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// `0` => greedy. Allowed range `[0, 100]`.
    pub temperature: f32,
    /// `0` => disabled.
    pub top_k: usize,
    /// `1.0` => disabled. Allowed range `(0, 1]`.
    pub top_p: f32,
    /// `0` => disabled; keep tokens with `p >= min_p * p_max`. Allowed range `[0, 1]`.
    pub min_p: f32,
    /// `1.0` => disabled. HF/vLLM semantics: `logit > 0 ? logit / pen : logit * pen`,
    /// applied to tokens in prompt + generated output. Must be `> 0` (and finite).
    pub repetition_penalty: f32,
    /// OpenAI semantics: subtracted once if the token occurred in the generated
    /// output. Allowed range `[-2, 2]`.
    pub presence_penalty: f32,
    /// OpenAI semantics: `count * penalty` subtracted (generated output counts).
    /// Allowed range `[-2, 2]`.
    pub frequency_penalty: f32,
    /// `None` => seeded from time / process entropy.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0), everything else neutral.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Check every field against its allowed range (NaN is always rejected).
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(0.0..=100.0).contains(&t) {
            return Err(SamplingError::Temperature(t));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(SamplingError::TopP(p));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(SamplingError::MinP(m));
        }
        let r = self.repetition_penalty;
        if !(r > 0.0 && r.is_finite()) {
            return Err(SamplingError::RepetitionPenalty(r));
        }
        let pp = self.presence_penalty;
        if !(-2.0..=2.0).contains(&pp) {
            return Err(SamplingError::PresencePenalty(pp));
        }
        let fp = self.frequency_penalty;
        if !(-2.0..=2.0).contains(&fp) {
            return Err(SamplingError::FrequencyPenalty(fp));
        }
        Ok(())
    }

    /// True when the choice is a deterministic argmax of the penalised logits:
    /// `temperature == 0` or `top_k == 1`.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// An invalid [`SamplingParams`] field; the payload is the offending value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    #[error("temperature must be in [0, 100], got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("min_p must be in [0, 1], got {0}")]
    MinP(f32),
    #[error("repetition_penalty must be finite and > 0, got {0}")]
    RepetitionPenalty(f32),
    #[error("presence_penalty must be in [-2, 2], got {0}")]
    PresencePenalty(f32),
    #[error("frequency_penalty must be in [-2, 2], got {0}")]
    FrequencyPenalty(f32),
}

// ---------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------

/// SplitMix64 step: advances `state` by the golden gamma and returns the mixed
/// output (Steele, Lea & Flood 2014; constants as in Vigna's reference code).
fn splitmix64(state: &mut u64) -> u64 {
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
}

/// A seed from std-only entropy: wall-clock nanos, a stack address, a process
/// counter and the randomly keyed std `RandomState` hasher, mixed by SplitMix64.
fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let addr = &local as *const u8 as usize as u64;
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(count);
    let hashed = h.finish();
    let mut st = nanos ^ addr.rotate_left(32) ^ hashed;
    let a = splitmix64(&mut st);
    st ^= count;
    a ^ splitmix64(&mut st)
}

// ---------------------------------------------------------------------------
// argmax
// ---------------------------------------------------------------------------

/// Argmax with a deterministic tie rule: the LOWEST index wins among equal
/// maxima; NaN logits are never chosen (if all are NaN, or `logits` is empty,
/// returns 0).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best_i = 0usize;
    let mut best_v = f32::NAN;
    for (i, &v) in logits.iter().enumerate() {
        // `best_v.is_nan()` only until the first non-NaN value is seen.
        if v > best_v || (best_v.is_nan() && !v.is_nan()) {
            best_i = i;
            best_v = v;
        }
    }
    best_i as u32
}

/// Descending by value, ascending by token id on ties. Values are never NaN here.
#[inline]
fn cmp_desc(s: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    let (va, vb) = (s[a as usize], s[b as usize]);
    vb.partial_cmp(&va)
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(a.cmp(&b))
}

// ---------------------------------------------------------------------------
// Sampler
// ---------------------------------------------------------------------------

/// Stateful sampler for one sequence: parameters, PRNG state and the token
/// history needed for the penalties.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256StarStar,
    /// Tokens seen in prompt or output (repetition penalty).
    seen: HashSet<u32>,
    /// Generated-token counts (presence / frequency penalties).
    counts: HashMap<u32, u32>,
    // Reusable scratch buffers (avoid a vocab-sized allocation per step).
    buf: Vec<f32>,
    idx: Vec<u32>,
    w: Vec<f64>,
}

impl Sampler {
    /// Validates `params`. `seed: None` seeds from time / process entropy.
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Ok(Sampler {
            params,
            rng: Xoshiro256StarStar::seed_from_u64(seed),
            seen: HashSet::new(),
            counts: HashMap::new(),
            buf: Vec::new(),
            idx: Vec::new(),
            w: Vec::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Register prompt tokens (affect repetition_penalty only).
    pub fn observe_prompt(&mut self, ids: &[u32]) {
        self.seen.extend(ids.iter().copied());
    }

    /// Record a token as generated without sampling it (e.g. a forced or
    /// externally chosen token); `sample*` already does this for its result.
    pub fn record_generated(&mut self, id: u32) {
        self.seen.insert(id);
        *self.counts.entry(id).or_insert(0) += 1;
    }

    /// Choose the next token from raw logits (len = vocab). Applies penalties,
    /// then temperature, top-k, top-p, min-p, then draws. Records the chosen
    /// token as generated. Empty `logits` returns 0 and records nothing.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_inner(logits, false).0
    }

    /// Same as [`Sampler::sample`] but also returns the natural-log probability
    /// of the chosen token under the final post-penalty, post-temperature,
    /// *unfiltered* distribution. For greedy params with `temperature == 0`
    /// the temperature is taken as 1 (i.e. `log_softmax` of the penalised
    /// logits). Returns `-inf` when no token has finite probability.
    pub fn sample_with_logprob(&mut self, logits: &[f32]) -> (u32, f32) {
        self.sample_inner(logits, true)
    }

    fn apply_penalties(&self, z: &mut [f32]) {
        let n = z.len();
        let rep = self.params.repetition_penalty;
        if rep != 1.0 {
            for &t in &self.seen {
                if let Some(x) = z.get_mut(t as usize) {
                    *x = if *x > 0.0 { *x / rep } else { *x * rep };
                }
            }
        }
        let fp = self.params.frequency_penalty;
        let pp = self.params.presence_penalty;
        if fp != 0.0 || pp != 0.0 {
            for (&t, &c) in &self.counts {
                if (t as usize) < n && c > 0 {
                    z[t as usize] -= c as f32 * fp + pp;
                }
            }
        }
    }

    fn sample_inner(&mut self, logits: &[f32], want_lp: bool) -> (u32, f32) {
        if logits.is_empty() {
            return (0, f32::NEG_INFINITY);
        }
        let mut z = std::mem::take(&mut self.buf);
        z.clear();
        z.extend(
            logits
                .iter()
                .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x }),
        );
        self.apply_penalties(&mut z);
        // Penalties cannot create NaN from non-NaN inputs except inf*0-type
        // cases that don't arise (pen > 0, finite); be defensive anyway.
        for x in z.iter_mut() {
            if x.is_nan() {
                *x = f32::NEG_INFINITY;
            }
        }

        let greedy = self.params.is_greedy();
        let result = if greedy && !want_lp {
            (argmax(&z), 0.0)
        } else {
            self.choose(&mut z, greedy, want_lp)
        };
        self.buf = z;
        self.record_generated(result.0);
        result
    }

    /// `z`: penalised logits without NaN. Overwritten with scaled logits.
    fn choose(&mut self, z: &mut [f32], greedy: bool, want_lp: bool) -> (u32, f32) {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // Nothing has finite probability: deterministic fallback.
            return (0, f32::NEG_INFINITY);
        }
        let greedy_tok = if greedy { Some(argmax(z)) } else { None };

        // Scale: s_i = (z_i - max) / T, all <= 0 with the max at exactly 0.
        let t = if self.params.temperature == 0.0 {
            1.0
        } else {
            self.params.temperature
        };
        if max == f32::INFINITY {
            for x in z.iter_mut() {
                *x = if *x == f32::INFINITY {
                    0.0
                } else {
                    f32::NEG_INFINITY
                };
            }
        } else {
            for x in z.iter_mut() {
                *x = (*x - max) / t;
            }
        }
        let s: &[f32] = z;

        let (tok, total) = match greedy_tok {
            Some(tok) => (tok, s.iter().map(|&x| x.exp() as f64).sum::<f64>()),
            None => self.filter_and_draw(s, want_lp),
        };
        let v = s[tok as usize];
        let lp = if !want_lp {
            0.0
        } else if v == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            // total >= 1 because the max token has weight exp(0) = 1.
            (v as f64 - total.ln()) as f32
        };
        (tok, lp)
    }

    /// Apply top-k, top-p, min-p to scaled logits `s` (max exactly 0, no NaN,
    /// at least one finite) and draw one token. Also returns the unfiltered
    /// normaliser `sum_i exp(s_i)` (for the log-probability; only guaranteed
    /// to be computed when `need_total`, otherwise may be NaN).
    fn filter_and_draw(&mut self, s: &[f32], need_total: bool) -> (u32, f64) {
        let top_k = self.params.top_k;
        let top_p = self.params.top_p;
        let min_p = self.params.min_p;
        let cmp = |a: &u32, b: &u32| cmp_desc(s, *a, *b);
        // Weights are exp in f32 (s <= 0, so no overflow), accumulated in f64.
        let weight = |i: u32| s[i as usize].exp() as f64;

        let mut idx = std::mem::take(&mut self.idx);
        let mut w = std::mem::take(&mut self.w);
        idx.clear();
        w.clear();

        // Pass 1: finite candidates and the full normaliser (skipped when only
        // top-k needs it and no log-probability is wanted); when no ordering
        // filter is active, the candidate weights are stored on the way.
        let ordered = top_k > 0 || top_p < 1.0;
        let exps = need_total || top_k == 0;
        let mut total_all = if exps { 0.0f64 } else { f64::NAN };
        for (i, &v) in s.iter().enumerate() {
            if v > f32::NEG_INFINITY {
                idx.push(i as u32);
                if exps {
                    let e = v.exp() as f64;
                    total_all += e;
                    if !ordered {
                        w.push(e);
                    }
                }
            }
        }

        // top-k: partial selection, O(V).
        let total_c = if top_k > 0 && top_k < idx.len() {
            idx.select_nth_unstable_by(top_k - 1, cmp);
            idx.truncate(top_k);
            idx.iter().map(|&i| weight(i)).sum()
        } else if exps {
            total_all
        } else {
            idx.iter().map(|&i| weight(i)).sum()
        };

        // top-p on the renormalised remainder: the nucleus is the shortest
        // prefix (in descending order) whose mass reaches top_p; a token is
        // kept while the mass strictly before it is < top_p (at least one).
        // Only a growing prefix is selected and sorted, not the whole vocab.
        if top_p < 1.0 {
            let target = top_p as f64 * total_c;
            let len = idx.len();
            let mut k = len.min(256);
            loop {
                if k < len {
                    idx.select_nth_unstable_by(k - 1, cmp);
                }
                idx[..k].sort_unstable_by(cmp);
                let mut cum = 0.0f64;
                let mut keep = 0usize;
                for &i in &idx[..k] {
                    if keep > 0 && cum >= target {
                        break;
                    }
                    cum += weight(i);
                    keep += 1;
                }
                if keep < k || cum >= target || k == len {
                    idx.truncate(keep);
                    break;
                }
                k = len.min(k * 4);
            }
        }
        if ordered {
            w.extend(idx.iter().map(|&i| weight(i)));
        }

        if min_p > 0.0 {
            // p_max corresponds to weight exactly 1 (max scaled logit is 0 and
            // the global max always survives top-k / top-p), so the threshold
            // is simply `min_p` in weight space.
            let thr = min_p as f64;
            let mut j = 0usize;
            for i in 0..idx.len() {
                if w[i] >= thr {
                    idx[j] = idx[i];
                    w[j] = w[i];
                    j += 1;
                }
            }
            idx.truncate(j);
            w.truncate(j);
        }

        // Draw. There is always at least the max token (weight 1) left.
        let total: f64 = w.iter().sum();
        let r = self.rng.next_f64() * total;
        let mut cum = 0.0f64;
        let mut chosen: Option<u32> = None;
        let mut last_pos: Option<u32> = None;
        for (&i, &wi) in idx.iter().zip(w.iter()) {
            if wi > 0.0 {
                last_pos = Some(i);
                cum += wi;
                if r < cum {
                    chosen = Some(i);
                    break;
                }
            }
        }
        let tok = chosen.or(last_pos).unwrap_or_else(|| argmax(s));
        self.idx = idx;
        self.w = w;
        (tok, total_all)
    }
}

// ---------------------------------------------------------------------------
// Stop criteria
// ---------------------------------------------------------------------------

/// Stop conditions for generation. `max_new_tokens == 0` means no length limit.
#[derive(Debug, Clone, Default)]
pub struct StopCriteria {
    pub eos_ids: Vec<u32>,
    pub stop_ids: Vec<u32>,
    pub max_new_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    StopId,
    Length,
}

impl StopCriteria {
    /// `generated` = number of generated tokens including `token`.
    /// Precedence: `Eos`, then `StopId`, then `Length`.
    pub fn check(&self, token: u32, generated: usize) -> Option<StopReason> {
        if self.eos_ids.contains(&token) {
            Some(StopReason::Eos)
        } else if self.stop_ids.contains(&token) {
            Some(StopReason::StopId)
        } else if self.max_new_tokens > 0 && generated >= self.max_new_tokens {
            Some(StopReason::Length)
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams {
            seed: Some(1234),
            ..SamplingParams::default()
        };
        f(&mut p);
        p
    }

    fn random_logits(seed: u64, n: usize) -> Vec<f32> {
        let mut r = Xoshiro256StarStar::seed_from_u64(seed);
        (0..n)
            .map(|_| (r.next_f64() * 20.0 - 10.0) as f32)
            .collect()
    }

    fn softmax(l: &[f32], t: f32) -> Vec<f64> {
        let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = l
            .iter()
            .map(|&x| ((x as f64 - m) / t as f64).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    fn frequencies(p: SamplingParams, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut s = Sampler::new(p).unwrap();
        let mut c = vec![0usize; logits.len()];
        for _ in 0..draws {
            c[s.sample(logits) as usize] += 1;
        }
        c.iter().map(|&x| x as f64 / draws as f64).collect()
    }

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
    fn greedy_equals_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        for seed in 0..20 {
            let l = random_logits(seed, 1000);
            assert_eq!(s.sample(&l), argmax(&l));
        }
        let p = SamplingParams::greedy();
        assert!(p.is_greedy());
        assert!(!SamplingParams::default().is_greedy());
        // Greedy logprob = log_softmax at T=1.
        let l = [1.0f32, 3.0, 2.0];
        let (t, lp) = Sampler::new(p).unwrap().sample_with_logprob(&l);
        assert_eq!(t, 1);
        let want = softmax(&l, 1.0)[1].ln() as f32;
        assert!((lp - want).abs() < 1e-6, "{lp} vs {want}");
    }

    #[test]
    fn argmax_tie_rule_and_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[5.0, 5.0]), 0);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY, 0.0]), 2);
        assert_eq!(argmax(&[0.0, f32::INFINITY, f32::NAN, f32::INFINITY]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        // Greedy sampling uses the same rule.
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.5, 2.0, 2.0, f32::NAN]), 1);
    }

    #[test]
    fn seeded_reproducibility() {
        let flat = vec![0.0f32; 1000];
        let run = |seed: u64| {
            let mut s = Sampler::new(params(|p| p.seed = Some(seed))).unwrap();
            (0..50).map(|_| s.sample(&flat)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // Also with filters and penalties on a non-flat distribution.
        let l = random_logits(3, 5000);
        let run2 = |seed: u64| {
            let mut s = Sampler::new(params(|p| {
                p.seed = Some(seed);
                p.top_k = 100;
                p.top_p = 0.95;
                p.temperature = 3.0;
                p.frequency_penalty = 0.3;
            }))
            .unwrap();
            (0..50)
                .map(|_| s.sample_with_logprob(&l))
                .collect::<Vec<_>>()
        };
        assert_eq!(run2(99), run2(99));
        // Unseeded samplers get different streams.
        let mut a = Sampler::new(SamplingParams::default()).unwrap();
        let mut b = Sampler::new(SamplingParams::default()).unwrap();
        let sa: Vec<u32> = (0..20).map(|_| a.sample(&flat)).collect();
        let sb: Vec<u32> = (0..20).map(|_| b.sample(&flat)).collect();
        assert_ne!(sa, sb);
    }

    #[test]
    fn top_k_1_equals_greedy() {
        let mut s = Sampler::new(params(|p| p.top_k = 1)).unwrap();
        for seed in 0..20 {
            let mut l = random_logits(seed, 2000);
            // Inject a tie for the max at a higher index.
            let m = argmax(&l) as usize;
            l[1999] = l[m];
            l[0] = l[m];
            assert_eq!(s.sample(&l), 0);
        }
        let mut s = Sampler::new(params(|p| p.top_k = 1)).unwrap();
        for seed in 0..20 {
            let l = random_logits(seed + 100, 2000);
            assert_eq!(s.sample(&l), argmax(&l));
        }
    }

    #[test]
    fn top_p_tiny_equals_greedy() {
        let mut s = Sampler::new(params(|p| {
            p.top_p = 1e-6;
            p.temperature = 5.0;
        }))
        .unwrap();
        for seed in 0..20 {
            let l = random_logits(seed, 3000);
            assert_eq!(s.sample(&l), argmax(&l));
        }
    }

    #[test]
    fn min_p_one_equals_greedy() {
        let mut s = Sampler::new(params(|p| {
            p.min_p = 1.0;
            p.temperature = 5.0;
        }))
        .unwrap();
        for seed in 0..20 {
            let l = random_logits(seed, 3000);
            assert_eq!(s.sample(&l), argmax(&l));
        }
    }

    #[test]
    fn empirical_frequencies_match_softmax() {
        let l = [1.0f32, 2.0, 0.5, -1.0];
        for &t in &[1.0f32, 0.7, 2.0] {
            let f = frequencies(params(|p| p.temperature = t), &l, 20_000);
            let want = softmax(&l, t);
            for i in 0..4 {
                assert!(
                    (f[i] - want[i]).abs() < 0.02,
                    "T={t} i={i}: {} vs {}",
                    f[i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn filters_renormalise() {
        // Probabilities 0.5, 0.3, 0.15, 0.05.
        let probs = [0.5f64, 0.3, 0.15, 0.05];
        let l: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
        // top-k 2 => 0.625 / 0.375.
        let f = frequencies(params(|p| p.top_k = 2), &l, 20_000);
        assert!(
            (f[0] - 0.625).abs() < 0.02 && (f[1] - 0.375).abs() < 0.02,
            "{f:?}"
        );
        assert_eq!(f[2] + f[3], 0.0);
        // top-p 0.7: mass before token 1 is 0.5 < 0.7 (keep), before token 2 is 0.8 (drop).
        let f = frequencies(params(|p| p.top_p = 0.7), &l, 20_000);
        assert!(
            (f[0] - 0.625).abs() < 0.02 && (f[1] - 0.375).abs() < 0.02,
            "{f:?}"
        );
        assert_eq!(f[2] + f[3], 0.0);
        // top-p 0.85: keeps the first three.
        let f = frequencies(params(|p| p.top_p = 0.85), &l, 20_000);
        assert_eq!(f[3], 0.0);
        assert!((f[2] - 0.15 / 0.95).abs() < 0.02, "{f:?}");
        // min-p 0.4: keep p >= 0.2 => first two.
        let f = frequencies(params(|p| p.min_p = 0.4), &l, 20_000);
        assert!(
            (f[0] - 0.625).abs() < 0.02 && (f[1] - 0.375).abs() < 0.02,
            "{f:?}"
        );
        assert_eq!(f[2] + f[3], 0.0);
        // top-k 3 then top-p 0.8 on the renormalised remainder (0.526, 0.316, 0.158):
        // mass before token 1 is 0.526 < 0.8 keep; before token 2 is 0.842 drop.
        let f = frequencies(
            params(|p| {
                p.top_k = 3;
                p.top_p = 0.8;
            }),
            &l,
            20_000,
        );
        assert_eq!(f[2] + f[3], 0.0, "{f:?}");
        // Logprob is under the unfiltered distribution.
        let mut s = Sampler::new(params(|p| p.top_k = 2)).unwrap();
        for _ in 0..20 {
            let (t, lp) = s.sample_with_logprob(&l);
            assert!((lp as f64 - probs[t as usize].ln()).abs() < 1e-5);
        }
    }

    #[test]
    fn logprob_with_temperature() {
        let l = [0.3f32, -1.2, 2.5, 0.0, 1.1];
        let t = 0.8;
        let want = softmax(&l, t);
        let mut s = Sampler::new(params(|p| p.temperature = t)).unwrap();
        for _ in 0..50 {
            let (tok, lp) = s.sample_with_logprob(&l);
            assert!((lp as f64 - want[tok as usize].ln()).abs() < 1e-5);
        }
    }

    #[test]
    fn repetition_penalty_effect() {
        // Positive logit divided.
        let l = [2.0f32, 1.9, -1.0];
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.repetition_penalty = 1.2;
        }))
        .unwrap();
        assert_eq!(s.clone().sample(&l), 0);
        s.observe_prompt(&[0]);
        assert_eq!(s.sample(&l), 1); // 2.0 / 1.2 = 1.67 < 1.9
        // Negative logit multiplied.
        let l = [-1.0f32, -1.1];
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.repetition_penalty = 1.2;
        }))
        .unwrap();
        s.observe_prompt(&[0, 0, 0]);
        assert_eq!(s.sample(&l), 1); // -1.2 < -1.1
        // Generated tokens also count: token 1 generated now, both penalised.
        assert_eq!(s.sample(&l), 0); // -1.2 vs -1.32
        // Logprob reflects the penalty.
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.repetition_penalty = 2.0;
        }))
        .unwrap();
        s.observe_prompt(&[1]);
        let (_, lp) = s.sample_with_logprob(&[1.0, 4.0]);
        let want = softmax(&[1.0, 2.0], 1.0)[1].ln() as f32;
        assert!((lp - want).abs() < 1e-6);
        // Out-of-range ids are ignored.
        s.observe_prompt(&[1_000_000]);
        assert_eq!(s.sample(&[1.0, 4.0]), 1);
    }

    #[test]
    fn presence_penalty_effect() {
        let l = [3.0f32, 2.0];
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.presence_penalty = 1.5;
        }))
        .unwrap();
        // Prompt tokens do not trigger presence penalty.
        s.observe_prompt(&[0, 0, 0]);
        let seq: Vec<u32> = (0..4).map(|_| s.sample(&l)).collect();
        // 3 | (1.5 vs 2) -> 1 | (1.5 vs 0.5) -> 0 | 0 again (presence is once only)
        assert_eq!(seq, vec![0, 1, 0, 0]);
    }

    #[test]
    fn frequency_penalty_effect() {
        let l = [3.0f32, 2.0];
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.frequency_penalty = 0.6;
        }))
        .unwrap();
        s.observe_prompt(&[0, 0, 0, 0]);
        let seq: Vec<u32> = (0..3).map(|_| s.sample(&l)).collect();
        // 3.0 | 2.4 > 2 | 1.8 < 2
        assert_eq!(seq, vec![0, 0, 1]);
        // record_generated counts too.
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.frequency_penalty = 2.0;
        }))
        .unwrap();
        s.record_generated(0);
        assert_eq!(s.sample(&l), 1);
        // Negative penalties encourage repetition.
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.frequency_penalty = -2.0;
        }))
        .unwrap();
        s.record_generated(1);
        assert_eq!(s.sample(&l), 1);
    }

    #[test]
    fn validate_rejects_bad_fields() {
        assert_eq!(SamplingParams::default().validate(), Ok(()));
        assert_eq!(SamplingParams::greedy().validate(), Ok(()));
        let ok = params(|p| {
            p.temperature = 100.0;
            p.top_p = 1.0;
            p.min_p = 1.0;
            p.repetition_penalty = 0.01;
            p.presence_penalty = -2.0;
            p.frequency_penalty = 2.0;
            p.top_k = usize::MAX;
        });
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut SamplingParams)| params(f).validate().unwrap_err();
        assert_eq!(
            bad(|p| p.temperature = -0.1),
            SamplingError::Temperature(-0.1)
        );
        assert_eq!(
            bad(|p| p.temperature = 100.5),
            SamplingError::Temperature(100.5)
        );
        assert!(matches!(
            bad(|p| p.temperature = f32::NAN),
            SamplingError::Temperature(_)
        ));
        assert_eq!(bad(|p| p.top_p = 0.0), SamplingError::TopP(0.0));
        assert_eq!(bad(|p| p.top_p = 1.01), SamplingError::TopP(1.01));
        assert!(matches!(
            bad(|p| p.top_p = f32::NAN),
            SamplingError::TopP(_)
        ));
        assert_eq!(bad(|p| p.min_p = -0.01), SamplingError::MinP(-0.01));
        assert_eq!(bad(|p| p.min_p = 1.5), SamplingError::MinP(1.5));
        assert_eq!(
            bad(|p| p.repetition_penalty = 0.0),
            SamplingError::RepetitionPenalty(0.0)
        );
        assert_eq!(
            bad(|p| p.repetition_penalty = -1.0),
            SamplingError::RepetitionPenalty(-1.0)
        );
        assert!(matches!(
            bad(|p| p.repetition_penalty = f32::INFINITY),
            SamplingError::RepetitionPenalty(_)
        ));
        assert_eq!(
            bad(|p| p.presence_penalty = 2.5),
            SamplingError::PresencePenalty(2.5)
        );
        assert_eq!(
            bad(|p| p.presence_penalty = -2.5),
            SamplingError::PresencePenalty(-2.5)
        );
        assert_eq!(
            bad(|p| p.frequency_penalty = 3.0),
            SamplingError::FrequencyPenalty(3.0)
        );
        assert_eq!(
            bad(|p| p.frequency_penalty = -3.0),
            SamplingError::FrequencyPenalty(-3.0)
        );
        let msg = bad(|p| p.top_p = 0.0).to_string();
        assert!(msg.contains("top_p") && msg.contains("(0, 1]"), "{msg}");
        let msg = bad(|p| p.temperature = 200.0).to_string();
        assert!(
            msg.contains("temperature") && msg.contains("[0, 100]"),
            "{msg}"
        );
        assert!(Sampler::new(params(|p| p.min_p = 2.0)).is_err());
    }

    #[test]
    fn nan_and_inf_robustness() {
        let nan = f32::NAN;
        let ninf = f32::NEG_INFINITY;
        let l = [nan, 0.0, ninf, 1.0, nan, ninf];
        for p in [
            params(|_| {}),
            params(|p| p.top_k = 2),
            params(|p| p.top_p = 0.9),
            params(|p| p.min_p = 0.1),
            params(|p| p.temperature = 100.0),
            params(|p| p.temperature = 1e-6),
        ] {
            let mut s = Sampler::new(p).unwrap();
            for _ in 0..200 {
                let (t, lp) = s.sample_with_logprob(&l);
                assert!(t == 1 || t == 3, "picked {t}");
                assert!(lp.is_finite() && lp <= 0.0);
            }
        }
        // All NaN / all -inf: token 0, logprob -inf, no panic.
        for l in [[nan, nan, nan], [ninf, ninf, ninf]] {
            let mut s = Sampler::new(params(|p| p.top_k = 2)).unwrap();
            assert_eq!(s.sample_with_logprob(&l), (0, f32::NEG_INFINITY));
            let mut g = Sampler::new(SamplingParams::greedy()).unwrap();
            assert_eq!(g.sample(&l), 0);
        }
        // +inf logits: uniform over them.
        let l = [0.0f32, f32::INFINITY, 5.0, f32::INFINITY];
        let mut s = Sampler::new(params(|_| {})).unwrap();
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            let (t, lp) = s.sample_with_logprob(&l);
            seen[t as usize] += 1;
            assert!((lp - 0.5f32.ln()).abs() < 1e-6);
        }
        assert_eq!(seen[0] + seen[2], 0);
        assert!(seen[1] > 100 && seen[3] > 100, "{seen:?}");
        assert_eq!(
            Sampler::new(SamplingParams::greedy()).unwrap().sample(&l),
            1
        );
        // Extreme finite logits and tiny temperature don't overflow.
        let l = [f32::MAX, -f32::MAX, f32::MAX / 2.0];
        let mut s = Sampler::new(params(|p| p.temperature = 1e-3)).unwrap();
        for _ in 0..20 {
            let (t, lp) = s.sample_with_logprob(&l);
            assert_eq!(t, 0);
            assert_eq!(lp, 0.0);
        }
        // Empty logits.
        assert_eq!(s.sample_with_logprob(&[]), (0, f32::NEG_INFINITY));
    }

    #[test]
    fn large_vocab_top_k_top_p() {
        let n = 129_280;
        let l = random_logits(11, n);
        let mut sorted: Vec<u32> = (0..n as u32).collect();
        sorted.sort_by(|&a, &b| cmp_desc(&l, a, b));
        let top50: HashSet<u32> = sorted[..50].iter().copied().collect();
        let mut s = Sampler::new(params(|p| {
            p.top_k = 50;
            p.top_p = 0.9;
            p.temperature = 0.9;
        }))
        .unwrap();
        for _ in 0..50 {
            let t = s.sample(&l);
            assert!(top50.contains(&t));
        }
        // top-p alone: reference nucleus from a full sort (needs the growing
        // prefix well beyond its first 256 elements).
        let sm = softmax(&l, 1.0);
        let (mut cum, mut nucleus) = (0.0f64, HashSet::new());
        for &i in &sorted {
            if cum >= 0.5 {
                break;
            }
            cum += sm[i as usize];
            nucleus.insert(i);
        }
        assert!(nucleus.len() > 1000, "{}", nucleus.len());
        let mut s = Sampler::new(params(|p| p.top_p = 0.5)).unwrap();
        for _ in 0..20 {
            let t = s.sample(&l);
            assert!(nucleus.contains(&t));
        }
    }

    #[test]
    fn top_p_flat_exact_prefix() {
        // 1000 equal logits, top_p 0.5: ties broken by lower id => exactly ids 0..500.
        let flat = vec![0.0f32; 1000];
        let mut s = Sampler::new(params(|p| p.top_p = 0.5)).unwrap();
        let mut max_seen = 0;
        for _ in 0..3000 {
            let t = s.sample(&flat);
            assert!(t < 500, "{t}");
            max_seen = max_seen.max(t);
        }
        assert!(max_seen > 400);
    }

    #[test]
    fn stop_criteria() {
        let sc = StopCriteria {
            eos_ids: vec![1, 2],
            stop_ids: vec![7],
            max_new_tokens: 3,
        };
        assert_eq!(sc.check(5, 1), None);
        assert_eq!(sc.check(1, 1), Some(StopReason::Eos));
        assert_eq!(sc.check(2, 3), Some(StopReason::Eos));
        assert_eq!(sc.check(7, 2), Some(StopReason::StopId));
        assert_eq!(sc.check(7, 3), Some(StopReason::StopId));
        assert_eq!(sc.check(5, 2), None);
        assert_eq!(sc.check(5, 3), Some(StopReason::Length));
        assert_eq!(sc.check(5, 4), Some(StopReason::Length));
        let unlimited = StopCriteria::default();
        assert_eq!(unlimited.check(0, 1_000_000), None);
    }

    #[test]
    fn serde_defaults_and_roundtrip() {
        let p: SamplingParams = serde_json::from_str(r#"{"temperature":0.5,"seed":9}"#).unwrap();
        assert_eq!(
            p,
            SamplingParams {
                temperature: 0.5,
                seed: Some(9),
                ..Default::default()
            }
        );
        let back: SamplingParams =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
