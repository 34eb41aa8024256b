//! The record layouts and symbol tables of every tracepoint tracer uses, read once from
//! tracefs at start, and the offsets the kernel programs need.
use std::collections::BTreeMap;

use tracer_common::{field, KernelConfig};

use super::{format::Format, tracefs::Tracefs};

/// Tracepoints by (category, name); `None` where this kernel lacks one.
#[derive(Clone, Debug, Default)]
pub struct Layouts {
    pub newtask: Option<Format>,
    pub exec: Option<Format>,
    pub exit: Option<Format>,
    pub signal_generate: Option<Format>,
    pub signal_deliver: Option<Format>,
    pub mark_victim: Option<Format>,
    pub rss_stat: Option<Format>,
    pub send_reset: Option<Format>,
    pub receive_reset: Option<Format>,
    pub sock_state: Option<Format>,
    pub sys_enter_mmap: Option<Format>,
    pub sys_exit_mmap: Option<Format>,
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
    pub fn read(tracefs: &Tracefs) -> Layouts {
        let get = |cat: &str, name: &str| tracefs.format(cat, name).ok();
        let mut l = Layouts {
            newtask: get("task", "task_newtask"),
            exec: get("sched", "sched_process_exec"),
            exit: get("sched", "sched_process_exit"),
            signal_generate: get("signal", "signal_generate"),
            signal_deliver: get("signal", "signal_deliver"),
            mark_victim: get("oom", "mark_victim"),
            rss_stat: get("kmem", "rss_stat"),
            send_reset: get("tcp", "tcp_send_reset"),
            receive_reset: get("tcp", "tcp_receive_reset"),
            sock_state: get("sock", "inet_sock_set_state"),
            sys_enter_mmap: get("syscalls", "sys_enter_mmap"),
            sys_exit_mmap: get("syscalls", "sys_exit_mmap"),
            ..Default::default()
        };
        l.fill_tables();
        l
    }

    /// Builds the name tables from the print fmts already loaded.
    pub fn fill_tables(&mut self) {
        if let Some(f) = &self.rss_stat {
            self.rss_members = f.symbols("member");
        }
        if let Some(f) = &self.send_reset {
            self.reset_reasons = f.symbols("reason");
        }
        if let Some(f) = &self.sock_state {
            self.tcp_states = f.symbols("newstate");
            self.protocols = f.symbols("protocol");
        }
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
        let mut set = |idx: usize, f: &Option<Format>, name: &str| {
            if let Some(off) = f.as_ref().and_then(|f| f.offset(name)) {
                cfg.offsets[idx] = off;
            }
        };
        // Syscall tracepoints share one layout: the first argument after __syscall_nr.
        let first_arg = self.sys_enter_mmap.as_ref().and_then(|f| {
            f.fields.iter().find(|x| !x.name.starts_with("common_") && x.name != "__syscall_nr").map(|x| x.offset as u16)
        });
        set(field::SIGGEN_PID, &self.signal_generate, "pid");
        set(field::VICTIM_PID, &self.mark_victim, "pid");
        set(field::NEWTASK_PID, &self.newtask, "pid");
        set(field::NEWTASK_FLAGS, &self.newtask, "clone_flags");
        set(field::RSS_CURR, &self.rss_stat, "curr");
        set(field::RSS_MEMBER, &self.rss_stat, "member");
        set(field::RSS_SIZE, &self.rss_stat, "size");
        set(field::SOCK_SKADDR, &self.sock_state, "skaddr");
        set(field::SOCK_SPORT, &self.sock_state, "sport");
        set(field::SOCK_NEWSTATE, &self.sock_state, "newstate");
        set(field::SOCK_PROTOCOL, &self.sock_state, "protocol");
        set(field::EXIT_GROUP_DEAD, &self.exit, "group_dead");
        set(field::SYS_RET, &self.sys_exit_mmap, "ret");
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
        cfg
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The layouts of the kernel these tests were written on (6.18), from stored files.
    pub(crate) fn layouts_6_18() -> Layouts {
        let p = |s: &str| Some(Format::parse(s).unwrap());
        let mut l = Layouts {
            newtask: p(include_str!("testdata/6.18/task_newtask")),
            exec: p(include_str!("testdata/6.18/sched_process_exec")),
            exit: p(include_str!("testdata/6.18/sched_process_exit")),
            signal_generate: p(include_str!("testdata/6.18/signal_generate")),
            signal_deliver: p(include_str!("testdata/6.18/signal_deliver")),
            mark_victim: p(include_str!("testdata/6.18/mark_victim")),
            rss_stat: p(include_str!("testdata/6.18/rss_stat")),
            send_reset: p(include_str!("testdata/6.18/tcp_send_reset")),
            receive_reset: p(include_str!("testdata/6.18/tcp_receive_reset")),
            sock_state: p(include_str!("testdata/6.18/inet_sock_set_state")),
            sys_enter_mmap: p(include_str!("testdata/6.18/sys_enter_mmap")),
            sys_exit_mmap: p(include_str!("testdata/6.18/sys_exit_mmap")),
            ..Default::default()
        };
        l.fill_tables();
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
        assert_eq!(cfg.tcp_listen_state, 10);
        assert_eq!(cfg.ipproto_tcp, 6);
        assert_eq!((cfg.tcp_syn_sent_state, cfg.tcp_syn_recv_state, cfg.tcp_close_state), (2, 3, 7));
        assert_eq!(cfg.task_exit_code_offset, 1234);
        assert_eq!(cfg.follow_children, 1);
    }

    #[test]
    fn missing_tracepoints_leave_offsets_unknown() {
        let mut l = layouts_6_18();
        l.rss_stat = None;
        l.mark_victim = Some(Format::parse(include_str!("testdata/5.15/mark_victim")).unwrap());
        let cfg = l.kernel_config(0, false, None);
        assert_eq!(cfg.offsets[field::RSS_SIZE], tracer_common::UNKNOWN_OFFSET);
        assert_eq!(cfg.offsets[field::VICTIM_PID], 8);
        assert_eq!(cfg.task_exit_code_offset, u32::MAX);
    }
}
