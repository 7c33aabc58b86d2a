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

/// Hashes a password with argon2id (the argon2 crate's defaults: 19 MiB, 2 passes), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC string (constant-time inside argon2).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod password_tests {
    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = super::hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify_password("s3cret", &h));
        assert!(!super::verify_password("wrong", &h));
        assert!(!super::verify_password("s3cret", "not a hash"));
    }
}
