//! One JSON object per line, flushed at the end (and when the reader is a pipe, as lines
//! accumulate).
use std::io::{self, BufWriter, Write};

use crate::event::Event;

pub struct JsonlWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    pub written: u64,
}

impl JsonlWriter {
    /// `-` is standard output; anything else is a file, created or truncated.
    pub fn create(path: &str) -> io::Result<JsonlWriter> {
        let sink: Box<dyn Write + Send> = if path == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(std::fs::File::create(path)?)
        };
        Ok(JsonlWriter::new(sink))
    }

    pub fn new(sink: Box<dyn Write + Send>) -> JsonlWriter {
        JsonlWriter { out: BufWriter::with_capacity(1 << 20, sink), written: 0 }
    }

    pub fn write(&mut self, ev: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, ev).map_err(io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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
        let mut w = JsonlWriter::create(path.to_str().unwrap()).unwrap();
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
}
