//! Layer-level golden tests against `intermediates.safetensors` (the 64-token sequence), so
//! that a failure names the block that is wrong.

mod common;

use common::{Golden, assert_close, model};
use v4_engine::Logits;
use v4_engine::model::Trace;

fn traced(kind: &str) -> (Trace, usize) {
    let g = Golden::open("golden.safetensors");
    let ids = g.ids("seq2.input_ids");
    let m = model(kind);
    let mut cache = m.new_cache();
    let mut trace = Trace::new();
    m.forward_traced(
        &mut [(&mut cache, &ids[..])],
        Logits::All,
        false,
        Some(&mut trace),
    )
    .expect("forward");
    (trace, m.cfg.num_hidden_layers)
}

fn check_layers(kind: &str) {
    let inter = Golden::open("intermediates.safetensors");
    let (trace, layers) = traced(kind);
    let get = |name: &str| {
        trace
            .get(name)
            .unwrap_or_else(|| panic!("trace lacks {name}"))
    };
    assert_close(
        &format!("{kind} embed"),
        get("embed"),
        &inter.f32("embed").1,
        1e-6,
    );
    for l in 0..layers {
        for part in [
            "attn_hc.post",
            "attn_hc.comb",
            "attn_hc.collapsed",
            "attn_out",
            "moe_out",
            "out_streams",
        ] {
            let name = format!("layer{l}.{part}");
            assert_close(
                &format!("{kind} {name}"),
                get(&name),
                &inter.f32(&name).1,
                1e-4,
            );
        }
        let ckv = format!("layer{l}.compressed_kv");
        if inter.has(&ckv) {
            assert_close(
                &format!("{kind} {ckv}"),
                get(&ckv),
                &inter.f32(&ckv).1,
                1e-4,
            );
        }
        let topk = format!("layer{l}.indexer_topk");
        if inter.has(&topk) {
            let got: Vec<i64> = get(&topk).iter().map(|&v| v as i64).collect();
            assert_eq!(
                got,
                inter.ints(&topk),
                "{kind} {topk}: indexer picks differ"
            );
        }
    }
    assert_close(
        &format!("{kind} hc_head_out"),
        get("hc_head_out"),
        &inter.f32("hc_head_out").1,
        1e-4,
    );
    assert_close(
        &format!("{kind} final_norm_out"),
        get("final_norm_out"),
        &inter.f32("final_norm_out").1,
        1e-4,
    );
}

#[test]
fn bf16_layers_match_reference_intermediates() {
    check_layers("ckpt-bf16");
}

#[test]
fn fp8_fp4_layers_match_reference_intermediates() {
    check_layers("ckpt-fp8-fp4");
}

#[test]
fn rope_frequencies_match_reference() {
    let inter = Golden::open("intermediates.safetensors");
    let m = model("ckpt-bf16");
    assert_close(
        "main inv_freq",
        &m.rope_main.inv_freq,
        &inter.f32("rope.main_inv_freq").1,
        1e-9,
    );
    assert_close(
        "compress inv_freq",
        &m.rope_compress.inv_freq,
        &inter.f32("rope.compress_inv_freq").1,
        1e-9,
    );
}
