//! Reads a tracer's JSON lines as they arrive through a pipe: stamps each line with
//! CLOCK_REALTIME on arrival (latency = arrival - the event's `ts_ns`, the kernel time
//! converted to wall clock by the tracer), counts the one-page mmap/munmap calls of a
//! burst, and sums the `lost` records. Only the rare `lost`/`trace_end` lines are parsed
//! as JSON: a burst of 10^7 lines must not be slowed down by its reader.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
};

use anyhow::{Context, Result};

/// Keep at most this many latency samples (every k-th line beyond it): 10^7 events.
const MAX_SAMPLES: usize = 2_000_000;

#[derive(Debug, Default, Clone)]
pub struct TraceStats {
    pub lines: u64,
    pub kinds: BTreeMap<String, u64>,
    /// mmap and munmap records of exactly one page (the burst's calls).
    pub page_calls: u64,
    /// mmap and munmap records of any other length (noise in a burst).
    pub other_mem_calls: u64,
    /// `lost` records per probe, summed.
    pub lost_by_probe: BTreeMap<String, u64>,
    /// `trace_end`: (events, lost).
    pub end: Option<(u64, u64)>,
    /// Arrival minus `ts_ns` of kernel events, in nanoseconds (sampled past MAX_SAMPLES).
    pub latencies_ns: Vec<f64>,
}

impl TraceStats {
    /// Lost records of the memory-syscall probes (the burst's own).
    pub fn lost_mem_calls(&self) -> u64 {
        self.lost_by_probe.iter().filter(|(p, _)| p.as_str() == "mmap" || p.as_str() == "munmap").map(|(_, n)| n).sum()
    }
}

pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads the whole stream (until the tracer closes it).
pub fn read(pipe: impl Read) -> Result<TraceStats> {
    let mut r = BufReader::with_capacity(1 << 20, pipe);
    let mut st = TraceStats::default();
    let mut buf = Vec::with_capacity(1024);
    let mut stride = 1u64;
    let mut kernel_events = 0u64;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).context("reading the trace pipe")? == 0 {
            break;
        }
        let arrival = realtime_ns();
        st.lines += 1;
        let Ok(line) = std::str::from_utf8(&buf) else { continue };
        let Some(kind) = field_str(line, "\"kind\":\"") else { continue };
        match kind {
            "mmap" | "munmap" => {
                if field_num(line, "\"len\":") == Some(4096) {
                    st.page_calls += 1;
                } else {
                    st.other_mem_calls += 1;
                }
            }
            "lost" => {
                let v: serde_json::Value = serde_json::from_str(line).context("a `lost` line that is not JSON")?;
                let probe = v["probe"].as_str().unwrap_or("?").to_string();
                *st.lost_by_probe.entry(probe).or_default() += v["count"].as_u64().unwrap_or(0);
            }
            "trace_end" => {
                let v: serde_json::Value = serde_json::from_str(line).context("a `trace_end` line that is not JSON")?;
                st.end = Some((v["events"].as_u64().unwrap_or(0), v["lost"].as_u64().unwrap_or(0)));
            }
            _ => {}
        }
        if tracer_event::kernel_kind_names().any(|k| k == kind) {
            if let Some(ts) = field_num(line, "\"ts_ns\":") {
                kernel_events += 1;
                if st.latencies_ns.len() >= MAX_SAMPLES {
                    // Halve the samples and double the stride: a uniform thinning.
                    let kept: Vec<f64> = st.latencies_ns.iter().step_by(2).copied().collect();
                    st.latencies_ns = kept;
                    stride *= 2;
                }
                if kernel_events.is_multiple_of(stride) {
                    st.latencies_ns.push(arrival as f64 - ts as f64);
                }
            }
        }
        *st.kinds.entry(kind.to_string()).or_default() += 1;
    }
    Ok(st)
}

/// The string value after `key` (`"kind":"`), up to its closing quote.
fn field_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The unsigned number after `key` (`"len":`).
fn field_num(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    let digits = line[start..].bytes().take_while(u8::is_ascii_digit).count();
    line[start..start + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_page_calls_losses_and_the_end() {
        let text = concat!(
            r#"{"ts_ns":1,"pid":1,"tid":1,"comm":"s","kind":"trace_start","target_pid":1}"#,
            "\n",
            r#"{"ts_ns":2,"pid":1,"tid":1,"comm":"s","kind":"mmap","addr":1,"len":4096,"prot":"rw-"}"#,
            "\n",
            r#"{"ts_ns":3,"pid":1,"tid":1,"comm":"s","kind":"munmap","addr":1,"len":4096}"#,
            "\n",
            r#"{"ts_ns":4,"pid":1,"tid":1,"comm":"s","kind":"munmap","addr":1,"len":8192}"#,
            "\n",
            r#"{"ts_ns":5,"pid":1,"tid":1,"comm":"s","kind":"lost","probe":"mmap","count":7,"total":7}"#,
            "\n",
            r#"{"ts_ns":6,"pid":1,"tid":1,"comm":"s","kind":"lost","probe":"munmap","count":3,"total":3}"#,
            "\n",
            r#"{"ts_ns":7,"pid":1,"tid":1,"comm":"","kind":"trace_end","reason":"target_exited","events":5,"lost":10}"#,
            "\n",
        );
        let st = read(text.as_bytes()).unwrap();
        assert_eq!(st.lines, 7);
        assert_eq!(st.page_calls, 2);
        assert_eq!(st.other_mem_calls, 1);
        assert_eq!(st.lost_mem_calls(), 10);
        assert_eq!(st.end, Some((5, 10)));
        assert_eq!(st.latencies_ns.len(), 3);
        assert!(st.latencies_ns.iter().all(|l| *l > 0.0));
    }
}
