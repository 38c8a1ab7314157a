//! [`TokenizerSettings`]: the tokenizer service's configuration keys (defaults < file <
//! environment < flags, resolved by `v4_config::load`), and their conversion into
//! [`ServiceOptions`].

use std::time::Duration;

use super::ServiceOptions;

v4_config::settings! {
    /// The tokenizer service: encoding, counting and decoding for the mesh over NATS.
    pub struct TokenizerSettings("tokenizer") {
        /// NATS server to serve on.
        nats_url: String = "nats://127.0.0.1:4222".into(); env = "V4_NATS_URL",
        /// Subject namespace: serve `<namespace>.v4.v1.tokenizer.*` (several stacks on one
        /// NATS).
        namespace: Option<String> = None; env = "V4_NATS_NAMESPACE",
        /// The model's tokenizer.json, a model directory holding one, or a Hugging Face repo id
        /// (`deepseek-ai/DeepSeek-V4-Flash`; fetched into the HF cache, `HF_*` variables
        /// honoured). Required.
        tokenizer: String = String::new(); env = "V4_TOKENIZER",
        /// Instance name; a random suffix makes the instance id unique.
        instance: String = "tokenizer".into(),
        /// Seconds an idle streaming-decode session is kept.
        session_ttl_secs: u64 = 300,
        /// Open streaming-decode sessions per instance.
        max_sessions: usize = 100_000,
        /// Encode/count/decode requests computed at once.
        max_in_flight: usize = 256,
        /// Seconds to wait for in-flight requests when shutting down.
        drain_timeout_secs: u64 = 30,
    }
}

impl TokenizerSettings {
    /// The [`ServiceOptions`] these settings describe.
    pub fn to_options(&self) -> ServiceOptions {
        ServiceOptions {
            instance_name: self.instance.clone(),
            session_ttl: Duration::from_secs(self.session_ttl_secs),
            max_sessions: self.max_sessions,
            max_in_flight: self.max_in_flight,
        }
    }

    /// The subject namespace, if one is set (an empty value counts as none).
    pub fn nats_namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|n| !n.is_empty())
    }

    /// The tokenizer to load (`tokenizer`): an error when it is not set.
    pub fn tokenizer_source(&self) -> Result<&str, String> {
        match self.tokenizer.trim() {
            "" => Err(
                "tokenizer is not set: give --tokenizer PATH_OR_REPO, V4_TOKENIZER, or \
                 `tokenizer` in the config file (a tokenizer.json, a model directory or a \
                 Hugging Face repo id)"
                    .into(),
            ),
            t => Ok(t),
        }
    }

    /// Checks the keys that have no usable default or a syntax (the tokenizer is set, the
    /// namespace is a valid subject prefix); an error names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        self.tokenizer_source()?;
        if let Some(ns) = self.nats_namespace() {
            v4_bus::subject::check_publish(ns).map_err(|e| format!("namespace = {ns:?}: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use v4_config::{Layers, Settings};

    use super::*;

    fn load(env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<TokenizerSettings, String> {
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
        v4_config::load::<TokenizerSettings>(&layers).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_service_option_defaults() {
        let o = TokenizerSettings::default().to_options();
        let d = ServiceOptions::default();
        let ServiceOptions {
            instance_name,
            session_ttl,
            max_sessions,
            max_in_flight,
        } = d;
        assert_eq!(o.instance_name, instance_name);
        assert_eq!(o.session_ttl, session_ttl);
        assert_eq!(o.max_sessions, max_sessions);
        assert_eq!(o.max_in_flight, max_in_flight);
    }

    #[test]
    fn environment_names_of_today_keep_working() {
        let env: BTreeMap<_, _> = TokenizerSettings::keys()
            .into_iter()
            .map(|k| (k.key, k.env))
            .collect();
        assert_eq!(env["nats_url"], "V4_NATS_URL");
        assert_eq!(env["namespace"], "V4_NATS_NAMESPACE");
        assert_eq!(env["tokenizer"], "V4_TOKENIZER");
        assert_eq!(env["instance"], "V4_TOKENIZER_INSTANCE");
        assert_eq!(env["session_ttl_secs"], "V4_TOKENIZER_SESSION_TTL_SECS");
        assert_eq!(env["max_sessions"], "V4_TOKENIZER_MAX_SESSIONS");
        assert_eq!(env["max_in_flight"], "V4_TOKENIZER_MAX_IN_FLIGHT");
        assert_eq!(env["drain_timeout_secs"], "V4_TOKENIZER_DRAIN_TIMEOUT_SECS");

        let s = load(
            &[
                ("V4_TOKENIZER", "/models/tokenizer.json"),
                ("V4_TOKENIZER_INSTANCE", "tok-a"),
                ("V4_TOKENIZER_SESSION_TTL_SECS", "60"),
                ("V4_TOKENIZER_MAX_IN_FLIGHT", "8"),
                ("V4_NATS_NAMESPACE", ""),
            ],
            &[("max_in_flight", "4")],
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.tokenizer_source().unwrap(), "/models/tokenizer.json");
        assert_eq!(s.nats_namespace(), None);
        let o = s.to_options();
        assert_eq!(o.instance_name, "tok-a");
        assert_eq!(o.session_ttl, Duration::from_secs(60));
        assert_eq!(o.max_in_flight, 4); // flag over env
    }

    #[test]
    fn missing_tokenizer_and_bad_values_are_clear_errors() {
        let e = TokenizerSettings::default().validate().unwrap_err();
        assert!(e.contains("tokenizer") && e.contains("V4_TOKENIZER"), "{e}");
        let s = load(&[("V4_TOKENIZER", "t.json")], &[("namespace", "a b")]).unwrap();
        assert!(s.validate().unwrap_err().contains("namespace"));
        let e = load(&[("V4_TOKENIZER_INSTANC", "x")], &[]).unwrap_err();
        assert!(e.contains("V4_TOKENIZER_INSTANC"), "{e}");
        let e = load(&[("V4_TOKENIZER_MAX_SESSIONS", "lots")], &[]).unwrap_err();
        assert!(e.contains("max_sessions"), "{e}");
    }
}
