//! Machine-wide memory: MemTotal and MemAvailable from /proc/meminfo, memory pressure
//! (PSI) from /proc/pressure/memory where the kernel has it. Both files stay open.
use std::fs::File;

use super::{read_whole, SampleError};
use crate::event::SystemSample;

pub struct SystemSampler {
    meminfo: File,
    /// None without PSI (CONFIG_PSI off, or `psi=0`).
    pressure: Option<File>,
    buf: Vec<u8>,
}

/// `(MemTotal, MemAvailable)` in bytes from /proc/meminfo text; MemAvailable is 0 on
/// kernels before 3.14.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let mut total = None;
    let mut available = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let bytes = || value.split_whitespace().next()?.parse::<u64>().ok().map(|kb| kb.saturating_mul(1024));
        match key {
            "MemTotal" => total = bytes(),
            "MemAvailable" => available = bytes().unwrap_or(0),
            _ => continue,
        }
        if total.is_some() && available != 0 {
            break;
        }
    }
    Some((total?, available))
}

/// `(some avg10, full avg10)` from /proc/pressure/memory text
/// (`some avg10=0.12 avg60=... total=...` then `full ...`).
pub fn parse_pressure(text: &str) -> (Option<f64>, Option<f64>) {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        *slot = words.find_map(|w| w.strip_prefix("avg10=")).and_then(|v| v.parse().ok());
    }
    (some, full)
}

impl SystemSampler {
    pub fn new() -> Result<SystemSampler, SampleError> {
        let meminfo =
            File::open("/proc/meminfo").map_err(|source| SampleError::Open { path: "/proc/meminfo", source })?;
        let pressure = File::open("/proc/pressure/memory").ok();
        Ok(SystemSampler { meminfo, pressure, buf: Vec::with_capacity(4096) })
    }

    pub fn sample(&mut self) -> SystemSample {
        let (mem_total_bytes, mem_available_bytes) = read_whole(&self.meminfo, &mut self.buf)
            .ok()
            .and_then(|n| parse_meminfo(std::str::from_utf8(&self.buf[..n]).ok()?))
            .unwrap_or((0, 0));
        let (psi_memory_some_avg10, psi_memory_full_avg10) = self
            .pressure
            .as_ref()
            .and_then(|f| read_whole(f, &mut self.buf).ok())
            .and_then(|n| std::str::from_utf8(&self.buf[..n]).ok().map(parse_pressure))
            .unwrap_or((None, None));
        SystemSample { mem_total_bytes, mem_available_bytes, psi_memory_some_avg10, psi_memory_full_avg10 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_text_gives_total_and_available_in_bytes() {
        let text =
            "MemTotal:       24684092 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\nBuffers:   1 kB\n";
        assert_eq!(parse_meminfo(text), Some((24684092 * 1024, 12000000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1024 kB\nMemFree: 10 kB\n"), Some((1 << 20, 0)));
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn pressure_text_gives_some_and_full_avg10() {
        let text =
            "some avg10=1.25 avg60=0.50 avg300=0.00 total=9160\nfull avg10=0.75 avg60=0.00 avg300=0.00 total=6880\n";
        assert_eq!(parse_pressure(text), (Some(1.25), Some(0.75)));
        // A file without a `full` line, and no file at all (no PSI).
        assert_eq!(parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"), (Some(0.0), None));
        assert_eq!(parse_pressure(""), (None, None));
    }

    #[test]
    fn this_machine_has_memory_and_pressure_where_the_file_exists() {
        let s = SystemSampler::new().unwrap().sample();
        assert!(
            s.mem_total_bytes > 0 && s.mem_available_bytes > 0 && s.mem_available_bytes <= s.mem_total_bytes,
            "{s:?}"
        );
        let psi = std::path::Path::new("/proc/pressure/memory").exists();
        assert_eq!(s.psi_memory_some_avg10.is_some(), psi, "{s:?}");
    }
}
