//! The record layouts and symbol tables of every tracepoint tracer uses, read once from
//! tracefs at start, and the offsets the kernel programs need.
use std::collections::BTreeMap;

use tracer_common::{field, usual_layout, KernelConfig, Probe};

use super::{
    format::Format,
    probes::{programs, spec},
    tracefs::Tracefs,
};

/// The format of each tracepoint of the probe table, by tracepoint name; absent where
/// this kernel lacks one. Plus the symbol tables parsed from their print fmts.
#[derive(Clone, Debug, Default)]
pub struct Layouts {
    formats: BTreeMap<&'static str, Format>,
    /// rss_stat `member` -> MM_* name.
    pub rss_members: BTreeMap<i64, String>,
    /// tcp_send_reset `reason` -> SK_RST_REASON name.
    pub reset_reasons: BTreeMap<i64, String>,
    /// TCP state number -> TCP_* name (from inet_sock_set_state, which prints numbers).
    pub tcp_states: BTreeMap<i64, String>,
    /// inet_sock_set_state `protocol` -> IPPROTO_* name.
    pub protocols: BTreeMap<i64, String>,
}

impl Layouts {
    /// Every tracepoint of the probe table that this kernel has.
    pub fn read(tracefs: &Tracefs) -> Layouts {
        let mut l = Layouts::default();
        for (p, _) in programs() {
            if let Ok(f) = tracefs.format(p.category, p.tracepoint) {
                l.formats.insert(p.tracepoint, f);
            }
        }
        l.fill_tables();
        // Before 5.15, rss_stat prints its member as a number: the names are in BTF.
        if l.rss_members.is_empty() && l.of(Probe::RssStat).is_some() {
            l.rss_members = super::btf::mm_counter_names().unwrap_or_default();
        }
        l
    }

    /// The record layout of `probe`: its first program's tracepoint.
    pub fn of(&self, probe: Probe) -> Option<&Format> {
        self.tracepoint(spec(probe).programs[0].tracepoint)
    }

    pub fn tracepoint(&self, name: &str) -> Option<&Format> {
        self.formats.get(name)
    }

    /// Sets (or, with `None`, removes) the format of a tracepoint of the table: another
    /// kernel's layout, in tests.
    pub fn set(&mut self, tracepoint: &str, format: Option<Format>) {
        let Some((p, _)) = programs().find(|(p, _)| p.tracepoint == tracepoint) else {
            return;
        };
        match format {
            Some(f) => self.formats.insert(p.tracepoint, f),
            None => self.formats.remove(p.tracepoint),
        };
        self.fill_tables();
    }

    /// Builds the name tables from the print fmts already loaded.
    fn fill_tables(&mut self) {
        let symbols = |l: &Layouts, probe, field| l.of(probe).map(|f| f.symbols(field)).unwrap_or_default();
        self.rss_members = symbols(self, Probe::RssStat, "member");
        self.reset_reasons = symbols(self, Probe::TcpSendReset, "reason");
        self.tcp_states = symbols(self, Probe::InetSockSetState, "newstate");
        self.protocols = symbols(self, Probe::InetSockSetState, "protocol");
    }

    /// Where a reset tracepoint keeps its socket and its two ports: (skaddr, local port,
    /// remote port, whether the ports sit in a sockaddr in network order). `sport` and
    /// `dport` fields when the record has them, else the port of the `saddr`/`daddr`
    /// sockaddrs (6.10+'s tcp_send_reset).
    fn reset_fields(&self, probe: Probe) -> Option<(u16, u16, u16, bool)> {
        let f = self.of(probe)?;
        let sk = f.offset("skaddr")?;
        if let (Some(sp), Some(dp)) = (f.offset("sport"), f.offset("dport")) {
            return Some((sk, sp, dp, false));
        }
        let (sa, da) = (f.field("saddr")?, f.field("daddr")?);
        // A sockaddr: family (2 bytes), then the port.
        if sa.size < 16 || da.size < 16 {
            return None;
        }
        Some((sk, u16::try_from(sa.offset + 2).ok()?, u16::try_from(da.offset + 2).ok()?, true))
    }

    pub fn tcp_state_name(&self, state: i64) -> String {
        self.tcp_states.get(&state).cloned().unwrap_or_else(|| format!("{state}"))
    }

    /// Offsets and constants for the kernel programs.
    pub fn kernel_config(&self, rss_threshold_bytes: u64, follow_children: bool, exit_code_offset: Option<u32>) -> KernelConfig {
        let mut cfg = KernelConfig::empty();
        cfg.rss_threshold_bytes = rss_threshold_bytes;
        cfg.follow_children = follow_children as u32;
        cfg.task_exit_code_offset = exit_code_offset.unwrap_or(u32::MAX);
        let mut set = |idx: usize, probe: Probe, name: &str| {
            if let Some(off) = self.of(probe).and_then(|f| f.offset(name)) {
                cfg.offsets[idx] = off;
            }
        };
        // Syscall tracepoints share one layout: the first argument after __syscall_nr.
        let first_arg = self.tracepoint("sys_enter_mmap").and_then(|f| {
            f.fields.iter().find(|x| !x.name.starts_with("common_") && x.name != "__syscall_nr").map(|x| x.offset as u16)
        });
        set(field::SIGGEN_PID, Probe::SignalGenerate, "pid");
        set(field::SIGGEN_SIG, Probe::SignalGenerate, "sig");
        set(field::SIGDEL_SIG, Probe::SignalDeliver, "sig");
        set(field::SIGDEL_HANDLER, Probe::SignalDeliver, "sa_handler");
        set(field::VICTIM_PID, Probe::MarkVictim, "pid");
        set(field::NEWTASK_PID, Probe::TaskNewtask, "pid");
        set(field::NEWTASK_FLAGS, Probe::TaskNewtask, "clone_flags");
        set(field::RSS_CURR, Probe::RssStat, "curr");
        set(field::RSS_MEMBER, Probe::RssStat, "member");
        set(field::RSS_SIZE, Probe::RssStat, "size");
        set(field::SOCK_SKADDR, Probe::InetSockSetState, "skaddr");
        set(field::SOCK_SPORT, Probe::InetSockSetState, "sport");
        set(field::SOCK_NEWSTATE, Probe::InetSockSetState, "newstate");
        set(field::SOCK_PROTOCOL, Probe::InetSockSetState, "protocol");
        set(field::EXIT_GROUP_DEAD, Probe::ProcessExit, "group_dead");
        set(field::CGATTACH_ROOT, Probe::CgroupAttach, "dst_root");
        set(field::CGATTACH_PID, Probe::CgroupAttach, "pid");
        set(field::CGATTACH_PATH, Probe::CgroupAttach, "dst_path");
        set(field::SEND_RST_REASON, Probe::TcpSendReset, "reason");
        let send = self.reset_fields(Probe::TcpSendReset);
        let recv = self.reset_fields(Probe::TcpReceiveReset);
        if let (Some(s), Some(r)) = (send, recv) {
            [cfg.offsets[field::SEND_RST_SKADDR], cfg.offsets[field::SEND_RST_SPORT], cfg.offsets[field::SEND_RST_DPORT]] = [s.0, s.1, s.2];
            [cfg.offsets[field::RECV_RST_SKADDR], cfg.offsets[field::RECV_RST_SPORT], cfg.offsets[field::RECV_RST_DPORT]] = [r.0, r.1, r.2];
            cfg.send_rst_ports_in_sockaddr = s.3 as u32;
            cfg.recv_rst_ports_in_sockaddr = r.3 as u32;
            cfg.filter_resets = 1;
        }
        if let Some(off) = self.tracepoint("sys_exit_mmap").and_then(|f| f.offset("ret")) {
            cfg.offsets[field::SYS_RET] = off;
        }
        if let Some(off) = first_arg {
            cfg.offsets[field::SYS_ARGS] = off;
        }
        let by_name = |table: &BTreeMap<i64, String>, name: &str| {
            table.iter().find(|(_, n)| n.as_str() == name).map(|(v, _)| *v as u32)
        };
        cfg.tcp_listen_state = by_name(&self.tcp_states, "TCP_LISTEN").unwrap_or(u32::MAX);
        cfg.ipproto_tcp = by_name(&self.protocols, "IPPROTO_TCP").unwrap_or(u32::MAX);
        cfg.tcp_syn_sent_state = by_name(&self.tcp_states, "TCP_SYN_SENT").unwrap_or(u32::MAX);
        cfg.tcp_syn_recv_state = by_name(&self.tcp_states, "TCP_SYN_RECV").unwrap_or(u32::MAX);
        cfg.tcp_close_state = by_name(&self.tcp_states, "TCP_CLOSE").unwrap_or(u32::MAX);
        cfg.usual_layouts = self.usual_layouts();
        cfg
    }

    /// The [`usual_layout`] bits whose tracepoints this kernel has (all of them, for a
    /// bit with several).
    pub fn usual_layout_candidates(&self) -> u32 {
        let has = |probes: &[Probe]| probes.iter().all(|p| spec(*p).programs.iter().all(|prog| self.tracepoint(prog.tracepoint).is_some()));
        let mut bits = 0;
        for (bit, probes) in [
            (usual_layout::RSS, &[Probe::RssStat][..]),
            (usual_layout::SYSCALLS, &[Probe::Mmap, Probe::Munmap, Probe::Brk, Probe::Mremap][..]),
            (usual_layout::SIGNALS, &[Probe::SignalGenerate, Probe::SignalDeliver][..]),
            (usual_layout::SOCK, &[Probe::InetSockSetState][..]),
        ] {
            if has(probes) {
                bits |= bit;
            }
        }
        bits
    }

    /// The [`usual_layout`] bits whose records this kernel lays out as compiled in: each
    /// field the programs read at the compiled offset with the compiled size.
    pub fn usual_layouts(&self) -> u32 {
        let at = |f: Option<&Format>, name: &str, offset: usize, size: usize| {
            f.and_then(|f| f.field(name)).is_some_and(|x| x.offset == offset && x.size == size && !x.data_loc)
        };
        let mut bits = 0;
        let rss = self.of(Probe::RssStat);
        if at(rss, "curr", usual_layout::RSS_CURR, 4)
            && at(rss, "member", usual_layout::RSS_MEMBER, 4)
            && at(rss, "size", usual_layout::RSS_SIZE, 8)
        {
            bits |= usual_layout::RSS;
        }
        let syscalls = [
            (Probe::Mmap, usual_layout::MMAP_ARGS),
            (Probe::Munmap, usual_layout::MUNMAP_ARGS),
            (Probe::Brk, usual_layout::BRK_ARGS),
            (Probe::Mremap, usual_layout::MREMAP_ARGS),
        ];
        let all_usual = syscalls.iter().all(|(probe, n)| {
            let [enter, exit] = spec(*probe).programs else { return false };
            let args: Vec<(usize, usize)> = self
                .tracepoint(enter.tracepoint)
                .map(|f| f.fields.iter().filter(|x| !x.name.starts_with("common_") && x.name != "__syscall_nr").map(|x| (x.offset, x.size)).collect())
                .unwrap_or_default();
            let expected: Vec<(usize, usize)> = (0..*n).map(|i| (usual_layout::SYS_ARGS + 8 * i, 8)).collect();
            args == expected && at(self.tracepoint(exit.tracepoint), "ret", usual_layout::SYS_RET, 8)
        });
        if all_usual {
            bits |= usual_layout::SYSCALLS;
        }
        let (generate, deliver) = (self.of(Probe::SignalGenerate), self.of(Probe::SignalDeliver));
        if at(generate, "sig", usual_layout::SIGGEN_SIG, 4)
            && at(generate, "pid", usual_layout::SIGGEN_PID, 4)
            && at(deliver, "sig", usual_layout::SIGDEL_SIG, 4)
            && at(deliver, "sa_handler", usual_layout::SIGDEL_HANDLER, 8)
        {
            bits |= usual_layout::SIGNALS;
        }
        let sock = self.of(Probe::InetSockSetState);
        let ends_within = sock.is_some_and(|f| f.fields.iter().all(|x| !x.data_loc && x.offset + x.size <= tracer_common::SOCK_DATA_LEN));
        if ends_within
            && at(sock, "skaddr", usual_layout::SOCK_SKADDR, 8)
            && at(sock, "newstate", usual_layout::SOCK_NEWSTATE, 4)
            && at(sock, "sport", usual_layout::SOCK_SPORT, 2)
            && at(sock, "protocol", usual_layout::SOCK_PROTOCOL, 2)
        {
            bits |= usual_layout::SOCK;
        }
        bits
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The layouts of the kernel these tests were written on (6.18), from stored files.
    pub(crate) fn layouts_6_18() -> Layouts {
        let mut l = Layouts::default();
        for name in [
            "task_newtask",
            "sched_process_exec",
            "sched_process_exit",
            "signal_generate",
            "signal_deliver",
            "mark_victim",
            "rss_stat",
            "tcp_send_reset",
            "tcp_receive_reset",
            "inet_sock_set_state",
            "sys_enter_mmap",
            "sys_exit_mmap",
            "sys_enter_munmap",
            "sys_exit_munmap",
            "sys_enter_brk",
            "sys_exit_brk",
            "sys_enter_mremap",
            "sys_exit_mremap",
            "cgroup_attach_task",
        ] {
            let text = std::fs::read_to_string(format!("{}/src/capture/testdata/6.18/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            l.set(name, Some(Format::parse(&text).unwrap()));
        }
        l
    }

    #[test]
    fn kernel_config_carries_offsets_and_constants_from_formats() {
        let cfg = layouts_6_18().kernel_config(1 << 20, true, Some(1234));
        assert_eq!(cfg.offsets[field::SIGGEN_PID], 36);
        assert_eq!(cfg.offsets[field::RSS_SIZE], 24);
        assert_eq!(cfg.offsets[field::SYS_ARGS], 16);
        assert_eq!(cfg.offsets[field::SYS_RET], 16);
        assert_eq!(cfg.offsets[field::EXIT_GROUP_DEAD], 32);
        assert_eq!(
            (cfg.offsets[field::CGATTACH_ROOT], cfg.offsets[field::CGATTACH_PID], cfg.offsets[field::CGATTACH_PATH]),
            (8, 24, 28)
        );
        // 6.18's tcp_send_reset keeps its ports inside sockaddrs; tcp_receive_reset in fields.
        assert_eq!(cfg.filter_resets, 1);
        assert_eq!(
            (cfg.offsets[field::SEND_RST_SKADDR], cfg.offsets[field::SEND_RST_SPORT], cfg.offsets[field::SEND_RST_DPORT]),
            (16, 34, 62)
        );
        assert_eq!((cfg.send_rst_ports_in_sockaddr, cfg.offsets[field::SEND_RST_REASON]), (1, 28));
        assert_eq!(
            (cfg.offsets[field::RECV_RST_SKADDR], cfg.offsets[field::RECV_RST_SPORT], cfg.offsets[field::RECV_RST_DPORT]),
            (8, 16, 18)
        );
        assert_eq!(cfg.recv_rst_ports_in_sockaddr, 0);
        assert_eq!(cfg.tcp_listen_state, 10);
        assert_eq!(cfg.ipproto_tcp, 6);
        assert_eq!((cfg.tcp_syn_sent_state, cfg.tcp_syn_recv_state, cfg.tcp_close_state), (2, 3, 7));
        assert_eq!(cfg.task_exit_code_offset, 1234);
        assert_eq!(cfg.follow_children, 1);
    }

    #[test]
    fn a_reset_tracepoint_with_port_fields_is_read_in_host_order() {
        let mut l = layouts_6_18();
        l.set("tcp_send_reset", Some(Format::parse(include_str!("testdata/5.15/tcp_send_reset")).unwrap()));
        let cfg = l.kernel_config(0, false, None);
        assert_eq!(
            (cfg.offsets[field::SEND_RST_SKADDR], cfg.offsets[field::SEND_RST_SPORT], cfg.offsets[field::SEND_RST_DPORT]),
            (16, 28, 30)
        );
        assert_eq!((cfg.send_rst_ports_in_sockaddr, cfg.filter_resets), (0, 1));
        // No reason before 6.10: counted as "no reason".
        assert_eq!(cfg.offsets[field::SEND_RST_REASON], tracer_common::UNKNOWN_OFFSET);
        // Without the receive tracepoint nothing is filtered: user space sees every reset.
        l.set("tcp_receive_reset", None);
        assert_eq!(l.kernel_config(0, false, None).filter_resets, 0);
    }

    #[test]
    fn missing_tracepoints_leave_offsets_unknown() {
        let mut l = layouts_6_18();
        l.set("rss_stat", None);
        l.set("mark_victim", Some(Format::parse(include_str!("testdata/5.15/mark_victim")).unwrap()));
        let cfg = l.kernel_config(0, false, None);
        assert_eq!(cfg.offsets[field::RSS_SIZE], tracer_common::UNKNOWN_OFFSET);
        assert_eq!(cfg.offsets[field::VICTIM_PID], 8);
        assert_eq!(cfg.task_exit_code_offset, u32::MAX);
    }

    #[test]
    fn records_laid_out_as_compiled_in_are_read_with_plain_loads_and_others_not() {
        let all = usual_layout::RSS | usual_layout::SYSCALLS | usual_layout::SIGNALS | usual_layout::SOCK;
        assert_eq!(layouts_6_18().kernel_config(0, false, None).usual_layouts, all);
        let both = usual_layout::RSS | usual_layout::SYSCALLS;
        // A socket record with a field past what is copied: copied whole, read by offset.
        let mut l = layouts_6_18();
        let longer = include_str!("testdata/6.18/inet_sock_set_state")
            .replace("print fmt:", "\tfield:__u32 mark;\toffset:72;\tsize:4;\tsigned:0;\n\nprint fmt:");
        l.set("inet_sock_set_state", Some(Format::parse(&longer).unwrap()));
        assert_eq!(l.usual_layouts(), all & !usual_layout::SOCK);
        // A syscall with an argument more than compiled in: the loads would stop short.
        let mut more = layouts_6_18();
        let three = include_str!("testdata/6.18/sys_enter_munmap")
            .replace("print fmt:", "\tfield:unsigned long flags;\toffset:32;\tsize:8;\tsigned:0;\n\nprint fmt:");
        more.set("sys_enter_munmap", Some(Format::parse(&three).unwrap()));
        assert_eq!(more.usual_layouts(), all & !usual_layout::SYSCALLS);
        l.set("signal_deliver", None);
        assert_eq!(l.usual_layouts(), both);

        // rss_stat with its size elsewhere (a kernel that added a field): read through
        // the configured offsets.
        let mut l = layouts_6_18();
        let moved = include_str!("testdata/6.18/rss_stat").replace("long size;\toffset:24", "long size;\toffset:32");
        l.set("rss_stat", Some(Format::parse(&moved).unwrap()));
        let cfg = l.kernel_config(0, false, None);
        assert_eq!((cfg.usual_layouts, cfg.offsets[field::RSS_SIZE]), (all & !usual_layout::RSS, 32));

        // One syscall tracepoint missing, or with a 4-byte ret: the syscalls bit goes.
        let mut l = layouts_6_18();
        for p in ["signal_generate", "signal_deliver", "inet_sock_set_state"] {
            l.set(p, None);
        }
        l.set("sys_exit_brk", None);
        assert_eq!(l.usual_layouts(), usual_layout::RSS);
        let mut l = layouts_6_18();
        for p in ["signal_generate", "signal_deliver", "inet_sock_set_state"] {
            l.set(p, None);
        }
        let narrow = include_str!("testdata/6.18/sys_exit_munmap").replace("long ret;\toffset:16;\tsize:8", "int ret;\toffset:16;\tsize:4");
        assert_ne!(narrow, include_str!("testdata/6.18/sys_exit_munmap"));
        l.set("sys_exit_munmap", Some(Format::parse(&narrow).unwrap()));
        assert_eq!(l.usual_layouts(), usual_layout::RSS);
        l.set("rss_stat", None);
        assert_eq!(l.usual_layouts(), 0);
    }

    #[test]
    fn the_running_kernel_lays_out_the_hot_records_as_compiled_in() {
        // The truth on this kernel: its own tracefs formats.
        let l = crate::capture::tracefs::Tracefs::locate().map(|t| Layouts::read(&t)).unwrap_or_default();
        if l.of(Probe::RssStat).is_none() {
            eprintln!("SKIPPED: cannot read kmem:rss_stat's format here (no tracefs, or not root); the stored 6.18 formats are checked above");
            return;
        }
        let all = usual_layout::RSS | usual_layout::SYSCALLS | usual_layout::SIGNALS | usual_layout::SOCK;
        assert_eq!(l.usual_layouts(), all);
    }
}
