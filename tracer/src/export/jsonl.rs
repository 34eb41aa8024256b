//! One JSON object per line, flushed at the end (and on every session tick, so that a
//! reader on a pipe sees events as they come). The recording format: `tracer report`
//! reads it back.
use std::io;

use serde::Serialize;

use super::trace_file::TraceOutput;
use crate::{
    diagnose::Verdict,
    event::{Event, EventKind},
    sink::{finished, Finishing, Sink, SinkError},
    timeline::Timeline,
};

pub struct JsonlWriter {
    out: TraceOutput,
    /// One line, serialized before it is written.
    line: Vec<u8>,
    /// The file's path, or "standard output", for errors.
    name: String,
    /// Events written (verdict lines not included).
    pub written: u64,
}

/// `{"kind":"verdict","ts_ns":…, …verdict fields…}`: what the live tracer concluded,
/// written just before `trace_end`. `tracer report` skips these lines and recomputes.
#[derive(Serialize)]
struct VerdictLine<'a> {
    kind: &'static str,
    ts_ns: u64,
    #[serde(flatten)]
    verdict: &'a Verdict,
}

impl JsonlWriter {
    /// `-` is standard output; anything else is a file, created or truncated, compressed
    /// when its name ends in `.zst`. `max_bytes`: keep the file under this, the most recent
    /// events first (see [`TraceOutput`]).
    pub fn create(path: &str, max_bytes: Option<u64>) -> io::Result<JsonlWriter> {
        let name = if path == "-" { "standard output" } else { path };
        Ok(JsonlWriter { out: TraceOutput::create(path, max_bytes)?, line: Vec::with_capacity(1024), name: name.into(), written: 0 })
    }

    pub fn write(&mut self, ev: &Event) -> io::Result<()> {
        self.line.clear();
        // io::Error::from keeps the kind of an I/O failure (a closed pipe stays one).
        serde_json::to_writer(&mut self.line, ev).map_err(io::Error::from)?;
        self.line.push(b'\n');
        self.out.write_line(&self.line, Some(ev.ts_ns))?;
        self.written += 1;
        Ok(())
    }

    pub fn write_verdict(&mut self, ts_ns: u64, verdict: &Verdict) -> io::Result<()> {
        let line = VerdictLine { kind: super::reader::VERDICT_KIND, ts_ns, verdict };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &line).map_err(io::Error::from)?;
        self.line.push(b'\n');
        self.out.write_line(&self.line, None)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl JsonlWriter {
    /// A write error as the session sees it: a closed pipe is the reader's choice, anything
    /// else a failure that names the file; either ends the session.
    fn outcome(&self, r: io::Result<()>) -> Result<(), SinkError> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(SinkError::Closed("the trace's reader")),
            Err(e) => Err(SinkError::Failed(format!("writing the trace to {} failed: {e}", self.name))),
        }
    }
}

impl Sink for JsonlWriter {
    fn event(&mut self, ev: &Event) -> Result<(), SinkError> {
        let r = self.write(ev);
        self.outcome(r)
    }

    fn tick(&mut self, _: &Timeline) -> Result<(), SinkError> {
        // A live reader (a terminal, a pipe) sees events within a tick.
        let r = self.flush();
        self.outcome(r)
    }

    fn finish<'a>(&'a mut self, verdicts: &'a [Verdict], end: &'a Event, _: &'a str) -> Finishing<'a> {
        // Verdicts go just before trace_end, which stays last.
        for v in verdicts {
            if let Err(e) = self.write_verdict(end.ts_ns, v) {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    tracing::error!("writing a verdict to the trace: {e}");
                }
                break;
            }
        }
        // A bounded trace says what it left out.
        let end = match (&end.kind, self.out.cut()) {
            (EventKind::TraceEnd { .. }, Some(cut)) => {
                let mut end = end.clone();
                if let EventKind::TraceEnd { cut: c, .. } = &mut end.kind {
                    *c = Some(cut);
                }
                std::borrow::Cow::Owned(end)
            }
            _ => std::borrow::Cow::Borrowed(end),
        };
        let written = self.write(&end).and_then(|()| self.out.finish());
        finished(match self.outcome(written) {
            Err(SinkError::Closed(_)) => Ok(()),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn writes_one_parseable_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = JsonlWriter::create(path.to_str().unwrap(), None).unwrap();
        for i in 0..3 {
            let ev = Event {
                ts_ns: i,
                pid: 1,
                tid: 1,
                comm: "x".into(),
                kind: EventKind::Brk { requested: 0, result: 4096 * i, duration_ns: 5 },
            };
            w.write(&ev).unwrap();
        }
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Event> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].kind, EventKind::Brk { requested: 0, result: 8192, duration_ns: 5 });
    }

    #[test]
    fn verdict_line_is_flat_with_kind_and_ts_and_the_reader_skips_it() {
        use crate::diagnose::{Cause, Confidence, Verdict};
        let v = Verdict {
            cause: Cause::OomKilled,
            summary: "killed".into(),
            pid: Some(1),
            comm: Some("x".into()),
            port: Some(8000),
            resets: 2,
            first_ns: 1,
            last_ns: 2,
            chain: vec![],
            evidence: vec!["limit".into()],
            confidence: Confidence::High,
            action: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = JsonlWriter::create(path.to_str().unwrap(), None).unwrap();
        let ev = Event { ts_ns: 1, pid: 1, tid: 1, comm: "x".into(), kind: EventKind::Brk { requested: 0, result: 0, duration_ns: 0 } };
        w.write(&ev).unwrap();
        w.write_verdict(3, &v).unwrap();
        w.flush().unwrap();
        assert_eq!(w.written, 1);
        let text = std::fs::read_to_string(&path).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(line["kind"], "verdict");
        assert_eq!(line["ts_ns"], 3);
        assert_eq!(line["cause"], "oom_killed");
        assert_eq!(line["port"], 8000);
        let back: Verdict = serde_json::from_value(line).unwrap();
        assert_eq!(back, v);
        let trace = crate::export::reader::read_trace_file(&path).unwrap();
        assert_eq!((trace.events.len(), trace.verdict_lines, trace.problems.len()), (1, 1, 0));
    }
}
