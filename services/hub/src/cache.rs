//! The on-disk cache, laid out exactly like Python `huggingface_hub`'s (and hf-hub's), so both
//! share it:
//!
//! ```text
//! <cache_dir>/models--<owner>--<name>/
//!     blobs/<etag>                     file contents; <etag> is the LFS sha256 or the git blob sha1
//!     blobs/<etag>.incomplete          a partial download, resumed by the next download
//!     snapshots/<commit>/<path>        relative symlinks to ../../blobs/<etag> (one more ../ per subdir)
//!     refs/<branch or tag>             the commit the revision pointed to
//!     .v4-hub/<commit>.json            ours: the commit's file listing (Python ignores it)
//! <cache_dir>/.locks/models--<owner>--<name>/<etag>.lock   per-blob flock, as Python's filelock
//! ```
//!
//! A snapshot entry only appears once its blob is complete and verified.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::HubError;

/// One file of a commit, as the hub describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Repo-relative path with `/` separators (validated by [`safe_rel_path`]).
    pub path: String,
    pub size: Option<u64>,
    /// The blob name: LFS sha256 or git blob sha1; `None` when the listing did not say (then a
    /// HEAD request asks).
    pub etag: Option<String>,
    /// LFS files: the sha256 of the content.
    pub sha256: Option<String>,
    /// Non-LFS files: git's blob id, sha1("blob <size>\0" + content).
    pub git_sha1: Option<String>,
}

/// The file listing of one commit (immutable, so it never goes stale).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub repo: String,
    pub commit: String,
    pub files: Vec<Entry>,
}

pub(crate) struct RepoCache {
    root: PathBuf,
    locks: PathBuf,
}

impl RepoCache {
    pub(crate) fn new(cache_dir: &Path, repo: &str) -> Self {
        let folder = format!("models--{}", repo.replace('/', "--"));
        RepoCache {
            root: cache_dir.join(&folder),
            locks: cache_dir.join(".locks").join(folder),
        }
    }

    pub(crate) fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub(crate) fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub(crate) fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    pub(crate) fn snapshot_file(&self, commit: &str, rel: &str) -> PathBuf {
        let mut p = self.snapshot_dir(commit);
        p.extend(rel.split('/'));
        p
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        let mut p = self.root.join("refs");
        p.extend(revision.split('/'));
        p
    }

    fn manifest_path(&self, commit: &str) -> PathBuf {
        self.root.join(".v4-hub").join(format!("{commit}.json"))
    }

    /// The commit a branch or tag pointed to when last resolved online.
    pub(crate) fn read_ref(&self, revision: &str) -> Option<String> {
        let text = fs::read_to_string(self.ref_path(revision)).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    pub(crate) fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        write_atomic(&self.ref_path(revision), commit.as_bytes())
    }

    pub(crate) fn read_manifest(&self, commit: &str) -> Option<Manifest> {
        let bytes = fs::read(self.manifest_path(commit)).ok()?;
        let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
        let sane = manifest.commit == commit
            && manifest
                .files
                .iter()
                .all(|e| safe_rel_path(&e.path) && e.etag.as_deref().is_none_or(safe_blob_name));
        sane.then_some(manifest)
    }

    pub(crate) fn write_manifest(&self, manifest: &Manifest) -> Result<(), HubError> {
        let path = self.manifest_path(&manifest.commit);
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| {
            HubError::io(
                "cannot encode the file listing",
                &path,
                std::io::Error::other(e),
            )
        })?;
        write_atomic(&path, &json)
    }

    /// Length of the file a snapshot entry points to, if the entry exists and resolves.
    pub(crate) fn snapshot_len(&self, commit: &str, rel: &str) -> Option<u64> {
        let meta = fs::metadata(self.snapshot_file(commit, rel)).ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// Points `snapshots/<commit>/<rel>` at `blobs/<etag>` (relative symlink, as Python does).
    pub(crate) fn link(&self, commit: &str, rel: &str, etag: &str) -> Result<PathBuf, HubError> {
        let path = self.snapshot_file(commit, rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| HubError::io("cannot create directory", parent, e))?;
        }
        if fs::symlink_metadata(&path).is_ok() {
            fs::remove_file(&path)
                .map_err(|e| HubError::io("cannot replace snapshot entry", &path, e))?;
        }
        let depth = rel.split('/').count() - 1;
        let mut target = PathBuf::new();
        for _ in 0..depth + 2 {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &path)
            .map_err(|e| HubError::io("cannot create symlink", &path, e))?;
        #[cfg(not(unix))]
        fs::copy(self.blob(etag), &path)
            .map_err(|e| HubError::io("cannot copy blob to", &path, e))?;
        Ok(path)
    }

    /// Repo-relative paths of the files under `snapshots/<commit>` whose target exists; `None`
    /// when the snapshot directory does not exist.
    pub(crate) fn walk_snapshot(&self, commit: &str) -> Result<Option<Vec<String>>, HubError> {
        let dir = self.snapshot_dir(commit);
        if !dir.is_dir() {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut stack = vec![(dir, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let read = fs::read_dir(&dir).map_err(|e| HubError::io("cannot list", &dir, e))?;
            for item in read {
                let item = item.map_err(|e| HubError::io("cannot list", &dir, e))?;
                let Some(name) = item.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let rel = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                match fs::metadata(item.path()) {
                    Ok(m) if m.is_dir() => stack.push((item.path(), rel)),
                    Ok(m) if m.is_file() => out.push(rel),
                    _ => {}
                }
            }
        }
        out.sort();
        Ok(Some(out))
    }

    /// Exclusive lock on one blob, shared with other processes (and with Python, which flocks the
    /// same path). Held while the blob is downloaded; released when the file is dropped.
    pub(crate) async fn lock(&self, etag: &str) -> Result<File, HubError> {
        fs::create_dir_all(&self.locks)
            .map_err(|e| HubError::io("cannot create directory", &self.locks, e))?;
        let path = self.locks.join(format!("{etag}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HubError::io("cannot open lock file", &path, e))?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(TryLockError::Error(e)) => return Err(HubError::io("cannot lock", &path, e)),
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| HubError::io("cannot create directory", parent, e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(|e| HubError::io("cannot write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| HubError::io("cannot write", path, e))
}

/// A full commit id.
pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A repo-relative path that stays inside the snapshot directory.
pub(crate) fn safe_rel_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 4096
        && !p.contains('\\')
        && !p.chars().any(char::is_control)
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A revision usable both in URLs (percent-encoded) and as a path below `refs/`.
pub(crate) fn safe_revision(r: &str) -> bool {
    r.len() <= 256 && safe_rel_path(r)
}

/// A blob file name: one path component of `[A-Za-z0-9._-]`.
pub(crate) fn safe_blob_name(etag: &str) -> bool {
    !etag.is_empty()
        && etag.len() <= 256
        && !etag.starts_with('.')
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(safe_rel_path("a/b.json"));
        for bad in [
            "", "/abs", "a/../b", "..", "a//b", "a/", "a\\b", "./a", "a\nb",
        ] {
            assert!(!safe_rel_path(bad), "{bad:?}");
        }
        assert!(safe_revision("refs/pr/1"));
        assert!(safe_blob_name("0123abc"));
        assert!(!safe_blob_name("../x"));
        assert!(!safe_blob_name(".hidden"));
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("main"));
    }

    #[test]
    fn layout_and_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = RepoCache::new(dir.path(), "o/n");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        fs::create_dir_all(dir.path().join("models--o--n/blobs")).expect("mkdir");
        fs::write(cache.blob("e1"), b"hi").expect("write");
        let link = cache.link(commit, "a/b/c.txt", "e1").expect("link");
        assert_eq!(
            fs::read_link(&link).expect("readlink"),
            PathBuf::from("../../../../blobs/e1")
        );
        assert_eq!(cache.snapshot_len(commit, "a/b/c.txt"), Some(2));
        assert_eq!(
            cache.walk_snapshot(commit).expect("walk"),
            Some(vec!["a/b/c.txt".to_string()])
        );
        cache.write_ref("refs/pr/1", commit).expect("ref");
        assert_eq!(cache.read_ref("refs/pr/1").as_deref(), Some(commit));
        assert!(dir.path().join("models--o--n/refs/refs/pr/1").is_file());
    }
}
