//! The probe table: every probe tracer attaches, described once. Its kernel programs
//! and the tracepoints they attach to, the `--probes` group that selects it, and the
//! label its loss is reported under. Attaching, reading layouts, loss accounting and
//! `tracer doctor`'s tracepoint rows all derive from [`PROBES`].
use tracer_common::Probe;

/// Groups of probes a user can select with `--probes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum ProbeGroup {
    /// task_newtask, sched_process_exec, sched_process_exit, cgroup_attach_task (always on:
    /// they track the target)
    Process,
    /// signal_generate, signal_deliver
    Signal,
    /// oom:mark_victim
    Oom,
    /// mmap, munmap, brk, mremap syscalls
    Mmap,
    /// kmem:rss_stat, aggregated in the kernel (the most expensive probe)
    Rss,
    /// tcp_send_reset, tcp_receive_reset, inet_sock_set_state
    Tcp,
}

impl ProbeGroup {
    pub const ALL: [ProbeGroup; 6] =
        [ProbeGroup::Process, ProbeGroup::Signal, ProbeGroup::Oom, ProbeGroup::Mmap, ProbeGroup::Rss, ProbeGroup::Tcp];
}

/// A kernel program and the classic tracepoint it attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// The program's name in the eBPF object (its function name in tracer-ebpf).
    pub name: &'static str,
    /// Tracepoint category (`/sys/kernel/tracing/events/<category>/`).
    pub category: &'static str,
    pub tracepoint: &'static str,
}

impl Program {
    /// `category:tracepoint`, as users and `perf list` write it.
    pub fn label(&self) -> String {
        format!("{}:{}", self.category, self.tracepoint)
    }
}

/// One probe: what produces records tagged with [`ProbeSpec::probe`].
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub probe: Probe,
    /// Name of the probe in `lost` events and the report.
    pub label: &'static str,
    pub group: ProbeGroup,
    /// Its programs. The first one's tracepoint gives the record layout the decoder reads.
    pub programs: &'static [Program],
}

const fn tp(name: &'static str, category: &'static str, tracepoint: &'static str) -> Program {
    Program { name, category, tracepoint }
}

/// A syscall probe: the sys_enter and sys_exit programs of one syscall.
macro_rules! syscall {
    ($enter:literal, $exit:literal) => {
        &[tp($enter, "syscalls", $enter), tp($exit, "syscalls", $exit)]
    };
}

/// Every probe, in [`Probe`] order.
pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        probe: Probe::TaskNewtask,
        label: "task_newtask",
        group: ProbeGroup::Process,
        programs: &[tp("task_newtask", "task", "task_newtask")],
    },
    ProbeSpec {
        probe: Probe::ProcessExec,
        label: "sched_process_exec",
        group: ProbeGroup::Process,
        programs: &[tp("sched_process_exec", "sched", "sched_process_exec")],
    },
    ProbeSpec {
        probe: Probe::ProcessExit,
        label: "sched_process_exit",
        group: ProbeGroup::Process,
        programs: &[tp("sched_process_exit", "sched", "sched_process_exit")],
    },
    ProbeSpec {
        probe: Probe::SignalGenerate,
        label: "signal_generate",
        group: ProbeGroup::Signal,
        programs: &[tp("signal_generate", "signal", "signal_generate")],
    },
    ProbeSpec {
        probe: Probe::SignalDeliver,
        label: "signal_deliver",
        group: ProbeGroup::Signal,
        programs: &[tp("signal_deliver", "signal", "signal_deliver")],
    },
    ProbeSpec {
        probe: Probe::MarkVictim,
        label: "mark_victim",
        group: ProbeGroup::Oom,
        programs: &[tp("mark_victim", "oom", "mark_victim")],
    },
    ProbeSpec { probe: Probe::RssStat, label: "rss_stat", group: ProbeGroup::Rss, programs: &[tp("rss_stat", "kmem", "rss_stat")] },
    ProbeSpec {
        probe: Probe::TcpSendReset,
        label: "tcp_send_reset",
        group: ProbeGroup::Tcp,
        programs: &[tp("tcp_send_reset", "tcp", "tcp_send_reset")],
    },
    ProbeSpec {
        probe: Probe::TcpReceiveReset,
        label: "tcp_receive_reset",
        group: ProbeGroup::Tcp,
        programs: &[tp("tcp_receive_reset", "tcp", "tcp_receive_reset")],
    },
    ProbeSpec {
        probe: Probe::InetSockSetState,
        label: "inet_sock_set_state",
        group: ProbeGroup::Tcp,
        programs: &[tp("inet_sock_set_state", "sock", "inet_sock_set_state")],
    },
    ProbeSpec { probe: Probe::Mmap, label: "mmap", group: ProbeGroup::Mmap, programs: syscall!("sys_enter_mmap", "sys_exit_mmap") },
    ProbeSpec {
        probe: Probe::Munmap,
        label: "munmap",
        group: ProbeGroup::Mmap,
        programs: syscall!("sys_enter_munmap", "sys_exit_munmap"),
    },
    ProbeSpec { probe: Probe::Brk, label: "brk", group: ProbeGroup::Mmap, programs: syscall!("sys_enter_brk", "sys_exit_brk") },
    ProbeSpec {
        probe: Probe::Mremap,
        label: "mremap",
        group: ProbeGroup::Mmap,
        programs: syscall!("sys_enter_mremap", "sys_exit_mremap"),
    },
    ProbeSpec {
        probe: Probe::CgroupAttach,
        label: "cgroup_attach_task",
        group: ProbeGroup::Process,
        programs: &[tp("cgroup_attach_task", "cgroup", "cgroup_attach_task")],
    },
];

/// The table entry of `probe`.
pub fn spec(probe: Probe) -> &'static ProbeSpec {
    // PROBES is in Probe order (checked by a test), so the index is the value.
    &PROBES[probe as usize]
}

/// Every program with the group of its probe: what is attached, and what `tracer doctor`
/// checks the running kernel for.
pub fn programs() -> impl Iterator<Item = (&'static Program, ProbeGroup)> {
    PROBES.iter().flat_map(|s| s.programs.iter().map(move |p| (p, s.group)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::PROBE_COUNT;

    #[test]
    fn the_table_has_each_probe_once_in_order() {
        assert_eq!(PROBES.len(), PROBE_COUNT as usize);
        for (i, s) in PROBES.iter().enumerate() {
            assert_eq!(s.probe as usize, i, "{s:?}");
            assert_eq!(Probe::ALL[i], s.probe);
            assert_eq!(Probe::from_u32(i as u32), Some(s.probe));
            assert!(!s.programs.is_empty(), "{s:?}");
        }
        assert_eq!(Probe::from_u32(PROBE_COUNT), None);
    }

    #[test]
    fn every_group_has_a_probe_and_names_are_unique() {
        for g in ProbeGroup::ALL {
            assert!(PROBES.iter().any(|s| s.group == g), "{g:?}");
        }
        let mut names: Vec<&str> = programs().map(|(p, _)| p.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "program names are unique");
        let mut labels: Vec<&str> = PROBES.iter().map(|s| s.label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), PROBES.len());
    }

    #[test]
    fn the_programs_exist_in_the_kernel_crate() {
        // Each program name is a function of tracer-ebpf with its tracepoint attribute.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf/src");
        let sources: String = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        for (p, _) in programs() {
            assert!(sources.contains(&format!("pub fn {}(", p.name)), "no program {} in tracer-ebpf", p.name);
        }
    }
}
