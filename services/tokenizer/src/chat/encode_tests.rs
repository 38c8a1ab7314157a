//! Unit tests of the encoder: the typed API and every protocol guard (rejected where the
//! reference raises, accepted where it does not). The no-panic property is in
//! `encode_fuzz_tests.rs`.

use serde_json::{Value, json};

use super::*;

const BOS: &str = "<｜begin▁of▁sentence｜>";
const EOS: &str = "<｜end▁of▁sentence｜>";

fn enc(messages: Value, kwargs: Value) -> Result<String, ChatError> {
    encode_json(&messages, &kwargs)
}

fn chat(messages: Value) -> Result<String, ChatError> {
    enc(messages, json!({"thinking_mode": "chat"}))
}

fn thinking(messages: Value) -> Result<String, ChatError> {
    enc(messages, json!({"thinking_mode": "thinking"}))
}

#[test]
fn typed_api_renders_the_three_modes() {
    let msgs = [Message::system("S"), Message::user("hi")];
    let mut opts = EncodeOptions::new(ThinkingMode::Chat);
    assert_eq!(
        encode_messages(&msgs, &opts).unwrap(),
        format!("{BOS}S<｜User｜>hi<｜Assistant｜></think>")
    );
    opts.thinking_mode = ThinkingMode::Thinking;
    assert_eq!(
        encode_messages(&msgs, &opts).unwrap(),
        format!("{BOS}S<｜User｜>hi<｜Assistant｜><think>")
    );
    opts.reasoning_effort = Some(ReasoningEffort::Max);
    let max = encode_messages(&msgs, &opts).unwrap();
    assert!(
        max.starts_with(&format!("{BOS}Reasoning Effort: Absolute maximum")),
        "{max}"
    );
    assert!(
        max.ends_with("unchecked.\n\nS<｜User｜>hi<｜Assistant｜><think>"),
        "{max}"
    );
}

#[test]
fn typed_api_matches_json_api() {
    let call = ToolCall {
        id: Some("c1".into()),
        name: "f".into(),
        arguments: r#"{"x": 1.0}"#.into(),
    };
    let typed = [
        Message::system("S").with_tools(json!([{"type": "function", "function": {"name": "f"}}])),
        Message::user("q"),
        Message::assistant("")
            .with_reasoning("r")
            .with_tool_calls(&[call]),
        Message::tool("c1", "42"),
    ];
    let json_msgs = json!([
        {"role": "system", "content": "S", "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "reasoning_content": "r",
         "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1.0}"}, "id": "c1"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]);
    let opts = EncodeOptions::new(ThinkingMode::Thinking);
    let a = encode_messages(&typed, &opts).unwrap();
    assert_eq!(a, thinking(json_msgs.clone()).unwrap());
    assert!(
        a.contains("<｜DSML｜parameter name=\"x\" string=\"false\">1.0</｜DSML｜parameter>"),
        "{a}"
    );
    assert!(
        a.ends_with(&format!(
            "{EOS}<｜User｜><tool_result>42</tool_result><｜Assistant｜><think>"
        )),
        "{a}"
    );
    let parsed: Vec<Message> = serde_json::from_value(json_msgs).unwrap();
    assert_eq!(parsed, typed.to_vec());
}

#[test]
fn context_is_not_rendered_and_suppresses_bos() {
    let mut opts = EncodeOptions::new(ThinkingMode::Chat);
    opts.context = Some(vec![Message::user("u1"), Message::assistant("a1")]);
    assert_eq!(
        encode_messages(&[Message::user("u2")], &opts).unwrap(),
        "<｜User｜>u2<｜Assistant｜></think>"
    );
    opts.add_default_bos_token = false;
    opts.context = None;
    assert_eq!(encode_messages(&[], &opts).unwrap(), "");
}

#[test]
fn mode_and_effort_are_checked_only_when_a_message_renders() {
    let bad_mode = json!({"thinking_mode": "think"});
    assert_eq!(enc(json!([]), bad_mode.clone()).unwrap(), BOS);
    assert!(
        matches!(enc(json!([{"role": "user", "content": "x"}]), bad_mode), Err(ChatError::InvalidThinkingMode(m)) if m == "\"think\"")
    );
    let null_mode = json!({"thinking_mode": null});
    assert!(matches!(
        enc(json!([{"role": "user", "content": "x"}]), null_mode),
        Err(ChatError::InvalidThinkingMode(_))
    ));
    let bad_effort = json!({"thinking_mode": "chat", "reasoning_effort": "low"});
    assert_eq!(enc(json!([]), bad_effort.clone()).unwrap(), BOS);
    assert!(matches!(
        enc(json!([{"role": "user", "content": "x"}]), bad_effort),
        Err(ChatError::InvalidReasoningEffort(_))
    ));
    // A context-only call renders nothing.
    let ctx = json!({"thinking_mode": 7, "context": [{"role": "user", "content": "x"}]});
    assert_eq!(enc(json!([]), ctx).unwrap(), "");
}

#[test]
fn request_shape_errors() {
    let ok_kw = json!({"thinking_mode": "chat"});
    assert!(matches!(
        enc(json!({"role": "user"}), ok_kw.clone()),
        Err(ChatError::InvalidRequest(_))
    ));
    assert!(matches!(
        enc(json!([]), json!([])),
        Err(ChatError::InvalidRequest(_))
    ));
    assert!(
        matches!(enc(json!([]), json!({})), Err(ChatError::InvalidRequest(m)) if m.contains("thinking_mode"))
    );
    let extra = json!({"thinking_mode": "chat", "tools": []});
    assert!(
        matches!(enc(json!([]), extra), Err(ChatError::InvalidRequest(m)) if m.contains("\"tools\""))
    );
    let bad_ctx = json!({"thinking_mode": "chat", "context": "x"});
    assert!(
        matches!(enc(json!([]), bad_ctx), Err(ChatError::InvalidRequest(m)) if m.contains("context"))
    );
    // Falsy context values mean "no context", as in the reference.
    for c in [json!(null), json!([]), json!(""), json!(0), json!({})] {
        assert_eq!(
            enc(json!([]), json!({"thinking_mode": "chat", "context": c})).unwrap(),
            BOS
        );
    }
    let e = chat(json!([{"role": "user", "content": "x"}, 5])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "messages[1]: a message must be a JSON object, found number"
    );
    let e = chat(json!([{"role": ["user"], "content": "x"}])).unwrap_err();
    assert!(matches!(e, ChatError::InvalidMessage { .. }), "{e}");
}

#[test]
fn unknown_roles() {
    let msgs = json!([{"role": "function", "content": "x"}, {"role": "user", "content": "u"}]);
    let e = chat(msgs.clone()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "messages[0]: unknown role \"function\": expected system, user, assistant, tool, developer or latest_reminder"
    );
    // Thinking + dropping removes it silently before the last user turn ...
    assert_eq!(
        thinking(msgs.clone()).unwrap(),
        format!("{BOS}<｜User｜>u<｜Assistant｜><think>")
    );
    // ... but not without dropping, nor after the last user turn, nor direct_search_results.
    let keep = json!({"thinking_mode": "thinking", "drop_thinking": false});
    assert!(matches!(
        enc(msgs, keep),
        Err(ChatError::UnknownRole { .. })
    ));
    assert!(thinking(json!([{"role": "user", "content": "u"}, {"role": "ipython"}])).is_err());
    let dsr = json!([{"role": "direct_search_results", "content": "x"}, {"role": "user", "content": "u"}]);
    assert!(
        matches!(thinking(dsr), Err(ChatError::UnknownRole { role, .. }) if role == "direct_search_results")
    );
    assert!(
        matches!(chat(json!([{"content": "no role"}])), Err(ChatError::UnknownRole { role, .. }) if role == "None")
    );
}

#[test]
fn developer_content_guards() {
    for c in [json!(""), json!(null), json!(0)] {
        let e = chat(json!([{"role": "developer", "content": c}])).unwrap_err();
        assert!(matches!(e, ChatError::EmptyDeveloperContent { .. }), "{e}");
    }
    assert!(matches!(
        chat(json!([{"role": "developer"}])),
        Err(ChatError::EmptyDeveloperContent { .. })
    ));
    let e = chat(json!([{"role": "developer", "content": [1]}])).unwrap_err();
    assert!(
        matches!(e, ChatError::DeveloperContentNotText { found: "array", .. }),
        "{e}"
    );
    assert_eq!(
        chat(json!([{"role": "developer", "content": "d"}])).unwrap(),
        format!("{BOS}<｜User｜>d<｜Assistant｜></think>")
    );
}

#[test]
fn user_content_guards() {
    for (c, found) in [
        (json!(null), "null"),
        (json!([{"type": "text", "text": "x"}]), "array"),
        (json!(3), "number"),
        (json!({}), "object"),
    ] {
        let e = chat(json!([{"role": "user", "content": c}])).unwrap_err();
        assert_eq!(
            e,
            ChatError::UserContentNotText {
                loc: MessageLoc {
                    in_context: false,
                    index: 0
                },
                found
            }
        );
    }
    // The second of two merged users is checked too, with its own location.
    let e = chat(json!([{"role": "user", "content": "a"}, {"role": "user", "content": null}]))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("messages[1]: user content must be a string"),
        "{e}"
    );
    assert_eq!(
        chat(json!([{"role": "user"}])).unwrap(),
        format!("{BOS}<｜User｜><｜Assistant｜></think>")
    );
}

#[test]
fn tool_result_content_shapes() {
    let parts = json!([{"role": "tool", "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"text": "t"}, {"type": "text"}]}]);
    assert_eq!(
        chat(parts).unwrap(),
        format!(
            "{BOS}<｜User｜><tool_result>a\n\n[Unsupported image]\n\n[Unsupported None]\n\n</tool_result><｜Assistant｜></think>"
        )
    );
    let e = chat(json!([{"role": "tool", "content": ["raw"]}])).unwrap_err();
    assert!(
        matches!(e, ChatError::ToolResultPart { part: 0, .. }),
        "{e}"
    );
    let e = chat(json!([{"role": "tool", "content": [{"type": "text", "text": 1}]}])).unwrap_err();
    assert!(matches!(e, ChatError::ToolResultPart { .. }), "{e}");
    assert_eq!(
        chat(json!([{"role": "tool", "content": 1.5}])).unwrap(),
        format!("{BOS}<｜User｜><tool_result>1.5</tool_result><｜Assistant｜></think>")
    );
    assert_eq!(
        chat(json!([{"role": "tool"}])).unwrap(),
        format!("{BOS}<｜User｜><tool_result></tool_result><｜Assistant｜></think>")
    );
}

#[test]
fn tasks() {
    let e = chat(json!([{"role": "user", "content": "x", "task": "summarize"}])).unwrap_err();
    assert!(
        matches!(&e, ChatError::InvalidTask { task, .. } if task == "summarize"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("action, query, authority, domain, title, read_url")
    );
    assert!(matches!(
        chat(json!([{"role": "user", "content": "x", "task": 3}])),
        Err(ChatError::InvalidTask { .. })
    ));
    // The task token is only emitted (and the task only checked) before an assistant or at the end.
    let followed = json!([{"role": "user", "content": "x", "task": "bogus"}, {"role": "user", "content": "y"}]);
    assert_eq!(
        chat(followed).unwrap(),
        format!("{BOS}<｜User｜>x<｜User｜>y<｜Assistant｜></think>")
    );
    assert_eq!(
        chat(json!([{"role": "user", "content": "x", "task": null}])).unwrap(),
        format!("{BOS}<｜User｜>x<｜Assistant｜></think>")
    );
    let action = json!([{"role": "user", "content": "x", "task": "action"}]);
    assert_eq!(
        thinking(action).unwrap(),
        format!("{BOS}<｜User｜>x<｜Assistant｜><think><｜action｜>")
    );
}

#[test]
fn tool_definition_guards() {
    let with_tools = |tools: Value| json!([{"role": "system", "content": "s", "tools": tools}, {"role": "user", "content": "u"}]);
    let e = chat(with_tools(json!([{"name": "f"}]))).unwrap_err();
    assert!(
        matches!(e, ChatError::InvalidTools { .. }) && e.to_string().contains("tools[0]"),
        "{e}"
    );
    assert!(matches!(
        chat(with_tools(json!("f"))),
        Err(ChatError::InvalidTools { .. })
    ));
    assert!(matches!(
        chat(with_tools(json!([1]))),
        Err(ChatError::InvalidTools { .. })
    ));
    assert_eq!(
        chat(with_tools(json!([]))).unwrap(),
        chat(with_tools(json!(null))).unwrap()
    );
    // Tools are checked on every rendered role, but not on context messages (never rendered).
    let on_assistant = json!([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "tools": [{}]}]);
    assert!(matches!(
        chat(on_assistant),
        Err(ChatError::InvalidTools { .. })
    ));
    let kw = json!({"thinking_mode": "chat", "context": [{"role": "system", "content": "s", "tools": [{}]}]});
    assert_eq!(
        enc(json!([{"role": "user", "content": "u"}]), kw).unwrap(),
        "<｜User｜>u<｜Assistant｜></think>"
    );
}

#[test]
fn tool_call_guards() {
    let with_calls = |calls: Value| json!([{"role": "user", "content": "u"}, {"role": "assistant", "content": "", "tool_calls": calls}]);
    for (calls, needle) in [
        (json!([{"id": "x", "name": "f"}]), "\"function\""),
        (json!([{"function": {"arguments": "{}"}}]), "\"name\""),
        (json!([{"function": {"name": "f"}}]), "\"arguments\""),
        (json!([{"function": "f"}]), ".function must be an object"),
        (json!({"function": {}}), "array"),
        (json!(["f"]), "object"),
    ] {
        let e = chat(with_calls(calls)).unwrap_err();
        assert!(
            matches!(e, ChatError::InvalidToolCall { .. }) && e.to_string().contains(needle),
            "{e}"
        );
    }
    for (args, found) in [
        ("[1, 2]", "array"),
        ("null", "null"),
        ("5", "number"),
        ("\"s\"", "string"),
        ("true", "boolean"),
    ] {
        let e = chat(with_calls(
            json!([{"function": {"name": "f", "arguments": args}}]),
        ))
        .unwrap_err();
        assert!(
            matches!(e, ChatError::ToolArgumentsNotObject { call: 0, found: f, .. } if f == found),
            "{e}"
        );
    }
    // Structure is checked on any message with tool calls, arguments only on assistants.
    let on_system = json!([{"role": "system", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]);
    assert_eq!(chat(on_system).unwrap(), BOS);
    let bad_on_system =
        json!([{"role": "system", "content": "", "tool_calls": [{"function": {"name": "f"}}]}]);
    assert!(chat(bad_on_system).is_err());
    // Non-string / invalid-JSON arguments become one `arguments` parameter; names print via str().
    let lenient = chat(with_calls(json!([
        {"function": {"name": null, "arguments": null}},
        {"function": {"name": 7, "arguments": "{oops"}},
        {"function": {"name": "g", "arguments": "{}"}},
    ])))
    .unwrap();
    assert!(lenient.contains("<｜DSML｜invoke name=\"None\">\n<｜DSML｜parameter name=\"arguments\" string=\"false\">null</｜DSML｜parameter>\n</｜DSML｜invoke>"), "{lenient}");
    assert!(lenient.contains("<｜DSML｜invoke name=\"7\">\n<｜DSML｜parameter name=\"arguments\" string=\"true\">{oops</｜DSML｜parameter>"), "{lenient}");
    assert!(
        lenient.contains("<｜DSML｜invoke name=\"g\">\n\n</｜DSML｜invoke>"),
        "{lenient}"
    );
}

#[test]
fn tool_results_accepted_without_matching_calls_and_sorted_by_python_key_equality() {
    assert!(chat(json!([{"role": "tool", "tool_call_id": "nope", "content": "r"}])).is_ok());
    // Ids 1, 1.0 and true are one Python dict key; "1" is another.
    let msgs = json!([
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "function": {"name": "f", "arguments": "{}"}},
            {"function": {"id": 1, "name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": true, "content": "second"},
        {"role": "tool", "tool_call_id": "a", "content": "first"},
    ]);
    let p = chat(msgs).unwrap();
    assert!(p.ends_with("<tool_result>first</tool_result>\n\n<tool_result>second</tool_result><｜Assistant｜></think>"), "{p}");
    // Unhashable ids are errors (where the reference hashes them).
    let bad_call_id = json!([{"role": "assistant", "tool_calls": [{"id": ["x"], "function": {"name": "f", "arguments": "{}"}}]}]);
    assert!(matches!(
        chat(bad_call_id),
        Err(ChatError::InvalidToolCall { .. })
    ));
    let bad_result_id = json!([
        {"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": {"id": "x"}, "content": "1"}, {"role": "tool", "tool_call_id": "x", "content": "2"}]);
    assert!(matches!(
        chat(bad_result_id),
        Err(ChatError::InvalidMessage { .. })
    ));
}

#[test]
fn context_developer_quirk_renders_nothing() {
    let kw = json!({"thinking_mode": "thinking", "context": [
        {"role": "system", "content": "s"}, {"role": "developer", "content": "d"}, {"role": "assistant", "content": "a"}]});
    assert_eq!(
        enc(json!([{"role": "user", "content": "u"}]), kw).unwrap(),
        ""
    );
    // A context much longer after dropping than the full list renders nothing (no underflow).
    let kw = json!({"thinking_mode": "thinking", "context": [
        {"role": "developer", "content": "d"}, {"role": "x"}, {"role": "y"}]});
    assert_eq!(
        enc(json!([{"role": "user", "content": "u"}]), kw).unwrap(),
        ""
    );
}

#[test]
fn message_deserialize_errors_carry_the_reason() {
    let e = serde_json::from_value::<Vec<Message>>(json!([{"role": "user"}, 5])).unwrap_err();
    assert!(
        e.to_string()
            .contains("must be a JSON object, found number"),
        "{e}"
    );
    let m: Message = serde_json::from_value(json!({"role": 3, "task": null, "wo_eos": 1})).unwrap();
    assert_eq!(
        (m.role, m.task, m.wo_eos),
        (Role::Other("3".into()), None, true)
    );
}
