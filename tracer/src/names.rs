//! Names of ABI constants that tracepoints print as bare numbers (signals, si_code,
//! mmap flags, errno). Values the kernel does name in a `print fmt` (RST reasons, rss
//! members, TCP states) are not here: they are read from tracefs.

pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        32..=64 => return format!("SIGRT{}", sig - 32),
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

/// si_code names. Positive codes depend on the signal (SEGV_MAPERR vs BUS_ADRALN ...).
pub fn si_code_name(sig: i32, code: i32) -> String {
    let generic = match code {
        0 => Some("SI_USER"),
        0x80 => Some("SI_KERNEL"),
        -1 => Some("SI_QUEUE"),
        -2 => Some("SI_TIMER"),
        -3 => Some("SI_MESGQ"),
        -4 => Some("SI_ASYNCIO"),
        -5 => Some("SI_SIGIO"),
        -6 => Some("SI_TKILL"),
        _ => None,
    };
    if let Some(name) = generic {
        return name.to_string();
    }
    let specific = match (sig, code) {
        (libc::SIGSEGV, 1) => "SEGV_MAPERR",
        (libc::SIGSEGV, 2) => "SEGV_ACCERR",
        (libc::SIGSEGV, 3) => "SEGV_BNDERR",
        (libc::SIGSEGV, 4) => "SEGV_PKUERR",
        (libc::SIGBUS, 1) => "BUS_ADRALN",
        (libc::SIGBUS, 2) => "BUS_ADRERR",
        (libc::SIGBUS, 3) => "BUS_OBJERR",
        (libc::SIGBUS, 4) => "BUS_MCEERR_AR",
        (libc::SIGBUS, 5) => "BUS_MCEERR_AO",
        (libc::SIGILL, 1) => "ILL_ILLOPC",
        (libc::SIGILL, 2) => "ILL_ILLOPN",
        (libc::SIGILL, 3) => "ILL_ILLADR",
        (libc::SIGILL, 4) => "ILL_ILLTRP",
        (libc::SIGILL, 5) => "ILL_PRVOPC",
        (libc::SIGFPE, 1) => "FPE_INTDIV",
        (libc::SIGFPE, 2) => "FPE_INTOVF",
        (libc::SIGFPE, 3) => "FPE_FLTDIV",
        (libc::SIGCHLD, 1) => "CLD_EXITED",
        (libc::SIGCHLD, 2) => "CLD_KILLED",
        (libc::SIGCHLD, 3) => "CLD_DUMPED",
        (libc::SIGCHLD, 4) => "CLD_TRAPPED",
        (libc::SIGCHLD, 5) => "CLD_STOPPED",
        (libc::SIGCHLD, 6) => "CLD_CONTINUED",
        _ => return format!("{code}"),
    };
    specific.to_string()
}

/// TRACE_SIGNAL_* from include/trace/events/signal.h (printed as a bare number).
pub fn signal_result_name(result: i64) -> String {
    match result {
        0 => "delivered".into(),
        1 => "ignored".into(),
        2 => "already_pending".into(),
        3 => "overflow_fail".into(),
        4 => "lose_info".into(),
        other => format!("{other}"),
    }
}

pub fn prot_string(prot: u64) -> String {
    let p = prot as i32;
    let mut s = String::with_capacity(3);
    s.push(if p & libc::PROT_READ != 0 { 'r' } else { '-' });
    s.push(if p & libc::PROT_WRITE != 0 { 'w' } else { '-' });
    s.push(if p & libc::PROT_EXEC != 0 { 'x' } else { '-' });
    s
}

pub fn mmap_flags_string(flags: u64) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::MAP_FIXED, "FIXED"),
        (libc::MAP_ANONYMOUS, "ANONYMOUS"),
        (libc::MAP_GROWSDOWN, "GROWSDOWN"),
        (libc::MAP_DENYWRITE, "DENYWRITE"),
        (libc::MAP_EXECUTABLE, "EXECUTABLE"),
        (libc::MAP_LOCKED, "LOCKED"),
        (libc::MAP_NORESERVE, "NORESERVE"),
        (libc::MAP_POPULATE, "POPULATE"),
        (libc::MAP_NONBLOCK, "NONBLOCK"),
        (libc::MAP_STACK, "STACK"),
        (libc::MAP_HUGETLB, "HUGETLB"),
        (libc::MAP_SYNC, "SYNC"),
        (libc::MAP_FIXED_NOREPLACE, "FIXED_NOREPLACE"),
    ];
    let f = flags as i32;
    let mut parts = vec![match f & 0x3 {
        1 => "SHARED",
        2 => "PRIVATE",
        3 => "SHARED_VALIDATE",
        _ => "NONE",
    }
    .to_string()];
    let mut known = 0x3;
    for &(bit, name) in NAMES {
        known |= bit;
        if f & bit != 0 {
            parts.push(name.to_string());
        }
    }
    if f & !known != 0 {
        parts.push(format!("{:#x}", f & !known));
    }
    parts.join("|")
}

pub fn mremap_flags_string(flags: u64) -> String {
    let f = flags as i32;
    let mut parts = Vec::new();
    if f & libc::MREMAP_MAYMOVE != 0 {
        parts.push("MAYMOVE");
    }
    if f & libc::MREMAP_FIXED != 0 {
        parts.push("FIXED");
    }
    if f & 4 != 0 {
        parts.push("DONTUNMAP");
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join("|")
    }
}

/// A syscall return value in the error range, as an errno name.
pub fn syscall_error(ret: i64) -> Option<String> {
    if !(-4095..0).contains(&ret) {
        return None;
    }
    let errno = (-ret) as i32;
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return Some(format!("errno {errno}")),
    };
    Some(name.to_string())
}

/// What a TCP reset reason (`sk_rst_reason`, Linux 6.10+) means on the paths that produce
/// it, in plain words; `None` for a reason tracer has no words for. The README's legend
/// is checked against this table.
pub fn reset_reason_meaning(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "NO_SOCKET" => "nothing listened on the port (any more), so the kernel refused the connection",
        "TCP_STATE" => {
            "the kernel tore the connection down in a state that needs a reset: a connection still waiting in \
             the accept queue when its listener closed (the server died or closed the port before accepting it), \
             a close with SO_LINGER 0, or a disconnect"
        }
        "TCP_ABORT_ON_CLOSE" => "the owner closed the socket (or died) with data it had not read",
        "TCP_DISCONNECT_WITH_DATA" => "the owner disconnected the socket with data it had not read",
        "TCP_ABORT_ON_DATA" => "data arrived for a socket its owner had already closed",
        "TCP_ABORT_ON_LINGER" => "the owner closed with TCP_LINGER2 below 0 and the peer had not finished closing",
        "TCP_ABORT_ON_MEMORY" => "the kernel ran short of TCP memory and dropped orphaned connections",
        "TCP_KEEPALIVE_TIMEOUT" => "the peer stopped answering keepalive probes",
        "TCP_TIMEWAIT_SOCKET" => "a packet arrived for a connection that had already closed (TIME_WAIT)",
        "TCP_INVALID_ACK_SEQUENCE" | "TCP_TOO_OLD_ACK" | "TCP_OLD_ACK" | "TCP_ACK_UNSENT_DATA" => {
            "a packet acknowledged data that was never sent or is long gone: a confused or stale peer"
        }
        "TCP_RFC7323_PAWS" => "a packet with an old timestamp (PAWS check): a stale or reused connection",
        "TCP_FLAGS" | "INVALID_SYN" => "a packet with flags that make no sense in the connection's state",
        "NOT_SPECIFIED" => "the kernel gave no reason on this path",
        _ => return None,
    })
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_signal_reads_as_sigkill_si_kernel() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(si_code_name(9, 0x80), "SI_KERNEL");
        assert_eq!(si_code_name(11, 1), "SEGV_MAPERR");
        assert_eq!(si_code_name(9, 0), "SI_USER");
        assert_eq!(signal_name(34), "SIGRT2");
    }

    #[test]
    fn mmap_flags_and_prot_are_readable() {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        assert_eq!(mmap_flags_string(flags), "PRIVATE|ANONYMOUS");
        assert_eq!(prot_string((libc::PROT_READ | libc::PROT_WRITE) as u64), "rw-");
        assert_eq!(mmap_flags_string(1 | 0x4000_0000), "SHARED|0x40000000");
    }

    #[test]
    fn only_error_range_returns_are_errors() {
        assert_eq!(syscall_error(-12).as_deref(), Some("ENOMEM"));
        assert_eq!(syscall_error(0x7f00_0000_0000), None);
        assert_eq!(syscall_error(-5000), None);
    }
}
