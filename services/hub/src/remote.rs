//! The hub's HTTP API, as Python `huggingface_hub` uses it:
//!
//! - `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`: commit (`sha`) and the file
//!   list (`siblings`: `rfilename`, `size`, `blobId`, `lfs.{sha256,size}`).
//! - `GET {endpoint}/{repo}/resolve/{commit}/{file}` (redirects followed, `Range: bytes=N-` to
//!   resume): the content.
//! - `HEAD` of the same URL (redirects not followed), only when the listing lacks a file's
//!   blob id: `x-linked-etag`/`etag`, `x-linked-size`/`content-length`.
//!
//! Requests carry `Authorization: Bearer <token>` when a token is set (reqwest drops it when a
//! redirect leaves the hub's host, e.g. to the CDN). Connection errors, timeouts, 408, 429 and
//! 5xx are retried with exponential back-off.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, LOCATION, RANGE, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cache::{Entry, is_commit, is_hex, safe_blob_name, safe_rel_path};
use crate::progress::FileBar;
use crate::{HubError, HubOptions};

const USER_AGENT: &str = concat!("v4-hub/", env!("CARGO_PKG_VERSION"), "; hf_hub-compatible");
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a request is about, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub repo: &'a str,
    pub revision: &'a str,
    pub file: Option<&'a str>,
}

pub(crate) struct Remote<'a> {
    http: reqwest::Client,
    no_redirect: reqwest::Client,
    opts: &'a HubOptions,
}

/// Repo info: the commit a revision resolves to and its files.
pub(crate) struct Listing {
    pub commit: String,
    pub files: Vec<Entry>,
}

#[derive(Deserialize)]
struct InfoJson {
    sha: Option<String>,
    siblings: Option<Vec<SiblingJson>>,
}

#[derive(Deserialize)]
struct SiblingJson {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<LfsJson>,
}

#[derive(Deserialize)]
struct LfsJson {
    /// `sha256` in repo info; the tree API calls it `oid`.
    #[serde(alias = "oid")]
    sha256: Option<String>,
    size: Option<u64>,
}

impl SiblingJson {
    fn into_entry(self) -> Entry {
        match self.lfs {
            Some(lfs) => {
                let sha256 = lfs
                    .sha256
                    .map(|s| s.to_ascii_lowercase())
                    .filter(|s| is_hex(s, 64));
                Entry {
                    path: self.rfilename,
                    size: lfs.size.or(self.size),
                    etag: sha256.clone(),
                    sha256,
                    git_sha1: None,
                }
            }
            None => {
                let git = self
                    .blob_id
                    .map(|s| s.to_ascii_lowercase())
                    .filter(|s| is_hex(s, 40));
                Entry {
                    path: self.rfilename,
                    size: self.size,
                    etag: git.clone(),
                    sha256: None,
                    git_sha1: git,
                }
            }
        }
    }
}

fn transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn transient_error(e: &reqwest::Error) -> bool {
    e.is_timeout() || e.is_connect() || e.is_request() || e.is_body()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when `keep_slash`).
pub(crate) fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn normalize_etag(raw: &str) -> String {
    raw.strip_prefix("W/")
        .unwrap_or(raw)
        .trim_matches('"')
        .to_string()
}

/// Start offset of a `Content-Range: bytes a-b/total` header.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes of the bytes written so far, for the checks the listing allows.
struct Hashers {
    sha256: Option<Sha256>,
    git: Option<sha1_smol::Sha1>,
}

impl Hashers {
    fn new(entry: &Entry) -> Self {
        let git = match (&entry.git_sha1, entry.size) {
            (Some(_), Some(size)) => {
                let mut h = sha1_smol::Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                Some(h)
            }
            _ => None,
        };
        Hashers {
            sha256: entry.sha256.as_ref().map(|_| Sha256::new()),
            git,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.git {
            h.update(bytes);
        }
    }

    /// The first failed check as (algorithm, expected, actual).
    fn check(self, entry: &Entry) -> Option<(&'static str, String, String)> {
        if let (Some(h), Some(expected)) = (self.sha256, &entry.sha256) {
            let actual = hex(h.finalize().as_slice());
            if !actual.eq_ignore_ascii_case(expected) {
                return Some(("sha256", expected.clone(), actual));
            }
        }
        if let (Some(h), Some(expected)) = (self.git, &entry.git_sha1) {
            let actual = hex(&h.digest().bytes());
            if !actual.eq_ignore_ascii_case(expected) {
                return Some(("git blob sha1", expected.clone(), actual));
            }
        }
        None
    }
}

impl<'a> Remote<'a> {
    pub(crate) fn new(opts: &'a HubOptions) -> Result<Self, HubError> {
        let build = |redirects: bool| {
            let mut b = reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(opts.read_timeout);
            if !redirects {
                b = b.redirect(reqwest::redirect::Policy::none());
            }
            b.build().map_err(|source| HubError::Client {
                endpoint: opts.endpoint.clone(),
                source,
            })
        };
        Ok(Remote {
            http: build(true)?,
            no_redirect: build(false)?,
            opts,
        })
    }

    fn auth(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.opts.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.opts
            .retry_base_delay
            .saturating_mul(factor)
            .min(MAX_BACKOFF)
    }

    pub(crate) fn resolve_url(&self, repo: &str, commit: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.opts.endpoint,
            encode(commit, false),
            encode(file, true)
        )
    }

    /// Sends with retries on transient failures; returns the first non-transient response (or
    /// the last one once retries are used up).
    async fn send(
        &self,
        ctx: Ctx<'_>,
        url: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, HubError> {
        let mut failures = 0u32;
        loop {
            match make().send().await {
                Ok(resp) if transient_status(resp.status()) && failures < self.opts.max_retries => {
                    failures += 1;
                    let wait = header(resp.headers(), RETRY_AFTER.as_str())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(60)))
                        .unwrap_or_else(|| self.backoff(failures));
                    tokio::time::sleep(wait).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if transient_error(&e) && failures < self.opts.max_retries => {
                    failures += 1;
                    tokio::time::sleep(self.backoff(failures)).await;
                }
                Err(source) => {
                    return Err(HubError::Network {
                        repo: ctx.repo.to_string(),
                        file: ctx.file.map(str::to_string),
                        url: url.to_string(),
                        attempts: failures + 1,
                        source,
                    });
                }
            }
        }
    }

    /// Maps an unsuccessful response to the error that says what to do.
    async fn status_error(&self, ctx: Ctx<'_>, url: &str, resp: Response) -> HubError {
        let status = resp.status();
        let headers = resp.headers().clone();
        let code = header(&headers, "x-error-code").map(str::to_string);
        let body = resp.bytes().await.unwrap_or_default();
        let message = header(&headers, "x-error-message")
            .map(str::to_string)
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            })
            .or_else(|| {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                (!text.is_empty()).then(|| text.chars().take(300).collect())
            });
        let repo = ctx.repo.to_string();
        let revision = ctx.revision.to_string();
        let file = ctx.file.map(str::to_string);
        let repo_not_found = || HubError::RepoNotFound {
            repo: repo.clone(),
            endpoint: self.opts.endpoint.clone(),
            maybe_local_path: false,
        };
        match (code.as_deref(), status.as_u16()) {
            (Some("RepoNotFound"), _) => repo_not_found(),
            (Some("RevisionNotFound"), _) => HubError::RevisionNotFound { repo, revision },
            (Some("EntryNotFound"), _) => HubError::FileNotFound {
                repo,
                revision,
                file: file.unwrap_or_default(),
            },
            (Some("GatedRepo"), _) | (_, 401 | 403) => HubError::Auth {
                repo,
                file,
                status: status.as_u16(),
                token_sent: self.opts.token.is_some(),
                message,
            },
            (_, 404) => match file {
                Some(file) => HubError::FileNotFound {
                    repo,
                    revision,
                    file,
                },
                None if ctx.revision == "main" => repo_not_found(),
                None => HubError::RevisionNotFound { repo, revision },
            },
            _ => HubError::Http {
                repo,
                file,
                status: status.as_u16(),
                url: url.to_string(),
                message,
            },
        }
    }

    /// Repo info at a revision: its commit and files.
    pub(crate) async fn listing(&self, repo: &str, revision: &str) -> Result<Listing, HubError> {
        let ctx = Ctx {
            repo,
            revision,
            file: None,
        };
        let url = format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.opts.endpoint,
            encode(revision, false)
        );
        let resp = self
            .send(ctx, &url, || self.auth(self.http.get(&url)))
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(ctx, &url, resp).await);
        }
        let bad = |reason: String| HubError::BadResponse {
            repo: repo.to_string(),
            file: None,
            url: url.clone(),
            reason,
        };
        let body = resp.bytes().await.map_err(|source| HubError::Network {
            repo: repo.to_string(),
            file: None,
            url: url.clone(),
            attempts: 1,
            source,
        })?;
        let info: InfoJson = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("repo info is not the expected JSON: {e}")))?;
        let commit = info
            .sha
            .map(|s| s.to_ascii_lowercase())
            .filter(|s| is_commit(s))
            .ok_or_else(|| bad("repo info has no commit sha".to_string()))?;
        let siblings = info
            .siblings
            .ok_or_else(|| bad("repo info has no file list (siblings)".to_string()))?;
        let mut files = Vec::with_capacity(siblings.len());
        for s in siblings {
            if !safe_rel_path(&s.rfilename) {
                return Err(bad(format!(
                    "unsafe file name '{}' in the file list",
                    s.rfilename
                )));
            }
            files.push(s.into_entry());
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        Ok(Listing { commit, files })
    }

    /// Fills in blob name, size and expected hash from a HEAD of the resolve URL (redirects not
    /// followed: the hub's own response carries `x-linked-etag` / `x-linked-size`).
    pub(crate) async fn head_entry(
        &self,
        repo: &str,
        commit: &str,
        entry: &Entry,
    ) -> Result<Entry, HubError> {
        let ctx = Ctx {
            repo,
            revision: commit,
            file: Some(&entry.path),
        };
        let start = self.resolve_url(repo, commit, &entry.path);
        let mut url = start.clone();
        let mut resp = None;
        for _ in 0..5 {
            let r = self
                .send(ctx, &url, || self.auth(self.no_redirect.head(&url)))
                .await?;
            let relative = r.status().is_redirection()
                && header(r.headers(), LOCATION.as_str())
                    .is_some_and(|l| l.starts_with('/') && !l.starts_with("//"));
            if relative {
                let next =
                    header(r.headers(), LOCATION.as_str()).and_then(|l| r.url().join(l).ok());
                if let Some(next) = next {
                    url = next.to_string();
                    continue;
                }
            }
            resp = Some(r);
            break;
        }
        let bad = |reason: &str| HubError::BadResponse {
            repo: repo.to_string(),
            file: Some(entry.path.clone()),
            url: start.clone(),
            reason: reason.to_string(),
        };
        let resp = resp.ok_or_else(|| bad("too many redirects"))?;
        let status = resp.status();
        if !status.is_success() && !status.is_redirection() {
            return Err(self.status_error(ctx, &url, resp).await);
        }
        let headers = resp.headers();
        let linked = header(headers, "x-linked-etag");
        let etag = linked
            .or_else(|| header(headers, ETAG.as_str()))
            .map(normalize_etag)
            .filter(|e| safe_blob_name(e))
            .ok_or_else(|| bad("no usable ETag header"))?;
        let size = header(headers, "x-linked-size")
            .or_else(|| header(headers, "content-length"))
            .and_then(|v| v.parse::<u64>().ok())
            .or(entry.size);
        let lower = etag.to_ascii_lowercase();
        let (sha256, git_sha1) = if linked.is_some() && is_hex(&lower, 64) {
            (Some(lower), None)
        } else if linked.is_none() && is_hex(&lower, 40) {
            (None, Some(lower))
        } else {
            (None, None)
        };
        Ok(Entry {
            path: entry.path.clone(),
            size,
            etag: Some(etag),
            sha256: entry.sha256.clone().or(sha256),
            git_sha1: entry.git_sha1.clone().or(git_sha1),
        })
    }

    /// Downloads one file into `part` (a `<blob>.incomplete`), continuing whatever `part`
    /// already holds with a `Range` request, then checks size and hash. On a mismatch `part` is
    /// deleted; on a transport failure it is kept for the next attempt.
    pub(crate) async fn fetch(
        &self,
        repo: &str,
        commit: &str,
        entry: &Entry,
        part: &Path,
        bar: &FileBar,
    ) -> Result<(), HubError> {
        let ctx = Ctx {
            repo,
            revision: commit,
            file: Some(&entry.path),
        };
        let url = self.resolve_url(repo, commit, &entry.path);
        let io = |action: &'static str| move |e: std::io::Error| HubError::io(action, part, e);
        let discard = |err: HubError| {
            let _ = std::fs::remove_file(part);
            err
        };
        let size_mismatch = |actual: u64| HubError::SizeMismatch {
            repo: repo.to_string(),
            file: entry.path.clone(),
            expected: entry.size.unwrap_or(0),
            actual,
        };

        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(part)
            .map_err(io("cannot open"))?;
        let mut len = file.metadata().map_err(io("cannot stat"))?.len();
        if entry.size.is_some_and(|size| len > size) {
            file.set_len(0).map_err(io("cannot truncate"))?;
            len = 0;
        }
        // Resume: hash what is already there.
        let mut hashers = Hashers::new(entry);
        if len > 0 {
            file.seek(SeekFrom::Start(0)).map_err(io("cannot read"))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut read = 0u64;
            while read < len {
                let n = file.read(&mut buf).map_err(io("cannot read"))?;
                if n == 0 {
                    break;
                }
                hashers.update(&buf[..n]);
                read += n as u64;
            }
            len = read;
            bar.inc(len);
        }
        file.seek(SeekFrom::Start(len)).map_err(io("cannot seek"))?;

        let mut failures = 0u32;
        loop {
            if entry.size == Some(len) {
                break;
            }
            let range = (len > 0).then(|| format!("bytes={len}-"));
            let resp = self
                .send(ctx, &url, || {
                    let req = self.auth(self.http.get(&url));
                    match &range {
                        Some(r) => req.header(RANGE, r),
                        None => req,
                    }
                })
                .await?;
            let status = resp.status();
            let restart = |file: &mut std::fs::File, len: &mut u64, hashers: &mut Hashers| {
                file.set_len(0)
                    .and_then(|()| file.seek(SeekFrom::Start(0)))
                    .map_err(io("cannot truncate"))?;
                *len = 0;
                *hashers = Hashers::new(entry);
                bar.reset();
                Ok::<(), HubError>(())
            };
            if status == StatusCode::PARTIAL_CONTENT {
                if len == 0 || content_range_start(resp.headers()) != Some(len) {
                    // Not the range asked for: start over without one.
                    restart(&mut file, &mut len, &mut hashers)?;
                    failures += 1;
                    if failures > self.opts.max_retries {
                        return Err(discard(self.bad_range(ctx, &url)));
                    }
                    continue;
                }
            } else if status == StatusCode::OK {
                if len > 0 {
                    // The server ignored the Range header and sends everything.
                    restart(&mut file, &mut len, &mut hashers)?;
                }
            } else if status == StatusCode::RANGE_NOT_SATISFIABLE && len > 0 {
                // Nothing exists past `len`: the file is not as long as the hub said.
                if entry.size.is_none() {
                    break;
                }
                drop(file);
                return Err(discard(size_mismatch(len)));
            } else {
                return Err(self.status_error(ctx, &url, resp).await);
            }
            if let (Some(size), Some(announced)) = (entry.size, resp.content_length())
                && len + announced != size
            {
                drop(file);
                return Err(discard(size_mismatch(len + announced)));
            }

            let mut resp = resp;
            let mut got = 0u64;
            let outcome = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let n = chunk.len() as u64;
                        if entry.size.is_some_and(|size| len + n > size) {
                            drop(file);
                            return Err(discard(size_mismatch(len + n)));
                        }
                        file.write_all(&chunk).map_err(io("cannot write"))?;
                        hashers.update(&chunk);
                        len += n;
                        got += n;
                        bar.inc(n);
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            match outcome {
                None if entry.size.is_none_or(|size| size == len) => break,
                None => {
                    // A clean end short of the size (no Content-Length): try to continue.
                    failures = if got > 0 { 0 } else { failures + 1 };
                    if failures > self.opts.max_retries {
                        drop(file);
                        return Err(discard(size_mismatch(len)));
                    }
                }
                Some(source) => {
                    // Interrupted: keep the bytes and continue from there. Only attempts that
                    // made no progress count against the retry limit.
                    failures = if got > 0 { 0 } else { failures + 1 };
                    if failures > self.opts.max_retries {
                        file.flush().map_err(io("cannot write"))?;
                        return Err(HubError::Network {
                            repo: repo.to_string(),
                            file: Some(entry.path.clone()),
                            url: url.clone(),
                            attempts: failures,
                            source,
                        });
                    }
                }
            }
            tokio::time::sleep(self.backoff(failures.max(1))).await;
        }

        file.flush().map_err(io("cannot write"))?;
        file.sync_all().map_err(io("cannot sync"))?;
        drop(file);
        if let Some(size) = entry.size
            && size != len
        {
            return Err(discard(size_mismatch(len)));
        }
        if let Some((algorithm, expected, actual)) = hashers.check(entry) {
            return Err(discard(HubError::HashMismatch {
                repo: repo.to_string(),
                file: entry.path.clone(),
                algorithm,
                expected,
                actual,
            }));
        }
        Ok(())
    }

    fn bad_range(&self, ctx: Ctx<'_>, url: &str) -> HubError {
        HubError::BadResponse {
            repo: ctx.repo.to_string(),
            file: ctx.file.map(str::to_string),
            url: url.to_string(),
            reason: "the server keeps answering range requests with the wrong range".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("a b/c#d.json", true), "a%20b/c%23d.json");
        assert_eq!(encode("ü", true), "%C3%BC");
    }

    #[test]
    fn sibling_entries() {
        let lfs: SiblingJson = serde_json::from_str(
            r#"{"rfilename":"m.safetensors","size":10,"blobId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "lfs":{"sha256":"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB","size":10,"pointerSize":130}}"#,
        )
        .expect("json");
        let e = lfs.into_entry();
        assert_eq!(e.etag.as_deref(), Some("b".repeat(64).as_str()));
        assert_eq!(e.sha256, e.etag);
        assert!(e.git_sha1.is_none());
        let plain: SiblingJson =
            serde_json::from_str(r#"{"rfilename":"c.json","size":3,"blobId":"cccccccccccccccccccccccccccccccccccccccc"}"#)
                .expect("json");
        let e = plain.into_entry();
        assert_eq!(e.git_sha1, e.etag);
        let bare: SiblingJson = serde_json::from_str(r#"{"rfilename":"c.json"}"#).expect("json");
        assert!(bare.into_entry().etag.is_none());
    }

    #[test]
    fn git_blob_sha1() {
        // `printf 'hello\n' | git hash-object --stdin`
        let entry = Entry {
            path: "x".into(),
            size: Some(6),
            etag: None,
            sha256: None,
            git_sha1: Some("ce013625030ba8dba906f756967f9e9ca394464a".into()),
        };
        let mut h = Hashers::new(&entry);
        h.update(b"hel");
        h.update(b"lo\n");
        assert!(h.check(&entry).is_none());
    }
}
