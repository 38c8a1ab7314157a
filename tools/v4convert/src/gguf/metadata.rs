//! The `general.*` and `deepseek4.*` metadata of a converted model (`shared/design/gguf-deepseek4.md`
//! §1), with gguf-py's naming rules for `general.name` and `general.size_label`.

use v4_engine::config::ModelConfig;

use super::types::{GgufValue, GgufValueType};
use super::writer::TensorDecl;

/// gguf-py's `Metadata.id_to_title`: words split on `-` and blanks; all-lowercase words that are
/// not version-like (`v1.2`, or starting with a digit) are title-cased (`fp8` → `Fp8`).
pub fn id_to_title(s: &str) -> String {
    let versionish = |w: &str| {
        let b = w.as_bytes();
        if b.first().is_some_and(u8::is_ascii_digit) {
            return true;
        }
        let Some(rest) = w.strip_prefix('v') else {
            return false;
        };
        !rest.is_empty()
            && rest
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
    };
    let is_lower =
        |w: &str| w.chars().any(char::is_alphabetic) && !w.chars().any(char::is_uppercase);
    let title = |w: &str| {
        let mut out = String::with_capacity(w.len());
        let mut prev_alpha = false;
        for c in w.chars() {
            if c.is_alphabetic() && !prev_alpha {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            prev_alpha = c.is_alphabetic();
        }
        out
    };
    s.replace('-', " ")
        .split_whitespace()
        .map(|w| {
            if is_lower(w) && !versionish(w) {
                title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// gguf-py's `size_label`: `{experts}x{shared + one expert}` in rounded K/M/B/T notation.
pub(crate) fn size_label(tensors: &[TensorDecl]) -> String {
    let (mut shared, mut expert, mut expert_sum, mut n_expert_tensors) = (0u64, 0u64, 0u64, 0u64);
    for t in tensors {
        let size: u64 = t.dims.iter().product();
        if t.name.contains("_exps.") && t.dims.len() >= 3 {
            // numpy shape[-3] is ne2 for 3-D tensors.
            let count = t.dims[2].max(1);
            expert += size / count;
            expert_sum += count;
            n_expert_tensors += 1;
        } else {
            shared += size;
        }
    }
    let total = shared + expert;
    let count = expert_sum.checked_div(n_expert_tensors).unwrap_or(0);
    let pretty = rounded_notation(total);
    if count > 0 {
        format!("{count}x{pretty}")
    } else {
        pretty
    }
}

fn rounded_notation(n: u64) -> String {
    let x = n as f64;
    let (scaled, suffix) = if x > 1e12 {
        (x * 1e-12, "T")
    } else if x > 1e9 {
        (x * 1e-9, "B")
    } else if x > 1e6 {
        (x * 1e-6, "M")
    } else {
        (x * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round_ties_even() as u64);
    let digits = digits.trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

/// The `general.*` and `deepseek4.*` keys, in the order llama.cpp's converter writes them
/// (without `tokenizer.chat_template`, which we do not ship).
pub(crate) fn model_metadata(
    cfg: &ModelConfig,
    name: &str,
    size_label: &str,
    file_type: u32,
) -> Vec<(String, GgufValue)> {
    let a = "deepseek4";
    let u32v = |x: usize| GgufValue::U32(x as u32);
    let f32v = |x: f64| GgufValue::F32(x as f32);
    let mut m: Vec<(String, GgufValue)> = Vec::new();
    let mut put = |k: &str, v: GgufValue| {
        let key = if k.starts_with("general.") {
            k.to_string()
        } else {
            format!("{a}.{k}")
        };
        m.push((key, v));
    };
    put("general.architecture", GgufValue::String(a.into()));
    put("general.type", GgufValue::String("model".into()));
    put("general.name", GgufValue::String(name.into()));
    put("general.size_label", GgufValue::String(size_label.into()));
    put("block_count", u32v(cfg.num_hidden_layers));
    put("context_length", u32v(cfg.max_position_embeddings));
    put("embedding_length", u32v(cfg.hidden_size));
    put("attention.head_count", u32v(cfg.num_attention_heads));
    put("attention.head_count_kv", u32v(cfg.num_key_value_heads));
    if let Some(rs) = &cfg.rope_scaling {
        put("rope.scaling.type", GgufValue::String(rs.kind().into()));
        put("rope.scaling.factor", f32v(rs.factor));
        put(
            "rope.scaling.original_context_length",
            u32v(rs.original_max_position_embeddings),
        );
        put("rope.scaling.yarn_beta_fast", f32v(rs.beta_fast));
        put("rope.scaling.yarn_beta_slow", f32v(rs.beta_slow));
    }
    put("rope.freq_base", f32v(cfg.rope_theta));
    put("attention.layer_norm_rms_epsilon", f32v(cfg.rms_norm_eps));
    put("expert_count", u32v(cfg.n_routed_experts));
    put("expert_used_count", u32v(cfg.num_experts_per_tok));
    // 4 = sqrt(softplus); the config validation accepts nothing else.
    put("expert_gating_func", GgufValue::U32(4));
    put("attention.key_length", u32v(cfg.head_dim));
    put("attention.value_length", u32v(cfg.head_dim));
    put("general.file_type", GgufValue::U32(file_type));
    put("rope.dimension_count", u32v(cfg.qk_rope_head_dim));
    put("attention.q_lora_rank", u32v(cfg.q_lora_rank));
    put("attention.sliding_window", u32v(cfg.sliding_window));
    put(
        "expert_feed_forward_length",
        u32v(cfg.moe_intermediate_size),
    );
    put("expert_shared_count", u32v(cfg.n_shared_experts));
    put("expert_weights_scale", f32v(cfg.routed_scaling_factor));
    put("expert_weights_norm", GgufValue::Bool(cfg.norm_topk_prob));
    let clamp = || GgufValue::Array {
        elem: GgufValueType::F32,
        values: vec![GgufValue::F32(cfg.swiglu_limit as f32); cfg.num_hidden_layers],
    };
    put("swiglu_clamp_exp", clamp());
    put("swiglu_clamp_shexp", clamp());
    put("attention.indexer.head_count", u32v(cfg.index_n_heads));
    put("attention.indexer.key_length", u32v(cfg.index_head_dim));
    put("attention.indexer.top_k", u32v(cfg.index_topk));
    put("attention.output_group_count", u32v(cfg.o_groups));
    put("attention.output_lora_rank", u32v(cfg.o_lora_rank));
    put(
        "attention.compress_ratios",
        GgufValue::Array {
            elem: GgufValueType::I32,
            values: cfg
                .compress_ratios
                .iter()
                .map(|&r| GgufValue::I32(r as i32))
                .collect(),
        },
    );
    put(
        "attention.compress_rope_freq_base",
        f32v(cfg.compress_rope_theta),
    );
    put("hyper_connection.count", u32v(cfg.hc_mult));
    put(
        "hyper_connection.sinkhorn_iterations",
        u32v(cfg.hc_sinkhorn_iters),
    );
    put("hyper_connection.epsilon", f32v(cfg.hc_eps));
    put("hash_layer_count", u32v(cfg.num_hash_layers));
    put("embedding_length_out", u32v(cfg.hc_mult * cfg.hidden_size));
    put("general.quantization_version", GgufValue::U32(2));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_sizes() {
        assert_eq!(id_to_title("ckpt-fp8-fp4"), "Ckpt Fp8 Fp4");
        assert_eq!(id_to_title("DeepSeek-V4-Flash"), "DeepSeek V4 Flash");
        assert_eq!(id_to_title("tiny-v4-0731"), "Tiny v4 0731");
        assert_eq!(rounded_notation(819_200), "819K");
        assert_eq!(rounded_notation(8_600_000), "8.6M");
        assert_eq!(rounded_notation(13_000_000_000), "13B");
    }
}
