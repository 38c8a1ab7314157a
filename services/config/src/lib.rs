//! Layered configuration, the same for every service: **built-in defaults < file < environment
//! < flags**, resolved once at start-up into one typed settings struct per service.
//!
//! * A service declares its settings with [`settings!`]: one documented field per key with its
//!   default. That declaration is the only place a key exists: the struct, its defaults, its
//!   environment variable and its row in `docs/CONFIG.md` ([`markdown`]) all come from it.
//! * The file (`--config FILE` or `V4_CONFIG`): TOML, JSON or YAML by extension, keys as in
//!   the struct. A key the service does not have is an error naming the file and the key.
//! * The environment: `V4_<SERVICE>_<KEY>` in capitals (`V4_GATEWAY_LISTEN`), or the name a
//!   key declares (`V4_NATS_URL` is shared by all services). A variable with the service's
//!   prefix that names no key is an error (a typo never passes silently). List keys take
//!   comma-separated values.
//! * Flags: each binary maps its flags to keys ([`Layers::flag`]) and takes `--set KEY=VALUE`.
//! * [`effective_line`] renders the result as one log line with secret keys masked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

#[doc(hidden)]
pub use serde_json as __json;

/// One configuration key of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    pub key: &'static str,
    /// Its environment variable.
    pub env: String,
    /// The Rust type (as written in the declaration).
    pub ty: &'static str,
    /// The built-in default, as JSON.
    pub default: String,
    pub doc: String,
    /// Masked in logs.
    pub secret: bool,
}

impl KeyDoc {
    fn is_list(&self) -> bool {
        self.ty.starts_with("Vec")
    }
}

/// A service's settings struct (made by [`settings!`]).
pub trait Settings: Serialize + DeserializeOwned + Default {
    /// The service name (`gateway`): the environment prefix is `V4_GATEWAY_`.
    const SERVICE: &'static str;
    /// One line on what the service is (the heading text in `docs/CONFIG.md`).
    const ABOUT: &'static str;
    fn keys() -> Vec<KeyDoc>;
}

/// The environment variable of `key` of `service`, unless the key declares its own.
pub fn env_name(service: &str, key: &str, declared: Option<&str>) -> String {
    match declared {
        Some(d) => d.to_string(),
        None => format!("V4_{}_{}", service, key).to_ascii_uppercase(),
    }
}

#[doc(hidden)]
pub fn json_default<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

/// Why the configuration cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {file}: {message}")]
    File { file: PathBuf, message: String },
    #[error(
        "environment variable {var} is not a configuration key of the {service} (its keys: {known})"
    )]
    UnknownEnv {
        var: String,
        service: &'static str,
        known: String,
    },
    #[error("{origin}: unknown configuration key {key:?} of the {service} (its keys: {known})")]
    UnknownKey {
        origin: String,
        key: String,
        service: &'static str,
        known: String,
    },
    #[error("invalid configuration of the {service}: {message}")]
    Invalid {
        service: &'static str,
        message: String,
    },
}

/// The layers above the defaults.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub file: Option<PathBuf>,
    /// The process environment (or a test's).
    pub env: BTreeMap<String, String>,
    /// `(key, value)` from flags and `--set`, in order (later wins).
    pub flags: Vec<(String, String)>,
}

impl Layers {
    /// The file (if any) and the process environment.
    pub fn from_process(file: Option<PathBuf>) -> Layers {
        Layers {
            file,
            env: std::env::vars().collect(),
            flags: Vec::new(),
        }
    }

    /// A flag's value for `key`, when the flag was given.
    pub fn flag(&mut self, key: &str, value: Option<impl ToString>) -> &mut Layers {
        if let Some(v) = value {
            self.flags.push((key.to_string(), v.to_string()));
        }
        self
    }

    /// `--set KEY=VALUE` entries.
    pub fn sets(&mut self, sets: &[String]) -> Result<&mut Layers, String> {
        for s in sets {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("--set {s:?}: expected KEY=VALUE"))?;
            self.flags.push((k.trim().to_string(), v.to_string()));
        }
        Ok(self)
    }
}

fn known(keys: &[KeyDoc]) -> String {
    keys.iter().map(|k| k.key).collect::<Vec<_>>().join(", ")
}

/// A string value for `key`: a JSON array for list keys (comma-separated), else the string
/// (the config crate converts it to the field's type).
fn layer_value(k: &KeyDoc, raw: &str) -> Value {
    if k.is_list() {
        Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )
    } else {
        Value::String(raw.to_string())
    }
}

fn json_source(
    map: Map<String, Value>,
) -> config::File<config::FileSourceString, config::FileFormat> {
    config::File::from_str(&Value::Object(map).to_string(), config::FileFormat::Json)
}

/// Resolves `S` from its defaults and `layers`.
pub fn load<S: Settings>(layers: &Layers) -> Result<S, ConfigError> {
    let keys = S::keys();
    let service = S::SERVICE;
    let invalid = |message: String| ConfigError::Invalid { service, message };

    let defaults = serde_json::to_value(S::default()).map_err(|e| invalid(e.to_string()))?;
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        &defaults.to_string(),
        config::FileFormat::Json,
    ));

    if let Some(file) = &layers.file {
        let format = match file.extension().and_then(|e| e.to_str()) {
            Some("toml") => config::FileFormat::Toml,
            Some("json") => config::FileFormat::Json,
            Some("yaml" | "yml") => config::FileFormat::Yaml,
            _ => {
                return Err(ConfigError::File {
                    file: file.clone(),
                    message: "unknown format: the name must end in .toml, .json, .yaml or .yml"
                        .into(),
                });
            }
        };
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        // Unknown keys are caught here, with the file's name.
        let parsed = config::Config::builder()
            .add_source(config::File::from_str(&text, format))
            .build()
            .map_err(|e| ConfigError::File {
                file: file.clone(),
                message: e.to_string(),
            })?;
        let table = parsed
            .try_deserialize::<BTreeMap<String, config::Value>>()
            .map_err(|e| ConfigError::File {
                file: file.clone(),
                message: e.to_string(),
            })?;
        if let Some(bad) = table
            .keys()
            .find(|k| !keys.iter().any(|d| d.key == k.as_str()))
        {
            return Err(ConfigError::UnknownKey {
                origin: format!("config file {}", file.display()),
                key: bad.clone(),
                service,
                known: known(&keys),
            });
        }
        builder = builder.add_source(config::File::from_str(&text, format));
    }

    let prefix = format!("V4_{}_", service.to_ascii_uppercase());
    for var in layers.env.keys() {
        if var.starts_with(&prefix) && !keys.iter().any(|k| &k.env == var) {
            return Err(ConfigError::UnknownEnv {
                var: var.clone(),
                service,
                known: keys
                    .iter()
                    .map(|k| k.env.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut env = Map::new();
    for k in &keys {
        if let Some(v) = layers.env.get(&k.env) {
            env.insert(k.key.to_string(), layer_value(k, v));
        }
    }
    builder = builder.add_source(json_source(env));

    let mut flags = Map::new();
    for (key, v) in &layers.flags {
        let k = keys
            .iter()
            .find(|d| d.key == key)
            .ok_or_else(|| ConfigError::UnknownKey {
                origin: "flags".into(),
                key: key.clone(),
                service,
                known: known(&keys),
            })?;
        flags.insert(key.clone(), layer_value(k, v));
    }
    builder = builder.add_source(json_source(flags));

    builder
        .build()
        .and_then(|c| c.try_deserialize::<S>())
        .map_err(|e| invalid(e.to_string()))
}

/// `S` as one line of JSON with secret keys masked (`"***"`, or the number of entries of a
/// secret list).
pub fn effective_line<S: Settings>(s: &S) -> String {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for k in S::keys().iter().filter(|k| k.secret) {
            if let Some(x) = map.get_mut(k.key) {
                *x = match x {
                    Value::Array(a) => Value::String(format!("<{} set>", a.len())),
                    Value::Null => Value::Null,
                    Value::String(s) if s.is_empty() => Value::String(String::new()),
                    _ => Value::String("***".into()),
                };
            }
        }
    }
    format!("{} config: {v}", S::SERVICE)
}

/// The `docs/CONFIG.md` section of `S`.
pub fn markdown<S: Settings>() -> String {
    let mut out = format!(
        "## {}\n\n{}\n\n| key | environment | type | default | meaning |\n|---|---|---|---|---|\n",
        S::SERVICE,
        one_line(S::ABOUT)
    );
    for k in S::keys() {
        let doc = one_line(&k.doc).replace('|', "\\|");
        let default = if k.secret && k.default != "[]" && k.default != "null" {
            "(secret)".to_string()
        } else {
            format!("`{}`", k.default.replace('|', "\\|"))
        };
        out += &format!(
            "| `{}` | `{}` | `{}` | {} | {} |\n",
            k.key,
            k.env,
            k.ty.replace(' ', ""),
            default,
            doc.trim()
        );
    }
    out.push('\n');
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Path of a config file from `--config` or `V4_CONFIG`.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("V4_CONFIG").map(PathBuf::from))
}

/// Declares a service's settings struct: every key documented, with its default, an optional
/// own environment variable and an optional `secret` mark.
///
/// ```
/// v4_config::settings! {
///     /// The demo service.
///     pub struct DemoSettings("demo") {
///         /// Where to listen.
///         listen: String = "127.0.0.1:8000".into(),
///         /// The shared NATS URL.
///         nats_url: String = "nats://127.0.0.1:4222".into(); env = "V4_NATS_URL",
///         /// API keys.
///         api_keys: Vec<String> = vec![]; secret = true,
///     }
/// }
/// assert_eq!(<DemoSettings as v4_config::Settings>::keys()[1].env, "V4_NATS_URL");
/// ```
#[macro_export]
macro_rules! settings {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident ($service:literal) {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr $(; env = $env:literal)? $(; secret = $secret:literal)? ,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $crate::Settings for $name {
            const SERVICE: &'static str = $service;
            const ABOUT: &'static str = concat!($($sdoc),*);
            fn keys() -> Vec<$crate::KeyDoc> {
                let d = <Self as Default>::default();
                vec![$(
                    $crate::KeyDoc {
                        key: stringify!($field),
                        env: $crate::env_name($service, stringify!($field), None $(.or(Some($env)))?),
                        ty: stringify!($ty),
                        default: $crate::json_default(&d.$field),
                        doc: concat!($($doc, " "),*).trim().to_string(),
                        secret: false $(|| $secret)?,
                    },
                )*]
            }
        }
    };
}

#[cfg(test)]
mod tests;
