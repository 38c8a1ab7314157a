//! v4-hub against a mock hub (tests/support): fully offline, no environment variables read.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{MockCommit, MockFile, MockHub, MockRepo, noise};
use v4_hub::{
    HubError, HubOptions, download, download_blocking, resolve_dir, resolve_dir_blocking,
    resolve_file, resolve_file_blocking,
};

const REPO: &str = "acme/tiny";
const MAIN: &str = "1111111111111111111111111111111111111111";
const V1: &str = "2222222222222222222222222222222222222222";
const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

fn main_files() -> Vec<MockFile> {
    vec![
        MockFile::text(
            "config.json",
            r#"{"model_type":"deepseek_v4","hidden_size":64}"#,
        ),
        MockFile::text(
            "tokenizer.json",
            r#"{"version":"1.0","model":{"type":"BPE"}}"#,
        ),
        MockFile::lfs(SHARD1, noise(1, 300_000)),
        MockFile::lfs(SHARD2, noise(2, 200_000)),
        MockFile::text("sub/nested.json", r#"{"nested":true}"#),
        MockFile::text("README.md", "# tiny\n"),
    ]
}

fn tiny() -> MockRepo {
    MockRepo {
        id: REPO.into(),
        commits: vec![
            MockCommit {
                sha: MAIN.into(),
                refs: vec!["main".into()],
                files: main_files(),
            },
            MockCommit {
                sha: V1.into(),
                refs: vec!["v1".into()],
                files: vec![MockFile::text(
                    "config.json",
                    r#"{"model_type":"deepseek_v4","hidden_size":32}"#,
                )],
            },
        ],
    }
}

fn file(name: &str) -> MockFile {
    main_files()
        .into_iter()
        .find(|f| f.path == name)
        .expect("fixture file")
}

struct Env {
    hub: MockHub,
    _tmp: tempfile::TempDir,
    cache: PathBuf,
    opts: HubOptions,
}

fn env() -> Env {
    let hub = MockHub::start(vec![tiny()]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("hub");
    let mut opts = HubOptions::new(&cache);
    opts.endpoint = hub.url();
    opts.retry_base_delay = Duration::from_millis(5);
    opts.max_retries = 3;
    opts.read_timeout = Duration::from_secs(10);
    Env {
        hub,
        _tmp: tmp,
        cache,
        opts,
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("models--acme--tiny")
}

fn incomplete_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(repo_dir(cache).join("blobs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "incomplete"))
                .collect()
        })
        .unwrap_or_default()
}

const WEIGHTS_AND_JSON: [&str; 2] = ["*.json", "model-*.safetensors"];

#[tokio::test]
async fn download_with_include_fills_the_python_cache_layout() {
    let e = env();
    let snap = download(REPO, None, &s(&WEIGHTS_AND_JSON), &e.opts)
        .await
        .expect("download");

    assert_eq!(snap.repo, REPO);
    assert_eq!(snap.revision, "main");
    assert_eq!(snap.commit, MAIN);
    assert_eq!(snap.dir, repo_dir(&e.cache).join("snapshots").join(MAIN));
    let expected = [
        "config.json",
        SHARD1,
        SHARD2,
        "sub/nested.json",
        "tokenizer.json",
    ];
    assert_eq!(
        snap.files,
        expected.iter().map(PathBuf::from).collect::<Vec<_>>()
    );
    assert!(!snap.dir.join("README.md").exists(), "not included");

    for name in expected {
        let f = file(name);
        let link = snap.dir.join(name);
        let up = "../".repeat(2 + name.matches('/').count());
        assert_eq!(
            std::fs::read_link(&link).expect("snapshot entry is a symlink"),
            PathBuf::from(format!("{up}blobs/{}", f.etag())),
            "{name}"
        );
        assert_eq!(std::fs::read(&link).expect("read"), f.content, "{name}");
        assert!(repo_dir(&e.cache).join("blobs").join(f.etag()).is_file());
    }
    // LFS blobs are named by sha256, others by git blob sha1 (as the hub's etags).
    assert_eq!(file(SHARD1).etag().len(), 64);
    assert_eq!(file("config.json").etag().len(), 40);
    assert_eq!(
        std::fs::read_to_string(repo_dir(&e.cache).join("refs/main")).expect("ref"),
        MAIN
    );
    assert!(incomplete_files(&e.cache).is_empty());
    assert!(e.cache.join(".locks/models--acme--tiny").is_dir());

    let reqs = e.hub.requests();
    let info: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/api/"))
        .collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].path, format!("/api/models/{REPO}/revision/main"));
    assert_eq!(info[0].query, "blobs=true");
    assert!(
        reqs.iter().all(|r| r.method == "GET"),
        "no HEAD needed: {reqs:?}"
    );
    assert_eq!(reqs.len(), 1 + expected.len());
    for name in expected {
        assert!(
            reqs.iter()
                .any(|r| r.path == format!("/{REPO}/resolve/{MAIN}/{name}")),
            "{name} fetched at the commit"
        );
    }
    assert!(reqs.iter().all(|r| r.auth.is_none()), "no token configured");
}

#[tokio::test]
async fn second_call_is_served_from_cache_without_network() {
    let e = env();
    let first = download(REPO, None, &s(&WEIGHTS_AND_JSON), &e.opts)
        .await
        .expect("download");
    e.hub.clear_requests();

    let again = download(REPO, None, &s(&WEIGHTS_AND_JSON), &e.opts)
        .await
        .expect("again");
    assert_eq!(again, first);
    // The blocking flavour, from inside a runtime (runs on its own thread).
    assert_eq!(
        download_blocking(REPO, Some("main"), &s(&["*.json", "model-*"]), &e.opts)
            .expect("blocking"),
        first
    );
    let dir = resolve_dir(REPO, &["config.json", "*.safetensors"], &e.opts)
        .await
        .expect("resolve_dir");
    assert_eq!(dir, first.dir);
    let tok = resolve_file(REPO, "tokenizer.json", &e.opts)
        .await
        .expect("resolve_file");
    assert_eq!(tok, first.dir.join("tokenizer.json"));
    let nested = resolve_file(&format!("{REPO}@main"), "sub/nested.json", &e.opts)
        .await
        .expect("resolve_file nested");
    assert!(nested.is_file());
    assert!(e.hub.requests().is_empty(), "{:?}", e.hub.requests());

    // A file not downloaded yet: only that file is fetched (the commit's listing is cached).
    let readme = resolve_file(REPO, "README.md", &e.opts)
        .await
        .expect("readme");
    assert_eq!(std::fs::read(readme).expect("read"), b"# tiny\n");
    let reqs = e.hub.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert!(reqs[0].is_file("README.md"));

    // `refresh` re-resolves the branch online, but downloads nothing.
    e.hub.clear_requests();
    let mut refresh = e.opts.clone();
    refresh.refresh = true;
    download(REPO, None, &s(&WEIGHTS_AND_JSON), &refresh)
        .await
        .expect("refresh");
    let reqs = e.hub.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert!(reqs[0].path.starts_with("/api/models/"));
}

#[test]
fn blocking_api_without_a_runtime() {
    let e = env();
    let snap = download_blocking(REPO, None, &s(&["config.json"]), &e.opts).expect("download");
    assert_eq!(snap.files, vec![PathBuf::from("config.json")]);
    let dir = resolve_dir_blocking(REPO, &["config.json"], &e.opts).expect("dir");
    assert_eq!(dir, snap.dir);
    let f = resolve_file_blocking(REPO, "config.json", &e.opts).expect("file");
    assert_eq!(std::fs::read(f).expect("read"), file("config.json").content);
}

#[tokio::test]
async fn offline_mode_uses_a_prefilled_cache() {
    let e = env();
    let online = download(REPO, None, &s(&WEIGHTS_AND_JSON), &e.opts)
        .await
        .expect("download");
    e.hub.clear_requests();

    let mut offline = e.opts.clone();
    offline.offline = true;
    let snap = download(REPO, None, &s(&WEIGHTS_AND_JSON), &offline)
        .await
        .expect("offline");
    assert_eq!(snap, online);
    assert_eq!(
        resolve_file(REPO, "config.json", &offline)
            .await
            .expect("file"),
        online.dir.join("config.json")
    );
    assert_eq!(
        download(REPO, Some(MAIN), &s(&["*.json"]), &offline)
            .await
            .expect("by commit")
            .dir,
        online.dir
    );

    // Not downloaded: a clear error naming the file, and still no request.
    let err = resolve_file(REPO, "README.md", &offline)
        .await
        .expect_err("missing");
    assert!(
        matches!(&err, HubError::OfflineNotCached { file: Some(f), .. } if f == "README.md"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("README.md") && msg.contains(REPO) && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
    let err = download(REPO, None, &[], &offline)
        .await
        .expect_err("all files");
    assert!(err.is_offline_miss(), "{err:?}");

    // A cache filled by another client (no listing of ours): the snapshot's files are used.
    std::fs::remove_dir_all(repo_dir(&e.cache).join(".v4-hub")).expect("rm listing");
    let snap = download(REPO, None, &s(&["*.json"]), &offline)
        .await
        .expect("walked");
    let expected = ["config.json", "sub/nested.json", "tokenizer.json"];
    assert_eq!(
        snap.files,
        expected.iter().map(PathBuf::from).collect::<Vec<_>>()
    );
    let err = download(REPO, None, &s(&["*.md"]), &offline)
        .await
        .expect_err("no md");
    assert!(
        matches!(&err, HubError::OfflineNotCached { file: Some(f), .. } if f == "*.md"),
        "{err:?}"
    );
    assert!(e.hub.requests().is_empty(), "{:?}", e.hub.requests());
}

#[tokio::test]
async fn offline_mode_with_an_empty_cache_fails_clearly() {
    let e = env();
    let mut offline = e.opts.clone();
    offline.offline = true;
    let err = download(REPO, None, &s(&["*.json"]), &offline)
        .await
        .expect_err("empty cache");
    assert!(
        matches!(&err, HubError::OfflineNotCached { repo, revision, file: None, .. } if repo == REPO && revision == "main"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(REPO)
            && msg.contains("HF_HUB_OFFLINE")
            && msg.contains("unset")
            && msg.contains("v4convert download acme/tiny"),
        "{msg}"
    );
    let err = resolve_file(REPO, "config.json", &offline)
        .await
        .expect_err("file");
    assert!(err.is_offline_miss(), "{err:?}");
    assert!(e.hub.requests().is_empty());
}

#[tokio::test]
async fn token_is_sent_as_bearer() {
    let mut e = env();
    e.hub.behave(|b| b.token = Some("hf_secret".into()));
    e.opts.token = Some("hf_secret".into());
    download(REPO, None, &[], &e.opts).await.expect("download");
    let reqs = e.hub.requests();
    assert_eq!(reqs.len(), 1 + main_files().len());
    assert!(
        reqs.iter()
            .all(|r| r.auth.as_deref() == Some("Bearer hf_secret")),
        "{reqs:?}"
    );
}

#[tokio::test]
async fn unauthorized_is_an_auth_error_that_mentions_hf_token() {
    let mut e = env();
    e.hub.behave(|b| b.token = Some("hf_secret".into()));
    let err = download(REPO, None, &[], &e.opts).await.expect_err("401");
    assert!(
        matches!(&err, HubError::Auth { status: 401, token_sent: false, repo, .. } if repo == REPO),
        "{err:?}"
    );
    assert!(err.is_auth());
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    e.opts.token = Some("hf_wrong".into());
    let err = download(REPO, None, &[], &e.opts).await.expect_err("401");
    assert!(
        matches!(
            &err,
            HubError::Auth {
                status: 401,
                token_sent: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    assert!(!repo_dir(&e.cache).join("snapshots").exists());
}

#[tokio::test]
async fn hash_mismatch_names_the_file_and_leaves_nothing_in_the_cache() {
    let e = env();
    e.hub.behave(|b| {
        b.corrupt.insert(SHARD2.into());
    });
    let err = download(REPO, None, &s(&["model-*"]), &e.opts)
        .await
        .expect_err("corrupt");
    assert!(
        matches!(&err, HubError::HashMismatch { file, algorithm: "sha256", .. } if file == SHARD2),
        "{err:?}"
    );
    assert!(err.to_string().contains(SHARD2), "{err}");
    let sha = file(SHARD2).etag();
    let snapshot = repo_dir(&e.cache).join("snapshots").join(MAIN);
    assert!(!repo_dir(&e.cache).join("blobs").join(&sha).exists());
    assert!(
        incomplete_files(&e.cache)
            .iter()
            .all(|p| !p.to_string_lossy().contains(&sha))
    );
    assert!(std::fs::symlink_metadata(snapshot.join(SHARD2)).is_err());

    // Not cached as complete: fixed upstream, the next call downloads it.
    e.hub.behave(|b| b.corrupt.clear());
    let snap = download(REPO, None, &s(&["model-*"]), &e.opts)
        .await
        .expect("retry");
    assert_eq!(
        std::fs::read(snap.dir.join(SHARD2)).expect("read"),
        file(SHARD2).content
    );

    // Non-LFS files are checked against their git blob id.
    e.hub.behave(|b| {
        b.corrupt.insert("tokenizer.json".into());
    });
    let err = resolve_file(REPO, "tokenizer.json", &e.opts)
        .await
        .expect_err("corrupt");
    assert!(
        matches!(&err, HubError::HashMismatch { file, algorithm: "git blob sha1", .. } if file == "tokenizer.json"),
        "{err:?}"
    );
}

#[tokio::test]
async fn size_mismatch_is_an_error() {
    let e = env();
    e.hub.behave(|b| {
        b.lie_size.insert(SHARD1.into(), 300_010);
    });
    let err = download(REPO, None, &s(&[SHARD1]), &e.opts)
        .await
        .expect_err("size");
    assert!(
        matches!(&err, HubError::SizeMismatch { file, expected: 300_010, actual: 300_000, .. } if file == SHARD1),
        "{err:?}"
    );
    assert!(incomplete_files(&e.cache).is_empty());
}

#[tokio::test]
async fn interrupted_transfer_resumes_with_a_range_request() {
    let mut e = env();
    e.opts.progress = true; // drawn only on a terminal; exercises the bars either way
    e.hub.behave(|b| {
        b.drop_after.insert(SHARD1.into(), 100_000);
    });
    let snap = download(REPO, None, &s(&[SHARD1]), &e.opts)
        .await
        .expect("download");
    assert_eq!(
        std::fs::read(snap.dir.join(SHARD1)).expect("read"),
        file(SHARD1).content
    );
    let gets: Vec<_> = e
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.is_file(SHARD1))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=100000-"));
}

#[tokio::test]
async fn a_partial_file_from_an_earlier_run_is_resumed() {
    let e = env();
    let shard = file(SHARD1);
    let blobs = repo_dir(&e.cache).join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let part = blobs.join(format!("{}.incomplete", shard.etag()));
    std::fs::write(&part, &shard.content[..123_456]).expect("partial");

    let snap = download(REPO, None, &s(&[SHARD1]), &e.opts)
        .await
        .expect("download");
    assert_eq!(
        std::fs::read(snap.dir.join(SHARD1)).expect("read"),
        shard.content
    );
    let gets: Vec<_> = e
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.is_file(SHARD1))
        .collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range.as_deref(), Some("bytes=123456-"));
    assert!(!part.exists());

    // A partial file with wrong bytes fails the hash check, is discarded, and the next run
    // starts from scratch.
    let shard2 = file(SHARD2);
    let part2 = blobs.join(format!("{}.incomplete", shard2.etag()));
    std::fs::write(&part2, vec![0u8; 1000]).expect("bad partial");
    let err = download(REPO, None, &s(&[SHARD2]), &e.opts)
        .await
        .expect_err("bad partial");
    assert!(
        matches!(&err, HubError::HashMismatch { file, .. } if file == SHARD2),
        "{err:?}"
    );
    assert!(!part2.exists());
    e.hub.clear_requests();
    download(REPO, None, &s(&[SHARD2]), &e.opts)
        .await
        .expect("fresh");
    let gets: Vec<_> = e
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.is_file(SHARD2))
        .collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range, None);
}

#[tokio::test]
async fn listing_without_blob_ids_falls_back_to_head_and_still_verifies() {
    let e = env();
    e.hub.behave(|b| b.no_blob_ids = true);
    let snap = download(REPO, None, &s(&["config.json", SHARD1]), &e.opts)
        .await
        .expect("download");
    for name in ["config.json", SHARD1] {
        let f = file(name);
        assert!(
            std::fs::read_link(snap.dir.join(name))
                .expect("link")
                .ends_with(f.etag())
        );
    }
    let heads = e
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .count();
    assert_eq!(heads, 2);

    e.hub.behave(|b| {
        b.corrupt.insert(SHARD2.into());
    });
    let err = download(REPO, None, &s(&[SHARD2]), &e.opts)
        .await
        .expect_err("corrupt");
    assert!(
        matches!(&err, HubError::HashMismatch { file, .. } if file == SHARD2),
        "{err:?}"
    );
}

#[tokio::test]
async fn revisions_tags_and_commits() {
    let e = env();
    let v1 = download(REPO, Some("v1"), &[], &e.opts).await.expect("tag");
    assert_eq!(v1.commit, V1);
    assert_eq!(v1.files, vec![PathBuf::from("config.json")]);
    assert!(
        std::fs::read_to_string(snap_file(&v1, "config.json"))
            .expect("read")
            .contains("32")
    );
    assert_eq!(
        std::fs::read_to_string(repo_dir(&e.cache).join("refs/v1")).expect("ref"),
        V1
    );

    let by_commit = download(REPO, Some(MAIN), &s(&["config.json"]), &e.opts)
        .await
        .expect("commit");
    assert_eq!(by_commit.commit, MAIN);
    assert!(!repo_dir(&e.cache).join("refs").join(MAIN).exists());
    assert!(
        e.hub
            .requests()
            .iter()
            .any(|r| r.path == format!("/api/models/{REPO}/revision/{MAIN}"))
    );
    let dir = resolve_dir(&format!("{REPO}@v1"), &[], &e.opts)
        .await
        .expect("spec@rev");
    assert_eq!(dir, v1.dir);
}

fn snap_file(s: &v4_hub::Snapshot, name: &str) -> PathBuf {
    s.dir.join(name)
}

#[tokio::test]
async fn not_found_errors_say_what_is_missing() {
    let e = env();
    let err = download("acme/nope", None, &[], &e.opts)
        .await
        .expect_err("repo");
    assert!(
        matches!(&err, HubError::RepoNotFound { repo, .. } if repo == "acme/nope"),
        "{err:?}"
    );
    assert!(err.to_string().contains("acme/nope"));

    let err = download(REPO, Some("nope"), &[], &e.opts)
        .await
        .expect_err("rev");
    assert!(
        matches!(&err, HubError::RevisionNotFound { revision, .. } if revision == "nope"),
        "{err:?}"
    );

    let err = download(REPO, None, &s(&["*.gguf"]), &e.opts)
        .await
        .expect_err("pattern");
    assert!(
        matches!(&err, HubError::NoMatch { pattern, .. } if pattern == "*.gguf"),
        "{err:?}"
    );

    let err = resolve_file(REPO, "missing.json", &e.opts)
        .await
        .expect_err("file");
    assert!(
        matches!(&err, HubError::FileNotFound { file, .. } if file == "missing.json"),
        "{err:?}"
    );

    let err = download("not a repo", None, &[], &e.opts)
        .await
        .expect_err("id");
    assert!(matches!(err, HubError::InvalidRepoId { .. }), "{err:?}");
    let err = download(REPO, Some("../x"), &[], &e.opts)
        .await
        .expect_err("rev");
    assert!(matches!(err, HubError::InvalidName { .. }), "{err:?}");
    let err = resolve_file(REPO, "../etc/passwd", &e.opts)
        .await
        .expect_err("name");
    assert!(matches!(err, HubError::InvalidName { .. }), "{err:?}");

    let err = resolve_dir("nobody-here/nothing", &[], &e.opts)
        .await
        .expect_err("spec");
    assert!(
        matches!(
            &err,
            HubError::RepoNotFound {
                maybe_local_path: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("local path"), "{err}");
}

#[tokio::test]
async fn local_specs_are_used_as_is() {
    let e = env();
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).expect("mkdir");
    std::fs::write(model.join("tokenizer.json"), "{}").expect("write");
    let spec = model.to_string_lossy().to_string();

    assert_eq!(
        resolve_dir(&spec, &["*.safetensors"], &e.opts)
            .await
            .expect("dir"),
        model
    );
    assert_eq!(
        resolve_file(&spec, "tokenizer.json", &e.opts)
            .await
            .expect("in dir"),
        model.join("tokenizer.json")
    );
    let file_spec = model.join("tokenizer.json").to_string_lossy().to_string();
    assert_eq!(
        resolve_file(&file_spec, "ignored.json", &e.opts)
            .await
            .expect("file"),
        model.join("tokenizer.json")
    );
    let err = resolve_file(&spec, "config.json", &e.opts)
        .await
        .expect_err("not in dir");
    assert!(matches!(err, HubError::FileNotInDir { .. }), "{err:?}");
    let err = resolve_dir(&file_spec, &[], &e.opts)
        .await
        .expect_err("file as dir");
    assert!(matches!(err, HubError::NotADirectory { .. }), "{err:?}");
    let missing = dir.path().join("nope").to_string_lossy().to_string();
    let err = resolve_dir(&missing, &[], &e.opts)
        .await
        .expect_err("missing");
    assert!(matches!(err, HubError::LocalPathNotFound { .. }), "{err:?}");
    assert!(e.hub.requests().is_empty());
}

#[test]
fn errors_and_options_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<HubError>();
    send_sync::<HubOptions>();
    send_sync::<v4_hub::Snapshot>();
}
