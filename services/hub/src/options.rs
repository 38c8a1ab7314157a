//! [`HubOptions`]: all configuration, resolved once at the binary's edge.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Everything the hub functions need. Library functions take `&HubOptions` and never read the
/// environment; [`HubOptions::from_env`] is meant to be called once, by the binary.
#[derive(Clone)]
pub struct HubOptions {
    /// Hub base URL without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer <token>` to the hub (`HF_TOKEN`, else the token file).
    pub token: Option<String>,
    /// Cache root holding `models--owner--name/` folders (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Use only the local cache; never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Show progress bars on stderr (one per file plus a total). `HF_HUB_DISABLE_PROGRESS_BARS=1`
    /// turns them off; indicatif also hides them when stderr is not a terminal.
    pub progress: bool,
    /// Ask the hub which commit a branch or tag points to even when the cache already has a
    /// complete snapshot for it. Off by default: a cached branch/tag is served without network
    /// (a commit hash never needs the network once cached).
    pub refresh: bool,
    /// Files downloaded concurrently.
    pub max_workers: usize,
    /// Retries of a request (or of a transfer that made no progress) before giving up. A transfer
    /// that receives bytes before failing resumes without using up a retry.
    pub max_retries: u32,
    /// First back-off between retries; doubles each time, capped at 10 s.
    pub retry_base_delay: Duration,
    /// Longest wait for the next bytes of a response (`HF_HUB_DOWNLOAD_TIMEOUT`, seconds).
    pub read_timeout: Duration,
}

impl fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .field("refresh", &self.refresh)
            .field("max_workers", &self.max_workers)
            .field("max_retries", &self.max_retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

impl HubOptions {
    /// Defaults with the given cache root: public hub, no token, online, no progress bars.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        HubOptions {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            cache_dir: cache_dir.into(),
            offline: false,
            progress: false,
            refresh: false,
            max_workers: 8,
            max_retries: 5,
            retry_base_delay: Duration::from_millis(500),
            read_timeout: Duration::from_secs(30),
        }
    }

    /// Reads the process environment once (see [`HubOptions::from_vars`] for the variables).
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// Builds options from a variable lookup, with the same rules as Python's `huggingface_hub`:
    ///
    /// - `HF_ENDPOINT`: hub URL (default `https://huggingface.co`).
    /// - `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`; `HF_HOME` defaults to
    ///   `$XDG_CACHE_HOME/huggingface`, else `$HOME/.cache/huggingface`. A leading `~` is expanded.
    /// - `HF_TOKEN` (or the legacy `HUGGING_FACE_HUB_TOKEN`), else the file `HF_TOKEN_PATH`
    ///   (default `$HF_HOME/token`), unless `HF_HUB_DISABLE_IMPLICIT_TOKEN` is true.
    /// - `HF_HUB_OFFLINE`: true (`1`, `true`, `yes`, `on`) means local cache only.
    /// - `HF_HUB_DISABLE_PROGRESS_BARS`: true turns progress bars off.
    /// - `HF_HUB_DOWNLOAD_TIMEOUT`: read timeout in seconds (default 30).
    ///
    /// Reading the token file is the only I/O.
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Self {
        let text = |name: &str| -> Option<String> {
            get(name)
                .and_then(|v| v.into_string().ok())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let path = |name: &str| -> Option<PathBuf> {
            get(name)
                .filter(|v| !v.is_empty())
                .map(|v| expand_home(PathBuf::from(v), get("HOME")))
        };
        let flag = |name: &str| text(name).is_some_and(|v| is_true(&v));

        let hf_home = path("HF_HOME").unwrap_or_else(|| {
            path("XDG_CACHE_HOME")
                .or_else(|| path("HOME").map(|home| home.join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
        let cache_dir = path("HF_HUB_CACHE")
            .or_else(|| path("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| hf_home.join("hub"));

        let token = if flag("HF_HUB_DISABLE_IMPLICIT_TOKEN") {
            None
        } else {
            text("HF_TOKEN")
                .or_else(|| text("HUGGING_FACE_HUB_TOKEN"))
                .or_else(|| {
                    let file = path("HF_TOKEN_PATH").unwrap_or_else(|| hf_home.join("token"));
                    read_token_file(&file)
                })
        };

        let mut opts = HubOptions::new(cache_dir);
        if let Some(endpoint) = text("HF_ENDPOINT") {
            opts.endpoint = endpoint.trim_end_matches('/').to_string();
        }
        opts.token = token;
        opts.offline = flag("HF_HUB_OFFLINE");
        opts.progress = !flag("HF_HUB_DISABLE_PROGRESS_BARS");
        if let Some(secs) = text("HF_HUB_DOWNLOAD_TIMEOUT")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        {
            opts.read_timeout = Duration::from_secs_f64(secs);
        }
        opts
    }
}

/// Python's `_is_true`.
fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

fn expand_home(path: PathBuf, home: Option<OsString>) -> PathBuf {
    let Some(home) = home.filter(|h| !h.is_empty()) else {
        return path;
    };
    match path.strip_prefix("~") {
        Ok(rest) => Path::new(&home).join(rest),
        Err(_) => path,
    }
}

fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn opts(vars: &[(&str, &str)]) -> HubOptions {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        HubOptions::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_home() {
        let o = opts(&[("HOME", "/home/u")]);
        assert_eq!(o.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(o.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert!(!o.offline);
        assert!(o.progress);
        assert!(o.token.is_none());
    }

    #[test]
    fn cache_precedence() {
        let o = opts(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(o.cache_dir, PathBuf::from("/x/huggingface/hub"));
        let o = opts(&[("HOME", "/h"), ("HF_HOME", "~/hf")]);
        assert_eq!(o.cache_dir, PathBuf::from("/h/hf/hub"));
        let o = opts(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")]);
        assert_eq!(o.cache_dir, PathBuf::from("/old"));
        let o = opts(&[
            ("HF_HOME", "/hf"),
            ("HUGGINGFACE_HUB_CACHE", "/old"),
            ("HF_HUB_CACHE", "/new"),
        ]);
        assert_eq!(o.cache_dir, PathBuf::from("/new"));
    }

    #[test]
    fn flags_endpoint_timeout() {
        let o = opts(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "true"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_HUB_DOWNLOAD_TIMEOUT", "2.5"),
        ]);
        assert!(o.offline);
        assert!(!o.progress);
        assert_eq!(o.endpoint, "http://127.0.0.1:9");
        assert_eq!(o.read_timeout, Duration::from_millis(2500));
        let o = opts(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_OFFLINE", "0"),
            ("HF_HUB_DOWNLOAD_TIMEOUT", "nan"),
        ]);
        assert!(!o.offline);
        assert_eq!(o.read_timeout, Duration::from_secs(30));
    }

    #[test]
    fn token_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_string_lossy().to_string();
        std::fs::write(dir.path().join("token"), "hf_file\n").expect("write token");
        assert_eq!(
            opts(&[("HF_HOME", &home)]).token.as_deref(),
            Some("hf_file")
        );
        assert_eq!(
            opts(&[("HF_HOME", &home), ("HF_TOKEN", " hf_env ")])
                .token
                .as_deref(),
            Some("hf_env")
        );
        let other = dir.path().join("other");
        std::fs::write(&other, "hf_path").expect("write token");
        let other = other.to_string_lossy().to_string();
        assert_eq!(
            opts(&[("HF_HOME", &home), ("HF_TOKEN_PATH", &other)])
                .token
                .as_deref(),
            Some("hf_path")
        );
        assert!(
            opts(&[
                ("HF_HOME", &home),
                ("HF_TOKEN", "x"),
                ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "yes")
            ])
            .token
            .is_none()
        );
        assert!(!format!("{:?}", opts(&[("HF_TOKEN", "secret")])).contains("secret"));
    }
}
