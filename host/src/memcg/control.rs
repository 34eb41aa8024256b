//! A memory cgroup's control files, v1 and v2, and what their text means.
//!
//! The two versions name the same four facts differently and say "no limit" differently
//! (v1: a huge page-aligned number, v2: `max`); callers ask by fact and version here.

/// A v1 `memory.limit_in_bytes` at or above this is "no limit" (the kernel prints
/// PAGE_COUNTER_MAX in bytes, 0x7FFFFFFFFFFFF000 on 4 KiB pages).
pub const V1_UNLIMITED: u64 = 1 << 60;

/// The files of one version that hold each fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFiles {
    /// Bytes charged now (v1 memory.usage_in_bytes, v2 memory.current).
    pub usage: &'static str,
    /// The limit (v1 memory.limit_in_bytes, v2 memory.max).
    pub limit: &'static str,
    /// The high-water mark (v1 memory.max_usage_in_bytes, v2 memory.peak: kernel 5.19+).
    pub peak: &'static str,
    /// Counters with `oom_kill` (v1 memory.oom_control: kernel 4.13+, v2 memory.events).
    pub events: &'static str,
}

const V1: ControlFiles = ControlFiles {
    usage: "memory.usage_in_bytes",
    limit: "memory.limit_in_bytes",
    peak: "memory.max_usage_in_bytes",
    events: "memory.oom_control",
};

const V2: ControlFiles =
    ControlFiles { usage: "memory.current", limit: "memory.max", peak: "memory.peak", events: "memory.events" };

/// The control files of cgroup `version` (1, else 2).
pub fn control_files(version: u8) -> &'static ControlFiles {
    if version == 1 {
        &V1
    } else {
        &V2
    }
}

/// A number file (`memory.usage_in_bytes`, `memory.current`, `memory.peak`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v1 `memory.limit_in_bytes`: None when unlimited.
pub fn parse_v1_limit(text: &str) -> Option<u64> {
    parse_u64(text).filter(|&n| n < V1_UNLIMITED)
}

/// v2 `memory.max`: None for `max`.
pub fn parse_v2_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// The limit file of cgroup `version`: None when unlimited (or unreadable text).
pub fn parse_limit(version: u8, text: &str) -> Option<u64> {
    if version == 1 {
        parse_v1_limit(text)
    } else {
        parse_v2_max(text)
    }
}

/// The value of `key` in a `key value` file (v1 memory.oom_control, v2 memory.events).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_values_parse_with_unlimited_limit_as_none() {
        assert_eq!(parse_u64("11831861248\n"), Some(11831861248));
        assert_eq!(parse_v1_limit("9223372036854771712\n"), None);
        assert_eq!(parse_v1_limit("67108864\n"), Some(64 << 20));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_keyed(oom_control, "oom_kill"), Some(3));
        // Kernels before 4.13 have no oom_kill line.
        assert_eq!(parse_keyed("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"), None);
    }

    #[test]
    fn v2_values_parse_with_max_as_none() {
        assert_eq!(parse_v2_max("max\n"), None);
        assert_eq!(parse_v2_max("268435456\n"), Some(256 << 20));
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_keyed(events, "oom_kill"), Some(1));
        assert_eq!(parse_keyed(events, "oom"), Some(2));
    }

    #[test]
    fn limits_and_files_by_version() {
        assert_eq!(parse_limit(1, "9223372036854771712\n"), None);
        assert_eq!(parse_limit(1, "max\n"), None);
        assert_eq!(parse_limit(2, "max\n"), None);
        assert_eq!(parse_limit(2, "1048576\n"), Some(1 << 20));
        assert_eq!(control_files(1).limit, "memory.limit_in_bytes");
        assert_eq!(control_files(2).usage, "memory.current");
        assert_eq!(control_files(2).events, "memory.events");
    }
}
