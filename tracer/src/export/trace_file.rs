//! Where a trace's lines go: standard output or a file, plain or zstd-compressed (a name
//! ending in `.zst`), and with a size bound (`--max-size`) the most recent part of the
//! trace only.
//!
//! A bounded trace is written in parts next to the file (`NAME.part1`, `NAME.part2`, …),
//! each about a quarter of the bound; when the parts pass the bound, the oldest goes and
//! what it held is counted ([`TraceCut`]). At the end the first line (`trace_start`) and
//! the parts left are joined into the file. Compressed parts are whole zstd frames, so the
//! joined file is one valid zstd stream; a tracer killed before the end leaves parts that
//! `cat` joins the same way.
use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::event::TraceCut;

/// zstd level: 1, the fastest of the standard levels, keeps up with a burst on one core.
const ZSTD_LEVEL: i32 = 1;

/// The smallest `--max-size`: four parts of 256 KiB.
pub const MIN_MAX_SIZE: u64 = 1 << 20;

/// Whether a trace at `path` is written compressed.
pub fn is_compressed_name(path: &str) -> bool {
    path.ends_with(".zst")
}

/// Counts the bytes that reach the file.
struct Counted {
    inner: Box<dyn Write + Send>,
    bytes: u64,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One open file's byte stream.
enum Stream {
    Plain(BufWriter<Counted>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<Counted>>),
}

impl Stream {
    fn open(inner: Box<dyn Write + Send>, compressed: bool) -> io::Result<Stream> {
        let out = BufWriter::with_capacity(1 << 20, Counted { inner, bytes: 0 });
        Ok(if compressed { Stream::Zstd(zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?) } else { Stream::Plain(out) })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Stream::Plain(w) => w,
            Stream::Zstd(w) => w,
        }
    }

    /// Bytes written to the file so far, and waiting in the buffer for it.
    fn bytes(&self) -> u64 {
        let out = match self {
            Stream::Plain(w) => w,
            Stream::Zstd(w) => w.get_ref(),
        };
        out.get_ref().bytes + out.buffer().len() as u64
    }

    /// Everything written reaches the file: a compressed stream ends its block, so that a
    /// reader following the file can decompress up to here.
    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }

    /// Ends the stream (a compressed one with its frame's end) and flushes it.
    fn finish(self) -> io::Result<()> {
        let mut out = match self {
            Stream::Plain(w) => w,
            Stream::Zstd(w) => w.finish()?,
        };
        out.flush()
    }
}

/// A closed part of a bounded trace.
struct Part {
    path: PathBuf,
    bytes: u64,
    events: u64,
    first_ns: u64,
    last_ns: u64,
}

/// `--max-size`: the parts and what was left out.
struct Bounded {
    path: PathBuf,
    max_bytes: u64,
    closed: VecDeque<Part>,
    /// The part being written (its stream is [`TraceOutput::stream`]).
    current: Part,
    next_index: u32,
    /// The first line, kept for the joined file once its part is gone.
    head: Vec<u8>,
    cut: Option<TraceCut>,
}

impl Bounded {
    fn part_path(path: &Path, index: u32) -> PathBuf {
        let mut name = path.as_os_str().to_os_string();
        name.push(format!(".part{index}"));
        PathBuf::from(name)
    }

    fn part_bytes(&self) -> u64 {
        (self.max_bytes / 4).max(1)
    }
}

pub struct TraceOutput {
    stream: Option<Stream>,
    compressed: bool,
    bounded: Option<Bounded>,
    /// Lines written since the last flush.
    dirty: bool,
}

impl TraceOutput {
    /// `-` is standard output (plain; a bound needs a file). A name ending in `.zst` is
    /// compressed.
    pub fn create(path: &str, max_bytes: Option<u64>) -> io::Result<TraceOutput> {
        let compressed = is_compressed_name(path);
        if path == "-" {
            if max_bytes.is_some() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "--max-size needs a trace file (-o FILE), not standard output"));
            }
            return Ok(TraceOutput { stream: Some(Stream::open(Box::new(io::stdout()), false)?), compressed: false, bounded: None, dirty: false });
        }
        let Some(max_bytes) = max_bytes else {
            let file = File::create(path)?;
            return Ok(TraceOutput { stream: Some(Stream::open(Box::new(file), compressed)?), compressed, bounded: None, dirty: false });
        };
        let path = PathBuf::from(path);
        // The joined file replaces whatever was there at the end; check now that it can.
        File::create(&path)?;
        let first = Bounded::part_path(&path, 1);
        let stream = Stream::open(Box::new(File::create(&first)?), compressed)?;
        let bounded = Bounded {
            path,
            max_bytes,
            closed: VecDeque::new(),
            current: Part { path: first, bytes: 0, events: 0, first_ns: 0, last_ns: 0 },
            next_index: 2,
            head: Vec::new(),
            cut: None,
        };
        Ok(TraceOutput { stream: Some(stream), compressed, bounded: Some(bounded), dirty: false })
    }

    fn stream(&mut self) -> io::Result<&mut Stream> {
        self.stream.as_mut().ok_or_else(|| io::Error::other("the trace was already finished"))
    }

    /// Writes one line (with its newline) of an event at `ts_ns`; `None` for a line that
    /// is not an event (a verdict). A bounded trace may move on to a new part after it.
    pub fn write_line(&mut self, line: &[u8], ts_ns: Option<u64>) -> io::Result<()> {
        self.stream()?.writer().write_all(line)?;
        self.dirty = true;
        let Some(b) = self.bounded.as_mut() else { return Ok(()) };
        if let Some(ts) = ts_ns {
            if b.head.is_empty() && b.closed.is_empty() && b.current.events == 0 {
                // The first line is kept aside and not counted as part of the first part.
                b.head = line.to_vec();
            } else {
                let p = &mut b.current;
                if p.events == 0 {
                    p.first_ns = ts;
                }
                p.events += 1;
                p.last_ns = ts;
            }
        }
        let bytes = self.stream.as_ref().map_or(0, Stream::bytes);
        if bytes >= self.bounded.as_ref().map_or(u64::MAX, Bounded::part_bytes) {
            self.next_part()?;
        }
        Ok(())
    }

    /// Closes the current part, opens the next, and drops the oldest parts past the bound.
    fn next_part(&mut self) -> io::Result<()> {
        let compressed = self.compressed;
        let Some(b) = self.bounded.as_mut() else { return Ok(()) };
        let Some(stream) = self.stream.take() else { return Ok(()) };
        stream.finish()?;
        let next = Bounded::part_path(&b.path, b.next_index);
        b.next_index += 1;
        let mut done = std::mem::replace(&mut b.current, Part { path: next.clone(), bytes: 0, events: 0, first_ns: 0, last_ns: 0 });
        done.bytes = std::fs::metadata(&done.path)?.len();
        b.closed.push_back(done);
        self.stream = Some(Stream::open(Box::new(File::create(&next)?), compressed)?);
        // The current part can grow to a quarter of the bound: the closed ones get the rest.
        let room = b.max_bytes.saturating_sub(b.part_bytes());
        while b.closed.iter().map(|p| p.bytes).sum::<u64>() > room {
            let Some(old) = b.closed.pop_front() else { break };
            std::fs::remove_file(&old.path)?;
            let cut = b.cut.get_or_insert(TraceCut { from_ns: old.first_ns, ..TraceCut::default() });
            if cut.events == 0 {
                cut.from_ns = old.first_ns;
            }
            cut.events += old.events;
            cut.to_ns = cut.to_ns.max(old.last_ns);
            cut.bytes += old.bytes;
        }
        Ok(())
    }

    /// What a bounded trace has left out so far.
    pub fn cut(&self) -> Option<TraceCut> {
        self.bounded.as_ref().and_then(|b| b.cut.clone())
    }

    /// Makes what was written readable (once per tick, only when something was).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        self.stream()?.flush()
    }

    /// Ends the trace: a compressed stream gets its frame's end; a bounded one is joined
    /// into its file.
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.take() else { return Ok(()) };
        stream.finish()?;
        let Some(b) = self.bounded.take() else { return Ok(()) };
        let parts: Vec<&Path> = b.closed.iter().map(|p| p.path.as_path()).chain([b.current.path.as_path()]).collect();
        if b.cut.is_none() && parts.len() == 1 {
            return std::fs::rename(parts[0], &b.path);
        }
        let mut out = BufWriter::new(File::create(&b.path)?);
        if b.cut.is_some() {
            if self.compressed {
                out.write_all(&zstd::stream::encode_all(&b.head[..], ZSTD_LEVEL)?)?;
            } else {
                out.write_all(&b.head)?;
            }
        }
        for part in parts {
            io::copy(&mut File::open(part)?, &mut out)?;
            std::fs::remove_file(part)?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn line(i: u64) -> Vec<u8> {
        // Some noise, so that compressed lines are not nearly free.
        let noise = format!("{:016x}{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), (i ^ 0xdead).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        format!("{{\"ts_ns\":{i},\"pad\":\"{noise}{}\"}}\n", "x".repeat(150)).into_bytes()
    }

    fn read_all(path: &Path) -> String {
        let mut bytes = Vec::new();
        File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
        if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            bytes = zstd::stream::decode_all(&bytes[..]).unwrap();
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_zst_name_is_compressed_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl.zst");
        let mut out = TraceOutput::create(path.to_str().unwrap(), None).unwrap();
        for i in 0..10_000 {
            out.write_line(&line(i), Some(i)).unwrap();
        }
        out.finish().unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        let text = read_all(&path);
        assert_eq!(text.lines().count(), 10_000);
        assert!(size * 3 < text.len() as u64, "{size} bytes for {} of text", text.len());
    }

    fn bounded_keeps_the_head_and_the_last_lines(name: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let max = MIN_MAX_SIZE;
        let mut out = TraceOutput::create(path.to_str().unwrap(), Some(max)).unwrap();
        let n = 200_000u64;
        for i in 0..n {
            out.write_line(&line(i), Some(i)).unwrap();
        }
        let cut = out.cut().expect("a trace bigger than the bound is cut");
        out.write_line(b"{\"kind\":\"verdict\"}\n", None).unwrap();
        out.finish().unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= max + max / 4, "{size} bytes over a bound of {max}");
        let text = read_all(&path);
        let ts: Vec<u64> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ts_ns"].as_u64())
            .collect();
        // The head, then a run ending with the last line: what is missing is the cut.
        assert_eq!(ts[0], 0);
        assert_eq!(ts[1], cut.to_ns + 1, "the kept lines start right after the cut");
        assert_eq!(cut.from_ns, 1);
        assert_eq!(*ts.last().unwrap(), n - 1);
        assert!(ts[1..].windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(cut.events + ts.len() as u64, n);
        assert!(text.ends_with("{\"kind\":\"verdict\"}\n"));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "parts are removed once joined: {left:?}");
    }

    #[test]
    fn a_bounded_plain_trace_keeps_the_head_and_the_last_lines() {
        bounded_keeps_the_head_and_the_last_lines("t.jsonl");
    }

    #[test]
    fn a_bounded_compressed_trace_keeps_the_head_and_the_last_lines() {
        // Compressed lines are small: more of them to pass the bound.
        bounded_keeps_the_head_and_the_last_lines("t.jsonl.zst");
    }

    #[test]
    fn a_small_bounded_trace_is_one_file_uncut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut out = TraceOutput::create(path.to_str().unwrap(), Some(MIN_MAX_SIZE)).unwrap();
        for i in 0..10 {
            out.write_line(&line(i), Some(i)).unwrap();
        }
        assert_eq!(out.cut(), None);
        out.finish().unwrap();
        assert_eq!(read_all(&path).lines().count(), 10);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn standard_output_cannot_be_bounded() {
        let e = TraceOutput::create("-", Some(MIN_MAX_SIZE)).err().expect("refused");
        assert!(e.to_string().contains("-o FILE"), "{e}");
    }
}
