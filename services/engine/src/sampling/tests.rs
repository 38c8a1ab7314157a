use super::filters::cmp_desc;
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
    let back: SamplingParams = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}
