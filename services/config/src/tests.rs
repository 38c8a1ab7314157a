use std::collections::BTreeMap;

use super::*;

settings! {
    /// A test service.
    pub struct TestSettings("test") {
        /// Listen address.
        listen: String = "127.0.0.1:8000".into(),
        /// Batch size.
        max_batch: u32 = 32,
        /// Seconds.
        keep_alive_secs: f64 = 10.0,
        /// On or off.
        enabled: bool = false,
        /// Shared URL.
        nats_url: String = "nats://a:1".into(); env = "V4_NATS_URL",
        /// Keys.
        api_keys: Vec<String> = vec![]; secret = true,
        /// Optional.
        namespace: Option<String> = None; env = "V4_NATS_NAMESPACE",
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_then_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "max_batch = 8\nlisten = \"0.0.0.0:1\"\nenabled = true\n",
    )
    .unwrap();
    let mut l = Layers {
        file: Some(file),
        env: env(&[
            ("V4_TEST_MAX_BATCH", "16"),
            ("V4_NATS_URL", "nats://b:2"),
            ("V4_TEST_API_KEYS", "k1, k2"),
            ("V4_OTHER_THING", "ignored"),
        ]),
        flags: vec![],
    };
    let s: TestSettings = load(&l).unwrap();
    assert_eq!(s.listen, "0.0.0.0:1"); // file
    assert_eq!(s.max_batch, 16); // env over file
    assert!(s.enabled);
    assert_eq!(s.keep_alive_secs, 10.0); // default
    assert_eq!(s.nats_url, "nats://b:2");
    assert_eq!(s.api_keys, ["k1", "k2"]);
    assert_eq!(s.namespace, None);
    l.flag("max_batch", Some(4)).flag("namespace", Some("ns"));
    l.sets(&["keep_alive_secs=2.5".into()]).unwrap();
    let s: TestSettings = load(&l).unwrap();
    assert_eq!((s.max_batch, s.keep_alive_secs), (4, 2.5));
    assert_eq!(s.namespace.as_deref(), Some("ns"));
    let line = effective_line(&s);
    assert!(line.contains("<2 set>") && !line.contains("k1"), "{line}");
}

#[test]
fn unknown_keys_and_bad_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "max_bach: 3\n").unwrap();
    let l = Layers {
        file: Some(file.clone()),
        ..Layers::default()
    };
    let e = load::<TestSettings>(&l).unwrap_err().to_string();
    assert!(
        e.contains("max_bach") && e.contains("c.yaml") && e.contains("max_batch"),
        "{e}"
    );

    let l = Layers {
        env: env(&[("V4_TEST_MAX_BACH", "3")]),
        ..Layers::default()
    };
    let e = load::<TestSettings>(&l).unwrap_err().to_string();
    assert!(
        e.contains("V4_TEST_MAX_BACH") && e.contains("V4_TEST_MAX_BATCH"),
        "{e}"
    );

    let l = Layers {
        env: env(&[("V4_TEST_MAX_BATCH", "many")]),
        ..Layers::default()
    };
    let e = load::<TestSettings>(&l).unwrap_err().to_string();
    assert!(e.contains("max_batch"), "{e}");

    let mut l = Layers::default();
    l.flag("nope", Some(1));
    assert!(
        load::<TestSettings>(&l)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
    assert!(Layers::default().sets(&["novalue".into()]).is_err());

    let bad = dir.path().join("c.ini");
    std::fs::write(&bad, "").unwrap();
    let l = Layers {
        file: Some(bad),
        ..Layers::default()
    };
    assert!(
        load::<TestSettings>(&l)
            .unwrap_err()
            .to_string()
            .contains(".toml")
    );
}

#[test]
fn docs_list_every_key() {
    let md = markdown::<TestSettings>();
    for k in TestSettings::keys() {
        assert!(md.contains(&format!("`{}`", k.key)), "{md}");
        assert!(md.contains(&k.env));
    }
    assert!(md.contains("`V4_TEST_MAX_BATCH`") && md.contains("A test service."));
}
