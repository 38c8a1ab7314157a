//! [`HubError`]: every variant names the repo, file or path concerned and, where there is one,
//! the fix.

use std::path::PathBuf;

/// Errors of the hub functions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Not of the form `owner/name` (optionally `@revision`).
    #[error("'{spec}' is not a Hugging Face repo id (expected owner/name)")]
    InvalidRepoId { spec: String },

    /// A revision or file name that cannot be used safely (empty, `..`, absolute, control chars).
    #[error("invalid {what} '{value}' for {repo}")]
    InvalidName {
        repo: String,
        what: &'static str,
        value: String,
    },

    /// The spec is neither an existing path nor a repo id.
    #[error("local path '{}' does not exist (and '{spec}' is not a repo id owner/name)", path.display())]
    LocalPathNotFound { spec: String, path: PathBuf },

    /// A local spec that must be a directory is a file.
    #[error("'{}' is not a directory", path.display())]
    NotADirectory { path: PathBuf },

    /// A local directory lacks the requested file.
    #[error("'{file}' not found in local directory '{}'", dir.display())]
    FileNotInDir { dir: PathBuf, file: String },

    /// The hub does not know the repository (or hides it: private or gated without a token).
    #[error(
        "repository '{repo}' not found on {endpoint}: check the id{local}; a private or gated repo also needs HF_TOKEN",
        local = if *.maybe_local_path { " (it is not an existing local path either)" } else { "" }
    )]
    RepoNotFound {
        repo: String,
        endpoint: String,
        maybe_local_path: bool,
    },

    /// The repository exists but the revision (branch, tag or commit) does not.
    #[error("revision '{revision}' not found in repository '{repo}'")]
    RevisionNotFound { repo: String, revision: String },

    /// The revision exists but the file does not.
    #[error("file '{file}' not found in repository '{repo}' at revision '{revision}'")]
    FileNotFound {
        repo: String,
        revision: String,
        file: String,
    },

    /// An include pattern matched no file of the revision.
    #[error("no file of '{repo}' at revision '{revision}' matches '{pattern}'")]
    NoMatch {
        repo: String,
        revision: String,
        pattern: String,
    },

    /// HTTP 401 or 403.
    #[error("{}", auth_message(.repo, .file.as_deref(), *.status, *.token_sent, .message.as_deref()))]
    Auth {
        repo: String,
        file: Option<String>,
        status: u16,
        token_sent: bool,
        message: Option<String>,
    },

    /// Offline mode and the cache lacks what is needed.
    #[error(
        "offline mode (HF_HUB_OFFLINE=1): {} of '{repo}' at revision '{revision}' is not in the cache {}; \
         unset HF_HUB_OFFLINE to download it, or pre-download it with `v4convert download {repo}`",
        missing_what(.file.as_deref(), *.more), cache_dir.display()
    )]
    OfflineNotCached {
        repo: String,
        revision: String,
        /// The first missing file (or the include pattern nothing cached matches); `None` when
        /// the revision itself is not cached.
        file: Option<String>,
        /// How many more files are missing.
        more: usize,
        cache_dir: PathBuf,
    },

    /// Offline mode and a cached file has the wrong size.
    #[error(
        "cached '{file}' of '{repo}' is corrupt ({reason}) and offline mode (HF_HUB_OFFLINE=1) forbids \
         downloading it again; unset HF_HUB_OFFLINE"
    )]
    CorruptCache {
        repo: String,
        file: String,
        reason: String,
    },

    /// The downloaded file does not have the size the hub reported. Nothing is left in the cache.
    #[error(
        "'{file}' of '{repo}': size mismatch, the hub reports {expected} bytes but {actual} were received"
    )]
    SizeMismatch {
        repo: String,
        file: String,
        expected: u64,
        actual: u64,
    },

    /// The downloaded file does not have the hash the hub reported. Nothing is left in the cache.
    #[error(
        "'{file}' of '{repo}': {algorithm} mismatch, the hub reports {expected} but the download hashes to {actual}"
    )]
    HashMismatch {
        repo: String,
        file: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },

    /// Any other unsuccessful HTTP status (after retries for 429 and 5xx).
    #[error("HTTP {status} from {url} ({}){}", what(.repo, .file.as_deref()), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http {
        repo: String,
        file: Option<String>,
        status: u16,
        url: String,
        message: Option<String>,
    },

    /// Transport failure after all retries. A partial file stays as `<blob>.incomplete` and the
    /// next download resumes it.
    #[error("network error fetching {} from {url} (gave up after {attempts} attempts): {source}", what(.repo, .file.as_deref()))]
    Network {
        repo: String,
        file: Option<String>,
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },

    /// A response that does not have the shape the hub's API documents.
    #[error("unexpected response from {url} ({}): {reason}", what(.repo, .file.as_deref()))]
    BadResponse {
        repo: String,
        file: Option<String>,
        url: String,
        reason: String,
    },

    /// The HTTP client could not be built (bad endpoint, TLS setup).
    #[error("cannot set up the HTTP client for endpoint '{endpoint}': {source}")]
    Client {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },

    /// Filesystem error on a path of the cache or of a local model directory.
    #[error("{action} '{}': {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The blocking wrappers could not start their runtime.
    #[error("cannot start a tokio runtime to fetch '{spec}': {source}")]
    Runtime {
        spec: String,
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        HubError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// HTTP 401/403 (or the hub's RepoNotFound hidden behind a 401).
    pub fn is_auth(&self) -> bool {
        matches!(self, HubError::Auth { .. })
    }

    /// Offline mode and the cache is missing something.
    pub fn is_offline_miss(&self) -> bool {
        matches!(
            self,
            HubError::OfflineNotCached { .. } | HubError::CorruptCache { .. }
        )
    }
}

fn what(repo: &str, file: Option<&str>) -> String {
    match file {
        Some(file) => format!("'{file}' of '{repo}'"),
        None => format!("'{repo}'"),
    }
}

fn missing_what(file: Option<&str>, more: usize) -> String {
    match (file, more) {
        (None, _) => "the revision".to_string(),
        (Some(file), 0) => format!("'{file}'"),
        (Some(file), n) => format!("'{file}' (and {n} more files)"),
    }
}

fn auth_message(
    repo: &str,
    file: Option<&str>,
    status: u16,
    token_sent: bool,
    message: Option<&str>,
) -> String {
    let target = what(repo, file);
    let server = message
        .map(|m| format!(" (hub says: {m})"))
        .unwrap_or_default();
    match (status, token_sent) {
        (403, _) => format!(
            "access to {target} is forbidden (HTTP 403){server}: the repo may be gated; accept its terms on the hub \
             with the account whose token is in HF_TOKEN, or set HF_TOKEN to a token with read access"
        ),
        (_, false) => format!(
            "authentication required for {target} (HTTP {status}){server}: set HF_TOKEN to a Hugging Face token \
             with read access (and check the repo id)"
        ),
        (_, true) => format!(
            "the token was rejected for {target} (HTTP {status}){server}: check HF_TOKEN (expired, or no access \
             to this repo) and the repo id"
        ),
    }
}
