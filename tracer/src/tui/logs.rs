//! Log lines (`tracing`) while the screen is up: held back, shown on the status line, and
//! printed once the terminal is restored.
use std::{
    io::{self, Write as _},
    sync::Mutex,
};

use tokio::sync::mpsc;

use super::TuiUpdate;

/// Log lines held while the screen is up.
struct Held {
    text: Vec<u8>,
    /// Lines not kept past [`HELD_MAX`].
    dropped: u64,
    notices: Option<mpsc::Sender<TuiUpdate>>,
}

/// Bytes of log text held at most.
const HELD_MAX: usize = 1 << 20;

static HELD: Mutex<Option<Held>> = Mutex::new(None);

fn held() -> std::sync::MutexGuard<'static, Option<Held>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer of the `tracing` subscriber: standard error, or the held lines while
/// [`hold_logs`] is in effect.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log record, routed when dropped.
pub struct LogLine(Vec<u8>);

impl io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut guard = held();
        match guard.as_mut() {
            Some(h) => {
                if h.text.len() + self.0.len() <= HELD_MAX {
                    h.text.extend_from_slice(&self.0);
                } else {
                    h.dropped += 1;
                }
                if let Some((tx, text)) = h.notices.as_ref().zip(notice_text(&self.0)) {
                    let _ = tx.try_send(TuiUpdate::Notice(text));
                }
            }
            None => {
                drop(guard);
                let _ = io::stderr().write_all(&self.0);
            }
        }
    }
}

/// A warning or error record as one status line: no colours, no timestamp. Other levels
/// (debug logs with `-v`) are only held, not flashed on the screen.
fn notice_text(record: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(record);
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then a final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let words: Vec<&str> = plain.split_whitespace().collect();
    let skip = usize::from(words.first().is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit())));
    let words = &words[skip..];
    matches!(words.first(), Some(&"WARN" | &"ERROR")).then(|| words.join(" "))
}

/// While the returned guard lives, log lines are held (and shown on the TUI's status line
/// when `notices` is given) instead of written to standard error; dropping it (after the
/// terminal is restored) prints them.
#[must_use = "logs are held only while the guard lives"]
pub struct HeldLogs(());

pub fn hold_logs(notices: Option<mpsc::Sender<TuiUpdate>>) -> HeldLogs {
    let mut guard = held();
    if guard.is_none() {
        *guard = Some(Held { text: Vec::new(), dropped: 0, notices });
    }
    HeldLogs(())
}

impl HeldLogs {
    /// Stops holding and prints what was held.
    pub fn release(self) {}
}

impl Drop for HeldLogs {
    fn drop(&mut self) {
        let Some(h) = held().take() else { return };
        let mut err = io::stderr().lock();
        let _ = err.write_all(&h.text);
        if h.dropped > 0 {
            let _ = writeln!(err, "tracer: {} more log lines while the live view was up were not kept", h.dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the held logs are global.
    #[test]
    fn logs_are_held_while_the_screen_is_up_and_shown_as_notices() {
        use tracing_subscriber::fmt::MakeWriter as _;
        let (tx, mut rx) = mpsc::channel(4);
        let guard = hold_logs(Some(tx));
        {
            let mut line = LogWriter.make_writer();
            line.write_all(b"2025-01-01T00:00:00.000Z \x1b[33m WARN\x1b[0m tracer::session: leaving pid 7 running\n").unwrap();
        }
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Notice(n)) if n == "WARN tracer::session: leaving pid 7 running"));
        {
            let mut line = LogWriter.make_writer();
            line.write_all(b"2025-01-01T00:00:00.000Z DEBUG tracer::capture: chatter\n").unwrap();
        }
        assert!(rx.try_recv().is_err(), "debug lines are held, not flashed");
        let text = held().as_ref().map(|h| String::from_utf8_lossy(&h.text).into_owned()).unwrap();
        assert!(text.contains("leaving pid 7 running") && text.contains("chatter"), "{text}");
        guard.release();
        assert!(held().is_none(), "released: logs go to stderr again");
    }
}
