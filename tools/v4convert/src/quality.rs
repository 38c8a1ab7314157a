//! `v4convert quality`: how far a converted model is from the unquantized one.
//!
//! Both models run the same sequences through the engine (full forward, logits at every
//! position). Each sequence is a prompt followed by its greedy continuation (teacher-forced), so
//! the positions from the prompt's last token on are the greedy path. Reported per sequence and
//! overall: max |Δlogit|, mean and max KL(reference ‖ converted) of the softmax distributions,
//! top-1 agreement over all positions, and top-1 agreement on the greedy path (the converted
//! model's argmax vs the greedy token).
//!
//! Sequences come from a golden file in the tiny-v4 fixture format (`seq{i}.input_ids`,
//! `seq{i}.greedy_tokens`; then the reference's own logits are also checked against
//! `seq{i}.logits`), or are drawn at random (seeded) with the reference model's greedy
//! continuation.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::Serialize;
use v4_engine::generate::{GenerateOptions, generate};
use v4_engine::model::{Logits, Model};
use v4_engine::rng::Xoshiro256StarStar as Rng;

use crate::error::ConvertError;

#[derive(Debug, Clone, Serialize)]
pub struct SeqQuality {
    pub prompt_len: usize,
    pub positions: usize,
    pub max_abs_err: f32,
    pub mean_kl: f64,
    pub max_kl: f64,
    pub top1_agree: usize,
    pub greedy_agree: usize,
    pub greedy_steps: usize,
    /// Reference model vs the golden logits (golden input only).
    pub reference_vs_golden_max_abs: Option<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QualityReport {
    pub sequences: Vec<SeqQuality>,
    pub positions: usize,
    pub max_abs_err: f32,
    pub mean_kl: f64,
    pub max_kl: f64,
    pub top1_agreement: f64,
    pub greedy_agreement: f64,
    pub greedy_steps: usize,
}

pub struct QualityOptions {
    /// Golden file (tiny-v4 format); random sequences when `None`.
    pub golden: Option<std::path::PathBuf>,
    pub random_sequences: usize,
    pub random_len: usize,
    pub greedy_steps: usize,
    pub seed: u64,
}

struct Sequence {
    prompt: Vec<u32>,
    greedy: Vec<u32>,
    golden_logits: Option<Vec<f32>>,
}

pub fn quality(
    model_dir: &Path,
    reference_dir: &Path,
    opts: &QualityOptions,
) -> Result<QualityReport, ConvertError> {
    let reference = Model::load(reference_dir)?;
    let model = Model::load(model_dir)?;
    if reference.cfg.vocab_size != model.cfg.vocab_size {
        return Err(ConvertError::Config {
            path: model_dir.join("config.json"),
            message: format!(
                "vocab_size {} differs from the reference's {}",
                model.cfg.vocab_size, reference.cfg.vocab_size
            ),
        });
    }
    let seqs = match &opts.golden {
        Some(g) => golden_sequences(g)?,
        None => random_sequences(&reference, opts)?,
    };
    let mut out = Vec::new();
    for s in &seqs {
        out.push(compare(&reference, &model, s)?);
    }
    let positions: usize = out.iter().map(|s| s.positions).sum();
    let greedy_steps: usize = out.iter().map(|s| s.greedy_steps).sum();
    let kl_sum: f64 = out.iter().map(|s| s.mean_kl * s.positions as f64).sum();
    Ok(QualityReport {
        positions,
        max_abs_err: out.iter().map(|s| s.max_abs_err).fold(0.0, f32::max),
        mean_kl: kl_sum / positions.max(1) as f64,
        max_kl: out.iter().map(|s| s.max_kl).fold(0.0, f64::max),
        top1_agreement: out.iter().map(|s| s.top1_agree).sum::<usize>() as f64
            / positions.max(1) as f64,
        greedy_agreement: out.iter().map(|s| s.greedy_agree).sum::<usize>() as f64
            / greedy_steps.max(1) as f64,
        greedy_steps,
        sequences: out,
    })
}

fn run_all(model: &Model, tokens: &[u32]) -> Result<Vec<f32>, ConvertError> {
    let mut cache = model.new_cache();
    let out = model
        .forward(&mut [(&mut cache, tokens)], Logits::All, false)
        .map_err(|e| ConvertError::Options(format!("forward pass failed: {e}")))?;
    Ok(out.logits.into_iter().next().unwrap_or_default())
}

fn compare(reference: &Model, model: &Model, s: &Sequence) -> Result<SeqQuality, ConvertError> {
    let v = reference.cfg.vocab_size;
    // Teacher forcing: the last greedy token is never an input.
    let mut tokens = s.prompt.clone();
    tokens.extend_from_slice(&s.greedy[..s.greedy.len().saturating_sub(1)]);
    let a = run_all(reference, &tokens)?;
    let b = run_all(model, &tokens)?;
    let n = tokens.len();
    let mut q = SeqQuality {
        prompt_len: s.prompt.len(),
        positions: n,
        max_abs_err: 0.0,
        mean_kl: 0.0,
        max_kl: 0.0,
        top1_agree: 0,
        greedy_agree: 0,
        greedy_steps: s.greedy.len(),
        reference_vs_golden_max_abs: None,
    };
    let mut kl_sum = 0.0;
    for p in 0..n {
        let (ra, rb) = (&a[p * v..(p + 1) * v], &b[p * v..(p + 1) * v]);
        for (x, y) in ra.iter().zip(rb) {
            q.max_abs_err = q.max_abs_err.max((x - y).abs());
        }
        let kl = kl_div(ra, rb);
        kl_sum += kl;
        q.max_kl = q.max_kl.max(kl);
        let (ta, tb) = (argmax(ra), argmax(rb));
        if ta == tb {
            q.top1_agree += 1;
        }
        if p + 1 >= s.prompt.len() {
            let step = p + 1 - s.prompt.len();
            if s.greedy.get(step) == Some(&(tb as u32)) {
                q.greedy_agree += 1;
            }
        }
    }
    q.mean_kl = kl_sum / n.max(1) as f64;
    if let Some(g) = &s.golden_logits {
        let m = g
            .iter()
            .zip(&a)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        q.reference_vs_golden_max_abs = Some(m);
    }
    Ok(q)
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// KL(softmax(p) ‖ softmax(q)) in nats, computed in f64.
pub fn kl_div(p: &[f32], q: &[f32]) -> f64 {
    let lse = |v: &[f32]| {
        let m = v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        m + v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let la = a as f64 - lp;
            la.exp() * (la - (b as f64 - lq))
        })
        .sum::<f64>()
        .max(0.0)
}

fn golden_sequences(path: &Path) -> Result<Vec<Sequence>, ConvertError> {
    let bytes = std::fs::read(path).map_err(|e| ConvertError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ConvertError::Source {
        path: path.to_path_buf(),
        message: format!("not a safetensors file: {e}"),
    })?;
    let ints = |name: &str| -> Result<Option<Vec<u32>>, ConvertError> {
        let Ok(t) = st.tensor(name) else {
            return Ok(None);
        };
        let v: Vec<i64> = match t.dtype() {
            Dtype::I64 => t
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect(),
            Dtype::I32 => t
                .data()
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as i64)
                .collect(),
            _ => {
                return Err(ConvertError::Tensor {
                    path: path.to_path_buf(),
                    tensor: name.into(),
                    message: "expected I64 or I32 token ids".into(),
                });
            }
        };
        Ok(Some(v.into_iter().map(|x| x as u32).collect()))
    };
    let mut seqs = Vec::new();
    for i in 0.. {
        let Some(prompt) = ints(&format!("seq{i}.input_ids"))? else {
            break;
        };
        let greedy = ints(&format!("seq{i}.greedy_tokens"))?.unwrap_or_default();
        let golden_logits = st.tensor(&format!("seq{i}.logits")).ok().and_then(|t| {
            (t.dtype() == Dtype::F32).then(|| {
                t.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
        });
        seqs.push(Sequence {
            prompt,
            greedy,
            golden_logits,
        });
    }
    if seqs.is_empty() {
        return Err(ConvertError::Source {
            path: path.to_path_buf(),
            message: "no seq0.input_ids: not a golden file in the tiny-v4 format".into(),
        });
    }
    Ok(seqs)
}

fn random_sequences(
    reference: &Model,
    opts: &QualityOptions,
) -> Result<Vec<Sequence>, ConvertError> {
    let mut rng = Rng::seed_from_u64(opts.seed);
    let v = reference.cfg.vocab_size as u64;
    let mut seqs = Vec::new();
    for i in 0..opts.random_sequences {
        let len = (opts.random_len >> (i % 3)).max(2);
        let prompt: Vec<u32> = (0..len).map(|_| rng.below(v) as u32).collect();
        let g = generate(
            reference,
            &prompt,
            &GenerateOptions::greedy(opts.greedy_steps),
            |_| {},
        )
        .map_err(|e| ConvertError::Options(format!("reference generation failed: {e}")))?;
        seqs.push(Sequence {
            prompt,
            greedy: g.tokens,
            golden_logits: None,
        });
    }
    Ok(seqs)
}
