"""Drives the gateway with the official `openai` and `anthropic` Python SDKs.

Every call must succeed and every response must parse into the SDK's types; the script
prints one line per check and exits non-zero on the first failure.

    python sdk_check.py --base-url http://127.0.0.1:PORT --model deepseek-v4-flash
"""

import argparse
import sys

import anthropic
import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {name}", flush=True)


def openai_checks(base, model):
    c = openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0)
    models = c.models.list()
    check("openai models.list", any(m.id == model for m in models.data), models)

    r = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=8,
        temperature=0,
        extra_body={"thinking": {"type": "disabled"}},
    )
    ch = r.choices[0]
    check("openai chat", ch.message.role == "assistant" and ch.finish_reason in ("stop", "length"), r)
    check("openai usage", r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage)
    extra = r.usage.model_extra or {}
    check("openai DeepSeek usage fields", "prompt_cache_hit_tokens" in extra and "prompt_cache_miss_tokens" in extra, extra)

    stream = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"thinking": {"type": "disabled"}},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check("openai stream", finish in ("stop", "length") and usage is not None, (finish, usage))
    check("openai stream == non-stream", text == (ch.message.content or ""), (text, ch.message.content))

    r = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,
        tool_choice="auto",
        max_tokens=8,
    )
    msg = r.choices[0].message
    check("openai tools + thinking (default)", r.choices[0].finish_reason in ("stop", "length", "tool_calls"), r)
    reasoning = (msg.model_extra or {}).get("reasoning_content")
    check("openai reasoning_content", isinstance(reasoning, str), msg)
    details = r.usage.completion_tokens_details
    check("openai reasoning_tokens", details is not None and details.reasoning_tokens is not None, r.usage)

    r = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        extra_body={"thinking": {"type": "disabled"}},
    )
    lp = r.choices[0].logprobs
    check("openai logprobs", lp is not None and len(lp.content) == r.usage.completion_tokens and len(lp.content[0].top_logprobs) == 2, lp)

    try:
        c.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "x"}])
        check("openai retired alias", False, "no error")
    except openai.BadRequestError as e:
        check("openai retired alias", "deepseek-v4" in str(e), e)


def anthropic_checks(base, model):
    c = anthropic.Anthropic(base_url=base, api_key="sk-test", max_retries=0)
    r = c.messages.create(
        model=model,
        max_tokens=8,
        messages=[{"role": "user", "content": "Hello!"}],
        thinking={"type": "disabled"},
        extra_body={"temperature": 0},  # greedy (this SDK version has no temperature argument)
    )
    check("anthropic message", r.role == "assistant" and r.stop_reason in ("end_turn", "max_tokens"), r)
    check("anthropic usage", r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage)

    with c.messages.stream(
        model=model,
        max_tokens=8,
        messages=[{"role": "user", "content": "Hello!"}],
        thinking={"type": "disabled"},
        extra_body={"temperature": 0},  # greedy (this SDK version has no temperature argument)
    ) as s:
        final = s.get_final_message()
    text = "".join(b.text for b in final.content if b.type == "text")
    first = "".join(b.text for b in r.content if b.type == "text")
    check("anthropic stream", final.stop_reason in ("end_turn", "max_tokens"), final)
    check("anthropic stream == non-stream", text == first, (text, first))

    r = c.messages.create(
        model=model,
        max_tokens=8,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[{"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    check("anthropic thinking + tools", r.stop_reason in ("end_turn", "max_tokens", "tool_use"), r)
    check("anthropic thinking block parses", all(b.type in ("thinking", "text", "tool_use") for b in r.content), r)

    with c.messages.stream(
        model=model,
        max_tokens=8,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
    ) as s:
        final = s.get_final_message()
    check("anthropic thinking stream", any(b.type == "thinking" for b in final.content), final)

    try:
        c.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        check("anthropic unknown model", False, "no error")
    except anthropic.BadRequestError as e:
        check("anthropic unknown model", e.status_code == 400, e)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    a = p.parse_args()
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}", flush=True)
    openai_checks(a.base_url, a.model)
    anthropic_checks(a.base_url, a.model)
    print("all SDK checks passed", flush=True)


if __name__ == "__main__":
    main()
