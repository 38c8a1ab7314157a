//! Parameter and KV-cache accounting from a [`ModelConfig`] alone (no weights), and the
//! report printed by `v4 info --model DIR`.
//!
//! Parameters are counted over the tensors of the official layout ([`crate::init::official_layout`]):
//! one parameter per logical weight element (FP4 counts unpacked elements), scales and
//! `tid2eid` excluded.
//!
//! Conventions, chosen because they reproduce the model cards (284B / 13B for V4-Flash,
//! 1.6T / 49B for V4-Pro):
//! * `total` = the main model (embedding, head, all layers, final norm and mHC head); the MTP
//!   block is counted separately in `mtp`. Flash: 284.3B (290.9B with MTP); Pro: 1.573T
//!   (1.599T with MTP; both round to "1.6T").
//! * `active` = what one token touches in the main model: the head, every non-expert weight of
//!   every layer, and `num_experts_per_tok` routed experts per layer; the embedding table is a
//!   lookup and is not counted, nor is the MTP block. Flash: 13.27B; Pro: 48.85B.

use crate::config::{AttnKind, ModelConfig};
use crate::init::{ParamGroup, official_layout};

/// Logical parameter counts by group (see the module doc for the conventions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamCounts {
    /// Main model: every group below except `mtp`.
    pub total: u64,
    /// Per token: `total - embedding - routed_experts + routed_experts * top_k / n_experts`.
    pub active: u64,
    pub embedding: u64,
    pub head: u64,
    /// `attn.{wq_a, q_norm, wq_b, wkv, kv_norm, wo_a, wo_b, attn_sink}` of all layers.
    pub attention: u64,
    /// `attn.compressor.*` and `attn.indexer.*` (CSA/HCA layers).
    pub compressor_indexer: u64,
    pub routed_experts: u64,
    pub shared_experts: u64,
    /// `ffn.gate.weight` and `ffn.gate.bias`.
    pub router: u64,
    /// `hc_*` of all layers and the head, `attn_norm`, `ffn_norm`, final `norm`.
    pub hc_and_norms: u64,
    /// Everything under `mtp.*` (not part of `total`).
    pub mtp: u64,
}

impl ParamCounts {
    pub fn total_with_mtp(&self) -> u64 {
        self.total + self.mtp
    }
}

/// Count the parameters of `cfg` (see the module doc).
pub fn parameter_counts(cfg: &ModelConfig) -> ParamCounts {
    count(cfg).0
}

/// Parameter counts and the routed-expert parameters of the MTP block.
fn count(cfg: &ModelConfig) -> (ParamCounts, u64) {
    let mut c = ParamCounts::default();
    let mut mtp_routed = 0;
    for t in official_layout(cfg) {
        let n = t.numel();
        if t.group == ParamGroup::Mtp && t.is_routed_expert() {
            mtp_routed += n;
        }
        match t.group {
            ParamGroup::Embedding => c.embedding += n,
            ParamGroup::Head => c.head += n,
            ParamGroup::Attention => c.attention += n,
            ParamGroup::CompressorIndexer => c.compressor_indexer += n,
            ParamGroup::RoutedExperts => c.routed_experts += n,
            ParamGroup::SharedExperts => c.shared_experts += n,
            ParamGroup::Router => c.router += n,
            ParamGroup::HcAndNorms => c.hc_and_norms += n,
            ParamGroup::Mtp => c.mtp += n,
            ParamGroup::NotAParameter => {}
        }
    }
    c.total = c.embedding
        + c.head
        + c.attention
        + c.compressor_indexer
        + c.routed_experts
        + c.shared_experts
        + c.router
        + c.hc_and_norms;
    c.active = c.total - c.embedding - c.routed_experts + active_routed(cfg, c.routed_experts);
    (c, mtp_routed)
}

/// Share of `routed` parameters one token uses: top-k of n experts (all experts equal size).
fn active_routed(cfg: &ModelConfig, routed: u64) -> u64 {
    routed * cfg.num_experts_per_tok as u64 / cfg.n_routed_experts.max(1) as u64
}

/// Storage layout of cached KV entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvLayout {
    /// Our CPU cache: 4 bytes per element.
    F32,
    Bf16,
    /// Spec §3: FP8 nope + BF16 rope + UE8M0 scales per entry; FP4 indexer keys.
    Fp8,
}

impl KvLayout {
    pub const ALL: [KvLayout; 3] = [KvLayout::F32, KvLayout::Bf16, KvLayout::Fp8];

    pub fn name(self) -> &'static str {
        match self {
            KvLayout::F32 => "f32",
            KvLayout::Bf16 => "bf16",
            KvLayout::Fp8 => "fp8",
        }
    }

    /// Bytes of one `head_dim`-wide KV entry (window or compressed). FP8: `head_dim - rope`
    /// FP8 bytes + `rope` BF16 values + one UE8M0 scale per 64 nope dims padded to 8 bytes
    /// (448 + 128 + 8 = 584 for head_dim 512).
    pub fn entry_bytes(self, cfg: &ModelConfig) -> u64 {
        let (d, r) = (cfg.head_dim as u64, cfg.qk_rope_head_dim as u64);
        match self {
            KvLayout::F32 => 4 * d,
            KvLayout::Bf16 => 2 * d,
            KvLayout::Fp8 => {
                (d - r.min(d)) + 2 * r + (d - r.min(d)).div_ceil(64).next_multiple_of(8)
            }
        }
    }

    /// Bytes of one `index_head_dim`-wide indexer key. FP8 layout: FP4 E2M1 values + one
    /// UE8M0 scale per 32 (64 + 4 = 68 for 128 dims).
    pub fn indexer_key_bytes(self, cfg: &ModelConfig) -> u64 {
        let di = cfg.index_head_dim as u64;
        match self {
            KvLayout::F32 => 4 * di,
            KvLayout::Bf16 => 2 * di,
            KvLayout::Fp8 => di.div_ceil(2) + di.div_ceil(32),
        }
    }
}

/// KV footprint of one layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvLayoutBytes {
    pub layout: KvLayout,
    /// One compressed (or window) attention entry.
    pub entry: u64,
    /// One indexer key (CSA layers).
    pub indexer_key: u64,
    /// Compressed entries per token of context, amortised, summed over the main layers:
    /// CSA `(entry + indexer_key) / m`, HCA `entry / m`.
    pub per_token: f64,
    /// Fixed sliding-window ring buffers: `num_hidden_layers × sliding_window × entry`
    /// (the MTP block's own window is not included).
    pub window: u64,
    /// Compressed entries for 1,048,576 tokens (exact `floor(T/m)` per layer) plus `window`.
    pub at_1m: u64,
}

/// KV bytes per token of context in the three layouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvBytes {
    pub sliding_layers: usize,
    pub csa_layers: usize,
    pub hca_layers: usize,
    pub f32: KvLayoutBytes,
    pub bf16: KvLayoutBytes,
    pub fp8: KvLayoutBytes,
}

impl KvBytes {
    pub fn layouts(&self) -> [&KvLayoutBytes; 3] {
        [&self.f32, &self.bf16, &self.fp8]
    }
}

/// One million tokens of context, as in the model card (2^20).
pub const ONE_M_TOKENS: u64 = 1 << 20;

/// Exact cache bytes for `tokens` tokens of context in `layout` (compressed entries of every
/// main layer + the full window ring buffers; compressor states not included).
pub fn kv_bytes_for_tokens(cfg: &ModelConfig, layout: KvLayout, tokens: u64) -> u64 {
    let (entry, key) = (layout.entry_bytes(cfg), layout.indexer_key_bytes(cfg));
    let window = cfg.num_hidden_layers as u64 * cfg.sliding_window as u64 * entry;
    let compressed: u64 = (0..cfg.num_hidden_layers)
        .map(|l| match cfg.attn_kind(l) {
            AttnKind::Sliding => 0,
            AttnKind::Csa { ratio } => tokens / ratio as u64 * (entry + key),
            AttnKind::Hca { ratio } => tokens / ratio as u64 * entry,
        })
        .sum();
    compressed + window
}

fn layout_bytes(cfg: &ModelConfig, layout: KvLayout) -> KvLayoutBytes {
    let (entry, key) = (layout.entry_bytes(cfg), layout.indexer_key_bytes(cfg));
    let per_token = (0..cfg.num_hidden_layers)
        .map(|l| match cfg.attn_kind(l) {
            AttnKind::Sliding => 0.0,
            AttnKind::Csa { ratio } => (entry + key) as f64 / ratio as f64,
            AttnKind::Hca { ratio } => entry as f64 / ratio as f64,
        })
        .sum();
    KvLayoutBytes {
        layout,
        entry,
        indexer_key: key,
        per_token,
        window: cfg.num_hidden_layers as u64 * cfg.sliding_window as u64 * entry,
        at_1m: kv_bytes_for_tokens(cfg, layout, ONE_M_TOKENS),
    }
}

/// Amortised KV bytes per token, window bytes and 1M-token totals for f32, bf16 and FP8.
pub fn kv_bytes_per_token(cfg: &ModelConfig) -> KvBytes {
    let mut kinds = (0, 0, 0);
    for l in 0..cfg.num_hidden_layers {
        match cfg.attn_kind(l) {
            AttnKind::Sliding => kinds.0 += 1,
            AttnKind::Csa { .. } => kinds.1 += 1,
            AttnKind::Hca { .. } => kinds.2 += 1,
        }
    }
    KvBytes {
        sliding_layers: kinds.0,
        csa_layers: kinds.1,
        hca_layers: kinds.2,
        f32: layout_bytes(cfg, KvLayout::F32),
        bf16: layout_bytes(cfg, KvLayout::Bf16),
        fp8: layout_bytes(cfg, KvLayout::Fp8),
    }
}

/// "284.3B", "1.57T", "12.5M", "3.1K" or the plain number.
pub fn human_count(n: u64) -> String {
    let x = n as f64;
    match n {
        n if n >= 1_000_000_000_000 => format!("{:.2}T", x / 1e12),
        n if n >= 1_000_000_000 => format!("{:.1}B", x / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", x / 1e6),
        n if n >= 1_000 => format!("{:.1}K", x / 1e3),
        n => n.to_string(),
    }
}

/// Decimal byte sizes: "584 B", "3.51 kB", "11.3 MB", "3.69 GB".
pub fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.2} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

/// `1234567` -> `"1,234,567"`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `[2, 4, ..., 42]`: runs of at least 4 equally spaced indices are shortened to
/// first, second, `...`, last; everything else is listed.
pub fn compact_indices(idx: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        if i + 2 < idx.len() {
            let step = idx[i + 1] as i64 - idx[i] as i64;
            while j + 1 < idx.len() && idx[j + 1] as i64 - idx[j] as i64 == step {
                j += 1;
            }
            if j - i + 1 >= 4 {
                parts.extend([
                    idx[i].to_string(),
                    idx[i + 1].to_string(),
                    "...".into(),
                    idx[j].to_string(),
                ]);
                i = j + 1;
                continue;
            }
        }
        parts.push(idx[i].to_string());
        i += 1;
    }
    format!("[{}]", parts.join(", "))
}

/// Human report of a config: shapes, layer types, routing, MTP, parameters and KV bytes.
pub fn describe(cfg: &ModelConfig) -> String {
    let mut lines = Vec::new();
    let l = cfg.num_hidden_layers;
    lines.push(format!(
        "model: {l} layers + {} MTP block(s), hidden {}, vocab {}, max positions {}",
        cfg.num_nextn_predict_layers, cfg.hidden_size, cfg.vocab_size, cfg.max_position_embeddings
    ));
    lines.push(format!(
        "attention: {} heads x {} (rope {}), q_lora {}, o_groups {} x o_lora {}, window {}",
        cfg.num_attention_heads,
        cfg.head_dim,
        cfg.qk_rope_head_dim,
        cfg.q_lora_rank,
        cfg.o_groups,
        cfg.o_lora_rank,
        cfg.sliding_window
    ));
    // Layer types in order of first appearance of each (kind, ratio).
    let mut kinds: Vec<(AttnKind, Vec<usize>)> = Vec::new();
    for i in 0..l {
        let k = cfg.attn_kind(i);
        match kinds.iter_mut().find(|(kk, _)| *kk == k) {
            Some((_, v)) => v.push(i),
            None => kinds.push((k, vec![i])),
        }
    }
    kinds.sort_by_key(|(k, _)| {
        (
            k.is_compressed(),
            matches!(k, AttnKind::Hca { .. }),
            k.ratio(),
        )
    });
    let parts: Vec<String> = kinds
        .iter()
        .map(|(k, v)| {
            let label = match k {
                AttnKind::Sliding => "sliding".to_string(),
                other => format!("{}(m={})", other.name(), other.ratio()),
            };
            format!("{label}: {} {}", v.len(), compact_indices(v))
        })
        .collect();
    lines.push(format!("layers: {}", parts.join("; ")));
    if cfg.has_csa() {
        lines.push(format!(
            "indexer: {} heads x {}, top-k {}",
            cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk
        ));
    }
    lines.push(format!(
        "moe: {} routed experts (top-{}) + {} shared, intermediate {}, scaling {}, swiglu limit {}",
        cfg.n_routed_experts,
        cfg.num_experts_per_tok,
        cfg.n_shared_experts,
        cfg.moe_intermediate_size,
        cfg.routed_scaling_factor,
        cfg.swiglu_limit
    ));
    let hash: Vec<usize> = (0..cfg.num_hash_layers.min(l)).collect();
    lines.push(format!(
        "hash-routed layers: {} {}",
        hash.len(),
        compact_indices(&hash)
    ));
    let mtp: Vec<String> = (0..cfg.num_nextn_predict_layers)
        .map(|j| {
            format!(
                "mtp.{j} (layer {}, {}, learned router)",
                l + j,
                cfg.attn_kind(l + j).name()
            )
        })
        .collect();
    lines.push(format!(
        "mtp: {}",
        if mtp.is_empty() {
            "none".to_string()
        } else {
            mtp.join(", ")
        }
    ));
    lines.push(format!(
        "mhc: {} streams, {} Sinkhorn iterations",
        cfg.hc_mult, cfg.hc_sinkhorn_iters
    ));

    let (p, mtp_routed) = count(cfg);
    let mtp_active = p.mtp - mtp_routed + active_routed(cfg, mtp_routed);
    lines.push(format!(
        "parameters: total {} ({}), active {} ({}) per token",
        human_count(p.total),
        grouped(p.total),
        human_count(p.active),
        grouped(p.active)
    ));
    lines.push(
        "  (main model without MTP; active = head + non-expert weights + top-k routed experts, \
         embedding lookup excluded)"
            .to_string(),
    );
    let groups = [
        ("embedding", p.embedding),
        ("head", p.head),
        ("attention", p.attention),
        ("compressor+indexer", p.compressor_indexer),
        ("routed experts", p.routed_experts),
        ("shared experts", p.shared_experts),
        ("router", p.router),
        ("mhc+norms", p.hc_and_norms),
    ];
    let g: Vec<String> = groups
        .iter()
        .map(|(n, v)| format!("{n} {}", human_count(*v)))
        .collect();
    lines.push(format!("  {}", g.join(", ")));
    lines.push(format!(
        "  mtp {} ({}), active {}; total with mtp {} ({})",
        human_count(p.mtp),
        grouped(p.mtp),
        human_count(mtp_active),
        human_count(p.total_with_mtp()),
        grouped(p.total_with_mtp())
    ));

    let kv = kv_bytes_per_token(cfg);
    let row = |f: &dyn Fn(&KvLayoutBytes) -> String| -> String {
        kv.layouts()
            .iter()
            .map(|b| format!("{} {}", b.layout.name(), f(b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    lines.push(format!(
        "kv per token (compressed entries, amortised over {} csa + {} hca layers): {}",
        kv.csa_layers,
        kv.hca_layers,
        row(&|b| format!("{:.1} B", b.per_token))
    ));
    lines.push(format!(
        "kv window (fixed, {l} layers x {} tokens): {}",
        cfg.sliding_window,
        row(&|b| human_bytes(b.window as f64))
    ));
    lines.push(format!(
        "kv at 1M tokens ({ONE_M_TOKENS}): {}",
        row(&|b| human_bytes(b.at_1m as f64))
    ));
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn real(name: &str) -> ModelConfig {
        let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/configs")
            .join(name);
        ModelConfig::from_path(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn within(x: u64, target: f64, pct: f64) -> bool {
        ((x as f64 - target) / target).abs() * 100.0 <= pct
    }

    #[test]
    fn flash_matches_model_card() {
        let cfg = real("deepseek-v4-flash");
        let kv = kv_bytes_per_token(&cfg);
        assert_eq!(
            (kv.sliding_layers, kv.csa_layers, kv.hca_layers),
            (2, 21, 20)
        );
        assert_eq!(cfg.attn_kind(43), AttnKind::Sliding, "MTP block");
        let p = parameter_counts(&cfg);
        println!("V4-Flash: {p:#?}\ntotal {} active {}", p.total, p.active);
        assert!(within(p.total, 284e9, 1.0), "total {}", p.total);
        assert!(within(p.active, 13e9, 3.0), "active {}", p.active);
        // Spec §3: ~3.5 KB/token in the FP8 layout, ~6.9 KB in bf16.
        assert_eq!((kv.fp8.entry, kv.fp8.indexer_key), (584, 68));
        assert!(
            (kv.fp8.per_token - 3514.25).abs() < 1e-9,
            "{}",
            kv.fp8.per_token
        );
        assert!(
            (kv.bf16.per_token - 6880.0).abs() < 1e-9,
            "{}",
            kv.bf16.per_token
        );
        assert!((kv.f32.per_token - 13760.0).abs() < 1e-9);
        assert_eq!(kv.fp8.window, 43 * 128 * 584);
        let expect_1m =
            21 * (ONE_M_TOKENS / 4) * (584 + 68) + 20 * (ONE_M_TOKENS / 128) * 584 + 43 * 128 * 584;
        assert_eq!(kv.fp8.at_1m, expect_1m);
        assert!(within(kv.fp8.at_1m, 3.7e9, 1.0), "{}", kv.fp8.at_1m);
        let text = describe(&cfg);
        println!("{text}");
        for needle in [
            "layers: sliding: 2 [0, 1]; csa(m=4): 21 [2, 4, ..., 42]; hca(m=128): 20 [3, 5, ..., 41]",
            "hash-routed layers: 3 [0, 1, 2]",
            "mtp: mtp.0 (layer 43, sliding, learned router)",
            "parameters: total 284.3B (",
            "active 13.3B (",
            "fp8 3514.2 B",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn pro_matches_model_card() {
        let cfg = real("deepseek-v4-pro");
        let kv = kv_bytes_per_token(&cfg);
        assert_eq!(
            (kv.sliding_layers, kv.csa_layers, kv.hca_layers),
            (0, 30, 31)
        );
        let p = parameter_counts(&cfg);
        println!("V4-Pro: {p:#?}\ntotal {} active {}", p.total, p.active);
        assert!(within(p.total, 1.6e12, 3.0), "total {}", p.total);
        assert!(within(p.active, 49e9, 3.0), "active {}", p.active);
        // Spec §3: ~5.0 KB/token in FP8.
        assert!(
            (kv.fp8.per_token - 5031.4375).abs() < 1e-9,
            "{}",
            kv.fp8.per_token
        );
        let text = describe(&cfg);
        println!("{text}");
        assert!(
            text.contains("csa(m=4): 30 [2, 4, ..., 60]; hca(m=128): 31 [0, 1, 3, ..., 59]"),
            "{text}"
        );
        assert!(text.contains("total 1.57T ("), "{text}");
    }

    /// The counts agree with the element counts of the fixture checkpoint's tensors.
    #[test]
    fn tiny_counts_match_fixture_headers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/tiny-v4/ckpt-bf16");
        let cfg = ModelConfig::from_path(&dir).unwrap_or_else(|e| panic!("{e}"));
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        let mut files: Vec<&str> = index["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_str())
            .collect();
        files.sort();
        files.dedup();
        let (mut main, mut mtp, mut embed) = (0u64, 0u64, 0u64);
        for f in files {
            let buf = std::fs::read(dir.join(f)).unwrap();
            let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
            for (name, view) in st.tensors() {
                let n: u64 = view.shape().iter().map(|&d| d as u64).product();
                if name.ends_with("tid2eid") {
                    continue;
                } else if name.starts_with("mtp.") {
                    mtp += n;
                } else {
                    main += n;
                    if name == "embed.weight" {
                        embed = n;
                    }
                }
            }
        }
        let p = parameter_counts(&cfg);
        assert_eq!((p.total, p.mtp, p.embedding), (main, mtp, embed));
        let routed_per_layer = 8 * 3 * 64 * 128;
        assert_eq!(p.routed_experts, 4 * routed_per_layer);
        assert_eq!(
            p.active,
            p.total - embed - 4 * routed_per_layer + 4 * routed_per_layer / 4
        );
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(compact_indices(&[]), "[]");
        assert_eq!(compact_indices(&[0, 1]), "[0, 1]");
        assert_eq!(compact_indices(&[0, 1, 2]), "[0, 1, 2]");
        assert_eq!(compact_indices(&[3, 5, 7, 9]), "[3, 5, ..., 9]");
        assert_eq!(
            compact_indices(&[0, 1, 3, 5, 7, 9, 20]),
            "[0, 1, 3, ..., 9, 20]"
        );
        assert_eq!(grouped(284_312_345_678), "284,312,345,678");
        assert_eq!(grouped(12), "12");
        assert_eq!(human_count(1_573_000_000_000), "1.57T");
        assert_eq!(human_count(13_270_000_000), "13.3B");
        assert_eq!(human_bytes(3514.25), "3.51 kB");
        assert_eq!(human_bytes(584.0), "584 B");
        assert_eq!(human_bytes(3.2e6), "3.2 MB");
        assert_eq!(human_bytes(3.69e9), "3.69 GB");
    }
}
