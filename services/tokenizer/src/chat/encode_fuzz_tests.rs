//! No input makes the encoder panic: random JSON shapes (biased towards message-like objects)
//! always give a prompt or a `ChatError`.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Any JSON value, biased towards the shapes messages use.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("tool"),
            Just("system"),
            Just("developer"),
            Just("latest_reminder"),
            Just("text"),
            Just("function"),
            Just("action"),
            Just("{}"),
            Just("[1]"),
            Just("{\"a\": 1e5}"),
            Just("chat"),
            Just("thinking"),
            Just("max"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.into())),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("role"),
            Just("content"),
            Just("tool_calls"),
            Just("tools"),
            Just("function"),
            Just("name"),
            Just("arguments"),
            Just("id"),
            Just("type"),
            Just("text"),
            Just("tool_call_id"),
            Just("task"),
            Just("wo_eos"),
            Just("reasoning_content"),
            Just("response_format")
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random shapes never panic: every input is either a prompt or a `ChatError`.
    #[test]
    fn random_json_never_panics(
        messages in prop::collection::vec(arb_value(), 0..6),
        context in prop::collection::vec(arb_value(), 0..3),
        mode in prop_oneof![Just(json!("chat")), Just(json!("thinking")), arb_value()],
        effort in prop_oneof![Just(json!(null)), Just(json!("max")), arb_value()],
        drop in arb_value(),
        raw_messages in arb_value(),
    ) {
        let kwargs = json!({"thinking_mode": mode, "reasoning_effort": effort, "drop_thinking": drop,
            "context": context});
        let _ = encode_json(&Value::Array(messages), &kwargs);
        let _ = encode_json(&raw_messages, &kwargs);
        let _ = encode_json(&raw_messages, &raw_messages);
    }
}
