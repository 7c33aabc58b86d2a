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
    let hex = thinghost_core::hex(&bytes);
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
    // Every request with a key hashes it: one allocation, no formatting.
    let mut stored = String::with_capacity(7 + 64);
    stored.push_str("sha256:");
    stored.push_str(&thinghost_core::hex(&digest));
    stored
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

/// The password hashing pool: argon2 takes 19 MiB and tens of milliseconds per hash, so hashes
/// and checks run on a few threads of their own (at most `threads` at once, whatever the load),
/// with a short queue; a job that finds the queue full is refused at once ([`Busy`]: the client
/// gets 503 and tries again), so a burst of sign-ins never holds more than
/// `threads` x 19 MiB nor queues without bound.
pub struct HashPool {
    jobs: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
    /// Jobs taken (run or waiting): what tests count to see that a check happened.
    taken: std::sync::atomic::AtomicU64,
}

/// The hashing pool's queue is full.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server is checking too many passwords at once; try again in a moment")
    }
}

impl HashPool {
    /// Threads that hash, and jobs that may wait for them.
    pub const THREADS: usize = 2;
    pub const QUEUE: usize = 16;

    pub fn new(threads: usize, queue: usize) -> HashPool {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(queue);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        HashPool {
            jobs,
            taken: Default::default(),
        }
    }

    /// How many jobs were taken so far.
    pub fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `f`; its answer arrives on the receiver (await it, or `blocking_recv` outside the
    /// async runtime).
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, Busy> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .try_send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| Busy)?;
        self.taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(rx)
    }

    /// Runs `f` on the pool and waits for it (from a thread that may block).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        self.submit(f)?.blocking_recv().map_err(|_| Busy)
    }
}

impl Default for HashPool {
    fn default() -> Self {
        HashPool::new(HashPool::THREADS, HashPool::QUEUE)
    }
}

/// A hash no password matches, checked for users that do not exist or have no password, so
/// that they cost the same argon2 work as a real user (no user names learned from timing).
pub fn unmatchable_hash() -> &'static str {
    static HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut random = [0u8; 32];
        let _ = getrandom::fill(&mut random);
        let secret = thinghost_core::hex(&random);
        hash_password(&secret).unwrap_or_default()
    });
    &HASH
}

thread_local! {
    /// The argon2 memory of this thread, kept from one hash to the next: allocated and freed
    /// for each hash (19 MiB), it was kept by the allocator's arenas anyway, a little more with
    /// each thread that hashed (hundreds of MiB after a few dozen sign-ins); kept here, it is
    /// one buffer per hashing thread, [`HashPool::THREADS`] in all.
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Argon2 of `password` and `salt` into `out`, on this thread's kept memory.
fn argon2_into(
    algorithm: argon2::Algorithm,
    version: argon2::Version,
    params: argon2::Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    let blocks = params.block_count();
    let hasher = argon2::Argon2::new(algorithm, version, params);
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < blocks {
            b.resize(blocks, argon2::Block::default());
        }
        hasher
            .hash_password_into_with_memory(password, salt, out, &mut b[..blocks])
            .map_err(|e| e.to_string())
    })
}

/// Hashes a password with argon2id (the argon2 crate's defaults: 19 MiB, 2 passes), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| e.to_string())?;
    let params = argon2::Params::default();
    let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
        password.as_bytes(),
        salt_bytes,
        &mut out,
    )?;
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// The most memory (KiB), passes and lanes a stored hash may ask a check for: a hash imported
/// with larger ones would make each sign-in a memory or time bomb, and is refused instead.
pub const MAX_ARGON2: (u32, u32, u32) = (64 * 1024, 10, 4);

/// Checks a password against a PHC string, comparing in constant time. A hash whose cost is
/// above [`MAX_ARGON2`], or that is no argon2 hash, matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordHash;
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let within = |name: &str, max: u32| h.params.get_decimal(name).is_none_or(|v| v <= max);
    let (m, t, p) = MAX_ARGON2;
    if !(within("m", m) && within("t", t) && within("p", p)) {
        return false;
    }
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        argon2::Algorithm::try_from(h.algorithm),
        argon2::Params::try_from(&h),
        h.salt,
        h.hash,
    ) else {
        return false;
    };
    let version = match h.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    argon2_into(
        algorithm,
        version,
        params,
        password.as_bytes(),
        salt_bytes,
        &mut out,
    )
    .is_ok()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            out.as_slice(),
            expected.as_bytes(),
        ))
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
        // Hashes made by the argon2 crate's own path (what older versions stored) verify.
        use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
        let older = argon2::Argon2::default()
            .hash_password(b"older", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(super::verify_password("older", &older));
        assert!(!super::verify_password("olde", &older));
        assert!(super::unmatchable_hash().starts_with("$argon2id$"));
        assert!(!super::verify_password("", super::unmatchable_hash()));
        // A stored hash asking for 4 GiB is no hash.
        let bomb = h.replace("m=19456", "m=4194304");
        assert_ne!(bomb, h);
        assert!(!super::verify_password("s3cret", &bomb));
    }

    #[test]
    fn k5_the_hash_pool_runs_jobs_and_refuses_past_its_queue() {
        let pool = super::HashPool::new(1, 2);
        assert_eq!(pool.run(|| 1 + 1), Ok(2));
        // One job holds the thread; two wait; the next is refused at once.
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let held = pool
            .submit(move || {
                let _ = release.recv();
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let waiting: Vec<_> = (0..2).map(|i| pool.submit(move || i).unwrap()).collect();
        assert_eq!(pool.submit(|| 9).err(), Some(super::Busy));
        hold.send(()).unwrap();
        held.blocking_recv().unwrap();
        let done: Vec<i32> = waiting
            .into_iter()
            .map(|r| r.blocking_recv().unwrap())
            .collect();
        assert_eq!(done, vec![0, 1]);
    }
}
