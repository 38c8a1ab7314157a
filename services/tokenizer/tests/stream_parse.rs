//! The streaming parser against `shared/fixtures/chat-v4/parse.jsonl`, under every way the
//! detokenizer could cut the text: whole, character by character, every split into 2 pieces
//! and every split into 3 pieces (at character boundaries, empty pieces included).
//!
//! * Well-formed records: reasoning deltas, content deltas and tool calls must add up to
//!   `expected` (arguments equal as JSON values, and byte-equal where the reference's
//!   arguments are valid JSON).
//! * Error records: never a panic, the same result for every split, and no text lost
//!   (3-piece splits for texts up to 400 characters).
//! * Random marker soup with random splits: never a panic, split-invariant, no text lost.

use serde_json::Value;
use v4_tokenizer::chat::stream_parse::{Delta, StreamParser};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/chat-v4/parse.jsonl"
);

/// Records whose reference `arguments` are not JSON (`string="false"` copied verbatim) and
/// what the streaming parser makes of them (invalid values kept as JSON strings).
const NON_JSON_ARGUMENTS: &[(&str, &str)] = &[
    (
        "tool-param-false-not-json",
        r#"[{"path": "not json", "query": "{\"a\": 1,}"}]"#,
    ),
    ("tool-param-empty-values", r#"[{"path": "", "query": ""}]"#),
];

/// An expected tool call: name, arguments as a JSON value, and the arguments' exact text when
/// the reference's is JSON.
type ExpectedCall = (String, Value, Option<String>);

struct Record {
    id: String,
    text: String,
    thinking: bool,
    /// (reasoning, content, calls) for well-formed records.
    expected: Option<(String, String, Vec<ExpectedCall>)>,
}

fn records() -> Vec<Record> {
    let text = std::fs::read_to_string(FIXTURE)
        .unwrap_or_else(|e| panic!("parse fixture missing at {FIXTURE}: {e}"));
    let mut non_json_seen = Vec::new();
    let out: Vec<Record> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let r: Value = serde_json::from_str(line).expect("fixture line");
            let id = r["id"].as_str().unwrap().to_owned();
            let expected = r.get("expected").map(|e| {
                let mut calls = Vec::new();
                for (k, c) in e["tool_calls"].as_array().unwrap().iter().enumerate() {
                    let name = c["function"]["name"].as_str().unwrap().to_owned();
                    let args = c["function"]["arguments"].as_str().unwrap();
                    match serde_json::from_str::<Value>(args) {
                        Ok(v) => calls.push((name, v, Some(args.to_owned()))),
                        Err(_) => {
                            let (_, lenient) = NON_JSON_ARGUMENTS
                                .iter()
                                .find(|(nid, _)| *nid == id)
                                .unwrap_or_else(|| panic!("{id}: arguments {args:?} are not JSON"));
                            let lenient: Value = serde_json::from_str(lenient).unwrap();
                            calls.push((name, lenient[k].clone(), None));
                            non_json_seen.push(id.clone());
                        }
                    }
                }
                let s = |k: &str| e[k].as_str().unwrap().to_owned();
                (s("reasoning_content"), s("content"), calls)
            });
            Record {
                id,
                text: r["input"]["text"].as_str().unwrap().to_owned(),
                thinking: r["input"]["thinking_mode"] == "thinking",
                expected,
            }
        })
        .collect();
    non_json_seen.dedup();
    assert_eq!(
        non_json_seen.len(),
        NON_JSON_ARGUMENTS.len(),
        "non-JSON argument records"
    );
    out
}

/// Everything a stream produced, merged.
#[derive(Debug, Clone, PartialEq, Default)]
struct Outcome {
    reasoning: String,
    content: String,
    /// (index, id, name, arguments)
    calls: Vec<(usize, String, String, String)>,
}

impl Outcome {
    fn add(&mut self, deltas: Vec<Delta>) {
        for d in deltas {
            match d {
                Delta::Reasoning(s) => {
                    assert!(!s.is_empty(), "empty reasoning delta");
                    self.reasoning += &s;
                }
                Delta::Content(s) => {
                    assert!(!s.is_empty(), "empty content delta");
                    self.content += &s;
                }
                Delta::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                } => {
                    self.calls.push((index, id, name, arguments));
                }
            }
        }
    }
}

fn run(thinking: bool, pieces: &[&str]) -> Outcome {
    let mut p = StreamParser::new(thinking);
    let mut o = Outcome::default();
    for piece in pieces {
        o.add(p.push(piece));
    }
    o.add(p.finish());
    o
}

fn boundaries(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect()
}

/// Checks whole / char-by-char / every 2-split / (if `three_pieces`) every 3-split against
/// the whole-text result and returns that result.
///
/// 3-splits `(i, j)` reuse two facts to stay fast in debug builds: the state after the first
/// piece is the 2-split state at `i`, and if after the second piece the parser is in the same
/// state with the same output so far as after pushing `text[..j]` in one piece, the parser
/// being deterministic, the rest is the verified 2-split at `j`; otherwise the third piece is
/// pushed and the final result compared.
fn check_every_split(r: &Record, three_pieces: bool) -> Outcome {
    let text = r.text.as_str();
    let whole = run(r.thinking, &[text]);
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(run(r.thinking, &chars), whole, "{}: char by char", r.id);
    let b = boundaries(text);
    // State and output after the first piece of every 2-split, and the 2-split check itself.
    let mut prefix = Vec::with_capacity(b.len());
    for &i in &b {
        let mut p = StreamParser::new(r.thinking);
        let mut o = Outcome::default();
        o.add(p.push(&text[..i]));
        prefix.push((p.clone(), o.clone()));
        o.add(p.push(&text[i..]));
        o.add(p.finish());
        assert_eq!(o, whole, "{}: split at {i}", r.id);
    }
    for (x, &i) in b.iter().enumerate().filter(|_| three_pieces) {
        let (first, head) = &prefix[x];
        for (y, &j) in b.iter().enumerate().skip(x) {
            let mut p = first.clone();
            let mut o = head.clone();
            o.add(p.push(&text[i..j]));
            if (&p, &o) == (&prefix[y].0, &prefix[y].1) {
                continue;
            }
            o.add(p.push(&text[j..]));
            o.add(p.finish());
            assert_eq!(o, whole, "{}: split at {i} and {j}", r.id);
        }
    }
    whole
}

/// Every piece of text in `input` (what is left after removing the markup) appears somewhere
/// in the output: reasoning, content, tool names, argument keys and values.
fn assert_no_text_lost(id: &str, input: &str, o: &Outcome) {
    let mut surface = format!("{}\n{}\n", o.reasoning, o.content);
    for (_, _, name, args) in &o.calls {
        surface += &format!("{name}\n{args}\n");
        let v: Value = serde_json::from_str(args)
            .unwrap_or_else(|e| panic!("{id}: arguments {args:?} not JSON: {e}"));
        for (k, v) in v.as_object().expect("arguments object") {
            surface += &format!(
                "{k}\n{}\n",
                v.as_str().map(str::to_owned).unwrap_or(v.to_string())
            );
        }
    }
    let mut rest = input.to_owned();
    for markup in [
        "<｜end▁of▁sentence｜>",
        "</think>",
        "<｜DSML｜tool_calls>",
        "</｜DSML｜tool_calls>",
        "<｜DSML｜invoke",
        "</｜DSML｜invoke>",
        "<｜DSML｜parameter",
        "/｜DSML｜parameter>",
        "name=\"",
        "\" string=\"true\">",
        "\" string=\"false\">",
        "\">",
    ] {
        rest = rest.replace(markup, " ");
    }
    for word in rest.split(|c: char| c.is_whitespace() || "\"<>".contains(c)) {
        assert!(
            surface.contains(word),
            "{id}: {word:?} of {input:?} lost; got {o:?}"
        );
    }
}

#[test]
fn well_formed_records_under_every_split() {
    let records = records();
    let well_formed: Vec<&Record> = records.iter().filter(|r| r.expected.is_some()).collect();
    assert_eq!(well_formed.len(), 39);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    std::thread::scope(|s| {
        for w in 0..workers {
            let mine: Vec<&&Record> = well_formed.iter().skip(w).step_by(workers).collect();
            s.spawn(move || {
                for r in mine {
                    let o = check_every_split(r, true);
                    let (reasoning, content, calls) = r.expected.as_ref().unwrap();
                    assert_eq!(&o.reasoning, reasoning, "{}: reasoning", r.id);
                    assert_eq!(&o.content, content, "{}: content", r.id);
                    assert_eq!(
                        o.calls.len(),
                        calls.len(),
                        "{}: tool calls {:?}",
                        r.id,
                        o.calls
                    );
                    for (k, ((index, id, name, args), (want_name, want_args, exact))) in
                        o.calls.iter().zip(calls).enumerate()
                    {
                        assert_eq!((*index, id.as_str()), (k, format!("call_{k}").as_str()));
                        assert_eq!(name, want_name, "{}: call {k} name", r.id);
                        let got: Value = serde_json::from_str(args).expect("arguments JSON");
                        assert_eq!(&got, want_args, "{}: call {k} arguments", r.id);
                        if let Some(exact) = exact {
                            assert_eq!(args, exact, "{}: call {k} arguments text", r.id);
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn error_records_never_panic_and_lose_no_text() {
    let records = records();
    let errors: Vec<&Record> = records.iter().filter(|r| r.expected.is_none()).collect();
    assert_eq!(errors.len(), 39);
    for r in errors {
        // 3-piece splits only for the shorter texts: the long ones are cut-and-mutated copies of
        // well-formed completions that are checked exhaustively above.
        let o = check_every_split(r, r.text.chars().count() <= 400);
        assert_no_text_lost(&r.id, &r.text, &o);
    }
}

const EOS: &str = "<｜end▁of▁sentence｜>";

/// All deltas of a stream, adjacent text deltas of the same kind merged.
fn deltas(thinking: bool, pieces: &[&str]) -> Vec<Delta> {
    let mut p = StreamParser::new(thinking);
    let mut all: Vec<Delta> = pieces.iter().flat_map(|x| p.push(x)).collect();
    all.extend(p.finish());
    let mut out: Vec<Delta> = Vec::new();
    for d in all {
        match (out.last_mut(), &d) {
            (Some(Delta::Content(a)), Delta::Content(b)) => a.push_str(b),
            (Some(Delta::Reasoning(a)), Delta::Reasoning(b)) => a.push_str(b),
            _ => out.push(d),
        }
    }
    out
}

fn content(s: &str) -> Delta {
    Delta::Content(s.to_owned())
}

fn call(index: usize, name: &str, arguments: &str) -> Delta {
    let (id, name, arguments) = (
        format!("call_{index}"),
        name.to_owned(),
        arguments.to_owned(),
    );
    Delta::ToolCall {
        index,
        id,
        name,
        arguments,
    }
}

#[test]
fn marker_lookalikes_are_held_only_until_disambiguated() {
    let mut p = StreamParser::new(true);
    assert_eq!(p.push("abc</thi"), [Delta::Reasoning("abc".into())]);
    assert_eq!(p.push("s is <"), [Delta::Reasoning("</this is ".into())]);
    assert_eq!(p.push("｜"), []);
    assert_eq!(p.push("x</think>\n"), [Delta::Reasoning("<｜x".into())]);
    assert_eq!(p.push("\nok"), [content("\n\nok")]);
    assert_eq!(p.push("<｜end▁of"), []);
    assert_eq!(p.push("▁sentence｜>"), []);
    assert_eq!(p.finish(), []);
    // finish() flushes what was held back.
    assert_eq!(deltas(false, &["a<｜end", "\n"]), [content("a<｜end\n")]);
    assert_eq!(deltas(true, &["a</th"]), [Delta::Reasoning("a</th".into())]);
}

#[test]
fn tool_call_block_before_think_end_ends_the_reasoning() {
    let text = "Let me call.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\
        <｜DSML｜parameter name=\"a\" string=\"false\">[1, 2]</｜DSML｜parameter>\n\
        </｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
    let want = [
        Delta::Reasoning("Let me call.".into()),
        call(0, "f", "{\"a\": [1, 2]}"),
    ];
    assert_eq!(deltas(true, &[text]), want);
}

#[test]
fn each_call_is_emitted_when_its_invoke_closes() {
    let mut p = StreamParser::with_id_prefix(false, "req7-");
    assert_eq!(
        p.push("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"a\">\n</｜DSML｜invo"),
        []
    );
    let got = p.push("ke>\n<｜DSML｜invoke name=\"b\">\n");
    let want = Delta::ToolCall {
        index: 0,
        id: "req7-0".into(),
        name: "a".into(),
        arguments: "{}".into(),
    };
    assert_eq!(got, [want]);
    assert_eq!(p.push("</｜DSML｜invoke>\n</｜DSML｜tool_calls>").len(), 1);
    assert_eq!((p.finish(), p.tool_call_count()), (vec![], 2));
}

#[test]
fn arguments_are_always_json() {
    let param = |flag: &str, v: &str| {
        format!(
            "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" \
             string=\"{flag}\">{v}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>{EOS}"
        )
    };
    let args = |flag: &str, v: &str| match &deltas(false, &[&param(flag, v)])[..] {
        [Delta::ToolCall { arguments, .. }] => arguments.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(args("false", "1e+16"), "{\"x\": 1e+16}"); // valid JSON: verbatim
    assert_eq!(args("false", "NaN"), "{\"x\": \"NaN\"}"); // not JSON: a string
    assert_eq!(args("false", ""), "{\"x\": \"\"}");
    assert_eq!(
        args("true", "a\"\\\n\u{1}é"),
        "{\"x\": \"a\\\"\\\\\\n\\u0001é\"}"
    );
}

#[test]
fn truncated_and_malformed_blocks_become_content() {
    // Cut inside a value: the whole block is content.
    let text = "answer\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\
        <｜DSML｜parameter name=\"a\" string=\"true\">hal";
    assert_eq!(deltas(false, &[text]), [content(text)]);
    // Cut (or EOS) after a complete parameter: the call, like the reference.
    let cut = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\
        <｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n";
    assert_eq!(deltas(false, &[cut]), [call(0, "f", "{\"a\": \"x\"}")]);
    assert_eq!(deltas(false, &[cut, EOS]), [call(0, "f", "{\"a\": \"x\"}")]);
    // A bad attribute after a good call: the call, then the rest verbatim.
    let good = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>";
    let bad = "\n<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"p\" string=\"yes\">1\
        </｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let got = deltas(false, &[good, bad, EOS]);
    assert_eq!(got, [call(0, "f", "{}"), content(bad)]);
    // Text after EOS is not dropped.
    assert_eq!(deltas(false, &["a", EOS, "b"]), [content("ab")]);
}

#[test]
fn random_marker_soup_never_panics_and_is_split_invariant() {
    let pieces = [
        "\n\n<｜DSML｜tool_calls>\n",
        "<｜DSML｜invoke name=\"f\">\n",
        "<｜DSML｜parameter name=\"p\" string=\"true\">",
        "<｜DSML｜parameter name=\"q\" string=\"false\">",
        "</｜DSML｜parameter>\n",
        "</｜DSML｜invoke>\n",
        "</｜DSML｜tool_calls>",
        EOS,
        "</think>",
        "<think>",
        "<",
        ">",
        "\n",
        " ",
        "x",
        "中",
        "7",
        "[1, 2]",
        "\"",
        "｜",
        "<｜",
        "</thi",
        "name=\"",
        "<｜DSML｜",
        "/｜DSML｜parameter>",
        "\u{3000}",
        "<\n",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for round in 0..4000 {
        let text: String = (0..next(40)).map(|_| pieces[next(pieces.len())]).collect();
        let thinking = round % 2 == 0;
        let whole = run(thinking, &[&text]);
        let b = boundaries(&text);
        let mut cuts: Vec<usize> = (0..next(6)).map(|_| b[next(b.len())]).collect();
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut from = 0;
        for c in cuts.into_iter().chain([text.len()]) {
            parts.push(&text[from..c]);
            from = c;
        }
        assert_eq!(run(thinking, &parts), whole, "{text:?} split as {parts:?}");
        if round % 8 == 0 {
            let chars: Vec<String> = text.chars().map(String::from).collect();
            let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
            assert_eq!(run(thinking, &chars), whole, "{text:?} char by char");
        }
        assert_no_text_lost("random", &text, &whole);
    }
}
