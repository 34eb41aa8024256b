//! What the process may do: capabilities for eBPF, and RLIMIT_MEMLOCK on old kernels.
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Effective capability mask of this process, from /proc/self/status.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|s| parse_effective_caps(&s)).unwrap_or(0)
}

/// The `CapEff:` mask of /proc/PID/status text.
pub fn parse_effective_caps(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether capability `bit` is in `caps`.
pub fn has_cap(caps: u64, bit: u32) -> bool {
    caps & (1u64 << bit) != 0
}

/// CAP_SYS_ADMIN alone, or CAP_BPF with CAP_PERFMON, lets us load tracing programs.
pub fn can_load_tracing_programs(caps: u64) -> bool {
    has_cap(caps, CAP_SYS_ADMIN) || (has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON))
}

/// Lifts RLIMIT_MEMLOCK; kernels before 5.11 charge BPF maps to it. Returns false when the
/// limit could not be raised (the load may still work on newer kernels).
pub fn raise_memlock_limit() -> bool {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid pointer to an initialised rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_combinations() {
        assert!(can_load_tracing_programs(1 << CAP_SYS_ADMIN));
        assert!(can_load_tracing_programs((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!can_load_tracing_programs(1 << CAP_BPF));
        assert!(!can_load_tracing_programs(0));
    }
}
