//! Request fields of the public APIs → encoder mode, following DeepSeek's V4 API
//! (<https://api-docs.deepseek.com/guides/thinking_mode>):
//!
//! * OpenAI format: `thinking: {"type": "enabled" | "disabled"}` and
//!   `reasoning_effort: "low" | "medium" | "high" | "xhigh" | "max"`.
//! * Anthropic format: `thinking: {"type": "enabled", "budget_tokens": N} | {"type": "disabled"}`
//!   and `output_config.effort` with the same effort values.
//!
//! **Default:** thinking is enabled when `thinking` is absent, with the default effort (`high`),
//! as DeepSeek's V4 API documents ("Thinking mode is enabled by default, with the default effort
//! being high"). Efforts map as DeepSeek maps them for V4: `low`/`medium`/`high` → High,
//! `xhigh`/`max` → Max. An effort sent with thinking disabled is validated and then ignored.

use serde_json::Value;

use super::encode::{ChatError, ReasoningEffort, ThinkingMode};

const EFFORTS: &str = "\"low\", \"medium\", \"high\", \"xhigh\" or \"max\"";

/// Maps the OpenAI-format `thinking` object and `reasoning_effort` string.
pub fn mode_from_openai(
    thinking: Option<&Value>,
    reasoning_effort: Option<&str>,
) -> Result<(ThinkingMode, Option<ReasoningEffort>), ChatError> {
    let mode = thinking_type(thinking, false)?;
    let effort = effort(reasoning_effort, "reasoning_effort")?;
    Ok(finish(mode, effort))
}

/// Maps the Anthropic-format `thinking` object and `output_config.effort` string. `budget_tokens`
/// is checked (a non-negative integer) but does not change the prompt; `"adaptive"` (Anthropic's
/// model-decides type) counts as enabled.
pub fn mode_from_anthropic(
    thinking: Option<&Value>,
    effort_value: Option<&str>,
) -> Result<(ThinkingMode, Option<ReasoningEffort>), ChatError> {
    let mode = thinking_type(thinking, true)?;
    let effort = effort(effort_value, "output_config.effort")?;
    Ok(finish(mode, effort))
}

fn finish(
    mode: ThinkingMode,
    effort: Option<ReasoningEffort>,
) -> (ThinkingMode, Option<ReasoningEffort>) {
    match mode {
        ThinkingMode::Chat => (ThinkingMode::Chat, None),
        ThinkingMode::Thinking => (ThinkingMode::Thinking, effort),
    }
}

/// `thinking.type`; absent or `null` → enabled (DeepSeek's default).
fn thinking_type(thinking: Option<&Value>, anthropic: bool) -> Result<ThinkingMode, ChatError> {
    let allowed = if anthropic {
        "\"enabled\", \"disabled\" or \"adaptive\""
    } else {
        "\"enabled\" or \"disabled\""
    };
    let obj = match thinking {
        None | Some(Value::Null) => return Ok(ThinkingMode::Thinking),
        Some(Value::Object(obj)) => obj,
        Some(other) => {
            return Err(ChatError::InvalidApiField {
                field: "thinking",
                value: compact(other),
                allowed: "an object such as {\"type\": \"enabled\"}",
            });
        }
    };
    if anthropic
        && let Some(b) = obj.get("budget_tokens").filter(|b| !b.is_null())
        && b.as_u64().is_none()
    {
        return Err(ChatError::InvalidApiField {
            field: "thinking.budget_tokens",
            value: compact(b),
            allowed: "a non-negative integer",
        });
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("enabled") => Ok(ThinkingMode::Thinking),
        Some("adaptive") if anthropic => Ok(ThinkingMode::Thinking),
        Some("disabled") => Ok(ThinkingMode::Chat),
        _ => Err(ChatError::InvalidApiField {
            field: "thinking.type",
            value: obj.get("type").map_or_else(|| "(missing)".into(), compact),
            allowed,
        }),
    }
}

fn effort(value: Option<&str>, field: &'static str) -> Result<Option<ReasoningEffort>, ChatError> {
    match value {
        None => Ok(None),
        Some("low" | "medium" | "high") => Ok(Some(ReasoningEffort::High)),
        Some("xhigh" | "max") => Ok(Some(ReasoningEffort::Max)),
        Some(other) => Err(ChatError::InvalidApiField {
            field,
            value: compact(&Value::String(other.into())),
            allowed: EFFORTS,
        }),
    }
}

fn compact(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.chars().count() > 80 {
        s.chars().take(77).chain("...".chars()).collect()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use ReasoningEffort::{High, Max};
    use ThinkingMode::{Chat, Thinking};

    #[test]
    fn openai_default_is_thinking_with_default_effort() {
        assert_eq!(mode_from_openai(None, None).unwrap(), (Thinking, None));
        assert_eq!(
            mode_from_openai(Some(&Value::Null), None).unwrap(),
            (Thinking, None)
        );
    }

    #[test]
    fn openai_toggle_and_efforts() {
        let on = json!({"type": "enabled"});
        let off = json!({"type": "disabled"});
        assert_eq!(mode_from_openai(Some(&on), None).unwrap(), (Thinking, None));
        assert_eq!(mode_from_openai(Some(&off), None).unwrap(), (Chat, None));
        for (e, want) in [
            ("low", High),
            ("medium", High),
            ("high", High),
            ("xhigh", Max),
            ("max", Max),
        ] {
            assert_eq!(
                mode_from_openai(Some(&on), Some(e)).unwrap(),
                (Thinking, Some(want)),
                "{e}"
            );
            assert_eq!(
                mode_from_openai(None, Some(e)).unwrap(),
                (Thinking, Some(want)),
                "{e}"
            );
            assert_eq!(
                mode_from_openai(Some(&off), Some(e)).unwrap(),
                (Chat, None),
                "{e}"
            );
        }
    }

    #[test]
    fn openai_rejects_unknown_values_naming_the_field() {
        let err = mode_from_openai(None, Some("ultra"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reasoning_effort") && err.contains("\"xhigh\""),
            "{err}"
        );
        let err = mode_from_openai(Some(&json!({"type": "on"})), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("thinking.type") && err.contains("\"disabled\""),
            "{err}"
        );
        let err = mode_from_openai(Some(&json!({})), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("thinking.type") && err.contains("(missing)"),
            "{err}"
        );
        let err = mode_from_openai(Some(&json!(true)), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("thinking"), "{err}");
        // "adaptive" is Anthropic-only.
        assert!(mode_from_openai(Some(&json!({"type": "adaptive"})), None).is_err());
        // Effort is checked even when thinking is off.
        assert!(mode_from_openai(Some(&json!({"type": "disabled"})), Some("none")).is_err());
    }

    #[test]
    fn anthropic_mapping() {
        let on = json!({"type": "enabled", "budget_tokens": 2048});
        assert_eq!(
            mode_from_anthropic(Some(&on), None).unwrap(),
            (Thinking, None)
        );
        assert_eq!(
            mode_from_anthropic(Some(&on), Some("max")).unwrap(),
            (Thinking, Some(Max))
        );
        assert_eq!(
            mode_from_anthropic(None, Some("low")).unwrap(),
            (Thinking, Some(High))
        );
        let ad = json!({"type": "adaptive"});
        assert_eq!(
            mode_from_anthropic(Some(&ad), Some("xhigh")).unwrap(),
            (Thinking, Some(Max))
        );
        let off = json!({"type": "disabled"});
        assert_eq!(
            mode_from_anthropic(Some(&off), Some("high")).unwrap(),
            (Chat, None)
        );
    }

    #[test]
    fn anthropic_rejects_bad_values() {
        let bad_budget = json!({"type": "enabled", "budget_tokens": "lots"});
        let err = mode_from_anthropic(Some(&bad_budget), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("thinking.budget_tokens"), "{err}");
        let err = mode_from_anthropic(None, Some("HIGH"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output_config.effort") && err.contains("\"max\""),
            "{err}"
        );
        let err = mode_from_anthropic(Some(&json!({"type": 1})), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("thinking.type") && err.contains("\"adaptive\""),
            "{err}"
        );
    }
}
