//! The HTTP routes: authentication, body reading, the chat handlers of both APIs, models,
//! health and readiness.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::config::GatewayConfig;
use crate::driver::{Driver, Finish};
use crate::error::{Failure, Flavor};
use crate::fields::parse_body;
use crate::mesh::Mesh;
use crate::metrics::Metrics;
use crate::request::{ValidChatRequest, prepare};
use crate::{anthropic, openai, sse};

/// What every handler shares.
pub(crate) struct AppState {
    pub mesh: Arc<Mesh>,
    pub config: Arc<GatewayConfig>,
    pub metrics: Arc<Metrics>,
}

type State = web::Data<AppState>;

/// Registers every route.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["/v1/chat/completions", "/chat/completions"])
            .route(web::post().to(chat_completions))
            .default_service(web::to(|| async { method_not_allowed(Flavor::OpenAi) })),
    )
    .service(
        web::resource(["/v1/messages", "/anthropic/v1/messages"])
            .route(web::post().to(messages))
            .default_service(web::to(|| async { method_not_allowed(Flavor::Anthropic) })),
    )
    .service(web::resource(["/v1/models", "/models"]).route(web::get().to(models)))
    .service(web::resource("/health").route(web::get().to(health)))
    .service(web::resource("/ready").route(web::get().to(ready)));
}

fn flavor_of_path(path: &str) -> Flavor {
    if path.starts_with("/anthropic") || path.ends_with("/messages") {
        Flavor::Anthropic
    } else {
        Flavor::OpenAi
    }
}

/// Unknown paths.
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    Failure::NotFound(format!("no route for {} {}", req.method(), req.path()))
        .response(flavor_of_path(req.path()), 1)
}

fn method_not_allowed(flavor: Flavor) -> HttpResponse {
    Failure::MethodNotAllowed("this endpoint only accepts POST".into()).response(flavor, 1)
}

fn json_response(status: u16, v: &Value) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(v.to_string())
}

/// Constant-time comparison of two keys.
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The API key check: `Authorization: Bearer <key>` or `x-api-key: <key>`.
fn authorize(config: &GatewayConfig, req: &HttpRequest) -> Result<(), Failure> {
    if config.api_keys.is_empty() {
        return Ok(());
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let bearer = header(AUTHORIZATION.as_str()).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(str::trim)
    });
    let Some(key) = bearer.or_else(|| header("x-api-key").map(str::trim)) else {
        return Err(Failure::Unauthorized(
            "Authentication Fails: no API key; send it as \"Authorization: Bearer <key>\" or \
             \"x-api-key: <key>\""
                .into(),
        ));
    };
    if config.api_keys.iter().any(|k| same_key(k, key)) {
        return Ok(());
    }
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(Failure::Unauthorized(format!(
        "Authentication Fails, Your api key: ****{tail} is invalid"
    )))
}

fn check_content_type(req: &HttpRequest) -> Result<(), Failure> {
    let Some(v) = req.headers().get(CONTENT_TYPE) else {
        return Ok(());
    };
    let s = v.to_str().unwrap_or("");
    let mime = s
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        return Ok(());
    }
    Err(Failure::UnsupportedMediaType(format!(
        "unsupported content type {s:?}: send the request body as application/json"
    )))
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, Failure> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Failure::BodyTooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Failure::invalid(
                "invalid_body",
                None,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(Failure::BodyTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn chat_completions(state: State, req: HttpRequest, body: web::Payload) -> HttpResponse {
    chat(state, req, body, Flavor::OpenAi).await
}

async fn messages(state: State, req: HttpRequest, body: web::Payload) -> HttpResponse {
    chat(state, req, body, Flavor::Anthropic).await
}

async fn chat(state: State, req: HttpRequest, body: web::Payload, flavor: Flavor) -> HttpResponse {
    match try_chat(&state, &req, body, flavor).await {
        Ok(r) => r,
        Err(f) => f.response(flavor, state.config.retry_after_secs()),
    }
}

async fn try_chat(
    state: &AppState,
    req: &HttpRequest,
    body: web::Payload,
    flavor: Flavor,
) -> Result<HttpResponse, Failure> {
    authorize(&state.config, req)?;
    check_content_type(req)?;
    let body = read_body(req, body, state.config.max_body_bytes).await?;
    let v = parse_body(&body)?;
    let token = v4_bus::unique_token();
    let (valid, tool_prefix) = match flavor {
        Flavor::OpenAi => (
            openai::parse(&v, &state.config, format!("chatcmpl-{token}"))?,
            format!("call_{token}_"),
        ),
        Flavor::Anthropic => (
            anthropic::parse(&v, &state.config, format!("msg_{token}"))?,
            format!("toolu_{token}_"),
        ),
    };
    let mesh = &state.mesh;
    let special = mesh.special().await?;
    let prepared = prepare(mesh, &valid).await?;
    let prompt_tokens = prepared.prompt.prompt_tokens;
    let generation = mesh.start_generation(prepared.generate).await?;
    tracing::debug!(
        request_id = %valid.id, worker = %generation.worker, prompt_tokens,
        stream = valid.stream, "generation accepted"
    );
    let driver = Driver::new(
        mesh.clone(),
        generation,
        &valid,
        &prepared.prompt,
        special,
        tool_prefix,
    );
    if valid.stream {
        return Ok(stream(state, driver, &valid, prompt_tokens));
    }
    let (all, outcome) = driver.collect().await;
    match flavor {
        Flavor::OpenAi => {
            let meta = openai::Meta::new(&valid);
            Ok(json_response(
                200,
                &openai::completion(&meta, &all, &outcome),
            ))
        }
        Flavor::Anthropic => match &outcome.finish {
            Finish::Failed(f) => Err(f.clone()),
            _ => Ok(json_response(
                200,
                &anthropic::message(&valid, &all, &outcome),
            )),
        },
    }
}

fn stream(
    state: &AppState,
    driver: Driver,
    valid: &ValidChatRequest,
    prompt_tokens: u64,
) -> HttpResponse {
    let keep_alive = state.config.keep_alive;
    let metrics = state.metrics.clone();
    match valid.flavor {
        Flavor::OpenAi => {
            let format = openai::ChunkStream {
                meta: openai::Meta::new(valid),
                include_usage: valid.include_usage,
            };
            sse::response(driver, format, keep_alive, metrics)
        }
        Flavor::Anthropic => {
            let format = anthropic::EventStream::new(valid, prompt_tokens);
            sse::response(driver, format, keep_alive, metrics)
        }
    }
}

/// API ids whose served model a live worker serves, with the workers' note on it.
async fn served_api_ids(state: &AppState) -> Result<Vec<(String, Option<String>)>, Failure> {
    let reply = state.mesh.models().await?;
    let served: HashMap<String, Option<String>> = reply
        .models
        .into_iter()
        .filter(|m| m.workers > 0)
        .map(|m| (m.id, m.description))
        .collect();
    Ok(state
        .config
        .models
        .iter()
        .filter_map(|(a, s)| served.get(s).map(|d| (a.to_string(), d.clone())))
        .collect())
}

async fn models(state: State, req: HttpRequest) -> HttpResponse {
    let result = async {
        authorize(&state.config, &req)?;
        served_api_ids(&state).await
    }
    .await;
    match result {
        Ok(ids) => {
            let data: Vec<Value> = ids
                .iter()
                .map(|(id, description)| {
                    let mut m = json!({"id": id, "object": "model", "owned_by": "deepseek"});
                    if let Some(d) = description {
                        m["description"] = d.clone().into();
                    }
                    m
                })
                .collect();
            json_response(200, &json!({"object": "list", "data": data}))
        }
        Err(f) => f.response(Flavor::OpenAi, state.config.retry_after_secs()),
    }
}

async fn health() -> HttpResponse {
    json_response(200, &json!({"status": "ok"}))
}

/// 200 when the scheduler answers with at least one served model and the tokenizer answers.
async fn ready(state: State) -> HttpResponse {
    let not_ready =
        |reason: String| json_response(503, &json!({"status": "not_ready", "reason": reason}));
    let ids = match served_api_ids(&state).await {
        Ok(ids) if ids.is_empty() => {
            return not_ready("no configured model is served by a live worker".into());
        }
        Ok(ids) => ids.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        Err(f) => return not_ready(format!("scheduler: {}", f.api_error().message)),
    };
    let timeout = state.config.bus_timeout.min(Duration::from_secs(2));
    match tokio::time::timeout(timeout, state.mesh.tokenizer.info()).await {
        Ok(Ok(_)) => json_response(200, &json!({"status": "ready", "models": ids})),
        Ok(Err(e)) => not_ready(format!("tokenizer: {e}")),
        Err(_) => not_ready(format!("tokenizer: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(same_key("sk-abc", "sk-abc"));
        assert!(!same_key("sk-abc", "sk-abd"));
        assert!(!same_key("sk-abc", "sk-ab"));
    }

    #[test]
    fn flavors_by_path() {
        assert_eq!(flavor_of_path("/anthropic/v1/x"), Flavor::Anthropic);
        assert_eq!(flavor_of_path("/v1/messages"), Flavor::Anthropic);
        assert_eq!(flavor_of_path("/v1/nope"), Flavor::OpenAi);
    }
}
