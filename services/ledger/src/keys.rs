//! API key secrets: `sk-v4-` + 43 characters of base64url (256 random bits). Only the sha256
//! of a secret and its first [`PREFIX_LEN`] characters are stored.

use sha2::{Digest, Sha256};

/// Characters of the secret kept as its visible prefix.
pub const PREFIX_LEN: usize = 12;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh secret from the operating system's CSPRNG.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 33];
    getrandom::fill(&mut bytes)?;
    let mut s = String::from("sk-v4-");
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8 | chunk[2] as u32;
        for shift in [18, 12, 6, 0] {
            s.push(ALPHABET[(n >> shift) as usize & 63] as char);
        }
    }
    Ok(s)
}

/// sha256 of a secret, lower-case hex (the stored form).
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The visible prefix of a secret.
pub fn prefix(secret: &str) -> String {
    secret.chars().take(PREFIX_LEN).collect()
}

/// A random id with a type prefix (`tn_…`, `key_…`).
pub fn new_id(kind: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{kind}_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("sk-v4-") && a.len() == 6 + 44);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert_eq!(prefix(&a).len(), PREFIX_LEN);
        assert!(new_id("key").unwrap().starts_with("key_"));
    }
}
