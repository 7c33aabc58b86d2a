//! The call lane: where service calls and writes run, off the async workers.
//!
//! A request that may run extension code or wait for the disk cannot run on one of the async
//! workers (a call that runs to its deadline would hold the worker, and every connection on
//! it, for that long). tokio's blocking pool takes such work, but it grows a thread for every
//! call in flight: with 64 connections, 64 threads take turns on the cores, and each call
//! pays for waking one (BENCHMARKS.md row 4: Rhai calls at 26-31% of the ceiling, 38% with the
//! pool held to 4 threads). The lane is a pool of a few threads per core that take calls in
//! order, so that under load a thread that finishes one finds the next without sleeping.
//!
//! A small pool alone would let slow calls stall fast ones queued behind them. So a call that
//! has waited [`STALE`] for a lane thread (they are all busy, with slow calls or a long queue)
//! leaves the queue for tokio's blocking pool, where it runs at once: a watchman thread looks
//! every [`WATCH`] while calls wait (every [`IDLE_WATCH`] while none do). No call waits behind
//! another for longer than about `STALE + IDLE_WATCH`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A call that has waited this long for a lane thread moves to tokio's blocking pool.
pub const STALE: Duration = Duration::from_millis(2);
/// How often the watchman looks at the queue while calls wait in it (and how long it sleeps
/// when none do: [`IDLE_WATCH`]).
const WATCH: Duration = Duration::from_millis(1);
const IDLE_WATCH: Duration = Duration::from_millis(10);

type Job = Box<dyn FnOnce() + Send>;

/// A waiting call: since when, the runtime whose blocking pool takes it if it waits too long,
/// and the call.
type Waiting = (Instant, tokio::runtime::Handle, Job);

struct Queue {
    jobs: VecDeque<Waiting>,
    /// Lane threads waiting for a job (a job is announced only to a waiting thread: a wake-up
    /// is a system call).
    waiting: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// The lane was dropped: its threads end once the queue is empty.
    closed: AtomicBool,
    /// How long a call may wait for a lane thread ([`STALE`]).
    stale: Duration,
    /// Calls on lane threads now (for [`Lane::wait_idle`]).
    running: std::sync::atomic::AtomicUsize,
}

/// A pool of a few threads for calls, with an escape to tokio's blocking pool.
pub struct Lane {
    shared: Arc<Shared>,
}

/// Why a call gave no result.
#[derive(Debug)]
pub enum Failed {
    /// It panicked, with this message (its thread goes on).
    Panicked(String),
    /// It was dropped before it ran (the runtime it would have moved to is shutting down, or
    /// cannot start a thread).
    Dropped,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Panicked(m) => write!(f, "the call panicked: {m}"),
            Failed::Dropped => f.write_str("the call was dropped before it ran"),
        }
    }
}

impl Lane {
    /// A lane of `threads` threads; a call that waits too long goes to the blocking pool of the
    /// runtime it came from. Fails if a thread cannot start (those started end).
    pub fn new(threads: usize) -> std::io::Result<Lane> {
        Lane::with_stale(threads, STALE)
    }

    fn with_stale(threads: usize, stale: Duration) -> std::io::Result<Lane> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                waiting: 0,
            }),
            ready: Condvar::new(),
            closed: AtomicBool::new(false),
            stale,
            running: std::sync::atomic::AtomicUsize::new(0),
        });
        // From here, dropping the lane (on an error too) ends the threads started.
        let lane = Lane { shared };
        for i in 0..threads.max(1) {
            let shared = lane.shared.clone();
            std::thread::Builder::new()
                .name(format!("call-lane-{i}"))
                .spawn(move || work(&shared))?;
        }
        let watched = lane.shared.clone();
        std::thread::Builder::new()
            .name("call-lane-watch".into())
            .spawn(move || {
                while !watched.closed.load(Ordering::Acquire) {
                    let pause = watch(&watched, false);
                    std::thread::sleep(pause);
                }
                // What still waits when the lane closes runs on the blocking pool.
                watch(&watched, true);
            })?;
        Ok(lane)
    }

    /// Waits until no call waits in the lane or runs on its threads (as a runtime's shutdown
    /// waits for its blocking pool): the server stops only once the calls in progress end.
    pub fn wait_idle(&self) {
        loop {
            let waiting = {
                let q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                !q.jobs.is_empty()
            };
            if !waiting && self.shared.running.load(Ordering::Acquire) == 0 {
                return;
            }
            std::thread::sleep(WATCH);
        }
    }

    /// Runs `f` on a lane thread (or, if it waits too long for one, on tokio's blocking pool)
    /// and gives its result. Called on a tokio runtime.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Failed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
                Failed::Panicked(
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default(),
                )
            });
            // The requester may be gone (its connection closed): nothing to tell then.
            let _ = tx.send(out);
        });
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.jobs
                .push_back((Instant::now(), tokio::runtime::Handle::current(), job));
            if q.waiting > 0 {
                self.shared.ready.notify_one();
            }
        }
        rx.await.unwrap_or(Err(Failed::Dropped))
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let _q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.ready.notify_all();
    }
}

/// A lane thread: takes jobs in order until the lane is dropped.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some((_, _, job)) = q.jobs.pop_front() {
                    // Counted as running before the queue is let go: `wait_idle` never sees
                    // the call in neither place.
                    shared.running.fetch_add(1, Ordering::AcqRel);
                    break job;
                }
                if shared.closed.load(Ordering::Acquire) {
                    return;
                }
                q.waiting += 1;
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                q.waiting -= 1;
            }
        };
        job();
        shared.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Moves the calls that waited [`STALE`] (or, with `all`, every waiting call) to their
/// runtime's blocking pool; says how long to sleep before looking again.
fn watch(shared: &Shared, all: bool) -> Duration {
    let mut stale = Vec::new();
    let waiting = {
        let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        while q
            .jobs
            .front()
            .is_some_and(|(since, _, _)| all || since.elapsed() >= shared.stale)
        {
            stale.extend(q.jobs.pop_front());
        }
        !q.jobs.is_empty()
    };
    for (_, runtime, job) in stale {
        // tokio panics when it can start no thread at all; the call is then dropped (its
        // requester told so), and the watchman goes on.
        let moved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(runtime.spawn_blocking(job));
        }));
        if moved.is_err() {
            tracing::error!(
                "a call waiting for the call lane could not move to the blocking pool (no thread could start); it was dropped"
            );
        }
    }
    if waiting { WATCH } else { IDLE_WATCH }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A lane whose calls never move to the blocking pool: what it answers, its threads did.
    fn lane_alone(threads: usize) -> Lane {
        Lane::with_stale(threads, Duration::from_secs(3600)).unwrap()
    }

    /// `f` within a minute, or the test fails (instead of hanging on a lost call).
    async fn soon<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("answered")
    }

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(String::from)
    }

    #[test]
    fn calls_give_their_results_in_any_number() {
        let lane = Arc::new(lane_alone(2));
        runtime().block_on(async {
            let tasks: Vec<_> = (0..1000u64)
                .map(|i| {
                    let lane = lane.clone();
                    tokio::spawn(async move {
                        let (n, on) = lane.run(move || (i * 2, thread_name())).await.unwrap();
                        assert!(
                            on.is_some_and(|t| t.starts_with("call-lane-")),
                            "on the lane"
                        );
                        n
                    })
                })
                .collect();
            for (i, t) in tasks.into_iter().enumerate() {
                assert_eq!(soon(t).await.unwrap(), i as u64 * 2);
            }
        });
    }

    #[test]
    fn a_call_that_panics_fails_alone() {
        let lane = lane_alone(1);
        runtime().block_on(async {
            let r: Result<(), _> = soon(lane.run(|| panic!("a handler's bug"))).await;
            assert!(
                matches!(&r, Err(Failed::Panicked(m)) if m == "a handler's bug"),
                "{r:?}"
            );
            // The lane's one thread lived through it.
            let on = soon(lane.run(thread_name)).await.unwrap();
            assert_eq!(on.as_deref(), Some("call-lane-0"));
        });
    }

    #[test]
    fn slow_calls_do_not_hold_back_the_calls_behind_them() {
        let lane = Arc::new(Lane::new(1).unwrap());
        runtime().block_on(async {
            // The lane's only thread is held until this test lets it go.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (started, running) = tokio::sync::oneshot::channel::<()>();
            let slow = {
                let lane = lane.clone();
                tokio::spawn(async move {
                    lane.run(move || {
                        let _ = started.send(());
                        held.recv().is_ok()
                    })
                    .await
                })
            };
            running.await.unwrap();
            // A call behind it leaves the queue for the blocking pool after STALE and answers
            // while the slow one still holds the thread.
            let ran_on = soon(lane.run(thread_name)).await.unwrap();
            assert_ne!(
                ran_on.as_deref(),
                Some("call-lane-0"),
                "it ran on the blocking pool"
            );
            assert!(!slow.is_finished());
            release.send(()).unwrap();
            assert!(soon(slow).await.unwrap().unwrap());
        });
    }

    #[test]
    fn waiting_for_idle_waits_for_the_calls_in_progress() {
        let lane = Arc::new(lane_alone(1));
        let done = Arc::new(AtomicBool::new(false));
        runtime().block_on(async {
            let (started, running) = tokio::sync::oneshot::channel::<()>();
            let call = {
                let (lane, done) = (lane.clone(), done.clone());
                tokio::spawn(async move {
                    lane.run(move || {
                        let _ = started.send(());
                        std::thread::sleep(Duration::from_millis(50));
                        done.store(true, Ordering::Release);
                    })
                    .await
                })
            };
            running.await.unwrap();
            let waiter = lane.clone();
            tokio::task::spawn_blocking(move || waiter.wait_idle())
                .await
                .unwrap();
            assert!(done.load(Ordering::Acquire), "it waited for the call");
            soon(call).await.unwrap().unwrap();
        });
    }
}
