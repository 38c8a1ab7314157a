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
//! [`Xoshiro256StarStar`] (defined in [`crate::rng`], re-exported here; Blackman &
//! Vigna, "xoshiro256**" 1.0), whose 256-bit state is filled from the 64-bit seed by four
//! successive outputs of SplitMix64 (Steele, Lea & Flood; the same seeding recommended by
//! the xoshiro authors). A uniform `f64` in `[0, 1)` is `(next_u64() >> 11) * 2^-53`.
//! Everything is integer arithmetic plus IEEE operations that are exactly
//! specified (`exp`/`ln` aside, which are only used for weights), so a given
//! seed produces the same token sequence on every platform for the same logits.

mod filters;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

pub use crate::rng::Xoshiro256StarStar;
use crate::rng::splitmix64;

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
// Entropy seed
// ---------------------------------------------------------------------------

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
