//! The last warnings and errors this process logged, for the status page:
//! a tracing layer copies each WARN or ERROR event into a small ring. The
//! page is unauthenticated, so fields that name buckets, objects or paths
//! are left out of the copy (the log itself keeps them).

use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept.
pub const KEPT: usize = 50;
/// Longest line kept, in bytes: a runaway message must not fill memory.
const MAX_LINE: usize = 512;
/// Fields never copied.
const WITHHELD: [&str; 5] = ["bucket", "key", "path", "object", "prefix"];

#[derive(Debug, Clone, Serialize)]
pub struct LoggedError {
    pub time_ms: u64,
    pub level: &'static str,
    pub target: String,
    pub line: String,
}

/// One ring per process, as the log it mirrors is.
static RING: Mutex<VecDeque<LoggedError>> = Mutex::new(VecDeque::new());

/// The lines kept, oldest first.
pub fn recent() -> Vec<LoggedError> {
    RING.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// The layer to add to the process's subscriber.
pub fn layer() -> RecentErrors {
    RecentErrors
}

pub struct RecentErrors;

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            _ => return,
        };
        let mut line = Line::default();
        event.record(&mut line);
        let mut text = line.message;
        if !line.fields.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&line.fields);
        }
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let mut ring = RING.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(LoggedError {
            time_ms: grid::clock::now_ms(),
            level,
            target: meta.target().to_string(),
            line: text,
        });
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if name == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if WITHHELD.contains(&name) {
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{name}={value:?}");
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // Without Debug's quotes and escapes: these are read by people.
        self.record_debug(field, &format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_warnings_without_object_names() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(bucket = "secret-bucket", node = "n1", "node slow");
            tracing::error!(error = %"disk gone", "write failed");
        });
        let lines = recent();
        let slow = lines
            .iter()
            .find(|l| l.line.starts_with("node slow"))
            .expect("warning kept");
        assert_eq!(slow.level, "warn");
        assert!(slow.line.contains("node=n1"), "{}", slow.line);
        assert!(!slow.line.contains("secret-bucket"), "{}", slow.line);
        assert!(lines
            .iter()
            .any(|l| l.level == "error" && l.line == "write failed error=disk gone"));
        assert!(!lines.iter().any(|l| l.line.contains("not kept")));
    }
}
