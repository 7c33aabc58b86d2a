//! Work no request started: the scheduler (audit archive, cleanup and purge, the end of
//! remote-access sessions whose user no longer acts; `scheduler`) and the watch of the plugin
//! directory (`watch`). Started by `serve` (`crate::cli`), and the only folder besides it that may
//! start threads of its own at will.

pub mod scheduler;
pub mod watch;
