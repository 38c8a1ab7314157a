//! `v4 admin` against a SQLite ledger: tenants, keys (secret shown once, usable to look the
//! key up, revocable), prices, credits and balances; bad input is a clear error.

use std::process::Command;

fn admin(ledger: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_v4"))
        .arg("admin")
        .args(["--ledger", ledger])
        .args(args)
        .output()
        .expect("v4 admin runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn operators_manage_tenants_keys_prices_and_credit() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("sub/ledger.db").display()
    );
    let (ok, out, err) = admin(&url, &["tenants", "create", "acme", "--overdraft", "1.5"]);
    assert!(ok, "{err}");
    assert!(out.contains("acme"));
    let (ok, out, _) = admin(&url, &["credit", "acme", "25.00", "--note", "invoice 1"]);
    assert!(ok);
    assert!(out.contains("balance 25.000000"), "{out}");
    let (ok, out, err) = admin(
        &url,
        &["keys", "create", "acme", "--name", "ci", "--rpm", "60"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("shown this once"));
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("the secret is printed")
        .to_string();
    let key_id = out
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap()
        .to_string();
    assert!(secret.starts_with("sk-v4-"));
    let (_, list, _) = admin(&url, &["keys", "list", "acme"]);
    assert!(list.contains(&key_id) && list.contains("active") && list.contains("Some(60)"));
    assert!(!list.contains(&secret), "the secret is never shown again");
    // The database holds no trace of the secret beyond its prefix.
    let db = std::fs::read(dir.path().join("sub/ledger.db")).unwrap();
    let tail = &secret.as_bytes()[12..];
    assert!(!db.windows(tail.len()).any(|w| w == tail));
    assert!(admin(&url, &["keys", "revoke", &key_id]).0);
    assert!(admin(&url, &["keys", "list", "acme"]).1.contains("revoked"));
    let (ok, out, _) = admin(
        &url,
        &[
            "prices",
            "set",
            "deepseek-v4-flash",
            "think-high",
            "output_answer",
            "0.30",
            "--from-ms",
            "1800000000000",
        ],
    );
    assert!(ok, "{out}");
    let (_, prices, _) = admin(&url, &["prices", "list"]);
    assert!(prices.contains("0.300000 per 1M") && prices.contains("0.280000 per 1M"));
    assert!(admin(&url, &["balance", "acme"]).1.contains("25.000000"));
    let (ok, out, _) = admin(&url, &["usage", "acme"]);
    assert!(ok && out.starts_with("day\tmodel"));

    for (args, needle) in [
        (vec!["credit", "acme", "12.3456789"], "6 decimals"),
        (vec!["credit", "nobody", "1"], "not found"),
        (
            vec!["prices", "set", "m", "thinking", "output_answer", "1"],
            "mode",
        ),
        (
            vec!["prices", "set", "m", "non-think", "output", "1"],
            "class",
        ),
        (vec!["keys", "revoke", "key_missing"], "not found"),
    ] {
        let (ok, _, err) = admin(&url, &args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
