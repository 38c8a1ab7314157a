//! A mock Hugging Face hub on 127.0.0.1:0 (std threads, one per connection, `Connection: close`).
//!
//! Endpoints, as the real hub answers them:
//! - `GET /api/models/{owner}/{name}/revision/{rev}?blobs=true`: `{"id","sha","siblings":[{"rfilename",
//!   "size","blobId","lfs":{"sha256","size","pointerSize"}}]}`
//! - `GET|HEAD /{owner}/{name}/resolve/{rev}/{path}`: the content with `x-repo-commit`, `etag` (git
//!   blob sha1) or for LFS files `x-linked-etag`/`x-linked-size` (sha256 / size), `content-length`,
//!   `accept-ranges: bytes`; `Range: bytes=a-[b]` gives 206 + `content-range`, or 416.
//! - errors: 404 with `x-error-code` RepoNotFound / RevisionNotFound / EntryNotFound; 401 when a
//!   token is required and the `Authorization: Bearer` header does not carry it.
//!
//! No `x-xet-hash` header is ever sent. Every request is recorded.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use sha2::{Digest, Sha256};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(Sha256::digest(bytes).as_slice())
}

pub fn git_sha1(bytes: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.digest().bytes())
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct MockFile {
    pub path: String,
    pub content: Vec<u8>,
    pub lfs: bool,
}

impl MockFile {
    pub fn text(path: &str, content: &str) -> Self {
        MockFile {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            lfs: false,
        }
    }
    pub fn lfs(path: &str, content: Vec<u8>) -> Self {
        MockFile {
            path: path.into(),
            content,
            lfs: true,
        }
    }
    /// The blob name Python (and v4-hub) use: sha256 for LFS files, git blob sha1 otherwise.
    pub fn etag(&self) -> String {
        if self.lfs {
            sha256_hex(&self.content)
        } else {
            git_sha1(&self.content)
        }
    }
}

#[derive(Clone, Debug)]
pub struct MockCommit {
    pub sha: String,
    /// Branches and tags pointing at this commit.
    pub refs: Vec<String>,
    pub files: Vec<MockFile>,
}

#[derive(Clone, Debug)]
pub struct MockRepo {
    pub id: String,
    pub commits: Vec<MockCommit>,
}

impl MockRepo {
    pub fn commit(&self, rev: &str) -> Option<&MockCommit> {
        self.commits
            .iter()
            .find(|c| c.sha == rev || c.refs.iter().any(|r| r == rev))
    }
}

#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

impl Req {
    pub fn is_file(&self, name: &str) -> bool {
        self.path.contains("/resolve/") && self.path.ends_with(&format!("/{name}"))
    }
}

#[derive(Default)]
pub struct Behavior {
    /// Every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Path -> bytes: the next GET of that file sends its headers (full length) and only that
    /// many body bytes, then closes the connection. One-shot.
    pub drop_after: HashMap<String, usize>,
    /// Files served with one byte changed (listed hash and size stay those of the original).
    pub corrupt: HashSet<String>,
    /// Path -> size the listing (and HEAD) claims.
    pub lie_size: HashMap<String, u64>,
    /// Listing without `blobId` / `lfs`: the client must HEAD each file.
    pub no_blob_ids: bool,
}

struct State {
    repos: Vec<MockRepo>,
    requests: Mutex<Vec<Req>>,
    behavior: Mutex<Behavior>,
    stop: AtomicBool,
}

pub struct MockHub {
    pub addr: std::net::SocketAddr,
    state: Arc<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MockHub {
    pub fn start(repos: Vec<MockRepo>) -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            repos,
            requests: Mutex::new(Vec::new()),
            behavior: Mutex::new(Behavior::default()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || handle(&st, conn));
            }
        });
        MockHub { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Req> {
        lock(&self.state.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    pub fn behave(&self, f: impl FnOnce(&mut Behavior)) {
        f(&mut lock(&self.state.behavior));
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
) {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k == "content-length") {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    if !head_only {
        let _ = conn.write_all(body);
    }
    let _ = conn.flush();
}

fn error(conn: &mut TcpStream, status: &str, code: Option<&str>, message: &str, head_only: bool) {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(code) = code {
        headers.push(("x-error-code".into(), code.into()));
    }
    let body = format!("{{\"error\":\"{message}\"}}");
    respond(conn, status, &headers, body.as_bytes(), head_only);
}

fn handle(state: &State, mut conn: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 65536 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let req = Req {
        method: method.clone(),
        path: path.clone(),
        query,
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    };
    lock(&state.requests).push(req.clone());
    let head_only = method == "HEAD";

    if let Some(token) = lock(&state.behavior).token.clone()
        && req.auth.as_deref() != Some(format!("Bearer {token}").as_str())
    {
        return error(
            &mut conn,
            "401 Unauthorized",
            None,
            "Invalid credentials in Authorization header",
            head_only,
        );
    }

    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {owner}/{name}/revision/{rev}
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        if parts.len() != 4 || parts[2] != "revision" {
            return error(&mut conn, "404 Not Found", None, "no such route", head_only);
        }
        let repo_id = format!("{}/{}", parts[0], parts[1]);
        let rev = percent_decode(parts[3]);
        return info(state, &mut conn, &repo_id, &rev);
    }
    // /{owner}/{name}/resolve/{rev}/{file...}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() != 5 || parts[2] != "resolve" {
        return error(&mut conn, "404 Not Found", None, "no such route", head_only);
    }
    let repo_id = format!("{}/{}", parts[0], parts[1]);
    let rev = percent_decode(parts[3]);
    let file = percent_decode(parts[4]);
    resolve(
        state,
        &mut conn,
        &repo_id,
        &rev,
        &file,
        req.range.as_deref(),
        head_only,
    );
}

fn info(state: &State, conn: &mut TcpStream, repo_id: &str, rev: &str) {
    let Some(repo) = state.repos.iter().find(|r| r.id == repo_id) else {
        return error(
            conn,
            "404 Not Found",
            Some("RepoNotFound"),
            "Repository not found",
            false,
        );
    };
    let Some(commit) = repo.commit(rev) else {
        return error(
            conn,
            "404 Not Found",
            Some("RevisionNotFound"),
            "Invalid rev id",
            false,
        );
    };
    let b = lock(&state.behavior);
    let siblings: Vec<serde_json::Value> = commit
        .files
        .iter()
        .map(|f| {
            let size = b.lie_size.get(&f.path).copied().unwrap_or(f.content.len() as u64);
            if b.no_blob_ids {
                return serde_json::json!({ "rfilename": f.path });
            }
            if f.lfs {
                let pointer = format!(
                    "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
                    sha256_hex(&f.content),
                    f.content.len()
                );
                serde_json::json!({
                    "rfilename": f.path,
                    "size": size,
                    "blobId": git_sha1(pointer.as_bytes()),
                    "lfs": { "sha256": sha256_hex(&f.content), "size": size, "pointerSize": pointer.len() },
                })
            } else {
                serde_json::json!({ "rfilename": f.path, "size": size, "blobId": git_sha1(&f.content) })
            }
        })
        .collect();
    let body =
        serde_json::json!({ "id": repo.id, "sha": commit.sha, "siblings": siblings }).to_string();
    respond(
        conn,
        "200 OK",
        &[("content-type".into(), "application/json".into())],
        body.as_bytes(),
        false,
    );
}

fn resolve(
    state: &State,
    conn: &mut TcpStream,
    repo_id: &str,
    rev: &str,
    file: &str,
    range: Option<&str>,
    head_only: bool,
) {
    let Some(repo) = state.repos.iter().find(|r| r.id == repo_id) else {
        return error(
            conn,
            "404 Not Found",
            Some("RepoNotFound"),
            "Repository not found",
            head_only,
        );
    };
    let Some(commit) = repo.commit(rev) else {
        return error(
            conn,
            "404 Not Found",
            Some("RevisionNotFound"),
            "Invalid rev id",
            head_only,
        );
    };
    let Some(f) = commit.files.iter().find(|f| f.path == file) else {
        return error(
            conn,
            "404 Not Found",
            Some("EntryNotFound"),
            "Entry not found",
            head_only,
        );
    };
    let (content, drop_after, claimed) = {
        let mut b = lock(&state.behavior);
        let mut content = f.content.clone();
        if b.corrupt.contains(file)
            && let Some(first) = content.first_mut()
        {
            *first ^= 0xff;
        }
        let drop_after = if head_only {
            None
        } else {
            b.drop_after.remove(file)
        };
        (content, drop_after, b.lie_size.get(file).copied())
    };
    let total = content.len() as u64;
    let mut headers = vec![
        ("x-repo-commit".to_string(), commit.sha.clone()),
        ("accept-ranges".to_string(), "bytes".to_string()),
    ];
    if f.lfs {
        let sha = sha256_hex(&f.content);
        headers.push(("x-linked-etag".into(), format!("\"{sha}\"")));
        headers.push(("x-linked-size".into(), claimed.unwrap_or(total).to_string()));
        headers.push(("etag".into(), format!("\"{sha}\"")));
    } else {
        headers.push(("etag".into(), format!("\"{}\"", git_sha1(&f.content))));
    }
    let (status, body) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        None => ("200 OK", &content[..]),
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let start: u64 = a.parse().unwrap_or(u64::MAX);
            let end: u64 = if b.is_empty() {
                total.saturating_sub(1)
            } else {
                b.parse().unwrap_or(0)
            };
            if start >= total || end < start {
                headers.push(("content-range".into(), format!("bytes */{total}")));
                return respond(conn, "416 Range Not Satisfiable", &headers, b"", head_only);
            }
            let end = end.min(total - 1);
            headers.push((
                "content-range".into(),
                format!("bytes {start}-{end}/{total}"),
            ));
            (
                "206 Partial Content",
                &content[start as usize..=end as usize],
            )
        }
    };
    match drop_after {
        Some(n) if n < body.len() => {
            headers.push(("content-length".into(), body.len().to_string()));
            let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
            for (k, v) in &headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let _ = conn.write_all(out.as_bytes());
            let _ = conn.write_all(&body[..n]);
            let _ = conn.flush();
            let _ = conn.shutdown(Shutdown::Both);
        }
        _ => respond(conn, status, &headers, body, head_only),
    }
}
