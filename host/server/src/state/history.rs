//! The persistence provider of a running server (DOMAIN H1): one writer thread that appends
//! what is queued in one transaction (group commit: many writers share one fsync, and each waits
//! for its own), and a few connections for reads. Neither takes the model's lock: a value is
//! queued under it (so the order of the model's changes is the order of the history), and waited
//! for after it is released.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, MutexGuard};
use thinghost_store::StoreError;
use thinghost_store::history::{History, Logged, SqliteHistory};

/// What the writer is asked to do.
enum Job {
    Append(Vec<Logged>, Option<SyncSender<Result<(), String>>>),
}

/// The data of data-storage Things, as the server holds it.
pub struct HistoryLog {
    queue: SyncSender<Job>,
    /// Connections for reads (WAL: a read never waits for the writer). A read takes the first
    /// free one, or waits for the one its thread is given.
    readers: Vec<Mutex<Box<dyn History>>>,
    /// The provider the server names its default (`serve --default-persistence-provider`).
    pub default_provider: String,
    /// The most rows one query answers (`serve --max-items`).
    pub max_items: usize,
}

/// A queued append to wait for: durable once [`Pending::wait`] returns `Ok`.
#[must_use = "an append is durable only once waited for"]
pub struct Pending(Option<Receiver<Result<(), String>>>);

impl Pending {
    /// Nothing to wait for.
    pub fn none() -> Pending {
        Pending(None)
    }

    /// Waits until the values are on disk (or their write failed: logged, and said).
    pub fn wait(self) -> Result<(), String> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .recv()
                .map_err(|_| "the history writer stopped".to_string())?,
        }
    }
}

/// The most rows one history query answers by default (`serve --max-items`).
pub const MAX_ITEMS: usize = 100_000;

/// How many values one transaction takes at most.
const BATCH: usize = 16_384;
/// How many reads run at once.
const READERS: usize = 4;

fn writer(mut store: Box<dyn History>, queue: Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut values = Vec::new();
        let mut waiting = Vec::new();
        let mut take = |job: Job, values: &mut Vec<Logged>| match job {
            Job::Append(v, done) => {
                values.extend(v);
                waiting.extend(done);
            }
        };
        take(first, &mut values);
        while values.len() < BATCH {
            match queue.try_recv() {
                Ok(job) => take(job, &mut values),
                Err(_) => break,
            }
        }
        // A busy or full disk: try again a few times before giving up on this batch.
        let mut outcome = Err(String::new());
        for attempt in 0..5 {
            match store.append(&values) {
                Ok(()) => {
                    outcome = Ok(());
                    break;
                }
                Err(e) => {
                    outcome = Err(e.to_string());
                    std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
                }
            }
        }
        if let Err(e) = &outcome {
            tracing::error!(error = %e, values = values.len(), "logged values could not be written to their value streams");
        }
        for done in waiting {
            let _ = done.send(outcome.clone());
        }
    }
}

impl HistoryLog {
    /// Opens the embedded provider's file in the data directory (created if missing).
    pub fn open(
        dir: &Path,
        default_provider: &str,
        max_items: usize,
    ) -> Result<HistoryLog, StoreError> {
        let path = dir.join(thinghost_store::history::FILE);
        let store = SqliteHistory::open(&path)?;
        let mut readers: Vec<Mutex<Box<dyn History>>> = Vec::new();
        for _ in 0..READERS {
            readers.push(Mutex::new(Box::new(SqliteHistory::open(&path)?)));
        }
        let (queue, rx) = sync_channel(65_536);
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer(Box::new(store), rx))
            .map_err(|e| StoreError::Io { path, source: e })?;
        Ok(HistoryLog {
            queue,
            readers,
            default_provider: default_provider.to_string(),
            max_items,
        })
    }

    /// Queues values to append (in the order queued); wait on the answer for them to be on disk.
    pub fn append(&self, values: Vec<Logged>) -> Pending {
        if values.is_empty() {
            return Pending::none();
        }
        let (done, wait) = sync_channel(1);
        match self.queue.send(Job::Append(values, Some(done))) {
            Ok(()) => Pending(Some(wait)),
            Err(_) => {
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err("the history writer stopped".to_string()));
                Pending(Some(rx))
            }
        }
    }

    /// Runs a read (or a purge: WAL lets it write beside the writer, which waits for it at
    /// most the busy timeout) on one of the other connections.
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn History) -> T) -> T {
        let mut guard: MutexGuard<'_, Box<dyn History>> = self
            .readers
            .iter()
            .find_map(|r| r.try_lock().ok())
            .unwrap_or_else(|| {
                // All busy: wait for one, spread over them by thread.
                let i = thread_slot() % self.readers.len();
                self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
            });
        f(guard.as_mut())
    }
}

fn thread_slot() -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() as usize
}
