//! Typed access to the fields of a JSON request object. Requests are parsed as
//! `serde_json::Value` first and then read field by field, so that every wrong type or value is
//! a 422 that names the field (`param`), and no serde enum representation is involved (see
//! crates.md G2). A field that is `null` counts as absent.

use serde_json::{Map, Value};

use crate::error::Failure;

/// The JSON type name of a value, for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The body as a JSON object: invalid UTF-8 and malformed JSON are 400s.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, Failure> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(Failure::invalid(
            "invalid_encoding",
            None,
            format!(
                "the request body is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Failure::invalid(
            "invalid_json",
            None,
            "the request body is empty: send a JSON object",
        ));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::invalid(
            "invalid_json",
            None,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(Failure::invalid(
            "invalid_json",
            None,
            format!(
                "the request body must be a JSON object, found {}",
                type_name(&v)
            ),
        ));
    }
    Ok(v)
}

/// The fields of one JSON object; `prefix` is its path (`""` at the top, `"stream_options."`).
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    /// The top-level object (the caller checked it is one).
    pub(crate) fn root(v: &'a Value) -> Fields<'a> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        Fields {
            obj: v.as_object().unwrap_or_else(|| EMPTY.get_or_init(Map::new)),
            prefix: "",
        }
    }

    fn param(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> Failure {
        let p = self.param(key);
        Failure::param(
            p.clone(),
            format!("{p} must be {want}, found {}", type_name(v)),
        )
    }

    /// The value of `key`, `None` when absent or `null`.
    pub(crate) fn value(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, Failure> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, Failure> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "a boolean", v)),
        }
    }

    /// A number in `[lo, hi]`.
    pub(crate) fn f32_in(&self, key: &str, lo: f32, hi: f32) -> Result<Option<f32>, Failure> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let Some(x) = v.as_f64() else {
            return Err(self.wrong(key, "a number", v));
        };
        if !(f64::from(lo)..=f64::from(hi)).contains(&x) {
            let p = self.param(key);
            return Err(Failure::param(
                p.clone(),
                format!("{p} must be between {lo} and {hi}, got {x}"),
            ));
        }
        Ok(Some(x as f32))
    }

    /// A non-negative integer (an integral float such as `100.0` is accepted).
    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>, Failure> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match (n, v) {
            (Some(n), _) => Ok(Some(n)),
            (None, Value::Number(_)) => {
                let p = self.param(key);
                Err(Failure::param(
                    p.clone(),
                    format!("{p} must be a non-negative integer, got {v}"),
                ))
            }
            (None, _) => Err(self.wrong(key, "an integer", v)),
        }
    }

    /// An integer in `[lo, hi]`.
    pub(crate) fn u32_in(&self, key: &str, lo: u32, hi: u32) -> Result<Option<u32>, Failure> {
        let Some(n) = self.u64(key)? else {
            return Ok(None);
        };
        if n < u64::from(lo) || n > u64::from(hi) {
            let p = self.param(key);
            return Err(Failure::param(
                p.clone(),
                format!("{p} must be between {lo} and {hi}, got {n}"),
            ));
        }
        Ok(Some(n as u32))
    }

    /// A nested object.
    pub(crate) fn object(&self, key: &'a str) -> Result<Option<Fields<'a>>, Failure> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Fields {
                obj,
                prefix: nested_prefix(key),
            })),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }
}

/// `"<key>."` for the nested objects the gateway reads.
fn nested_prefix(key: &str) -> &'static str {
    match key {
        "stream_options" => "stream_options.",
        "response_format" => "response_format.",
        "thinking" => "thinking.",
        "output_config" => "output_config.",
        "tool_choice" => "tool_choice.",
        "function" => "tool_choice.function.",
        "metadata" => "metadata.",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::Flavor;

    fn status(f: Failure) -> (u16, String) {
        let b = f.body(Flavor::OpenAi);
        (
            f.status(Flavor::OpenAi),
            b["error"]["param"].as_str().unwrap_or("").to_string(),
        )
    }

    #[test]
    fn body_errors() {
        assert_eq!(status(parse_body(b"{").unwrap_err()).0, 400);
        assert_eq!(status(parse_body(b"[1]").unwrap_err()).0, 400);
        assert_eq!(status(parse_body(b" ").unwrap_err()).0, 400);
        assert_eq!(status(parse_body(b"{\"a\":\"\xff\"}").unwrap_err()).0, 400);
        assert!(parse_body(b"{\"a\": 1}").is_ok());
    }

    #[test]
    fn typed_fields_name_the_param() {
        let v = json!({"t": "hot", "n": 2.0, "neg": -1, "b": 1, "o": {"include_usage": "y"}, "z": null});
        let f = Fields::root(&v);
        assert_eq!(
            status(f.f32_in("t", 0.0, 2.0).unwrap_err()),
            (422, "t".into())
        );
        assert_eq!(f.u64("n").unwrap(), Some(2));
        assert_eq!(status(f.u64("neg").unwrap_err()), (422, "neg".into()));
        assert_eq!(status(f.bool("b").unwrap_err()), (422, "b".into()));
        assert_eq!(f.str("z").unwrap(), None);
        assert_eq!(f.str("missing").unwrap(), None);
        assert_eq!(status(f.u32_in("n", 3, 5).unwrap_err()).0, 422);
        let v = json!({"stream_options": {"include_usage": "y"}});
        let o = Fields::root(&v).object("stream_options").unwrap().unwrap();
        assert_eq!(
            status(o.bool("include_usage").unwrap_err()),
            (422, "stream_options.include_usage".into())
        );
    }
}
