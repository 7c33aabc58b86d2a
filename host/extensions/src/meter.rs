//! The memory meter: how many bytes the current thread holds, for the memory caps of Rhai code
//! (extensions' handlers and admin scripts). Rhai bounds each value (string, array and map
//! sizes) but not how many values a script keeps alive; the meter counts what it allocates.
//!
//! [`Meter`] is a global allocator over mimalloc that adds each allocation's size to a counter
//! of the allocating thread and takes each freed size off the freeing thread's. mimalloc rather
//! than the system's (glibc's) allocator: a request allocates and frees a few dozen small
//! values, and glibc's `malloc`/`free` were a quarter of a Rhai service call's time (issue 19,
//! BENCHMARKS.md row 3); mimalloc's thread-local free lists take a fraction of that. The
//! `thinghost` binary installs it (`#[global_allocator]`); a process without it has no meter,
//! and [`Budget::exceeded`] is then never true ([`installed`] says which).
//!
//! A budget measures from its start on its thread: Rhai code runs synchronously on the thread
//! that called it, and so do its host calls, so what the code keeps alive is counted there.
//! Memory handed to another thread (an audit record, a queued write) stays counted, and
//! memory freed that was allocated before the budget began counts in the code's favour: both
//! are small next to the caps (tens of MiB).
//!
//! ```
//! use thinghost_extensions::meter;
//! let call = meter::enter(64 << 20);
//! let small = vec![0u8; 1024];
//! assert!(!meter::over_budget());
//! // A call it makes gets at most what is left of its budget.
//! let inner = meter::enter(1 << 30);
//! assert!(inner.budget().remaining() <= 64 << 20);
//! drop((inner, small, call));
//! ```

use mimalloc::MiMalloc as Inner;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::OnceLock;

/// The counting allocator: mimalloc, plus a per-thread count of the bytes held.
pub struct Meter;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread (`const`: reading it never allocates).
    static HELD: Cell<i64> = const { Cell::new(0) };
}

fn count(bytes: i64) {
    // During a thread's teardown the counter may be gone: nothing to count then.
    let _ = HELD.try_with(|h| h.set(h.get().wrapping_add(bytes)));
}

// SAFETY: every method forwards to mimalloc with the caller's arguments unchanged and only
// adds bookkeeping that neither allocates nor panics.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `MiMalloc::alloc`'s.
        let p = unsafe { Inner.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { Inner.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from mimalloc, with `layout`.
        unsafe { Inner.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's, unchanged.
        let p = unsafe { Inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Bytes this thread holds by the meter's count (0 without the meter).
pub fn held() -> i64 {
    HELD.try_with(Cell::get).unwrap_or(0)
}

/// Whether the process's allocator is the [`Meter`] (checked once).
pub fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let before = held();
        let probe = std::hint::black_box(Box::new([0u8; 256]));
        let counted = held() - before >= 256;
        drop(probe);
        counted
    })
}

/// A memory budget for the code running on this thread from now on.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    start: i64,
    cap: i64,
}

impl Budget {
    /// A budget of `cap` bytes, counted from what this thread holds now.
    pub fn start(cap: u64) -> Budget {
        Budget {
            start: held(),
            cap: i64::try_from(cap).unwrap_or(i64::MAX),
        }
    }

    /// Has the thread taken more than the budget since it started? (Never, without the meter.)
    pub fn exceeded(&self) -> bool {
        held().saturating_sub(self.start) > self.cap
    }

    /// What is left of the budget now.
    pub fn remaining(&self) -> i64 {
        self.cap
            .saturating_sub(held().saturating_sub(self.start))
            .max(0)
    }

    /// The cap in MiB, for messages.
    pub fn cap_mib(&self) -> i64 {
        self.cap >> 20
    }
}

thread_local! {
    /// The budget of the Rhai code running on this thread (the innermost, when calls nest).
    static CURRENT: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// The budget of the code about to run on this thread, until the guard is dropped: `cap`
/// bytes, or what is left of the budget of the code that called it if that is less (a call
/// made by a handler or a script spends their memory, not a cap of its own beside theirs).
pub fn enter(cap: u64) -> Entered {
    let outer = CURRENT.with(Cell::get);
    let cap = match outer {
        Some(o) => cap.min(o.remaining() as u64),
        None => cap,
    };
    let budget = Budget::start(cap);
    CURRENT.with(|c| c.set(Some(budget)));
    Entered { budget, outer }
}

/// The budget [`enter`] set; dropping it gives the thread back the budget that was before.
#[must_use = "the budget holds only while the guard lives"]
pub struct Entered {
    budget: Budget,
    outer: Option<Budget>,
}

impl Entered {
    /// The budget in force.
    pub fn budget(&self) -> Budget {
        self.budget
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.outer));
    }
}

/// Has the code running on this thread taken more than its budget? (`on_progress` asks at
/// every step.)
pub fn over_budget() -> bool {
    CURRENT.with(|c| c.get().is_some_and(|b| b.exceeded()))
}
