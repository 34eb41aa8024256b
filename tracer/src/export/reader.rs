//! Reads a JSON-lines trace back into events, tolerantly: a corrupt or truncated line is a
//! [`ReadProblem`] with its line number and reading goes on; `verdict` lines (written by
//! the live tracer) are skipped because verdicts are recomputed from the events.
use std::{
    io::{BufRead, BufReader, Read as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// Every `kind` tag of [`crate::event::EventKind`], to tell an unknown kind from a known
/// kind with bad fields.
use crate::event::KIND_NAMES as KNOWN_KINDS;

/// The `kind` of a line written by the live tracer after diagnosis.
pub const VERDICT_KIND: &str = "verdict";

/// A line that could not be read as an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadProblem {
    /// 1-based line number in the file.
    pub line: usize,
    pub message: String,
}

/// The events of a trace file, in time order, and what could not be read.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub events: Vec<Event>,
    pub problems: Vec<ReadProblem>,
    /// `verdict` lines skipped (they are recomputed).
    pub verdict_lines: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open the trace {}: {error}; give the path of a file written by `tracer --jsonl FILE`", path.display())]
    Open { path: PathBuf, error: std::io::Error },
    #[error("reading the trace {} failed at line {line}: {error}; check the file and the disk", path.display())]
    Read { path: PathBuf, line: usize, error: std::io::Error },
    #[error("{}: empty trace (no events){}: record one with `sudo tracer --pid PID --jsonl FILE`", path.display(), unreadable_note(*.unreadable))]
    Empty { path: PathBuf, unreadable: usize },
    #[error(
        "{}: line {line} is longer than {} without an end: this is not a JSON-lines trace; give a file written by `tracer --jsonl FILE`",
        path.display(),
        crate::units::format_bytes(MAX_LINE as u64)
    )]
    LineTooLong { path: PathBuf, line: usize },
}

/// The longest line read: a trace line is a few hundred bytes (a sample with many
/// processes a few KiB); anything near this is not a trace, and reading it whole could
/// exhaust memory (`tracer report /dev/zero`).
pub const MAX_LINE: usize = 16 << 20;

fn unreadable_note(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => ", its only line could not be read".into(),
        n => format!(", none of its {n} lines could be read"),
    }
}

/// Reads a trace file. Missing file and a trace without events are errors; bad lines are
/// problems in the result.
pub fn read_trace_file(path: &Path) -> Result<Trace, ReadError> {
    let open_error = |error| ReadError::Open { path: path.to_path_buf(), error };
    let mut file = BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(open_error)?);
    // A compressed trace (`-o trace.jsonl.zst`) is known by its first bytes, whatever
    // its name.
    if file.fill_buf().map_err(open_error)?.starts_with(&ZSTD_MAGIC) {
        let decoder = zstd::stream::read::Decoder::with_buffer(file).map_err(open_error)?;
        return read_trace(BufReader::with_capacity(1 << 20, Tolerant::new(decoder)), path).map(|mut t| {
            if let Some(problem) = t.problems.iter_mut().find(|p| p.message.starts_with("truncated last line")) {
                problem.message.push_str(" (the compressed trace ends early: the tracer was stopped before it finished the file)");
            }
            t
        });
    }
    read_trace(file, path)
}

/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A compressed trace cut off mid-frame (the tracer was killed) reads as far as it goes: the
/// decoder's error at the cut becomes the end of the input, and the last line shows up as
/// truncated.
struct Tolerant<R> {
    inner: R,
    ended: bool,
}

impl<R> Tolerant<R> {
    fn new(inner: R) -> Self {
        Tolerant { inner, ended: false }
    }
}

impl<R: std::io::Read> std::io::Read for Tolerant<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => {
                tracing::debug!("compressed trace ends early: {e}");
                self.ended = true;
                Ok(0)
            }
            other => other,
        }
    }
}

/// Reads JSON lines from `input`; `path` only names the input in errors.
pub fn read_trace(mut input: impl BufRead, path: &Path) -> Result<Trace, ReadError> {
    let mut trace = Trace::default();
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = (&mut input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).map_err(|error| ReadError::Read {
            path: path.to_path_buf(),
            line: line + 1,
            error,
        })?;
        if n == 0 {
            break;
        }
        if n > MAX_LINE && buf.last() != Some(&b'\n') {
            return Err(ReadError::LineTooLong { path: path.to_path_buf(), line: line + 1 });
        }
        line += 1;
        let complete = buf.last() == Some(&b'\n');
        let text = trim_ascii(&buf);
        if text.is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(Parsed::Event(ev)) => trace.events.push(*ev),
            Ok(Parsed::Verdict) => trace.verdict_lines += 1,
            Err(mut message) => {
                if !complete {
                    message = format!("truncated last line (the trace was cut while being written?): {message}");
                }
                trace.problems.push(ReadProblem { line, message });
            }
        }
    }
    if trace.events.is_empty() {
        return Err(ReadError::Empty { path: path.to_path_buf(), unreadable: trace.problems.len() });
    }
    // Stable: events of the same nanosecond keep their order in the file.
    trace.events.sort_by_key(|e| e.ts_ns);
    Ok(trace)
}

enum Parsed {
    Event(Box<Event>),
    Verdict,
}

/// Only the tag, to explain why a line is not an event.
#[derive(Deserialize)]
struct KindOnly {
    kind: Option<serde_json::Value>,
}

fn parse_line(text: &[u8]) -> Result<Parsed, String> {
    let event_err = match serde_json::from_slice::<Event>(text) {
        Ok(ev) => return Ok(Parsed::Event(Box::new(ev))),
        Err(e) => e,
    };
    let probe = match serde_json::from_slice::<KindOnly>(text) {
        Ok(p) => p,
        Err(e) if e.is_eof() => return Err(format!("incomplete JSON object: {}", json_error(&e))),
        Err(e) => return Err(format!("not a JSON object: {}", json_error(&e))),
    };
    match probe.kind {
        None => Err("no `kind` field: not a tracer event".into()),
        Some(serde_json::Value::String(kind)) if kind == VERDICT_KIND => Ok(Parsed::Verdict),
        Some(serde_json::Value::String(kind)) if KNOWN_KINDS.contains(&kind.as_str()) => {
            Err(format!("invalid `{kind}` event: {}", json_error(&event_err)))
        }
        Some(serde_json::Value::String(kind)) => {
            Err(format!("unknown kind `{kind}` (written by a newer tracer? this one reads {})", KNOWN_KINDS.join(", ")))
        }
        Some(other) => Err(format!("`kind` is not a string: {other}")),
    }
}

/// serde_json's message with the column only: the line is the file's, reported apart.
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} at column {}", e.column()),
        None => text,
    }
}

fn trim_ascii(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn brk_line(ts: u64) -> String {
        let ev = Event {
            ts_ns: ts,
            pid: 7,
            tid: 7,
            comm: "w".into(),
            kind: EventKind::Brk { requested: 0, result: 4096, duration_ns: 1 },
        };
        serde_json::to_string(&ev).unwrap()
    }

    fn read(text: &str) -> Result<Trace, ReadError> {
        read_trace(text.as_bytes(), Path::new("t.jsonl"))
    }

    #[test]
    fn good_file_reads_every_event_in_time_order() {
        let text = format!("{}\n{}\n{}\n", brk_line(30), brk_line(10), brk_line(20));
        let t = read(&text).unwrap();
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let ts: Vec<u64> = t.events.iter().map(|e| e.ts_ns).collect();
        assert_eq!(ts, vec![10, 20, 30]);
    }

    #[test]
    fn corrupt_line_in_the_middle_is_reported_with_its_number_and_the_rest_is_read() {
        let text = format!("{}\n{{\"ts_ns\": 5, garbage\n\n{}\n", brk_line(1), brk_line(2));
        let t = read(&text).unwrap();
        assert_eq!(t.events.len(), 2);
        assert_eq!(t.problems.len(), 1);
        assert_eq!(t.problems[0].line, 2);
        assert!(t.problems[0].message.contains("not a JSON object"), "{}", t.problems[0].message);
    }

    #[test]
    fn truncated_last_line_is_a_problem() {
        let full = brk_line(2);
        let text = format!("{}\n{}", brk_line(1), &full[..full.len() / 2]);
        let t = read(&text).unwrap();
        assert_eq!(t.events.len(), 1);
        assert_eq!(t.problems[0].line, 2);
        assert!(t.problems[0].message.starts_with("truncated last line"), "{}", t.problems[0].message);
    }

    #[test]
    fn empty_file_and_file_without_events_are_errors() {
        let e = read("").unwrap_err();
        assert!(e.to_string().starts_with("t.jsonl: empty trace (no events)"), "{e}");
        let e = read("\n  \nnot json\n").unwrap_err();
        assert!(e.to_string().contains("empty trace (no events), its only line could not be read"), "{e}");
    }

    #[test]
    fn verdict_lines_are_skipped_silently() {
        let text = format!(
            "{}\n{{\"kind\":\"verdict\",\"ts_ns\":3,\"cause\":\"oom_killed\"}}\n{}\n",
            brk_line(1),
            brk_line(4)
        );
        let t = read(&text).unwrap();
        assert_eq!(t.events.len(), 2);
        assert!(t.problems.is_empty());
        assert_eq!(t.verdict_lines, 1);
    }

    #[test]
    fn unknown_kind_and_bad_fields_are_problems_not_crashes() {
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            r#"{"ts_ns":1,"pid":1,"tid":1,"comm":"x","kind":"teleport"}"#,
            r#"{"ts_ns":1,"pid":1,"tid":1,"comm":"x","kind":"brk","requested":"lots"}"#,
            r#"{"ts_ns":1}"#,
            brk_line(9)
        );
        let t = read(&text).unwrap();
        assert_eq!(t.events.len(), 1);
        let lines: Vec<usize> = t.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 2, 3]);
        assert!(t.problems[0].message.contains("unknown kind `teleport`"), "{}", t.problems[0].message);
        assert!(t.problems[1].message.contains("invalid `brk` event"), "{}", t.problems[1].message);
        assert!(t.problems[2].message.contains("no `kind` field"), "{}", t.problems[2].message);
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let e = read_trace_file(Path::new("/nonexistent/dir/trace.jsonl")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/trace.jsonl"), "{e}");
    }

    #[test]
    fn non_utf8_line_is_a_problem() {
        let mut bytes = brk_line(1).into_bytes();
        bytes.extend_from_slice(b"\n\xff\xfe\n");
        let t = read_trace(&bytes[..], Path::new("t")).unwrap();
        assert_eq!(t.events.len(), 1);
        assert_eq!(t.problems[0].line, 2);
    }

    /// Issue 14: `tracer report /dev/zero` aborted on a 2 GiB allocation.
    #[test]
    fn an_endless_line_is_refused_with_its_number_not_read_whole() {
        let endless = std::io::repeat(0).take(MAX_LINE as u64 * 4);
        let input = std::io::BufReader::new(std::io::Cursor::new(b"{}\n".to_vec()).chain(endless));
        let e = read_trace(input, Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(e, ReadError::LineTooLong { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("/dev/zero: line 2 is longer than 16.0 MiB"), "{e}");
        if let Ok(f) = std::fs::File::open("/dev/zero") {
            let e = read_trace(std::io::BufReader::new(f), Path::new("/dev/zero")).unwrap_err();
            assert!(matches!(e, ReadError::LineTooLong { line: 1, .. }), "{e}");
        }
    }
}
