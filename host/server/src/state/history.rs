//! The persistence provider of a running server (DOMAIN H1): one writer thread that appends
//! what is queued in one transaction (group commit: many writers share one fsync, and each waits
//! for its own), and a few connections for reads. Neither takes the model's lock: a value is
//! queued under it (so the order of the model's changes is the order of the history), and waited
//! for after it is released.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, MutexGuard};
use thinghost_store::StoreError;
use thinghost_store::history::{History, Logged, SqliteHistory, StreamEntry};

/// A write other than an append, run on the writer's connection.
type WriteJob = Box<dyn FnOnce(&mut dyn History) + Send>;

/// What the writer is asked to do.
enum Job {
    /// Values and stream entries to append, and who waits for them (told the entries' ids).
    Append {
        values: Vec<Logged>,
        entries: Vec<(String, StreamEntry)>,
        done: SyncSender<Result<Vec<i64>, String>>,
    },
    /// Any other write (a purge, a trim, a Thing forgotten): run on the writer's connection,
    /// so that its caches never name what is gone.
    Run(WriteJob),
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
pub struct Pending(Option<Receiver<Result<Vec<i64>, String>>>);

impl Pending {
    /// Nothing to wait for.
    pub fn none() -> Pending {
        Pending(None)
    }

    /// Waits until the values are on disk (or their write failed: logged, and said).
    pub fn wait(self) -> Result<(), String> {
        self.ids().map(|_| ())
    }

    /// Waits, and gives the ids of the entries appended.
    pub fn ids(self) -> Result<Vec<i64>, String> {
        match self.0 {
            None => Ok(Vec::new()),
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
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let (mut values, mut entries, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        match first {
            Job::Run(f) => {
                // A job that panics is its caller's failure (its answer channel closes), not
                // the writer's: the writer goes on.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(store.as_mut())))
                    .is_err()
                {
                    tracing::error!(
                        "a write of the persistence provider panicked; the writer goes on"
                    );
                }
                continue;
            }
            Job::Append {
                values: v,
                entries: e,
                done,
            } => {
                waiting.push((entries.len(), e.len(), done));
                values.extend(v);
                entries.extend(e);
            }
        }
        // Group commit: what else is queued joins this transaction, up to a run job (it waits
        // for this batch, keeping the order).
        while values.len() + entries.len() < BATCH {
            match queue.try_recv() {
                Ok(Job::Append {
                    values: v,
                    entries: e,
                    done,
                }) => {
                    waiting.push((entries.len(), e.len(), done));
                    values.extend(v);
                    entries.extend(e);
                }
                Ok(run) => {
                    next = Some(run);
                    break;
                }
                Err(_) => break,
            }
        }
        // A busy or full disk: try again a few times before giving up on this batch.
        let mut outcome = Err(String::new());
        for attempt in 0..5 {
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                store.write(&values, &entries)
            }))
            .unwrap_or_else(|_| {
                Err(thinghost_store::StoreError::Corrupt {
                    path: std::path::PathBuf::from(thinghost_store::history::FILE),
                    what: "an append".into(),
                    message: "the write panicked".into(),
                })
            });
            match written {
                Ok(ids) => {
                    outcome = Ok(ids);
                    break;
                }
                Err(e) => {
                    outcome = Err(e.to_string());
                    std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
                }
            }
        }
        if let Err(e) = &outcome {
            tracing::error!(error = %e, values = values.len(), entries = entries.len(), "history could not be written");
        }
        for (from, n, done) in waiting {
            let _ = done.send(match &outcome {
                Ok(ids) => Ok(ids[from..from + n].to_vec()),
                Err(e) => Err(e.clone()),
            });
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
        self.append_all(values, Vec::new())
    }

    /// Queues values and stream entries to append together.
    pub fn append_all(&self, values: Vec<Logged>, entries: Vec<(String, StreamEntry)>) -> Pending {
        if values.is_empty() && entries.is_empty() {
            return Pending::none();
        }
        let (done, wait) = sync_channel(1);
        if let Err(std::sync::mpsc::SendError(Job::Append { done, .. })) =
            self.queue.send(Job::Append {
                values,
                entries,
                done,
            })
        {
            let _ = done.send(Err("the history writer stopped".to_string()));
        }
        Pending(Some(wait))
    }

    /// Runs a write other than an append (a purge, a trim) on the writer, after what is queued
    /// before it; waits for its answer.
    pub fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn History) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = sync_channel(1);
        let job = Job::Run(Box::new(move |h: &mut dyn History| {
            let _ = tx.send(f(h).map_err(|e| e.to_string()));
        }));
        self.queue
            .send(job)
            .map_err(|_| "the history writer stopped".to_string())?;
        rx.recv()
            .map_err(|_| "the history writer stopped".to_string())?
    }

    /// Runs a read on one of the read connections (WAL: it never waits for the writer).
    pub fn read<T>(&self, f: impl FnOnce(&mut dyn History) -> T) -> T {
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
