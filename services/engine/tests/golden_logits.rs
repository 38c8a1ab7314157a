//! End-to-end golden tests against the reference implementation's float32 outputs, for both
//! fixture checkpoints (BF16, and FP8 linears with FP4 experts).

mod common;

use common::{Golden, SEQUENCES, assert_close, model};
use v4_engine::generate::{GenerateOptions, generate};
use v4_engine::weights::LoadOptions;
use v4_engine::{Logits, Model};

const TOL: f32 = 1e-3;

fn full_logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache();
    let out = m
        .forward(&mut [(&mut cache, ids)], Logits::All, false)
        .expect("forward");
    out.logits.into_iter().next().unwrap()
}

fn check_full(kind: &str) {
    let g = Golden::open("golden.safetensors");
    let m = model(kind);
    for i in 0..SEQUENCES {
        let ids = g.ids(&format!("seq{i}.input_ids"));
        let (shape, want) = g.f32(&format!("seq{i}.logits"));
        assert_eq!(shape, vec![ids.len(), m.cfg.vocab_size]);
        assert_close(
            &format!("{kind} seq{i} logits"),
            &full_logits(m, &ids),
            &want,
            TOL,
        );
    }
}

fn check_greedy(kind: &str) {
    let g = Golden::open("golden.safetensors");
    let m = model(kind);
    for i in 0..SEQUENCES {
        let ids = g.ids(&format!("seq{i}.input_ids"));
        let want_tokens = g.ids(&format!("seq{i}.greedy_tokens"));
        let (_, want_logits) = g.f32(&format!("seq{i}.greedy_step_logits"));
        let opts = GenerateOptions::greedy(want_tokens.len());
        let out = generate(m, &ids, &opts, |_| {}).expect("generate");
        assert_eq!(out.tokens, want_tokens, "{kind} seq{i} greedy tokens");
        let got: Vec<f32> = out.step_logits.concat();
        assert_close(
            &format!("{kind} seq{i} step logits"),
            &got,
            &want_logits,
            TOL,
        );
    }
}

fn check_mtp(kind: &str) {
    let g = Golden::open("golden.safetensors");
    let m = model(kind);
    let (n, d) = (m.cfg.hc_mult, m.cfg.hidden_size);
    for i in 0..SEQUENCES {
        let ids = g.ids(&format!("seq{i}.input_ids"));
        let (_, want) = g.f32(&format!("seq{i}.mtp_logits"));
        let mut cache = m.new_cache();
        let out = m
            .forward(&mut [(&mut cache, &ids[..])], Logits::None, true)
            .expect("forward");
        let streams = &out.streams.unwrap()[0];
        let rows = ids.len() - 1;
        let mut mcache = m.new_mtp_cache().expect("tiny model has an MTP block");
        let got = m
            .mtp_logits(&mut mcache, 0, &streams[..rows * n * d], &ids[1..])
            .expect("mtp");
        assert_close(&format!("{kind} seq{i} mtp logits"), &got, &want, TOL);
    }
}

#[test]
fn bf16_full_logits_match_reference() {
    check_full("ckpt-bf16");
}

#[test]
fn fp8_fp4_full_logits_match_reference() {
    check_full("ckpt-fp8-fp4");
}

#[test]
fn bf16_greedy_decode_matches_reference() {
    check_greedy("ckpt-bf16");
}

#[test]
fn fp8_fp4_greedy_decode_matches_reference() {
    check_greedy("ckpt-fp8-fp4");
}

#[test]
fn bf16_mtp_logits_match_reference() {
    check_mtp("ckpt-bf16");
}

#[test]
fn fp8_fp4_mtp_logits_match_reference() {
    check_mtp("ckpt-fp8-fp4");
}

#[test]
fn fp8_fp4_computed_natively_equals_dequantized_at_load() {
    let g = Golden::open("golden.safetensors");
    let native = model("ckpt-fp8-fp4");
    assert_eq!(native.blocks[1].ffn.experts[0].w1.format(), "fp4");
    assert_eq!(
        native.blocks[1].ffn.shared.as_ref().unwrap().w1.format(),
        "fp8"
    );
    let dir = common::fixture_dir().join("ckpt-fp8-fp4");
    let expanded = Model::load_with(&dir, LoadOptions { dequantize: true }).unwrap();
    assert_eq!(expanded.blocks[1].ffn.experts[0].w1.format(), "bf16");
    let ids = g.ids("seq4.input_ids");
    let a = full_logits(native, &ids);
    let b = full_logits(&expanded, &ids);
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "native FP8/FP4 compute must be bit-identical to BF16 on the dequantized weights"
    );
}
