//! [`GatewayConfig`]: every setting of the gateway, resolved once at start-up (the binary
//! fills it from flags and environment variables).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The API model ids the gateway answers for and the served model each one runs on.
///
/// A request names an API id (`deepseek-v4-flash`); the mesh (scheduler, workers) knows served
/// ids (what workers announce in their heartbeats). The default maps each V4 id to itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMap(BTreeMap<String, String>);

impl Default for ModelMap {
    fn default() -> Self {
        ModelMap::new([
            ("deepseek-v4-flash", "deepseek-v4-flash"),
            ("deepseek-v4-pro", "deepseek-v4-pro"),
        ])
    }
}

impl ModelMap {
    /// A map from `(api id, served id)` pairs.
    pub fn new<A: Into<String>, S: Into<String>>(
        pairs: impl IntoIterator<Item = (A, S)>,
    ) -> ModelMap {
        ModelMap(
            pairs
                .into_iter()
                .map(|(a, s)| (a.into(), s.into()))
                .collect(),
        )
    }

    /// Parses `api=served` (or a bare `id`, meaning `id=id`).
    pub fn parse_entry(entry: &str) -> Result<(String, String), String> {
        let (api, served) = match entry.split_once('=') {
            Some((a, s)) => (a.trim(), s.trim()),
            None => (entry.trim(), entry.trim()),
        };
        if api.is_empty() || served.is_empty() {
            return Err(format!(
                "invalid model mapping {entry:?}: expected API_ID=SERVED_ID"
            ));
        }
        Ok((api.to_string(), served.to_string()))
    }

    /// The served id of an API id.
    pub fn served(&self, api_id: &str) -> Option<&str> {
        self.0.get(api_id).map(String::as_str)
    }

    /// `(api id, served id)` in API-id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(a, s)| (a.as_str(), s.as_str()))
    }

    /// The API ids, in order.
    pub fn api_ids(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Settings of one gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen; port 0 picks a free port ([`crate::GatewayHandle::local_addr`]).
    pub listen: SocketAddr,
    /// This gateway's name, in logs and generation request ids.
    pub instance: String,
    /// HTTP worker threads (each runs its own single-threaded runtime).
    pub workers: usize,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// API model id → served model id.
    pub models: ModelMap,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: u32,
    /// While a stream waits for the next token, an SSE comment (OpenAI) or `ping` event
    /// (Anthropic) is sent this often.
    pub keep_alive: Duration,
    /// Timeout of each request to the tokenizer and the scheduler.
    pub bus_timeout: Duration,
    /// A generation that produced no event this long after it was accepted fails.
    pub first_event_timeout: Duration,
    /// A worker the gateway has never seen a heartbeat from counts as gone this long after it
    /// accepted a generation (a known worker is gone after its own `expires_after`). A worker
    /// that accepted was chosen from its heartbeats, so a live one is heard within one
    /// interval; the default (3 s) is three of the workers' default intervals.
    pub unknown_worker_grace: Duration,
    /// How often a running generation checks that its worker is alive.
    pub liveness_check: Duration,
    /// After the gateway cancels a generation (stop string), how long it waits for the
    /// worker's final event (exact usage) before it reports what it counted itself.
    pub cancel_grace: Duration,
    /// `Retry-After` (seconds, rounded up) sent with 503 answers.
    pub retry_after: Duration,
    /// How long the served-model list from the scheduler is reused.
    pub models_cache_ttl: Duration,
    /// Static API keys. Empty: no authentication. Otherwise every API request needs
    /// `Authorization: Bearer <key>` or `x-api-key: <key>` with one of them.
    pub api_keys: Vec<String>,
    /// A graceful stop waits this long for in-flight requests.
    pub shutdown_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            instance: "gateway".to_string(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            max_body_bytes: 32 * 1024 * 1024,
            models: ModelMap::default(),
            // DeepSeek-V4's longest output (384K tokens).
            max_tokens_limit: 384 * 1024,
            keep_alive: Duration::from_secs(10),
            bus_timeout: Duration::from_secs(30),
            first_event_timeout: Duration::from_secs(600),
            unknown_worker_grace: Duration::from_secs(3),
            liveness_check: Duration::from_millis(250),
            cancel_grace: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
            models_cache_ttl: Duration::from_secs(1),
            api_keys: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl GatewayConfig {
    /// The defaults, listening on `127.0.0.1:0` (tests, the all-in-one binary).
    pub fn local() -> GatewayConfig {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..GatewayConfig::default()
        }
    }

    /// `Retry-After` in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }

    /// One line for the start-up log (API keys are counted, never printed).
    pub fn summary(&self) -> String {
        let models: Vec<String> = self
            .models
            .iter()
            .map(|(a, s)| {
                if a == s {
                    a.to_string()
                } else {
                    format!("{a}={s}")
                }
            })
            .collect();
        format!(
            "listen={} instance={} workers={} max_body_bytes={} models=[{}] max_tokens_limit={} \
             keep_alive={:?} bus_timeout={:?} first_event_timeout={:?} api_keys={}",
            self.listen,
            self.instance,
            self.workers,
            self.max_body_bytes,
            models.join(","),
            self.max_tokens_limit,
            self.keep_alive,
            self.bus_timeout,
            self.first_event_timeout,
            self.api_keys.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_map_defaults_and_entries() {
        let m = ModelMap::default();
        assert_eq!(m.served("deepseek-v4-flash"), Some("deepseek-v4-flash"));
        assert_eq!(m.served("deepseek-chat"), None);
        assert_eq!(m.api_ids(), ["deepseek-v4-flash", "deepseek-v4-pro"]);
        assert_eq!(
            ModelMap::parse_entry("a = b").unwrap(),
            ("a".into(), "b".into())
        );
        assert_eq!(
            ModelMap::parse_entry("x").unwrap(),
            ("x".into(), "x".into())
        );
        assert!(ModelMap::parse_entry("=b").is_err());
    }

    #[test]
    fn summary_hides_keys() {
        let c = GatewayConfig {
            api_keys: vec!["sk-secret".into()],
            ..GatewayConfig::local()
        };
        let s = c.summary();
        assert!(s.contains("api_keys=1") && !s.contains("sk-secret"), "{s}");
        assert_eq!(c.retry_after_secs(), 1);
    }
}
