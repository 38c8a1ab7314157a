//! The synthetic tokenizer (`v4_tokenizer::synthetic`): loaded by the normal loader, exact
//! round trips, the chat encoder and output parser on top of it, the tokenizer service serving
//! it over the in-process bus, and its structure checked against the official file.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use v4_bus::Bus;
use v4_protocol::ErrorKind;
use v4_protocol::tokenizer::{DecodeOpen, EncodeChatRequest, ThinkingMode as WireMode};
use v4_tokenizer::Tokenizer;
use v4_tokenizer::chat::encode::{EncodeOptions, Message, ThinkingMode, ToolCall, encode_messages};
use v4_tokenizer::chat::parse::parse_completion;
use v4_tokenizer::chat::stream_parse::{Delta, StreamParser};
use v4_tokenizer::service::{ServiceOptions, TokenizerClient, TokenizerService};
use v4_tokenizer::stream::DecodeStream;
use v4_tokenizer::synthetic::{
    ADDED_TOKENS, DEFAULT_VOCAB_SIZE, SyntheticOptions, SyntheticTokenizer, TOKENIZER_CONFIG_JSON,
    synthetic_tokenizer_json, write_synthetic_tokenizer,
};

/// sha256 of the default synthetic `tokenizer.json`. It changes only when the sample text, the
/// trainer or the layout changes, and then every model generated for the old file no longer
/// matches: update it deliberately.
const DEFAULT_SHA256: &str = "65cd78cdab7cc59c8559786589f1dcb03436bf3a00104d33da54048c3b20b74e";

fn synth() -> &'static SyntheticTokenizer {
    static S: OnceLock<SyntheticTokenizer> = OnceLock::new();
    S.get_or_init(|| SyntheticTokenizer::generate(&SyntheticOptions::default()).unwrap())
}

fn tok() -> Arc<Tokenizer> {
    static T: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    T.get_or_init(|| Arc::new(synth().load().unwrap())).clone()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "v4-synthetic-{name}-{}-{}",
        std::process::id(),
        v4_bus::short_token()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn official() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| {
        let path = common::shared("tokenizer/deepseek-v4/tokenizer.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    })
}

#[test]
fn written_file_loads_through_the_normal_loader() {
    let dir = temp_dir("write");
    let path = write_synthetic_tokenizer(&dir, &SyntheticOptions::default()).unwrap();
    assert_eq!(path, dir.join("tokenizer.json"));
    let loaded = Tokenizer::from_file(&path).unwrap();
    assert_eq!(loaded.vocab_size(), DEFAULT_VOCAB_SIZE);
    assert_eq!(loaded.sha256_hex(), synth().sha256_hex());
    assert!(loaded.has_fast_path() && loaded.parallel_encode_enabled());
    assert_eq!(
        std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap(),
        TOKENIZER_CONFIG_JSON
    );
    // The official tokenizer_config.json, byte for byte.
    assert_eq!(
        std::fs::read(common::shared(
            "tokenizer/deepseek-v4/tokenizer_config.json"
        ))
        .unwrap(),
        TOKENIZER_CONFIG_JSON.as_bytes()
    );
    // Invalid options are InvalidInput.
    let e = write_synthetic_tokenizer(&dir, &SyntheticOptions::with_vocab_size(10)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generation_is_byte_stable() {
    let a = synthetic_tokenizer_json(&SyntheticOptions::default()).unwrap();
    let b = synthetic_tokenizer_json(&SyntheticOptions::default()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, synth().json());
    assert_eq!(synth().sha256_hex(), DEFAULT_SHA256);
    assert_eq!(tok().sha256_hex(), DEFAULT_SHA256);
    let other = SyntheticTokenizer::generate(&SyntheticOptions::with_vocab_size(1536)).unwrap();
    assert_eq!(other.vocab_size(), 1536);
    assert_ne!(other.sha256_hex(), DEFAULT_SHA256);
}

/// Everything but the vocabulary is the official file's; the added tokens are the official
/// named ones with their flags; ids 0–258 are the official tokens.
#[test]
fn same_structure_as_the_official_file() {
    let ours: Value = serde_json::from_str(synth().json()).unwrap();
    let theirs = official();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(theirs));
    for k in [
        "version",
        "truncation",
        "padding",
        "normalizer",
        "pre_tokenizer",
        "post_processor",
        "decoder",
    ] {
        assert_eq!(ours[k], theirs[k], "{k}");
    }
    assert_eq!(keys(&ours["model"]), keys(&theirs["model"]));
    for (k, v) in theirs["model"].as_object().unwrap() {
        if k != "vocab" && k != "merges" {
            assert_eq!(&ours["model"][k], v, "model.{k}");
        }
    }
    // Added tokens: the official ones minus the numbered placeholders, same order and flags.
    let numbered =
        |c: &str| c.starts_with("<｜place▁holder▁no▁") || c.starts_with("<|place_holder_mm_span_");
    let strip_id = |t: &Value| {
        let mut t = t.clone();
        t.as_object_mut().unwrap().remove("id");
        t
    };
    let want: Vec<Value> = theirs["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !numbered(t["content"].as_str().unwrap()))
        .map(strip_id)
        .collect();
    let got: Vec<Value> = ours["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(strip_id)
        .collect();
    assert_eq!(got, want);
    let official_ids: Vec<u64> = theirs["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !numbered(t["content"].as_str().unwrap()))
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let table_ids: Vec<u64> = ADDED_TOKENS
        .iter()
        .map(|t| u64::from(t.official_id))
        .collect();
    assert_eq!(table_ids, official_ids);
    // Ids: 0–258 as official, the added tokens after the learned ones, no gap.
    let tok = tok();
    let official_vocab = theirs["model"]["vocab"].as_object().unwrap();
    for (text, id) in official_vocab {
        let id = id.as_u64().unwrap() as u32;
        if id < 259 {
            assert_eq!(tok.token_to_id(text), Some(id), "{text}");
        }
    }
    let regular = synth().regular_vocab_size() as u32;
    assert_eq!(
        ours["model"]["vocab"].as_object().unwrap().len(),
        regular as usize
    );
    for (i, t) in ADDED_TOKENS.iter().enumerate() {
        let want = if i < 3 {
            i as u32
        } else {
            regular + i as u32 - 3
        };
        assert_eq!(tok.token_to_id(t.content), Some(want), "{}", t.content);
        assert_eq!(tok.is_special(want), t.special, "{}", t.content);
    }
    assert_eq!(regular as usize + ADDED_TOKENS.len() - 3, tok.vocab_size());
}

/// A learned vocabulary worth having: common English and markup pieces are single tokens.
#[test]
fn learned_merges_cover_common_pieces() {
    let tok = tok();
    for word in [
        "Ġthe", "Ġand", "Ġto", "Ġof", "ing", "Ġname", "Ġstring", "=\"", "ĊĊ",
    ] {
        assert!(tok.token_to_id(word).is_some(), "{word} is not a token");
    }
    let text = "The tokenizer turns the text of the request into tokens.";
    let n = tok.encode(text).len();
    assert!(n < text.len() / 2, "{n} tokens for {} bytes", text.len());
}

fn assert_round_trip(tok: &Tokenizer, text: &str) {
    let ids = tok.encode(text);
    assert_eq!(
        ids,
        tok.encode_reference(text),
        "fast path vs tokenizers: {text:?}"
    );
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    let mut stream = DecodeStream::new(false);
    let mut streamed = String::new();
    for &id in &ids {
        if let Some(t) = stream.step(tok, id).unwrap() {
            streamed.push_str(&t);
        }
    }
    if let Some(t) = stream.finish(tok).unwrap() {
        streamed.push_str(&t);
    }
    assert_eq!(streamed, text);
}

#[test]
fn round_trips_exactly() {
    let tok = tok();
    for text in [
        "",
        "Hello, world!",
        "  leading and trailing spaces   ",
        "tabs\tand\n\nnewlines\r\n\r\nand   runs      of spaces\n\n\n",
        "你好，世界！深度求索的模型很强大。こんにちは、カタカナ。",
        "emoji 🙂👍🏽🚀 ZWJ 👩‍👩‍👧 flags 🇫🇷 keycap 1️⃣",
        "\u{0}\u{1}\u{7f}\u{80}\u{ff}\u{fffd}\u{10ffff}",
        "Digits 1234567890 and 3.14159, 1,000,000.",
        "fn main() { println!(\"{}\", x?.y[0] + 1); } // comment",
        "<｜User｜>hi<｜Assistant｜><think>r</think>ok<｜end▁of▁sentence｜>",
        "<｜DSML｜invoke name=\"f\">x</｜DSML｜invoke><｜image｜><|EOT|><dsml:",
        "Ünïcödé ŝtrîñg with combining e\u{301} and RTL مرحبا بالعالم",
    ] {
        assert_round_trip(&tok, text);
    }
    // Special ids: every added token is one id.
    let ids = tok.encode("<｜begin▁of▁sentence｜>x<｜end▁of▁sentence｜>");
    assert_eq!(ids.first(), Some(&0));
    assert_eq!(ids.last(), Some(&1));
    assert_eq!(tok.decode(&ids, true).unwrap(), "x");
    // Out-of-vocabulary ids are errors.
    assert!(tok.decode(&[DEFAULT_VOCAB_SIZE as u32], false).is_err());
}

#[test]
fn long_text_parallel_encode_matches() {
    let tok = tok();
    let unit = "Line one of a paragraph, with words and 123 numbers.\n  indented 🙂 text\n";
    let text = unit.repeat(v4_tokenizer::tokenizer::PARALLEL_MIN_BYTES / unit.len() + 1);
    let ids = tok.encode(&text);
    assert_eq!(ids, tok.encode_one(&text));
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_round_trips(text in any::<String>()) {
        assert_round_trip(&tok(), &text);
    }

    #[test]
    fn mixed_text_round_trips(text in "([a-zA-Z ]{0,8}|[0-9]{1,5}|[\\s]{1,4}|[一-龥]{1,3}|[🙂🚀é]|<think>|｜DSML｜|<｜User｜>|[<>/=\"]){0,24}") {
        assert_round_trip(&tok(), &text);
    }
}

fn tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"}
                },
                "required": ["city"]
            }
        }
    }])
}

fn weather_call(id: &str) -> ToolCall {
    ToolCall {
        id: Some(id.into()),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris", "days": 2}"#.into(),
    }
}

/// A conversation with a system prompt and tools, a user turn, an assistant tool call, its
/// result, and a new user turn.
fn conversation() -> Vec<Message> {
    vec![
        Message::system("You are a helpful assistant.").with_tools(tools()),
        Message::user("What is the weather in Paris?"),
        Message::assistant("")
            .with_reasoning("I should call the weather tool.")
            .with_tool_calls(&[weather_call("call_0")]),
        Message::tool("call_0", r#"{"temperature": 18, "condition": "cloudy"}"#),
        Message::assistant("It is 18 °C and cloudy.").with_reasoning("The tool answered."),
        Message::user("And tomorrow? 🙂 明天呢？"),
    ]
}

/// The assistant turn the model should produce next: reasoning (thinking mode), content and a
/// DSML tool call, then EOS.
fn answer() -> Message {
    Message::assistant("Let me check the forecast.")
        .with_reasoning("The user wants tomorrow's forecast; call the tool with days = 2.")
        .with_tool_calls(&[weather_call("call_1")])
}

/// The completion text for `answer()`: the rendered conversation with the answer minus the
/// rendered prompt.
fn completion(mode: ThinkingMode) -> (String, String) {
    let opts = EncodeOptions::new(mode);
    let prompt = encode_messages(&conversation(), &opts).unwrap();
    let mut with_answer = conversation();
    with_answer.push(answer());
    let full = encode_messages(&with_answer, &opts).unwrap();
    let completion = full
        .strip_prefix(prompt.as_str())
        .unwrap_or_else(|| panic!("{full:?} does not extend {prompt:?}"))
        .to_string();
    (prompt, completion)
}

#[test]
fn chat_encoder_and_parser_on_the_synthetic_vocabulary() {
    let tok = tok();
    let s = tok.special_ids();
    for mode in [ThinkingMode::Thinking, ThinkingMode::Chat] {
        let (prompt, completion) = completion(mode);
        let ids = tok.encode(&prompt);
        assert_eq!(tok.decode(&ids, false).unwrap(), prompt, "{mode:?}");
        assert_eq!(ids[0], s.bos);
        let count = |id: u32| ids.iter().filter(|&&x| x == id).count();
        assert_eq!(
            count(s.user),
            3,
            "{mode:?}: user turns (tool result included)"
        );
        assert_eq!(count(s.assistant), 3, "{mode:?}");
        assert!(count(s.dsml) >= 6, "{mode:?}: DSML markup");
        assert!(count(s.eos) >= 2, "{mode:?}");
        let last = *ids.last().unwrap();
        match mode {
            ThinkingMode::Thinking => assert_eq!(last, s.think_start),
            ThinkingMode::Chat => assert_eq!(last, s.think_end),
        }
        assert!(prompt.contains("明天呢"));

        // The completion, as the model would emit it, decoded token by token and parsed.
        let out = tok.encode(&completion);
        assert_eq!(out.last(), Some(&s.eos));
        let mut stream = DecodeStream::new(false);
        let mut parser = StreamParser::new(mode == ThinkingMode::Thinking);
        let mut text = String::new();
        let mut deltas = Vec::new();
        for &id in &out {
            if let Some(t) = stream.step(&tok, id).unwrap() {
                deltas.extend(parser.push(&t));
                text.push_str(&t);
            }
        }
        if let Some(t) = stream.finish(&tok).unwrap() {
            deltas.extend(parser.push(&t));
            text.push_str(&t);
        }
        deltas.extend(parser.finish());
        assert_eq!(text, completion);
        let mode_name = match mode {
            ThinkingMode::Thinking => "thinking",
            ThinkingMode::Chat => "chat",
        };
        let parsed = parse_completion(&text, mode_name).unwrap();
        let want_reasoning = match mode {
            ThinkingMode::Thinking => {
                "The user wants tomorrow's forecast; call the tool with days = 2."
            }
            ThinkingMode::Chat => "",
        };
        assert_eq!(parsed.reasoning_content, want_reasoning);
        assert_eq!(parsed.content, "Let me check the forecast.");
        assert_eq!(parsed.tool_calls.len(), 1);
        assert_eq!(parsed.tool_calls[0].function.name, "get_weather");
        let args: Value = serde_json::from_str(&parsed.tool_calls[0].function.arguments).unwrap();
        assert_eq!(args, json!({"city": "Paris", "days": 2}));

        // The streaming parser agrees.
        let mut reasoning = String::new();
        let mut content = String::new();
        let mut calls = Vec::new();
        for d in deltas {
            match d {
                Delta::Reasoning(r) => reasoning.push_str(&r),
                Delta::Content(c) => content.push_str(&c),
                Delta::ToolCall {
                    name, arguments, ..
                } => calls.push((name, arguments)),
            }
        }
        assert_eq!(reasoning, want_reasoning);
        assert_eq!(content, "Let me check the forecast.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].1).unwrap();
        assert_eq!(args, json!({"city": "Paris", "days": 2}));
    }
}

fn wire(messages: &[Message]) -> Vec<Value> {
    // The same conversation in OpenAI shape, as the gateway sends it.
    messages
        .iter()
        .map(|m| {
            let mut v = json!({"role": m.role.as_str()});
            let o = v.as_object_mut().unwrap();
            for (k, x) in [
                ("content", &m.content),
                ("reasoning_content", &m.reasoning_content),
                ("tool_calls", &m.tool_calls),
                ("tools", &m.tools),
                ("tool_call_id", &m.tool_call_id),
            ] {
                if let Some(x) = x {
                    o.insert(k.into(), x.clone());
                }
            }
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_serves_the_synthetic_tokenizer_in_process() {
    let tok = tok();
    let bus = Bus::in_process();
    let handle = TokenizerService::new(tok.clone(), ServiceOptions::default())
        .serve(&bus)
        .await
        .unwrap();
    let client = TokenizerClient::new(bus.clone()).with_timeout(Duration::from_secs(60));

    let info = client.info().await.unwrap();
    let s = tok.special_ids();
    assert_eq!(info.vocab_size, DEFAULT_VOCAB_SIZE as u64);
    assert_eq!(info.tokenizer_sha256, synth().sha256_hex());
    assert_eq!(
        (
            info.special.bos,
            info.special.eos,
            info.special.user,
            info.special.assistant,
            info.special.think_start,
            info.special.think_end,
            info.special.dsml
        ),
        (
            s.bos,
            s.eos,
            s.user,
            s.assistant,
            s.think_start,
            s.think_end,
            s.dsml
        )
    );
    assert_eq!((info.special.bos, info.special.eos), (0, 1));
    for id in [
        info.special.user,
        info.special.assistant,
        info.special.think_start,
        info.special.think_end,
        info.special.dsml,
    ] {
        assert!(
            (synth().regular_vocab_size() as u32..DEFAULT_VOCAB_SIZE as u32).contains(&id),
            "{id}"
        );
    }

    for (mode, wire_mode) in [
        (ThinkingMode::Thinking, WireMode::Thinking),
        (ThinkingMode::Chat, WireMode::Chat),
    ] {
        let (prompt, completion) = completion(mode);
        let mut req = EncodeChatRequest::new(wire(&conversation()), wire_mode);
        req.return_prompt = true;
        let reply = client.encode_chat(&req).await.unwrap();
        assert_eq!(reply.prompt.as_deref(), Some(prompt.as_str()));
        assert_eq!(reply.token_ids.as_slice(), tok.encode(&prompt).as_slice());
        assert_eq!(reply.reasoning_open, mode == ThinkingMode::Thinking);

        // Streaming decode of the completion, one id per feed.
        let ids = tok.encode(&completion);
        let mut session = client
            .open_decode(&DecodeOpen::new("synthetic", reply.reasoning_open))
            .await
            .unwrap();
        let (mut reasoning, mut content, mut calls) = (String::new(), String::new(), Vec::new());
        let mut add = |d: v4_protocol::tokenizer::DecodeDeltas| {
            reasoning.push_str(&d.reasoning_content);
            content.push_str(&d.content);
            calls.extend(d.tool_calls.into_iter().map(|c| (c.name, c.arguments)));
        };
        for &id in &ids {
            add(session.feed(&[id]).await.unwrap());
        }
        let last = session.finish(&[]).await.unwrap();
        assert!(last.finished);
        add(last);
        let parsed = parse_completion(
            &completion,
            if mode == ThinkingMode::Thinking {
                "thinking"
            } else {
                "chat"
            },
        )
        .unwrap();
        assert_eq!(reasoning, parsed.reasoning_content);
        assert_eq!(content, parsed.content);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&calls[0].1).unwrap(),
            json!({"city": "Paris", "days": 2})
        );
    }

    let text = "<｜User｜>Hi 🙂<｜Assistant｜><think>ok</think>Hello!";
    let enc = client.encode_text(text).await.unwrap();
    assert_eq!(enc.token_ids.as_slice(), tok.encode(text).as_slice());
    let back = client
        .decode_ids(enc.token_ids.as_slice(), false)
        .await
        .unwrap();
    assert_eq!(back.text, text);
    let mut with_specials = vec![0];
    with_specials.extend(tok.encode("Hi"));
    with_specials.push(1);
    let skipped = client.decode_ids(&with_specials, true).await.unwrap();
    assert_eq!(skipped.text, "Hi");
    let e = client
        .decode_ids(&[5, DEFAULT_VOCAB_SIZE as u32], false)
        .await
        .unwrap_err();
    assert_eq!(
        e.service_error().map(|e| e.kind),
        Some(ErrorKind::BadRequest),
        "{e}"
    );
    handle.drain().await;
}
