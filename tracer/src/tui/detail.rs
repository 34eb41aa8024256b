//! What an event looks like in the list: its category (colour, filter) and a one-line
//! detail. Pure text, no terminal.
use ratatui::style::Color;

use crate::event::{Direction, Event, EventKind};

/// The kind filter cycled by `f`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Filter {
    /// Everything but samples (they feed the header and the chart, every 100 ms).
    #[default]
    All,
    /// Memory syscalls, rss and OOM kills.
    Memory,
    /// Signals, OOM kills and deaths by a signal.
    Signals,
    /// Fork, exec, exit, trace start/end, lost events.
    Process,
    /// Resets and socket states.
    Tcp,
    /// The samples themselves.
    Samples,
}

impl Filter {
    pub const ALL: [Filter; 6] = [Filter::All, Filter::Memory, Filter::Signals, Filter::Process, Filter::Tcp, Filter::Samples];

    /// The next filter in the cycle (after `Samples` comes `All`).
    pub fn next(self) -> Filter {
        let i = Filter::ALL.iter().position(|f| *f == self).unwrap_or(0);
        Filter::ALL[(i + 1) % Filter::ALL.len()]
    }

    pub fn label(self) -> &'static str {
        match self {
            Filter::All => "all",
            Filter::Memory => "memory",
            Filter::Signals => "signals",
            Filter::Process => "process",
            Filter::Tcp => "tcp",
            Filter::Samples => "samples",
        }
    }

    /// Whether events of this kind pass the filter.
    pub fn matches(self, kind: &EventKind) -> bool {
        use EventKind as K;
        match self {
            Filter::All => !matches!(kind, K::Sample { .. }),
            Filter::Memory => {
                matches!(
                    kind,
                    K::Mmap { .. }
                        | K::Munmap { .. }
                        | K::Brk { .. }
                        | K::Mremap { .. }
                        | K::MemorySummary { .. }
                        | K::Rss { .. }
                        | K::OomKill { .. }
                        | K::MemoryStall { .. }
                        | K::Forecast(_)
                )
            }
            // A thread or process that ended on its own is no signal.
            Filter::Signals => matches!(
                kind,
                K::Signal { .. } | K::SignalDeliver { .. } | K::OomKill { .. } | K::Exit { signal: Some(_), .. }
            ),
            Filter::Process => matches!(
                kind,
                K::TraceStart { .. }
                    | K::TraceEnd { .. }
                    | K::Fork { .. }
                    | K::Exec { .. }
                    | K::Exit { .. }
                    | K::Lost { .. }
                    | K::Restart { .. }
            ),
            Filter::Tcp => matches!(kind, K::TcpReset { .. } | K::TcpState { .. } | K::Peer { .. }),
            Filter::Samples => matches!(kind, K::Sample { .. }),
        }
    }
}

/// Colour of an event's kind: memory blue, signals magenta, OOM kills, process ends and
/// lost events red, tcp yellow, the rest of the process life green.
pub fn kind_color(kind: &EventKind) -> Color {
    use EventKind as K;
    match kind {
        K::Mmap { .. } | K::Munmap { .. } | K::Brk { .. } | K::Mremap { .. } | K::MemorySummary { .. } | K::Rss { .. } | K::Sample { .. } => {
            Color::Blue
        }
        K::Signal { .. } | K::SignalDeliver { .. } => Color::Magenta,
        K::OomKill { .. } | K::Lost { .. } => Color::Red,
        K::MemoryStall { .. } | K::Forecast(_) => Color::LightRed,
        K::Exit { group_dead: true, .. } => Color::Red,
        K::TcpReset { .. } | K::TcpState { .. } => Color::Yellow,
        // The rest of the process life, and kinds this view has no colour for yet.
        _ => Color::Green,
    }
}

/// Signals that end a process unless handled: the ones marked on the chart.
pub fn is_fatal_signal(sig: i32) -> bool {
    matches!(sig, libc::SIGKILL | libc::SIGSEGV | libc::SIGABRT | libc::SIGBUS | libc::SIGILL | libc::SIGFPE)
}

pub use crate::units::format_bytes_compact as bytes;

/// Seconds as `12.3s`, `4m05s`, `2h03m`.
pub fn duration(secs: f64) -> String {
    let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = secs as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let s = secs as u64;
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    }
}

/// `comm[pid]`, with control characters replaced.
pub fn who(comm: &str, pid: u32) -> String {
    format!("{}[{pid}]", clean(comm))
}

/// Text safe to put in a cell: control characters (a comm or a path may hold any byte)
/// become `?`.
pub fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn signal_text(name: &str, sig: i32) -> String {
    if name.is_empty() {
        crate::names::signal_name(sig)
    } else {
        clean(name)
    }
}

/// One line saying what the event is about (without its time, kind and process).
pub fn detail(ev: &Event) -> String {
    use EventKind as K;
    match &ev.kind {
        K::TraceStart { target_pid, target_cmdline, kernel, probes, missing_probes, .. } => {
            let missing = if missing_probes.is_empty() { String::new() } else { format!(", {} missing", missing_probes.len()) };
            format!("tracing pid {target_pid}: {} (kernel {}, {} probes{missing})", clean(target_cmdline), clean(kernel), probes.len())
        }
        K::TraceEnd { reason, events, lost, .. } => format!("{}: {events} events, {lost} lost", clean(reason)),
        K::Fork { child_pid, child_comm, thread, traced, .. } => {
            let what = if *thread { "thread" } else { "process" };
            let traced = if *traced { "" } else { " (not traced)" };
            format!("new {what} {}{traced}", who(child_comm, *child_pid))
        }
        K::Exec { filename, .. } => format!("exec {}", clean(filename)),
        K::Peer { remote, owner_pid, owner_comm } => {
            format!("connected to {} of pid {owner_pid} ({})", clean(remote), clean(owner_comm))
        }
        K::Restart { old_pid, new_pid, gap_ns, parent_pid, parent_comm, .. } => {
            let by = match (parent_pid, parent_comm) {
                (Some(p), Some(c)) => format!(" by {}[{p}]", clean(c)),
                _ => String::new(),
            };
            format!("pid {old_pid} started again as pid {new_pid}{by}, {} after it ended", crate::units::duration(*gap_ns))
        }
        K::Exit { group_dead, exit_code, signal, signal_name, core_dumped, .. } => {
            let what = if *group_dead { "process" } else { "thread" };
            let how = match (signal, exit_code) {
                (Some(s), _) => {
                    let core = if *core_dumped { " (core dumped)" } else { "" };
                    format!("killed by {}{core}", signal_text(signal_name.as_deref().unwrap_or(""), *s))
                }
                (None, Some(c)) => format!("exited with code {c}"),
                (None, None) => "exited".to_string(),
            };
            format!("{what} {how}")
        }
        K::Signal { target_pid, target_comm, signal, signal_name, si_code_name, result, .. } => format!(
            "{} ({}) to {} {}",
            signal_text(signal_name, *signal),
            clean(si_code_name),
            who(target_comm, *target_pid),
            clean(result)
        ),
        K::SignalDeliver { signal, signal_name, si_code_name, .. } => {
            format!("{} ({}) delivered", signal_text(signal_name, *signal), clean(si_code_name))
        }
        K::OomKill { victim_pid, victim_comm, is_target, anon_rss_kb, file_rss_kb, .. } => {
            let victim = match victim_pid {
                Some(p) => who(victim_comm, *p),
                None => format!("{} (pid unknown)", clean(victim_comm)),
            };
            let mut s = format!("OOM killer chose {victim}");
            if let Some(a) = anon_rss_kb {
                s.push_str(&format!(" anon {}", bytes(a.saturating_mul(1024))));
            }
            if let Some(f) = file_rss_kb {
                s.push_str(&format!(" file {}", bytes(f.saturating_mul(1024))));
            }
            if !is_target {
                s.push_str(" (not traced)");
            }
            s
        }
        K::Mmap { len, prot, flags, result, error, path, file, .. } => {
            let size = file.as_ref().map(|f| format!(" (a {} file)", bytes(f.size))).unwrap_or_default();
            let file = path.as_deref().map(|p| format!(" {}{size}", clean(p))).unwrap_or_default();
            match error {
                Some(e) => format!("{} {} {}{file} failed: {}", bytes(*len), clean(prot), clean(flags), clean(e)),
                None => format!("{} {} {}{file} at {result:#x}", bytes(*len), clean(prot), clean(flags)),
            }
        }
        K::Munmap { addr, len, error, .. } => match error {
            Some(e) => format!("{} at {addr:#x} failed: {}", bytes(*len), clean(e)),
            None => format!("{} at {addr:#x}", bytes(*len)),
        },
        K::Brk { requested, result, .. } => format!("requested {requested:#x}, break at {result:#x}"),
        K::Mremap { old_len, new_len, error, .. } => match error {
            Some(e) => format!("{} -> {} failed: {}", bytes(*old_len), bytes(*new_len), clean(e)),
            None => format!("{} -> {}", bytes(*old_len), bytes(*new_len)),
        },
        K::Rss { member, bytes: b } => format!("{} {}", clean(member), bytes((*b).max(0) as u64)),
        K::TcpReset { direction, state, reason, saddr, daddr, attributed_by, .. } => {
            let dir = match direction {
                Direction::Sent => "sent",
                Direction::Received => "received",
            };
            let mut why: Vec<String> = Vec::new();
            why.extend(reason.as_deref().map(clean));
            why.extend(state.as_deref().map(clean));
            let why = if why.is_empty() { String::new() } else { format!(" ({})", why.join(", ")) };
            let by = match attributed_by {
                Some(a) => format!(" [by {}]", clean(a)),
                None => " [not attributed]".to_string(),
            };
            format!("RST {dir} {} -> {}{why}{by}", clean(saddr), clean(daddr))
        }
        K::TcpState { old_state, new_state, saddr, daddr, .. } => {
            format!("{} -> {} {} -> {}", clean(old_state), clean(new_state), clean(saddr), clean(daddr))
        }
        K::Sample { processes, cgroup, gpus, system } => {
            let mut parts = Vec::new();
            if let Some(p) = processes.iter().find(|p| p.pid == ev.pid).or(processes.first()) {
                parts.push(format!("rss {}", bytes(p.rss_bytes)));
            }
            if processes.len() > 1 {
                parts.push(format!("{} processes", processes.len()));
            }
            if let Some(c) = cgroup {
                match c.limit_bytes {
                    Some(l) => parts.push(format!("memcg {}/{}", bytes(c.usage_bytes), bytes(l))),
                    None => parts.push(format!("memcg {}", bytes(c.usage_bytes))),
                }
            }
            for g in gpus.iter().take(2) {
                parts.push(format!("gpu{} {}/{}", g.index, bytes(g.used_bytes), bytes(g.total_bytes)));
            }
            parts.push(format!("avail {}", bytes(system.mem_available_bytes)));
            parts.join(", ")
        }
        K::Lost { probe, count, total } => format!("{count} events lost by {} ({total} so far)", clean(probe)),
        K::MemorySummary { from_ns, mmaps, mmap_bytes, munmaps, munmap_bytes, mremaps, brks, .. } => {
            let secs = ev.ts_ns.saturating_sub(*from_ns) as f64 / 1e9;
            let mut s = format!(
                "{mmaps} mmaps ({}), {munmaps} munmaps ({}) in {secs:.1} s",
                bytes(*mmap_bytes),
                bytes(*munmap_bytes)
            );
            if *mremaps > 0 {
                s.push_str(&format!(", {mremaps} mremaps"));
            }
            if *brks > 0 {
                s.push_str(&format!(", {brks} brks"));
            }
            s
        }
        K::MemoryStall { scope, name, stall_us, window_us, .. } => {
            let whose = if scope == "host" { "on the host".to_string() } else { format!("in {}", clean(name)) };
            format!(
                "tasks {whose} waited for memory ≥ {} within {} (PSI)",
                crate::units::duration(stall_us.saturating_mul(1_000)),
                crate::units::duration(window_us.saturating_mul(1_000))
            )
        }
        // A kind this view has no words for yet: its fields as JSON.
        other => clean(&serde_json::to_string(other).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testdata::Rec;

    #[test]
    fn filters_cycle_through_all_six_and_back() {
        let mut f = Filter::All;
        let mut seen = vec![f];
        for _ in 0..6 {
            f = f.next();
            seen.push(f);
        }
        assert_eq!(seen, [Filter::All, Filter::Memory, Filter::Signals, Filter::Process, Filter::Tcp, Filter::Samples, Filter::All]);
    }

    #[test]
    fn every_kind_of_the_oom_scenario_is_in_exactly_the_expected_filters() {
        let r = Rec::oom_scenario();
        for ev in &r.ev {
            let name = ev.kind_name();
            let want: &[Filter] = match name {
                "sample" => &[Filter::Samples],
                "rss" | "mmap" => &[Filter::Memory],
                "signal" => &[Filter::Signals],
                "oom_kill" => &[Filter::Memory, Filter::Signals],
                "exit" => &[Filter::Signals, Filter::Process],
                "tcp_reset" | "tcp_state" => &[Filter::Tcp],
                "trace_start" | "trace_end" | "lost" | "fork" => &[Filter::Process],
                other => panic!("unexpected kind {other}"),
            };
            for f in &Filter::ALL[1..] {
                assert_eq!(f.matches(&ev.kind), want.contains(f), "{name} in {f:?}");
            }
            assert_eq!(Filter::All.matches(&ev.kind), name != "sample", "{name} in All");
        }
        // A clean exit (a thread, a worker that ended) is no signal.
        let clean = EventKind::Exit {
            group_dead: false,
            exit_code: Some(0),
            signal: None,
            signal_name: None,
            core_dumped: false,
            source: "task_exit_code".into(),
        };
        assert!(!Filter::Signals.matches(&clean) && Filter::Process.matches(&clean));
    }

    #[test]
    fn a_memory_stall_says_where_and_how_long_and_is_a_memory_event() {
        let kind = |scope: &str, name: &str| EventKind::MemoryStall {
            scope: scope.into(),
            name: name.into(),
            stalled: "some".into(),
            stall_us: 200_000,
            window_us: 2_000_000,
            total_us: None,
        };
        let ev = |k| Event { ts_ns: 1, pid: 1, tid: 1, comm: "w".into(), kind: k };
        assert_eq!(detail(&ev(kind("host", "host"))), "tasks on the host waited for memory ≥ 200 ms within 2.0 s (PSI)");
        assert_eq!(detail(&ev(kind("memory_cgroup", "/sys/fs/cgroup/m\x1b"))), "tasks in /sys/fs/cgroup/m? waited for memory ≥ 200 ms within 2.0 s (PSI)");
        assert!(Filter::Memory.matches(&kind("host", "host")) && !Filter::Tcp.matches(&kind("host", "host")));
    }

    #[test]
    fn details_name_what_matters() {
        let r = Rec::oom_scenario();
        let line = |kind: &str| r.ev.iter().find(|e| e.kind_name() == kind).map(detail).unwrap();
        assert_eq!(line("exit"), "process killed by SIGKILL");
        assert_eq!(line("signal"), "SIGKILL (SI_KERNEL) to workload[4711] delivered");
        assert!(line("oom_kill").starts_with("OOM killer chose workload[4711] anon 1.86G"), "{}", line("oom_kill"));
        assert!(line("tcp_reset").starts_with("RST sent 127.0.0.1:8000 -> 127.0.0.1:51234 (TCP_ABORT_ON_CLOSE"), "{}", line("tcp_reset"));
        assert_eq!(line("lost"), "3 events lost by rss (3 so far)");
        assert_eq!(kind_color(&r.ev.iter().find(|e| e.kind_name() == "oom_kill").unwrap().kind), Color::Red);
    }

    #[test]
    fn durations_and_dirty_names_are_short_and_safe() {
        assert_eq!(duration(12.34), "12.3s");
        assert_eq!(duration(245.0), "4m05s");
        assert_eq!(duration(f64::NAN), "0.0s");
        assert_eq!(who("a\nb\x1b", 7), "a?b?[7]");
    }
}
