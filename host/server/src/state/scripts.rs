//! The limits of admin scripts and the scripts running now: what the server's state holds about
//! scripts (`App::script_limits`, `App::scripts_running`). The scripts themselves run in
//! `crate::api::script`.

use std::time::Duration;

/// The limits of one script run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rhai operations (a loop that does nothing still counts).
    pub max_operations: u64,
    /// Calls of the script API (each is a request).
    pub max_calls: u64,
    /// Wall-clock time for the whole run.
    pub timeout: Duration,
    /// Bytes of printed output.
    pub max_output: usize,
    /// Bytes the script may hold at once: its values and what its calls add to its copy of the
    /// model (by `thinghost_extensions::meter`, which the binary installs).
    pub max_memory: u64,
    /// Scripts running at once, server-wide (`serve --max-scripts`): a script may use a core
    /// for its whole time limit, and any signed-in user may run one.
    pub max_running: usize,
    /// Scripts one user may run at once (`serve --max-scripts-per-user`): one user cannot take
    /// every slot.
    pub max_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 10_000_000,
            max_calls: 10_000,
            timeout: Duration::from_secs(30),
            max_output: 1 << 20,
            max_memory: 256 << 20,
            max_running: 2,
            max_per_user: 1,
        }
    }
}

/// The scripts running now, per user: at most [`Limits::max_running`] in all and
/// [`Limits::max_per_user`] per user; the others answer 503 until one ends.
#[derive(Default)]
pub struct Running(std::sync::Mutex<std::collections::HashMap<String, usize>>);

/// A running script's slot, given back when dropped.
pub struct Slot<'a> {
    running: &'a Running,
    user: String,
}

impl Running {
    /// Takes a slot for `user`, or says why there is none.
    pub fn take(&self, user: &str, limits: &Limits) -> Result<Slot<'_>, String> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mine = map.get(user).copied().unwrap_or(0);
        if mine >= limits.max_per_user {
            return Err(format!(
                "{user} runs {mine} script(s) already, the most one user may run at once (serve --max-scripts-per-user); try again when it ends"
            ));
        }
        let all: usize = map.values().sum();
        if all >= limits.max_running {
            return Err(format!(
                "{all} scripts are running already (serve --max-scripts); try again when one ends"
            ));
        }
        *map.entry(user.to_string()).or_insert(0) += 1;
        Ok(Slot {
            running: self,
            user: user.to_string(),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.running.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}
