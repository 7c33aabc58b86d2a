//! Application keys (DOMAIN K2): random, shown once, stored only as a hash.
//!
//! A key is 128 bits from the operating system's CSPRNG, written in the UUID layout the vendor's
//! clients expect (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, every bit random). Because a key has
//! full entropy, a fast hash (SHA-256) is safe to store: there is nothing to guess from it. The
//! fingerprint, a prefix of that hash, names a key in lists and logs without revealing it.

use sha2::{Digest, Sha256};

/// A new key and what is stored of it.
pub struct NewKey {
    /// The secret: shown once, never stored.
    pub secret: String,
    /// `sha256:` and the hex SHA-256 of the secret.
    pub hash: String,
    /// A short, non-secret name for the key.
    pub fingerprint: String,
}

/// Generates a key.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let hash = hash(&secret);
    let fingerprint = fingerprint(&hash);
    Ok(NewKey {
        secret,
        hash,
        fingerprint,
    })
}

/// The stored form of a key.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The fingerprint of a stored hash: its first 16 hex digits.
pub fn fingerprint(hash: &str) -> String {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    hex.chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_uuid_shaped_and_stored_only_as_hashes() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), 36);
        assert!(!a.hash.contains(&a.secret));
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), "sha256:".len() + 64);
        assert!(a.hash.contains(&a.fingerprint));
    }
}
