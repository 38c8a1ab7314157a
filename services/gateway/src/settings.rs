//! [`GatewaySettings`]: the gateway's configuration keys (defaults < file < environment <
//! flags, resolved by `v4_config::load`), and their conversion into a [`GatewayConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{GatewayConfig, ModelMap};

v4_config::settings! {
    /// The HTTP gateway: DeepSeek's OpenAI and Anthropic APIs over the NATS mesh.
    pub struct GatewaySettings("gateway") {
        /// NATS server of the mesh.
        nats_url: String = "nats://127.0.0.1:4222".into(); env = "V4_NATS_URL",
        /// Subject namespace: talk to `<namespace>.v4.v1.*` (several stacks on one NATS).
        namespace: Option<String> = None; env = "V4_NATS_NAMESPACE",
        /// Address to listen on (port 0: any free port).
        listen: String = "127.0.0.1:8000".into(),
        /// Instance name (logs, generation request ids).
        instance: String = "gateway".into(),
        /// HTTP worker threads (unset: the CPUs, at most 8).
        workers: Option<usize> = None,
        /// API model ids and the served model each runs on: `API_ID=SERVED_ID` (or `ID`).
        /// Empty: deepseek-v4-flash and deepseek-v4-pro, each on itself.
        models: Vec<String> = vec![],
        /// Largest request body in bytes (413 above it).
        max_body_bytes: usize = 32 * 1024 * 1024,
        /// Largest max_tokens a request may ask for.
        max_tokens_limit: u32 = 384 * 1024; env = "V4_GATEWAY_MAX_TOKENS",
        /// Seconds between SSE keep-alives while a stream waits.
        keep_alive_secs: f64 = 10.0,
        /// Seconds to wait for the tokenizer and the scheduler per request.
        bus_timeout_secs: f64 = 30.0,
        /// Seconds an accepted generation may take to produce its first tokens.
        first_event_timeout_secs: f64 = 600.0,
        /// Seconds after which a worker never heard from (no heartbeat) that accepted a
        /// generation counts as gone.
        unknown_worker_grace_secs: f64 = 3.0,
        /// Milliseconds between checks that a running generation's worker is alive.
        liveness_check_ms: u64 = 250,
        /// Seconds to wait for the worker's final event after cancelling a generation on a stop
        /// string.
        cancel_grace_secs: f64 = 2.0,
        /// `Retry-After` seconds sent with 503 answers (rounded up, at least 1).
        retry_after_secs: f64 = 1.0,
        /// Seconds the served-model list from the scheduler is reused.
        models_cache_ttl_secs: f64 = 1.0,
        /// Static API keys (empty: no authentication).
        api_keys: Vec<String> = vec![]; secret = true,
        /// Seconds a graceful stop waits for in-flight requests.
        shutdown_timeout_secs: u64 = 30,
    }
}

/// `secs` as a duration; `key` names the setting when it is not one.
fn secs(key: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{key} = {secs}: not a number of seconds (>= 0)"))
}

/// `secs` as a positive duration.
fn positive_secs(key: &str, s: f64) -> Result<Duration, String> {
    let d = secs(key, s)?;
    if d.is_zero() {
        return Err(format!("{key} = {s}: must be positive"));
    }
    Ok(d)
}

impl GatewaySettings {
    /// The subject namespace, if one is set (an empty value counts as none).
    pub fn nats_namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|n| !n.is_empty())
    }

    /// The [`GatewayConfig`] these settings describe. An error names the key at fault.
    pub fn to_config(&self) -> Result<GatewayConfig, String> {
        let defaults = GatewayConfig::default();
        if let Some(ns) = self.nats_namespace() {
            v4_bus::subject::check_publish(ns).map_err(|e| format!("namespace = {ns:?}: {e}"))?;
        }
        let listen: SocketAddr = self.listen.trim().parse().map_err(|e| {
            format!(
                "listen = {:?}: not a socket address (HOST:PORT, e.g. 127.0.0.1:8000): {e}",
                self.listen
            )
        })?;
        let workers = match self.workers {
            Some(0) => return Err("workers = 0: must be positive".into()),
            Some(w) => w,
            None => defaults.workers,
        };
        let models = if self.models.is_empty() {
            defaults.models
        } else {
            let pairs = self
                .models
                .iter()
                .map(|m| ModelMap::parse_entry(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("models: {e}"))?;
            ModelMap::new(pairs)
        };
        if self.liveness_check_ms == 0 {
            return Err("liveness_check_ms = 0: must be positive".into());
        }
        Ok(GatewayConfig {
            listen,
            instance: self.instance.clone(),
            workers,
            max_body_bytes: self.max_body_bytes,
            models,
            max_tokens_limit: self.max_tokens_limit,
            keep_alive: positive_secs("keep_alive_secs", self.keep_alive_secs)?,
            bus_timeout: secs("bus_timeout_secs", self.bus_timeout_secs)?,
            first_event_timeout: secs("first_event_timeout_secs", self.first_event_timeout_secs)?,
            unknown_worker_grace: secs(
                "unknown_worker_grace_secs",
                self.unknown_worker_grace_secs,
            )?,
            liveness_check: Duration::from_millis(self.liveness_check_ms),
            cancel_grace: secs("cancel_grace_secs", self.cancel_grace_secs)?,
            retry_after: secs("retry_after_secs", self.retry_after_secs)?,
            models_cache_ttl: secs("models_cache_ttl_secs", self.models_cache_ttl_secs)?,
            api_keys: self
                .api_keys
                .iter()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use v4_config::{Layers, Settings};

    use super::*;

    fn load(env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<GatewaySettings, String> {
        let mut layers = Layers {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Layers::default()
        };
        for (k, v) in flags {
            layers.flag(k, Some(v));
        }
        v4_config::load::<GatewaySettings>(&layers).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_gateway_config_defaults() {
        let c = GatewaySettings::default().to_config().unwrap();
        let d = GatewayConfig::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.instance, d.instance);
        assert_eq!(c.workers, d.workers);
        assert_eq!(c.max_body_bytes, d.max_body_bytes);
        assert_eq!(c.models, d.models);
        assert_eq!(c.max_tokens_limit, d.max_tokens_limit);
        assert_eq!(c.keep_alive, d.keep_alive);
        assert_eq!(c.bus_timeout, d.bus_timeout);
        assert_eq!(c.first_event_timeout, d.first_event_timeout);
        assert_eq!(c.unknown_worker_grace, d.unknown_worker_grace);
        assert_eq!(c.liveness_check, d.liveness_check);
        assert_eq!(c.cancel_grace, d.cancel_grace);
        assert_eq!(c.retry_after, d.retry_after);
        assert_eq!(c.models_cache_ttl, d.models_cache_ttl);
        assert_eq!(c.api_keys, d.api_keys);
        assert_eq!(c.shutdown_timeout, d.shutdown_timeout);
        // Every field of the config is compared above (a new one fails to compile here).
        let GatewayConfig {
            listen: _,
            instance: _,
            workers: _,
            max_body_bytes: _,
            models: _,
            max_tokens_limit: _,
            keep_alive: _,
            bus_timeout: _,
            first_event_timeout: _,
            unknown_worker_grace: _,
            liveness_check: _,
            cancel_grace: _,
            retry_after: _,
            models_cache_ttl: _,
            api_keys: _,
            shutdown_timeout: _,
        } = d;
    }

    #[test]
    fn environment_names_of_today_keep_working() {
        let env: BTreeMap<_, _> = GatewaySettings::keys()
            .into_iter()
            .map(|k| (k.key, k.env))
            .collect();
        assert_eq!(env["nats_url"], "V4_NATS_URL");
        assert_eq!(env["namespace"], "V4_NATS_NAMESPACE");
        assert_eq!(env["listen"], "V4_GATEWAY_LISTEN");
        assert_eq!(env["max_tokens_limit"], "V4_GATEWAY_MAX_TOKENS");
        assert_eq!(env["api_keys"], "V4_GATEWAY_API_KEYS");
        assert_eq!(
            env["first_event_timeout_secs"],
            "V4_GATEWAY_FIRST_EVENT_TIMEOUT_SECS"
        );

        let s = load(
            &[
                ("V4_NATS_URL", "nats://n:1"),
                ("V4_NATS_NAMESPACE", "ns"),
                ("V4_GATEWAY_LISTEN", "0.0.0.0:9000"),
                ("V4_GATEWAY_WORKERS", "3"),
                ("V4_GATEWAY_MODELS", "a=b, c"),
                ("V4_GATEWAY_MAX_TOKENS", "1000"),
                ("V4_GATEWAY_KEEP_ALIVE_SECS", "0.5"),
                ("V4_GATEWAY_API_KEYS", "k1,k2"),
            ],
            &[("listen", "127.0.0.1:0")],
        )
        .unwrap();
        assert_eq!(s.nats_url, "nats://n:1");
        assert_eq!(s.namespace.as_deref(), Some("ns"));
        let c = s.to_config().unwrap();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 0))); // flag over env
        assert_eq!(c.workers, 3);
        assert_eq!(c.models.served("a"), Some("b"));
        assert_eq!(c.models.served("c"), Some("c"));
        assert_eq!(c.max_tokens_limit, 1000);
        assert_eq!(c.keep_alive, Duration::from_millis(500));
        assert_eq!(c.api_keys, ["k1", "k2"]);
        let line = v4_config::effective_line(&s);
        assert!(line.contains("<2 set>") && !line.contains("k1"), "{line}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |key: &str, value: &str| {
            let s = load(&[], &[(key, value)]).unwrap();
            let e = s.to_config().unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        };
        bad("listen", "localhost");
        bad("models", "=b");
        bad("keep_alive_secs", "0");
        bad("bus_timeout_secs", "-1");
        bad("workers", "0");
        bad("liveness_check_ms", "0");
        bad("namespace", "a..b");
        assert_eq!(
            load(&[("V4_NATS_NAMESPACE", "")], &[])
                .unwrap()
                .nats_namespace(),
            None
        );
        let e = load(&[("V4_GATEWAY_MAX_TOKENS_LIMIT", "5")], &[]).unwrap_err();
        assert!(e.contains("V4_GATEWAY_MAX_TOKENS_LIMIT"), "{e}");
        let e = load(&[("V4_GATEWAY_WORKERS", "many")], &[]).unwrap_err();
        assert!(e.contains("workers"), "{e}");
    }
}
