//! What to do next: one line per verdict that fits its cause and the evidence, with the
//! trace's own numbers (the limit that was hit, the files the service mapped, who sent
//! the signal and what started it).
use super::{
    fmt::{basename, duration, format_bytes},
    growth,
    process::sender_role,
    trace::{sample_of, Trace},
    Cause, Verdict,
};
use crate::event::EventKind;

/// The action line for `v`; None only when the trace gives nothing to act on.
pub(crate) fn action(t: &Trace, v: &Verdict) -> Option<String> {
    let pid = v.pid?;
    Some(match v.cause {
        Cause::OomKilled => oom_action(t, v, pid),
        Cause::CrashLoop => {
            // The first death that was an OOM kill: its process and its moment.
            let first_oom = v.chain.iter().filter(|l| l.kind == "oom_kill").find_map(|l| {
                let e = t.ev.get(l.index)?;
                Some((super::trace::oom_victim(e)?, e.ts_ns))
            });
            let inner = if let Some((victim, ts)) = first_oom {
                oom_action(t, &Verdict { first_ns: ts, ..v.clone() }, victim)
            } else if v.summary.contains("OOM-killed") {
                oom_action(t, v, pid)
            } else if v.summary.contains("killed by") {
                "find out why it is killed each time (the first death's sender is named above)".to_string()
            } else {
                "look at why the first death happened (its cause is named above)".to_string()
            };
            format!("stop the cause and the loop stops: {inner}")
        }
        Cause::KilledBySignal => signal_action(t, v),
        Cause::Crashed => format!(
            "read the crash where it happened: the core dump (`coredumpctl gdb {pid}`, or `ulimit -c unlimited` before starting \
             it), or run it under a debugger; for Python, `python3 -X faulthandler` prints the stack of a fatal signal"
        ),
        Cause::Exited => format!(
            "it ended on its own: read its log for the exit code's reason; if it exited after a failed allocation, give it \
             more memory (`tracer doctor --pid {pid}` shows the limit and what is available)"
        ),
        Cause::AbortOnClose => "the server closed connections with unread data: read the whole request (and drain the body) \
             before closing, or close with shutdown(SHUT_WR) and let the client finish"
            .into(),
        Cause::LingerZero => "look for SO_LINGER 0 in the server (or its framework) and for a listener closed while \
             connections waited to be accepted (a restart, a death)"
            .into(),
        Cause::TcpMemoryPressure => {
            "the host ran short of TCP memory: raise net.ipv4.tcp_mem, or find what holds socket buffers (`ss -tm`)".into()
        }
        Cause::KeepaliveTimeout => {
            "the peer vanished without closing: check the network path and the peer's health; lower keepalive times find it sooner"
                .into()
        }
        Cause::ResetByPeer => {
            if v.summary.contains("belonged to pid") {
                "the reset came from the server's side: the server's fate is named above; fix that, and retry idempotent \
                 requests in the client"
                    .into()
            } else {
                "the other end reset the connection: trace the other end (`tracer -p PID` on its host) to see why".into()
            }
        }
        Cause::ConnectionRefused => {
            if v.summary.contains("before") && v.summary.contains("listen") || v.summary.contains("nothing listened") {
                "make clients (health checks, tests, load balancers) wait until the server listens: poll /health or a \
                 readiness endpoint before sending requests"
                    .into()
            } else {
                "the server stopped listening: see its death or restart above, and have clients retry after a short wait".into()
            }
        }
        Cause::Unexplained => "record again with all probes (`--probes` left out) and a longer --grace, and from the start \
             (`tracer run -- CMD`): the cause was not in this trace"
            .into(),
    })
}

/// The memory cgroup (path, limit) of the last sample before `ts`.
fn limit_before(t: &Trace, ts: u64) -> Option<(String, u64)> {
    t.ev.iter()
        .take_while(|e| e.ts_ns <= ts)
        .filter_map(|e| sample_of(e).and_then(|s| s.cgroup).and_then(|c| Some((c.path.clone(), c.limit_bytes?))))
        .last()
}

fn oom_action(t: &Trace, v: &Verdict, pid: u32) -> String {
    let kill = v.first_ns;
    let from = growth::window_start(t, kill);
    let data: Vec<_> = growth::file_mappings(t, pid, from, kill).into_iter().filter(|m| !m.code).collect();
    let mapped: u64 = data.iter().map(|m| m.size.unwrap_or(m.distinct_bytes)).fold(0u64, u64::saturating_add);
    let limit = limit_before(t, kill);
    let raise = match &limit {
        Some((path, limit)) => format!(
            "raise the memory limit above {} ({path}: memory.max on cgroup v2, memory.limit_in_bytes on v1, or the \
             container's memory limit)",
            format_bytes(*limit)
        ),
        None => "give the service a memory limit it fits in (so that the kernel kills nothing else) and free memory on \
                 the host"
            .to_string(),
    };
    // Weights: a service that mapped large data files before the kill.
    if let Some(top) = data.first().filter(|_| mapped >= 64 << 20) {
        let more = if data.len() > 1 { format!(" and {} more", data.len() - 1) } else { String::new() };
        return format!(
            "the files it mapped ({}{more}) total {}: at the dtype they are stored in, loading needs about {} resident; \
             {raise}, load in bf16 (half of f32), or load models one at a time in the background and refuse what does \
             not fit; `tracer doctor --pid {pid} --model NAME=DIR` says which models fit",
            basename(&top.path),
            format_bytes(mapped),
            format_bytes(mapped.saturating_add(mapped / 10))
        );
    }
    let anon = growth::rss_growth(t, pid, from, kill)
        .into_iter()
        .find(|g| g.member == "MM_ANONPAGES")
        .map(|g| g.after.saturating_sub(g.before))
        .filter(|d| *d > 0);
    let grew = anon.map(|d| format!(": its anonymous memory grew by {} before the kill", format_bytes(d as u64))).unwrap_or_default();
    format!("{raise}, or find what allocates{grew}; `tracer doctor --pid {pid}` shows the limit and what is free")
}

fn signal_action(t: &Trace, v: &Verdict) -> String {
    // The fatal signal of the chain: its sender and what started the sender.
    let sig = v.chain.iter().filter(|l| l.kind == "signal").filter_map(|l| t.ev.get(l.index)).next_back();
    let Some(e) = sig else {
        return "find out who sent the signal: trace again from the start with the signal probes on".into();
    };
    let EventKind::Signal { signal_name, sender_parents, .. } = &e.kind else {
        return "find out who sent the signal".into();
    };
    let sender = format!("{}[{}]", e.comm, e.pid);
    let started = sender_parents.as_deref().map(|p| format!(" (started by {p})")).unwrap_or_default();
    let c = e.comm.to_ascii_lowercase();
    if c.starts_with("gunicorn") {
        let lived = v.pid.and_then(|p| t.ev.iter().find(|x| x.pid == p)).map(|first| duration(e.ts_ns.saturating_sub(first.ts_ns)));
        let load = lived.map(|d| format!(" (this worker had run {d} when it was killed)")).unwrap_or_default();
        return format!(
            "raise gunicorn's --timeout above the time a worker's model load takes{load}, or load before the workers \
             start (--preload) or in a background thread so that the worker keeps answering its master"
        );
    }
    if sender_role(&e.comm, false).is_some_and(|r| r.contains("userspace OOM killer")) {
        return format!("{sender} acted on memory pressure: give the service more memory, or tune {}'s thresholds", e.comm);
    }
    if c == "systemd" || c == "init" {
        return "see who stopped or restarted the unit (`journalctl -u UNIT`, `systemctl status UNIT`) and its \
                TimeoutStopSec"
            .into();
    }
    if ["kubelet", "containerd", "runc", "crun", "dockerd", "docker", "conmon", "crio", "podman"].iter().any(|n| c.starts_with(n)) {
        return "see why the container was stopped (`kubectl describe pod` events: a failed liveness probe, an eviction, \
                a deploy); give probes a start period longer than the model load"
            .into();
    }
    format!("ask who sent {signal_name}: {sender}{started} on this host; it was not the kernel and not memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{
        diagnose,
        testkit::{Tb, GIB, MIB, PID},
    };
    use crate::event::Direction;

    fn action_of(b: &Tb, cause: Cause) -> String {
        let v = diagnose(&b.ev);
        let v = v.iter().find(|v| v.cause == cause).unwrap_or_else(|| panic!("no {cause:?} in {v:#?}"));
        v.action.clone().unwrap_or_else(|| panic!("no action for {cause:?}"))
    }

    #[test]
    fn an_oom_kill_at_a_limit_says_how_much_and_what_the_weights_need() {
        let mut b = Tb::new(PID);
        b.mmap_file(900, PID, 2 * MIB, "/usr/lib/libc.so.6");
        b.mmap_file(1_000, PID, GIB, "/models/aya/model.safetensors");
        b.cgroup_sample(1_900, GIB - MIB, Some(GIB), Some(0));
        b.signal(2_000, 77, "python3", PID, 9, "SI_KERNEL");
        b.oom_kill(2_000, 77, "python3", PID, "workload", 1000 * 1024, 12 * 1024);
        b.exit_signal(2_010, PID, 9);
        let a = action_of(&b, Cause::OomKilled);
        assert!(a.contains("model.safetensors) total 1.00 GiB"), "{a}");
        assert!(a.contains("loading needs about 1.10 GiB resident"), "{a}");
        assert!(a.contains("raise the memory limit above 1.00 GiB"), "{a}");
        assert!(a.contains(&format!("tracer doctor --pid {PID} --model NAME=DIR")), "{a}");
    }

    #[test]
    fn an_oom_kill_without_weights_says_what_grew_not_models() {
        let mut b = Tb::new(PID);
        b.rss(100, PID, "MM_ANONPAGES", MIB as i64);
        b.rss(1_800, PID, "MM_ANONPAGES", (63 * MIB) as i64);
        b.cgroup_sample(1_900, 60 * MIB, Some(64 * MIB), Some(0));
        b.oom_kill(2_000, PID, "stress", PID, "stress", 64 * 1024, 1024);
        b.exit_signal(2_010, PID, 9);
        let a = action_of(&b, Cause::OomKilled);
        assert!(a.starts_with("raise the memory limit above 64.0 MiB ("), "{a}");
        assert!(a.contains("or find what allocates: its anonymous memory grew by 62.0 MiB before the kill"), "{a}");
        assert!(!a.contains("bf16") && !a.contains("model"), "{a}");
    }

    #[test]
    fn a_kill_from_a_shell_names_who_to_ask() {
        let mut b = Tb::new(PID);
        let i = b.signal(1_000, 900, "bash", PID, 9, "SI_USER");
        if let EventKind::Signal { sender_parents, .. } = &mut b.ev[i].kind {
            *sender_parents = Some("sshd[640] < systemd[1]".into());
        }
        b.exit_signal(1_010, PID, 9);
        let a = action_of(&b, Cause::KilledBySignal);
        assert_eq!(a, "ask who sent SIGKILL: bash[900] (started by sshd[640] < systemd[1]) on this host; it was not the kernel and not memory");
    }

    #[test]
    fn a_gunicorn_timeout_points_at_the_timeout() {
        let mut b = Tb::new(PID);
        b.mmap_anon(100, PID, MIB);
        b.signal(31_000, 812, "gunicorn", PID, 6, "SI_USER");
        b.exit_signal(31_010, PID, 6);
        let a = action_of(&b, Cause::KilledBySignal);
        assert!(a.starts_with("raise gunicorn's --timeout above the time a worker's model load takes (this worker had run 31.0 s"), "{a}");
    }

    #[test]
    fn every_cause_has_its_own_action() {
        let causes = [
            Cause::OomKilled,
            Cause::KilledBySignal,
            Cause::Crashed,
            Cause::Exited,
            Cause::AbortOnClose,
            Cause::LingerZero,
            Cause::TcpMemoryPressure,
            Cause::KeepaliveTimeout,
            Cause::ResetByPeer,
            Cause::ConnectionRefused,
            Cause::Unexplained,
            Cause::CrashLoop,
        ];
        let b = Tb::new(PID);
        let t = Trace::new(&b.ev);
        let mut seen = std::collections::HashSet::new();
        for cause in causes {
            let v = Verdict {
                cause,
                summary: String::new(),
                pid: Some(PID),
                comm: None,
                port: None,
                resets: 0,
                first_ns: b.ts(1_000),
                last_ns: b.ts(1_000),
                chain: Vec::new(),
                evidence: Vec::new(),
                confidence: crate::diagnose::Confidence::High,
                action: None,
            };
            let a = action(&t, &v).unwrap_or_else(|| panic!("no action for {cause:?}"));
            assert!(a.len() > 30, "{cause:?}: {a}");
            assert!(seen.insert(a.clone()) || cause == Cause::CrashLoop, "{cause:?} shares its action: {a}");
        }
    }

    #[test]
    fn every_cause_of_a_reset_has_an_action() {
        let mut b = Tb::new(PID);
        b.listen(10, PID, 8000);
        b.rst(1_000, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        b.reset(5_000, PID, Direction::Received, None, Some("TCP_ESTABLISHED"), "127.0.0.1:40000", "10.0.0.9:443", Some("socket"));
        for v in diagnose(&b.ev) {
            let a = v.action.as_deref().unwrap_or_default();
            assert!(a.len() > 20, "{:?}: {a:?}", v.cause);
        }
    }
}
