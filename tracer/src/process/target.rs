//! What a pid given with `--pid` really is, before anything is attached: a live process,
//! a thread of one (traced as its process), or something there is nothing to trace in (a
//! zombie, a kernel thread, no such pid), and whether tracer sees the kernel's pids at
//! all (not inside a PID namespace of a container).
use thiserror::Error;

/// The inode of the initial PID namespace (PROC_PID_INIT_INO in the kernel): the
/// namespace whose pids the kernel programs see.
const INIT_PID_NS_INODE: u64 = 0xEFFF_FFFC;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("no process with pid {0}: check it with `ps -p {0}` (or start the program with `tracer run -- CMD`)")]
    NoSuchProcess(u32),
    #[error(
        "pid {pid} ({comm}) is a zombie: it has already exited and its parent{parent} has not reaped it; \
         there is nothing left to trace. Trace the program from its start with `tracer run -- CMD`, or its parent"
    )]
    Zombie { pid: u32, comm: String, parent: String },
    #[error("pid {pid} ({comm}) is a kernel thread: it has no user memory or sockets to trace; give the pid of a user-space process")]
    KernelThread { pid: u32, comm: String },
    #[error(
        "tracer runs inside a PID namespace (a container without the host's PIDs), so the pids it sees here are not \
         the pids the kernel reports and nothing would be traced: run tracer on the host, or give its container the \
         host's PID namespace (`docker run --pid=host`, Kubernetes `hostPID: true`)"
    )]
    PidNamespace,
}

/// A pid resolved to the process to trace.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The process (thread group) to trace.
    pub pid: u32,
    /// The thread the user named, when it was a thread other than the main one.
    pub from_thread: Option<u32>,
}

/// Fields of /proc/PID/stat and /proc/PID/status that decide what a pid is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProcFacts {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub flags: u64,
    pub tgid: u32,
}

/// PF_KTHREAD in the task flags (field 9 of /proc/PID/stat).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses /proc/PID/stat (`pid (comm) state ppid ... flags ...`) and the `Tgid:` line of
/// /proc/PID/status.
pub fn parse_facts(stat: &str, status: &str) -> Option<ProcFacts> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the comm: state(0) ppid(1) pgrp(2) session(3) tty_nr(4) tpgid(5) flags(6).
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let flags = rest.get(6)?.parse().ok()?;
    let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:"))?.trim().parse().ok()?;
    Some(ProcFacts { comm, state, ppid, flags, tgid })
}

fn read_facts(pid: u32) -> Option<ProcFacts> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_facts(&stat, &status)
}

/// Decides what `pid` is from its facts (None: no such pid).
pub fn classify(pid: u32, facts: Option<ProcFacts>, parent_comm: impl FnOnce(u32) -> Option<String>) -> Result<Resolved, TargetError> {
    let f = facts.ok_or(TargetError::NoSuchProcess(pid))?;
    if f.flags & PF_KTHREAD != 0 {
        return Err(TargetError::KernelThread { pid, comm: f.comm });
    }
    if f.state == 'Z' || f.state == 'X' {
        let parent = match parent_comm(f.ppid) {
            Some(c) => format!(" (pid {}, {c})", f.ppid),
            None if f.ppid > 0 => format!(" (pid {})", f.ppid),
            None => String::new(),
        };
        return Err(TargetError::Zombie { pid, comm: f.comm, parent });
    }
    Ok(Resolved { pid: f.tgid, from_thread: (f.tgid != pid).then_some(pid) })
}

/// What `--pid PID` names, on this machine.
pub fn resolve(pid: u32) -> Result<Resolved, TargetError> {
    require_host_pids()?;
    classify(pid, read_facts(pid), |ppid| read_facts(ppid).map(|f| f.comm))
}

/// Fails inside a PID namespace, where no pid this process sees or starts is the one
/// the kernel programs see.
pub fn require_host_pids() -> Result<(), TargetError> {
    if in_initial_pid_namespace() {
        Ok(())
    } else {
        Err(TargetError::PidNamespace)
    }
}

/// Whether this process sees the kernel's own pids (not a container's PID namespace).
pub fn in_initial_pid_namespace() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // Unreadable (an unusual /proc): assume the host, as before this check existed.
    std::fs::metadata("/proc/self/ns/pid").map_or(true, |m| m.ino() == INIT_PID_NS_INODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpython3\nTgid:\t4711\nPid:\t4712\n";

    fn stat(pid: u32, comm: &str, state: char, ppid: u32, flags: u64) -> String {
        format!("{pid} ({comm}) {state} {ppid} {pid} {pid} 0 -1 {flags} 100 0 0 0 1 2 0 0 20 0 1 0 100 0 0")
    }

    #[test]
    fn stat_and_status_parse_even_with_odd_comms() {
        let f = parse_facts(&stat(4712, "py (worker) 1", 'S', 1, 4194560), STATUS).unwrap();
        assert_eq!(f, ProcFacts { comm: "py (worker) 1".into(), state: 'S', ppid: 1, flags: 4194560, tgid: 4711 });
        assert_eq!(parse_facts("garbage", STATUS), None);
        assert_eq!(parse_facts(&stat(1, "x", 'S', 0, 0), "Name: x\n"), None);
    }

    #[test]
    fn threads_zombies_and_kernel_threads_are_told_apart() {
        let none = |_| None;
        let thread = parse_facts(&stat(4712, "python3", 'S', 1, 0), STATUS);
        assert_eq!(classify(4712, thread, none), Ok(Resolved { pid: 4711, from_thread: Some(4712) }));
        let main = parse_facts(&stat(4711, "python3", 'S', 1, 0), STATUS);
        assert_eq!(classify(4711, main, none), Ok(Resolved { pid: 4711, from_thread: None }));
        let zombie = parse_facts(&stat(4711, "python3", 'Z', 812, 0), STATUS);
        let e = classify(4711, zombie, |_| Some("gunicorn".into())).unwrap_err();
        assert!(e.to_string().contains("is a zombie") && e.to_string().contains("(pid 812, gunicorn)"), "{e}");
        let kthread = parse_facts(&stat(2, "kthreadd", 'S', 0, PF_KTHREAD | 0x40), "Tgid:\t2\n");
        assert!(matches!(classify(2, kthread, none), Err(TargetError::KernelThread { pid: 2, .. })));
        assert_eq!(classify(9, None, none), Err(TargetError::NoSuchProcess(9)));
    }

    #[test]
    fn the_real_kernel_agrees() {
        // Our own main thread; kthreadd (pid 2) where this kernel has it.
        let me = std::process::id();
        assert_eq!(resolve(me), Ok(Resolved { pid: me, from_thread: None }));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(resolve(tid), Ok(Resolved { pid: me, from_thread: Some(tid) }));
        done_tx.send(()).unwrap();
        h.join().unwrap();
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(matches!(resolve(2), Err(TargetError::KernelThread { pid: 2, .. })));
        }
        assert!(in_initial_pid_namespace(), "the test suite runs on the host");
        // A child that exited and is not reaped yet.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let zpid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while read_facts(zpid).is_some_and(|f| f.state != 'Z') && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let e = resolve(zpid).unwrap_err();
        child.wait().unwrap();
        assert!(matches!(e, TargetError::Zombie { .. }), "{e}");
        assert!(e.to_string().contains(&format!("(pid {me}, ")), "the parent is named: {e}");
    }
}
