//! Resolving a (repo, revision, selection) to a complete local snapshot.

use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};

use crate::cache::{Entry, Manifest, RepoCache, is_commit, safe_blob_name};
use crate::pattern::Pattern;
use crate::progress::Progress;
use crate::remote::Remote;
use crate::{HubError, HubOptions, Snapshot};

/// Which files of a revision are wanted.
pub(crate) enum Want {
    /// Glob patterns (empty: every file); each must match at least one file.
    Patterns(Vec<Pattern>),
    /// One exact repo-relative path.
    Exact(String),
}

impl Want {
    pub(crate) fn patterns<S: AsRef<str>>(patterns: &[S]) -> Self {
        Want::Patterns(patterns.iter().map(|p| Pattern::new(p.as_ref())).collect())
    }

    /// The wanted paths among `paths`, or the first pattern / file with no match.
    fn select<'p>(&self, paths: &[&'p str]) -> Result<Vec<&'p str>, String> {
        match self {
            Want::Patterns(patterns) if patterns.is_empty() => Ok(paths.to_vec()),
            Want::Patterns(patterns) => {
                if let Some(p) = patterns
                    .iter()
                    .find(|p| !paths.iter().any(|f| p.matches(f)))
                {
                    return Err(p.source().to_string());
                }
                Ok(paths
                    .iter()
                    .copied()
                    .filter(|f| patterns.iter().any(|p| p.matches(f)))
                    .collect())
            }
            Want::Exact(name) => match paths.iter().find(|f| **f == name.as_str()) {
                Some(f) => Ok(vec![*f]),
                None => Err(name.clone()),
            },
        }
    }
}

fn no_match(repo: &str, revision: &str, want: &Want, missing: String) -> HubError {
    match want {
        Want::Exact(_) => HubError::FileNotFound {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file: missing,
        },
        Want::Patterns(_) => HubError::NoMatch {
            repo: repo.to_string(),
            revision: revision.to_string(),
            pattern: missing,
        },
    }
}

fn snapshot(
    cache: &RepoCache,
    repo: &str,
    revision: &str,
    commit: &str,
    files: Vec<&str>,
) -> Snapshot {
    Snapshot {
        repo: repo.to_string(),
        revision: revision.to_string(),
        commit: commit.to_string(),
        dir: cache.snapshot_dir(commit),
        files: files.into_iter().map(PathBuf::from).collect(),
    }
}

fn select_entries<'m>(
    repo: &str,
    revision: &str,
    want: &Want,
    files: &'m [Entry],
) -> Result<Vec<&'m Entry>, HubError> {
    let paths: Vec<&str> = files.iter().map(|e| e.path.as_str()).collect();
    let chosen = want
        .select(&paths)
        .map_err(|missing| no_match(repo, revision, want, missing))?;
    Ok(files
        .iter()
        .filter(|e| chosen.contains(&e.path.as_str()))
        .collect())
}

/// Whether the snapshot has `entry`, complete: `Some(true)` yes, `Some(false)` present with the
/// wrong size, `None` absent.
fn cached(cache: &RepoCache, commit: &str, entry: &Entry) -> Option<bool> {
    let len = cache.snapshot_len(commit, &entry.path)?;
    Some(entry.size.is_none_or(|size| size == len))
}

pub(crate) async fn fetch(
    repo: &str,
    revision: &str,
    want: &Want,
    opts: &HubOptions,
) -> Result<Snapshot, HubError> {
    let cache = RepoCache::new(&opts.cache_dir, repo);
    let cached_commit = if is_commit(revision) {
        Some(revision.to_string())
    } else {
        cache.read_ref(revision)
    };

    // Cache first: a complete cached selection needs no network (a branch or tag is only
    // re-resolved online with `refresh`).
    let mut known: Option<Manifest> = None;
    if let Some(commit) = &cached_commit
        && (opts.offline || !opts.refresh || is_commit(revision))
    {
        if let Some(manifest) = cache.read_manifest(commit) {
            let selected = select_entries(repo, revision, want, &manifest.files)?;
            let missing: Vec<&Entry> = selected
                .iter()
                .copied()
                .filter(|e| cached(&cache, commit, e) != Some(true))
                .collect();
            if missing.is_empty() {
                let files = selected.iter().map(|e| e.path.as_str()).collect();
                return Ok(snapshot(&cache, repo, revision, commit, files));
            }
            if opts.offline {
                let first = missing[0];
                if cached(&cache, commit, first) == Some(false) {
                    return Err(HubError::CorruptCache {
                        repo: repo.to_string(),
                        file: first.path.clone(),
                        reason: format!(
                            "size differs from the {} bytes the hub reported",
                            first.size.unwrap_or(0)
                        ),
                    });
                }
                return Err(HubError::OfflineNotCached {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                    file: Some(first.path.clone()),
                    more: missing.len() - 1,
                    cache_dir: opts.cache_dir.clone(),
                });
            }
            // A commit's listing never changes: download what is missing without asking again.
            known = Some(manifest);
        } else if opts.offline {
            // Filled by another client (no listing of ours): trust what the snapshot holds.
            let offline_miss = |file: Option<String>| HubError::OfflineNotCached {
                repo: repo.to_string(),
                revision: revision.to_string(),
                file,
                more: 0,
                cache_dir: opts.cache_dir.clone(),
            };
            let files = cache
                .walk_snapshot(commit)?
                .ok_or_else(|| offline_miss(None))?;
            let paths: Vec<&str> = files.iter().map(String::as_str).collect();
            let chosen = want
                .select(&paths)
                .map_err(|missing| offline_miss(Some(missing)))?;
            return Ok(snapshot(&cache, repo, revision, commit, chosen));
        }
    }
    if opts.offline {
        return Err(HubError::OfflineNotCached {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file: None,
            more: 0,
            cache_dir: opts.cache_dir.clone(),
        });
    }

    let remote = Remote::new(opts)?;
    let manifest = match known {
        Some(manifest) => manifest,
        None => {
            let listing = remote.listing(repo, revision).await?;
            let manifest = Manifest {
                repo: repo.to_string(),
                commit: listing.commit,
                files: listing.files,
            };
            cache.write_manifest(&manifest)?;
            if !is_commit(revision) {
                cache.write_ref(revision, &manifest.commit)?;
            }
            manifest
        }
    };
    let commit = manifest.commit.as_str();
    let selected = select_entries(repo, revision, want, &manifest.files)?;
    let todo: Vec<&Entry> = selected
        .iter()
        .copied()
        .filter(|e| cached(&cache, commit, e) != Some(true))
        .collect();

    let dir = cache.snapshot_dir(commit);
    std::fs::create_dir_all(&dir).map_err(|e| HubError::io("cannot create directory", &dir, e))?;
    if !todo.is_empty() {
        let bytes = todo.iter().filter_map(|e| e.size).sum();
        let progress = Progress::new(opts.progress, repo, todo.len(), bytes);
        let result = futures::stream::iter(todo)
            .map(|entry| fetch_one(&remote, &cache, repo, commit, entry, &progress))
            .buffer_unordered(opts.max_workers.max(1))
            .try_collect::<Vec<()>>()
            .await;
        progress.finish();
        result?;
    }
    let files = selected.iter().map(|e| e.path.as_str()).collect();
    Ok(snapshot(&cache, repo, revision, commit, files))
}

/// Makes `snapshots/<commit>/<entry.path>` point at a complete, verified blob.
async fn fetch_one(
    remote: &Remote<'_>,
    cache: &RepoCache,
    repo: &str,
    commit: &str,
    entry: &Entry,
    progress: &Progress,
) -> Result<(), HubError> {
    let entry = match entry.etag {
        Some(_) => entry.clone(),
        None => remote.head_entry(repo, commit, entry).await?,
    };
    let Some(etag) = entry.etag.as_deref().filter(|e| safe_blob_name(e)) else {
        return Err(HubError::BadResponse {
            repo: repo.to_string(),
            file: Some(entry.path.clone()),
            url: remote.resolve_url(repo, commit, &entry.path),
            reason: "no usable blob id / ETag".to_string(),
        });
    };
    let blob = cache.blob(etag);
    let blob_ok = || {
        std::fs::metadata(&blob)
            .is_ok_and(|m| m.is_file() && entry.size.is_none_or(|size| size == m.len()))
    };
    if !blob_ok() {
        let _lock = cache.lock(etag).await?;
        if !blob_ok() {
            if std::fs::symlink_metadata(&blob).is_ok() {
                std::fs::remove_file(&blob)
                    .map_err(|e| HubError::io("cannot remove corrupt blob", &blob, e))?;
            }
            let part = cache.incomplete(etag);
            if let Some(parent) = part.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| HubError::io("cannot create directory", parent, e))?;
            }
            let bar = progress.file(&entry.path, entry.size);
            remote.fetch(repo, commit, &entry, &part, &bar).await?;
            std::fs::rename(&part, &blob)
                .map_err(|e| HubError::io("cannot move download into place", &blob, e))?;
        } else {
            progress.skip(entry.size.unwrap_or(0));
        }
    } else {
        progress.skip(entry.size.unwrap_or(0));
    }
    cache.link(commit, &entry.path, etag)?;
    Ok(())
}
