//! Units for people: byte sizes in binary units (long for reports, compact for the live
//! view), sizes as users type them, durations and times of day. Every renderer uses these,
//! so the same figure reads the same in a verdict, a report and on screen.

/// Binary units above bytes, long and compact.
const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
const COMPACT_UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];

/// `n` bytes as a value in a unit (index into [`UNITS`]) with three significant digits;
/// `None` below 1 KiB.
fn scaled(n: u64) -> Option<(f64, usize)> {
    if n < 1024 {
        return None;
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
    Some((v, unit))
}

fn three_digits(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A byte size in binary units: `512 B`, `1.50 KiB`, `12.0 MiB`, `659 MiB`, `2.00 GiB`.
pub fn format_bytes(n: u64) -> String {
    match scaled(n) {
        None => format!("{n} B"),
        Some((v, unit)) => format!("{} {}", three_digits(v), UNITS[unit]),
    }
}

/// A compact byte size for narrow columns: `512B`, `12K`, `1.5M`, `980M`, `1.86G`.
pub fn format_bytes_compact(n: u64) -> String {
    match scaled(n) {
        None => format!("{n}B"),
        Some((v, unit)) => format!("{}{}", three_digits(v), COMPACT_UNITS[unit]),
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

/// A size as users type it: `8MiB`, `512KiB`, `1GiB`, `4096`, `2M`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size: use e.g. 8MiB, 512KiB or 4096"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// UTC time of day of a wall-clock timestamp: `HH:MM:SS.mmm`.
pub fn time_of_day(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let ms = (ts_ns / 1_000_000) % 1000;
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", day / 3600, (day / 60) % 60, day % 60, ms)
}

/// UTC date and time of a wall-clock timestamp for file names: `20261206T172501Z`.
pub fn utc_stamp(ts_ns: u64) -> String {
    let (y, m, d, hh, mm, ss) = tracer_event::utc_date_time(ts_ns);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
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

#[cfg(test)]
mod tests {

    #[test]
    fn utc_stamps_match_known_dates() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // date -u -d @1796578501 +%Y%m%dT%H%M%SZ
        assert_eq!(utc_stamp(1_796_578_501_000_000_000), "20261206T173501Z");
        // 2024-02-29 12:00:00 UTC, a leap day.
        assert_eq!(utc_stamp(1_709_208_000_123_000_000), "20240229T120000Z");
    }

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
    fn compact_sizes_fit_a_column() {
        assert_eq!(format_bytes_compact(512), "512B");
        assert_eq!(format_bytes_compact(2 << 30), "2.00G");
        assert_eq!(format_bytes_compact(1900 << 20), "1.86G");
        assert_eq!(format_bytes_compact(u64::MAX), "16.0E");
    }
}
