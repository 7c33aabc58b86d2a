//! The recent log lines of each extension (issue 23): every event of the server's log that
//! names an `extension` (its code's `print`, `debug` and host `log` lines, its refusals, its
//! failures) is also kept here, the newest [`PER_EXTENSION`] per extension, for
//! `GetExtensionLog` and `thinghost plugin logs NAME [--follow]`.
//!
//! A `tracing` layer fills it (`Layer`, installed with the server's log); the buffer is the
//! process's, as the log is.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use tracing::field::{Field, Visit};

/// How many lines are kept per extension.
pub const PER_EXTENSION: usize = 500;
/// How many extensions' lines are kept (the ones heard from last).
const EXTENSIONS: usize = 256;
/// The most characters of one line.
const LINE: usize = 4096;

/// One line.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Increasing over the process: what a follower has seen.
    pub seq: u64,
    /// Epoch milliseconds.
    pub time: i64,
    pub level: &'static str,
    /// The event's message and its other fields (`key=value`).
    pub text: String,
}

#[derive(Default)]
struct Buffers {
    lines: BTreeMap<String, VecDeque<Line>>,
    /// When each extension was last heard from (for dropping the quietest past the bound).
    heard: BTreeMap<String, u64>,
}

static BUFFERS: LazyLock<Mutex<Buffers>> = LazyLock::new(Default::default);
static SEQ: AtomicU64 = AtomicU64::new(1);

/// Keeps a line of `extension`.
pub fn record(extension: &str, level: &'static str, text: String) {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let text: String = text.chars().take(LINE).collect();
    let line = Line {
        seq,
        time: crate::now_ms(),
        level,
        text,
    };
    let mut b = BUFFERS.lock().unwrap_or_else(|p| p.into_inner());
    if !b.lines.contains_key(extension) && b.lines.len() >= EXTENSIONS {
        // Room for a new one: the one heard from longest ago goes.
        if let Some(oldest) = b
            .heard
            .iter()
            .min_by_key(|(_, s)| **s)
            .map(|(n, _)| n.clone())
        {
            b.lines.remove(&oldest);
            b.heard.remove(&oldest);
        }
    }
    b.heard.insert(extension.to_string(), seq);
    let q = b.lines.entry(extension.to_string()).or_default();
    if q.len() >= PER_EXTENSION {
        q.pop_front();
    }
    q.push_back(line);
}

/// The newest `max` lines of `extension` after `after` (a sequence number; 0: all), oldest
/// first.
pub fn recent(extension: &str, after: u64, max: usize) -> Vec<Line> {
    let b = BUFFERS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(q) = b.lines.get(extension) else {
        return Vec::new();
    };
    let newer: Vec<&Line> = q.iter().filter(|l| l.seq > after).collect();
    newer[newer.len().saturating_sub(max)..]
        .iter()
        .map(|l| (*l).clone())
        .collect()
}

/// The `tracing` layer that keeps the events naming an `extension`.
pub struct Layer;

#[derive(Default)]
struct Fields {
    extension: Option<String>,
    message: String,
    rest: Vec<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "extension" => self.extension = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            name => self.rest.push(format!("{name}={value:?}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            // `extension = %name` and `extension = ?name` arrive here.
            "extension" => self.extension = Some(text.trim_matches('"').to_string()),
            "message" => self.message = text,
            name => self.rest.push(format!("{name}={text}")),
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        // Most events (every request's line) name no extension: nothing is visited for them.
        if event.metadata().fields().field("extension").is_none() {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let Some(extension) = f.extension else {
            return;
        };
        let mut text = f.message;
        for r in f.rest {
            text.push(' ');
            text.push_str(&r);
        }
        record(&extension, event.metadata().level().as_str(), text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_per_extension_newest_last_and_bounded() {
        for i in 0..(PER_EXTENSION + 10) {
            record("unit-a", "INFO", format!("line {i}"));
        }
        record("unit-b", "WARN", "other".into());
        let all = recent("unit-a", 0, usize::MAX);
        assert_eq!(all.len(), PER_EXTENSION);
        assert_eq!(
            all.last().unwrap().text,
            format!("line {}", PER_EXTENSION + 9)
        );
        let last_two = recent("unit-a", 0, 2);
        assert_eq!(last_two.len(), 2);
        let after = recent("unit-a", last_two[0].seq, 10);
        assert_eq!(after, vec![last_two[1].clone()]);
        assert_eq!(recent("unit-b", 0, 10)[0].level, "WARN");
        assert!(recent("unit-none", 0, 10).is_empty());
    }
}
