//! The incremental path against the full forward: chunked prefill of any chunk size, then
//! single-token steps, and batched decode of sequences of different lengths against running
//! each alone.

mod common;

use common::{Golden, SEQUENCES, assert_close, max_abs_diff, model};
use v4_engine::Logits;
use v4_engine::generate::{GenerateOptions, generate, generate_batch};

#[test]
fn chunked_prefill_equals_full_forward_for_any_chunk_size() {
    let g = Golden::open("golden.safetensors");
    let m = model("ckpt-bf16");
    let ids = g.ids("seq4.input_ids"); // 150 tokens: crosses window, CSA and HCA boundaries
    let mut cache = m.new_cache();
    let full = m
        .forward(&mut [(&mut cache, &ids[..])], Logits::All, false)
        .unwrap()
        .logits
        .remove(0);
    for chunk in [1usize, 2, 3, 4, 5, 7, 15, 16, 17, 33, 64, 149] {
        let mut cache = m.new_cache();
        let mut got = Vec::new();
        for part in ids.chunks(chunk) {
            got.extend(
                m.forward(&mut [(&mut cache, part)], Logits::All, false)
                    .unwrap()
                    .logits
                    .remove(0),
            );
        }
        assert_eq!(cache.pos, ids.len());
        let d = max_abs_diff(&got, &full);
        assert!(d <= 1e-5, "chunk {chunk}: max abs diff {d:e}");
    }
}

#[test]
fn chunked_prefill_then_decode_matches_reference_steps() {
    let g = Golden::open("golden.safetensors");
    let m = model("ckpt-bf16");
    for i in [1usize, 3, 4] {
        let ids = g.ids(&format!("seq{i}.input_ids"));
        let want_tokens = g.ids(&format!("seq{i}.greedy_tokens"));
        let (_, want_logits) = g.f32(&format!("seq{i}.greedy_step_logits"));
        for chunk in [1usize, 5, 16] {
            let opts = GenerateOptions {
                chunk,
                ..GenerateOptions::greedy(16)
            };
            let out = generate(m, &ids, &opts, |_| {}).unwrap();
            assert_eq!(out.tokens, want_tokens, "seq{i} chunk {chunk}");
            assert_close(
                &format!("seq{i} chunk {chunk}"),
                &out.step_logits.concat(),
                &want_logits,
                1e-3,
            );
        }
    }
}

#[test]
fn batched_decode_equals_one_at_a_time() {
    let g = Golden::open("golden.safetensors");
    let m = model("ckpt-fp8-fp4");
    let prompts: Vec<Vec<u32>> = (0..SEQUENCES)
        .map(|i| g.ids(&format!("seq{i}.input_ids")))
        .collect();
    let opts = GenerateOptions::greedy(16);
    let batched = generate_batch(m, &prompts, &opts).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let single = generate(m, p, &opts, |_| {}).unwrap();
        assert_eq!(batched[i].tokens, single.tokens, "seq{i} tokens");
        let d = max_abs_diff(
            &batched[i].step_logits.concat(),
            &single.step_logits.concat(),
        );
        assert_eq!(
            d, 0.0,
            "seq{i}: batched decode must be bit-identical to single decode"
        );
    }
}
