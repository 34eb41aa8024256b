//! What this process may do: root, the capabilities eBPF tracing needs, and
//! RLIMIT_MEMLOCK (charged for BPF maps before Linux 5.11).
use super::{Check, Status};
use crate::{
    capture::privileges::{
        can_load_tracing_programs, has_cap, CAP_BPF, CAP_DAC_READ_SEARCH, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_RESOURCE,
    },
    units::format_bytes,
};

/// The same capabilities the tracer's own "not privileged" error asks for.
pub const SETCAP: &str = "sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace,cap_sys_resource+ep $(command -v tracer)";

/// Below this the ring buffer (16 MiB by default) and the maps may not fit the limit on
/// kernels that still charge them to RLIMIT_MEMLOCK.
pub const MEMLOCK_NEEDED: u64 = 64 << 20;

/// Linux 5.11 charges BPF memory to the memory cgroup instead of RLIMIT_MEMLOCK.
pub const MEMCG_ACCOUNTING: (u32, u32) = (5, 11);

fn cap_names(caps: u64) -> Vec<&'static str> {
    [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
    ]
    .into_iter()
    .filter(|&(bit, _)| has_cap(caps, bit))
    .map(|(_, name)| name)
    .collect()
}

/// The `privileges` row from the effective uid and capability mask.
pub fn check_privileges(euid: u32, caps: u64) -> Check {
    let held = cap_names(caps);
    let held = if held.is_empty() { "no capabilities".to_string() } else { held.join(", ") };
    let can_load = can_load_tracing_programs(caps);
    match (euid == 0, can_load) {
        (true, true) => Check::ok("privileges", format!("root, with {held}")),
        (false, true) if has_cap(caps, CAP_DAC_READ_SEARCH) || has_cap(caps, CAP_SYS_ADMIN) => {
            Check::ok("privileges", format!("uid {euid} (not root), with {held}: enough to trace"))
        }
        (false, true) => Check::warn(
            "privileges",
            format!("uid {euid} (not root), with {held}: programs load, but tracefs (root's only) stays unreadable"),
            format!("also grant CAP_DAC_READ_SEARCH: {SETCAP}"),
        ),
        (true, false) => Check::fail(
            "privileges",
            format!("root, but with {held}: not CAP_BPF + CAP_PERFMON nor CAP_SYS_ADMIN (a container?)"),
            "give the container CAP_BPF and CAP_PERFMON (docker run --cap-add BPF --cap-add PERFMON), or run on the host",
        ),
        (false, false) => Check::fail(
            "privileges",
            format!(
                "not root (uid {euid}), {held}: tracer cannot load eBPF programs; root would also let this doctor \
                 read tracefs and check the tracepoints"
            ),
            format!("sudo tracer ..., or grant CAP_BPF,CAP_PERFMON: {SETCAP}"),
        ),
    }
}

/// RLIMIT_MEMLOCK as (soft, hard); `u64::MAX` is unlimited.
pub fn memlock_limit() -> Option<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointer to an rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return None;
    }
    // rlim_t is u64 on 64-bit Linux, not everywhere.
    #[allow(clippy::unnecessary_cast)]
    let v = |x: libc::rlim_t| if x == libc::RLIM_INFINITY { u64::MAX } else { x as u64 };
    Some((v(r.rlim_cur), v(r.rlim_max)))
}

fn limit_text(bytes: u64) -> String {
    if bytes == u64::MAX {
        "unlimited".into()
    } else {
        format_bytes(bytes)
    }
}

/// The `memlock` row. tracer raises the limit itself at start when it may (the hard limit
/// allows it, or CAP_SYS_RESOURCE); only kernels before 5.11 care at all.
pub fn check_memlock(kernel: Option<(u32, u32, u32)>, limit: Option<(u64, u64)>, caps: u64) -> Check {
    let Some((soft, hard)) = limit else {
        return Check::warn("memlock", "cannot read RLIMIT_MEMLOCK", "check `ulimit -l`");
    };
    let text = format!("RLIMIT_MEMLOCK {}", limit_text(soft));
    let modern = kernel.is_some_and(|(a, b, _)| (a, b) >= MEMCG_ACCOUNTING);
    if modern {
        return Check::ok("memlock", format!("{text}: not needed, Linux 5.11+ charges eBPF maps to the memory cgroup"));
    }
    let can_raise = hard >= MEMLOCK_NEEDED || has_cap(caps, CAP_SYS_RESOURCE);
    if soft >= MEMLOCK_NEEDED {
        Check::ok("memlock", format!("{text}: enough for the ring buffer and maps"))
    } else if can_raise {
        Check::ok("memlock", format!("{text} (hard {}): tracer raises it at start", limit_text(hard)))
    } else {
        Check::new(
            "memlock",
            Status::Warn,
            format!("{text} (hard {}): kernels before 5.11 need ulimit -l unlimited", limit_text(hard)),
            Some(
                "ulimit -l unlimited as root (or LimitMEMLOCK=infinity in the systemd unit) before starting tracer"
                    .into(),
            ),
        )
    }
}

pub fn checks(euid: u32, caps: u64, kernel: Option<(u32, u32, u32)>) -> Vec<Check> {
    vec![check_privileges(euid, caps), check_memlock(kernel, memlock_limit(), caps)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::privileges::parse_effective_caps;

    const ROOT_STATUS: &str = "Name:\tcat\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n";
    const NOBODY_STATUS: &str = "Name:\tcat\nUid:\t65534\t65534\t65534\t65534\nCapEff:\t0000000000000000\n";

    #[test]
    fn cap_eff_parses_from_status_text() {
        assert_eq!(parse_effective_caps(ROOT_STATUS), Some(0x1fffeffffff));
        assert_eq!(parse_effective_caps(NOBODY_STATUS), Some(0));
        assert_eq!(parse_effective_caps("Name: x\n"), None);
        let caps = parse_effective_caps(ROOT_STATUS).unwrap();
        assert!(has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON));
        // This mask lacks CAP_SYS_RESOURCE (bit 24), as some sandboxes do.
        assert!(!has_cap(caps, CAP_SYS_RESOURCE));
    }

    #[test]
    fn root_with_capabilities_is_ok_and_nobody_fails_with_the_setcap_fix() {
        let root = check_privileges(0, parse_effective_caps(ROOT_STATUS).unwrap());
        assert_eq!(root.status, Status::Ok);
        assert!(root.finding.contains("CAP_BPF"), "{root:?}");

        let nobody = check_privileges(65534, 0);
        assert_eq!(nobody.status, Status::Fail);
        assert!(nobody.finding.contains("not root (uid 65534)") && nobody.finding.contains("root would"), "{nobody:?}");
        let fix = nobody.fix.unwrap();
        assert!(fix.contains("sudo tracer") && fix.contains("setcap cap_bpf,cap_perfmon"), "{fix}");
    }

    #[test]
    fn capabilities_without_root_are_enough_with_dac_read_search() {
        let bpf_perfmon = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert_eq!(check_privileges(1000, bpf_perfmon).status, Status::Warn);
        assert_eq!(check_privileges(1000, bpf_perfmon | (1 << CAP_DAC_READ_SEARCH)).status, Status::Ok);
        assert_eq!(check_privileges(1000, 1 << CAP_SYS_ADMIN).status, Status::Ok);
        assert_eq!(check_privileges(1000, 1 << CAP_BPF).status, Status::Fail);
        // Root in a container that dropped them.
        assert_eq!(check_privileges(0, 1 << CAP_DAC_READ_SEARCH).status, Status::Fail);
    }

    #[test]
    fn memlock_matters_only_before_5_11_and_when_it_cannot_be_raised() {
        let small = Some((64 << 10, 64 << 10));
        assert_eq!(check_memlock(Some((6, 18, 0)), small, 0).status, Status::Ok);
        let old = check_memlock(Some((5, 10, 0)), small, 0);
        assert_eq!(old.status, Status::Warn);
        assert_eq!(
            old.finding,
            "RLIMIT_MEMLOCK 64.0 KiB (hard 64.0 KiB): kernels before 5.11 need ulimit -l unlimited"
        );
        assert!(old.fix.unwrap().contains("ulimit -l unlimited"));
        // Raisable: by the hard limit, or by CAP_SYS_RESOURCE.
        assert_eq!(check_memlock(Some((5, 10, 0)), Some((64 << 10, u64::MAX)), 0).status, Status::Ok);
        assert_eq!(check_memlock(Some((5, 10, 0)), small, 1 << CAP_SYS_RESOURCE).status, Status::Ok);
        // An unknown kernel is treated as an old one.
        assert_eq!(check_memlock(None, small, 0).status, Status::Warn);
        assert_eq!(check_memlock(None, Some((u64::MAX, u64::MAX)), 0).status, Status::Ok);
        assert_eq!(check_memlock(Some((6, 1, 0)), None, 0).status, Status::Warn);
    }
}
