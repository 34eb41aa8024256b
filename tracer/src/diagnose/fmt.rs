//! Small formatting helpers for verdict lines: byte sizes in binary units, UTC
//! time-of-day, durations, ports.
use std::net::SocketAddr;

const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// A byte size in binary units: `512 B`, `1.50 KiB`, `12.0 MiB`, `659 MiB`, `2.00 GiB`.
pub fn format_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    // Rounding can carry a value to 1024 of a unit ("1024 MiB"): show the next unit.
    if v >= 999.5 && unit + 1 < UNITS.len() && v.round() >= 1024.0 {
        v /= 1024.0;
        unit += 1;
    }
    let u = UNITS[unit];
    if v < 10.0 {
        format!("{v:.2} {u}")
    } else if v < 100.0 {
        format!("{v:.1} {u}")
    } else {
        format!("{v:.0} {u}")
    }
}

/// A signed change in bytes: `+1.20 GiB`, `-12.0 MiB`, `+0 B`.
pub fn format_bytes_delta(n: i128) -> String {
    let sign = if n < 0 { '-' } else { '+' };
    let abs = n.unsigned_abs().min(u64::MAX as u128) as u64;
    format!("{sign}{}", format_bytes(abs))
}

/// Kilobytes (as the OOM killer reports them) in binary units.
pub fn format_kb(kb: u64) -> String {
    format_bytes(kb.saturating_mul(1024))
}

/// UTC time of day of a wall-clock timestamp: `HH:MM:SS.mmm`.
pub fn time_of_day(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let ms = (ts_ns / 1_000_000) % 1000;
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", day / 3600, (day / 60) % 60, day % 60, ms)
}

/// A duration: `450 ms`, `12.3 s`, `4.0 min`.
pub fn duration(ns: u64) -> String {
    let ms = ns / 1_000_000;
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ns as f64 / 1e9)
    } else {
        format!("{:.1} min", ns as f64 / 60e9)
    }
}

/// The port of an address as the trace writes it (`127.0.0.1:8000`, `[::1]:8000`).
pub fn port(addr: &str) -> Option<u16> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Some(a.port());
    }
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// `1 connection`, `3 connections`.
pub fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The last component of a path.
pub fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((_, name)) if !name.is_empty() => name,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units_with_three_significant_digits() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(12 << 20), "12.0 MiB");
        assert_eq!(format_bytes(660 << 20), "660 MiB");
        assert_eq!(format_bytes(2 << 30), "2.00 GiB");
        assert_eq!(format_bytes((1 << 30) - 1), "1.00 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(format_kb(1024), "1.00 MiB");
        assert_eq!(format_bytes_delta(-(12 << 20)), "-12.0 MiB");
        assert_eq!(format_bytes_delta(3 << 30), "+3.00 GiB");
        assert_eq!(format_bytes_delta(i128::MIN), "-16.0 EiB");
    }

    #[test]
    fn time_of_day_is_utc_with_milliseconds() {
        // 2023-11-14T22:13:20.123Z
        assert_eq!(time_of_day(1_700_000_000_123_456_789), "22:13:20.123");
        assert_eq!(time_of_day(0), "00:00:00.000");
        assert_eq!(duration(450_000_000), "450 ms");
        assert_eq!(duration(12_340_000_000), "12.3 s");
        assert_eq!(duration(600_000_000_000), "10.0 min");
    }

    #[test]
    fn ports_and_names() {
        assert_eq!(port("127.0.0.1:8000"), Some(8000));
        assert_eq!(port("[::1]:443"), Some(443));
        assert_eq!(port("garbage"), None);
        assert_eq!(port(""), None);
        assert_eq!(basename("/models/aya/model-00001.safetensors"), "model-00001.safetensors");
        assert_eq!(basename("plain"), "plain");
        assert_eq!(basename("/"), "/");
        assert_eq!(count(1, "reset"), "1 reset");
        assert_eq!(count(3, "reset"), "3 resets");
    }
}
