//! Generation on the incremental path: chunked prefill, then one token per step, with
//! sampling and stop conditions. Also batched greedy/sampled decoding of several sequences.

use crate::cache::SequenceCache;
use crate::model::{ForwardError, Logits, Model};
use crate::sampling::{Sampler, SamplingError, SamplingParams, StopCriteria, StopReason};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("the prompt is empty")]
    EmptyPrompt,
}

/// Options of one generation.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Prefill chunk size; 0 = the whole prompt in one call.
    pub chunk: usize,
    pub sampling: SamplingParams,
    pub stop: StopCriteria,
    /// Keep the logits each new token was drawn from (tests, `--dump`).
    pub keep_logits: bool,
}

impl GenerateOptions {
    /// Greedy decoding of exactly `max_new` tokens (EOS does not stop it), whole-prompt
    /// prefill, logits kept: the setting of the golden comparisons.
    pub fn greedy(max_new: usize) -> Self {
        Self {
            chunk: 0,
            sampling: SamplingParams::greedy(),
            stop: StopCriteria {
                eos_ids: vec![],
                stop_ids: vec![],
                max_new_tokens: max_new,
            },
            keep_logits: true,
        }
    }
}

/// Result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    /// When `keep_logits`: row 0 = the prompt's last position, row i = after token i-1.
    pub step_logits: Vec<Vec<f32>>,
}

/// Prefill `prompt` into `cache` in chunks of `chunk` tokens (0 = all at once) and return
/// the logits of the last prompt position.
pub fn prefill(
    model: &Model,
    cache: &mut SequenceCache,
    prompt: &[u32],
    chunk: usize,
) -> Result<Vec<f32>, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let chunk = if chunk == 0 { prompt.len() } else { chunk };
    let mut last = Vec::new();
    let n_chunks = prompt.len().div_ceil(chunk);
    for (i, part) in prompt.chunks(chunk).enumerate() {
        let mode = if i + 1 == n_chunks {
            Logits::Last
        } else {
            Logits::None
        };
        let mut out = model.forward(&mut [(&mut *cache, part)], mode, false)?;
        last = std::mem::take(&mut out.logits[0]);
    }
    Ok(last)
}

/// Generate from `prompt`, calling `on_token` for each new token as it is chosen.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, GenerateError> {
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    sampler.observe_prompt(prompt);
    let mut cache = model.new_cache();
    let mut logits = prefill(model, &mut cache, prompt, opts.chunk)?;
    let mut tokens = Vec::new();
    let mut step_logits = Vec::new();
    loop {
        if opts.stop.max_new_tokens == 0 {
            return Ok(Generation {
                tokens,
                stop: StopReason::Length,
                step_logits,
            });
        }
        let next = sampler.sample(&logits);
        if opts.keep_logits {
            step_logits.push(std::mem::take(&mut logits));
        }
        tokens.push(next);
        on_token(next);
        if let Some(stop) = opts.stop.check(next, tokens.len()) {
            return Ok(Generation {
                tokens,
                stop,
                step_logits,
            });
        }
        let mut out = model.forward(&mut [(&mut cache, &[next][..])], Logits::Last, false)?;
        logits = std::mem::take(&mut out.logits[0]);
    }
}

/// Decode several sequences together, one batched forward per step (continuous-batching
/// style: a sequence that stops leaves the batch). Returns the new tokens of each.
pub fn generate_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
) -> Result<Vec<Generation>, GenerateError> {
    struct Live {
        cache: SequenceCache,
        sampler: Sampler,
        logits: Vec<f32>,
        done: Option<StopReason>,
        out: Vec<u32>,
        step_logits: Vec<Vec<f32>>,
    }
    let mut live = Vec::with_capacity(prompts.len());
    for p in prompts {
        let mut sampler = Sampler::new(opts.sampling.clone())?;
        sampler.observe_prompt(p);
        let mut cache = model.new_cache();
        let logits = prefill(model, &mut cache, p, opts.chunk)?;
        live.push(Live {
            cache,
            sampler,
            logits,
            done: None,
            out: Vec::new(),
            step_logits: Vec::new(),
        });
    }
    if opts.stop.max_new_tokens == 0 {
        live.iter_mut()
            .for_each(|l| l.done = Some(StopReason::Length));
    }
    while live.iter().any(|l| l.done.is_none()) {
        let mut next_ids = Vec::new();
        for l in live.iter_mut().filter(|l| l.done.is_none()) {
            let next = l.sampler.sample(&l.logits);
            if opts.keep_logits {
                l.step_logits.push(std::mem::take(&mut l.logits));
            }
            l.out.push(next);
            l.done = opts.stop.check(next, l.out.len());
            if l.done.is_none() {
                next_ids.push(next);
            }
        }
        let mut batch: Vec<(&mut SequenceCache, &[u32])> = Vec::new();
        let mut which = Vec::new();
        for (i, l) in live
            .iter_mut()
            .enumerate()
            .filter(|(_, l)| l.done.is_none())
        {
            which.push(i);
            batch.push((
                &mut l.cache,
                std::slice::from_ref(&next_ids[which.len() - 1]),
            ));
        }
        if batch.is_empty() {
            break;
        }
        let out = model.forward(&mut batch, Logits::Last, false)?;
        for (i, logits) in which.into_iter().zip(out.logits) {
            live[i].logits = logits;
        }
    }
    Ok(live
        .into_iter()
        .map(|l| Generation {
            tokens: l.out,
            stop: l.done.unwrap_or(StopReason::Length),
            step_logits: l.step_logits,
        })
        .collect())
}
