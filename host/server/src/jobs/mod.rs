//! Work no request started: the scheduler (audit archive, cleanup and purge, the end of
//! remote-access sessions whose user no longer acts; `scheduler`), the events of timers and
//! schedulers (`timers`, on the same clock) and the watch of the plugin
//! directory (`watch`), the retention of streams (`retention`). Started by `serve` (`crate::cli`); they act through `crate::api` (reloads,
//! the check of a scheduler's `runAsUser`) and on `crate::state` (the audit jobs).

pub mod retention;
pub mod scheduler;
pub mod timers;
pub mod watch;
