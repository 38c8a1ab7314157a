//! Resolve a model spec to a local directory, downloading from the Hugging Face hub when needed.
//!
//! A spec is a local path (returned as is) or a repo id `owner/name`, optionally `owner/name@rev`
//! (branch, tag or commit). Downloads go to the cache Python `huggingface_hub` uses (same
//! layout, blob names, `.incomplete` and lock files; documented in `src/cache.rs`), so either
//! client can fill it for the other.
//!
//! - **Configuration** comes only from [`HubOptions`]; [`HubOptions::from_env`] reads the `HF_*`
//!   variables once, at the binary's edge.
//! - **Cache first**: a selection already complete in the cache is returned without any request
//!   (branches and tags are re-resolved online only with [`HubOptions::refresh`]).
//! - **Offline** (`HF_HUB_OFFLINE=1`): only the cache; anything missing is an
//!   [`HubError::OfflineNotCached`] naming it.
//! - **Resumable**: a transfer interrupted mid-file continues with `Range: bytes=N-`, both
//!   within a run (automatic retries) and across runs (`blobs/<etag>.incomplete` is kept), as
//!   Python does.
//! - **Verified**: the size and the hash the hub lists for each file (LFS sha256, or the git blob
//!   sha1 of non-LFS files) are checked before the file enters the cache; a mismatch is an error
//!   naming the file and the partial file is deleted.
//!
//! Why not hf-hub 1.0: its cache downloads restart from zero (`File::create` on the
//! `.incomplete`), check neither size nor hash, its repo info cannot request `blobs=true` (no
//! sizes or hashes), its tree listing reads LFS hashes from a key the hub does not send (`sha256`
//! instead of `oid`), and its public metadata HEAD follows redirects (so LFS files get the CDN's
//! ETag instead of the sha256). This crate talks to the same endpoints with reqwest, the client
//! hf-hub is built on, and keeps hf-hub's/Python's cache layout.

mod cache;
mod download;
mod error;
mod options;
mod pattern;
mod progress;
mod remote;

use std::future::Future;
use std::path::{Path, PathBuf};

pub use error::HubError;
pub use options::{DEFAULT_ENDPOINT, HubOptions};

use download::Want;

/// The default revision.
pub const DEFAULT_REVISION: &str = "main";

/// A downloaded (or cached) selection of one commit of a repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `owner/name`.
    pub repo: String,
    /// The revision asked for (`main` by default).
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// `<cache>/models--owner--name/snapshots/<commit>`.
    pub dir: PathBuf,
    /// The selected files, relative to `dir`, sorted.
    pub files: Vec<PathBuf>,
}

/// Whether `name` is a valid hub repo id `owner/name` (the hub's rules: each part 1–96 of
/// `[A-Za-z0-9_.-]`, starting and ending with a letter, digit or `_`, without `--` or `..`).
fn valid_repo_id(name: &str) -> bool {
    let part_ok = |p: &str| {
        let b = p.as_bytes();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        !b.is_empty()
            && b.len() <= 96
            && b.iter().all(|&c| word(c) || c == b'-' || c == b'.')
            && b.first().is_some_and(|&c| word(c))
            && b.last().is_some_and(|&c| word(c))
            && !p.contains("--")
            && !p.contains("..")
    };
    matches!(name.split_once('/'), Some((owner, repo)) if part_ok(owner) && part_ok(repo))
}

/// Splits `owner/name[@revision]`; `None` if it is not of that form.
fn parse_repo_spec(spec: &str) -> Option<(&str, Option<&str>)> {
    let (repo, revision) = match spec.split_once('@') {
        Some((repo, rev)) => (repo, Some(rev)),
        None => (spec, None),
    };
    let rev_ok = revision.is_none_or(cache::safe_revision);
    (valid_repo_id(repo) && rev_ok).then_some((repo, revision))
}

/// `owner/name` (or `owner/name@revision`) that is not an existing path.
pub fn looks_like_repo_id(spec: &str) -> bool {
    parse_repo_spec(spec).is_some() && !Path::new(spec).exists()
}

fn check_repo_and_revision<'r>(repo: &str, revision: Option<&'r str>) -> Result<&'r str, HubError> {
    if !valid_repo_id(repo) {
        return Err(HubError::InvalidRepoId {
            spec: repo.to_string(),
        });
    }
    let revision = revision.unwrap_or(DEFAULT_REVISION);
    if !cache::safe_revision(revision) {
        return Err(HubError::InvalidName {
            repo: repo.to_string(),
            what: "revision",
            value: revision.to_string(),
        });
    }
    Ok(revision)
}

/// Downloads the files of `repo` at `revision` (default `main`) matching any of the `include`
/// glob patterns (all files when empty) into the cache, and returns the snapshot.
///
/// Patterns follow Python's `allow_patterns` (fnmatch on the repo path: `*` also matches `/`,
/// a trailing `/` selects a directory). A pattern that matches no file is an error.
pub async fn download(
    repo: &str,
    revision: Option<&str>,
    include: &[String],
    opts: &HubOptions,
) -> Result<Snapshot, HubError> {
    let revision = check_repo_and_revision(repo, revision)?;
    download::fetch(repo, revision, &Want::patterns(include), opts).await
}

/// [`download`] on its own current-thread runtime, for synchronous callers (also works when
/// called from inside a tokio runtime: it then runs on a separate thread).
pub fn download_blocking(
    repo: &str,
    revision: Option<&str>,
    include: &[String],
    opts: &HubOptions,
) -> Result<Snapshot, HubError> {
    block_on(repo, || download(repo, revision, include, opts))
}

/// Marks hub "repo not found" errors as possibly meant to be a local path.
fn from_spec(err: HubError) -> HubError {
    match err {
        HubError::RepoNotFound { repo, endpoint, .. } => HubError::RepoNotFound {
            repo,
            endpoint,
            maybe_local_path: true,
        },
        other => other,
    }
}

/// A local directory (returned as is; an error if it does not exist or is a file), or a repo id
/// (`owner/name[@revision]`) whose files matching `needed` (glob patterns; all files when
/// empty) are downloaded: returns the snapshot directory.
pub async fn resolve_dir(
    spec: &str,
    needed: &[&str],
    opts: &HubOptions,
) -> Result<PathBuf, HubError> {
    let path = Path::new(spec);
    if path.exists() {
        return if path.is_dir() {
            Ok(path.to_path_buf())
        } else {
            Err(HubError::NotADirectory {
                path: path.to_path_buf(),
            })
        };
    }
    let Some((repo, revision)) = parse_repo_spec(spec) else {
        return Err(HubError::LocalPathNotFound {
            spec: spec.to_string(),
            path: path.to_path_buf(),
        });
    };
    let revision = check_repo_and_revision(repo, revision)?;
    let snapshot = download::fetch(repo, revision, &Want::patterns(needed), opts)
        .await
        .map_err(from_spec)?;
    Ok(snapshot.dir)
}

/// A file path (returned as is), a directory containing `file_name`, or a repo id
/// (`owner/name[@revision]`) from which `file_name` is downloaded: returns the file's path.
pub async fn resolve_file(
    spec: &str,
    file_name: &str,
    opts: &HubOptions,
) -> Result<PathBuf, HubError> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        let file = path.join(file_name);
        return if file.is_file() {
            Ok(file)
        } else {
            Err(HubError::FileNotInDir {
                dir: path.to_path_buf(),
                file: file_name.to_string(),
            })
        };
    }
    if path.exists() {
        // Neither a regular file nor a directory (a socket, a device...).
        return Err(HubError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let Some((repo, revision)) = parse_repo_spec(spec) else {
        return Err(HubError::LocalPathNotFound {
            spec: spec.to_string(),
            path: path.to_path_buf(),
        });
    };
    let revision = check_repo_and_revision(repo, revision)?;
    if !cache::safe_rel_path(file_name) {
        return Err(HubError::InvalidName {
            repo: repo.to_string(),
            what: "file name",
            value: file_name.to_string(),
        });
    }
    let snapshot = download::fetch(repo, revision, &Want::Exact(file_name.to_string()), opts)
        .await
        .map_err(from_spec)?;
    let mut file = snapshot.dir;
    file.extend(file_name.split('/'));
    Ok(file)
}

/// [`resolve_dir`] on its own runtime (see [`download_blocking`]).
pub fn resolve_dir_blocking(
    spec: &str,
    needed: &[&str],
    opts: &HubOptions,
) -> Result<PathBuf, HubError> {
    block_on(spec, || resolve_dir(spec, needed, opts))
}

/// [`resolve_file`] on its own runtime (see [`download_blocking`]).
pub fn resolve_file_blocking(
    spec: &str,
    file_name: &str,
    opts: &HubOptions,
) -> Result<PathBuf, HubError> {
    block_on(spec, || resolve_file(spec, file_name, opts))
}

/// Runs the future on a fresh current-thread runtime; on a separate thread when the caller is
/// already inside a runtime (where `block_on` would panic).
fn block_on<T, F>(spec: &str, make: impl FnOnce() -> F + Send) -> Result<T, HubError>
where
    T: Send,
    F: Future<Output = Result<T, HubError>>,
{
    let run = move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| HubError::Runtime {
                spec: spec.to_string(),
                source,
            })?;
        runtime.block_on(make())
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|s| match s.spawn(run).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(valid_repo_id("deepseek-ai/DeepSeek-V4-Flash"));
        assert!(valid_repo_id("a/b.c_d"));
        for bad in [
            "", "name", "/name", "owner/", "a/b/c", "a/-b", "a/b.", "a/b--c", "a/b..c", "./x",
            "../x", "a b/c",
        ] {
            assert!(!valid_repo_id(bad), "{bad}");
        }
        assert_eq!(parse_repo_spec("o/n@v1.0"), Some(("o/n", Some("v1.0"))));
        assert_eq!(
            parse_repo_spec("o/n@refs/pr/1"),
            Some(("o/n", Some("refs/pr/1")))
        );
        assert_eq!(parse_repo_spec("o/n@"), None);
        assert_eq!(parse_repo_spec("o/n@../x"), None);
    }

    #[test]
    fn repo_id_vs_existing_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("owner/name")).expect("mkdir");
        let abs = dir.path().join("owner/name");
        assert!(!looks_like_repo_id(&abs.to_string_lossy()));
        assert!(looks_like_repo_id("deepseek-ai/DeepSeek-V4-Flash"));
        assert!(looks_like_repo_id("deepseek-ai/DeepSeek-V4-Flash@main"));
        assert!(!looks_like_repo_id("deepseek-ai"));
    }
}
