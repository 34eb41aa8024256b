//! Raw ring-buffer records -> [`Event`]s, using the layouts read from tracefs.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tracer_common::{
    aux, file_flags, ExecRecord, FileIdentity, Header, MemSyscall, MmapFileRecord, Probe, RawRecord, RssRecord, CLONE_THREAD,
};

use super::{
    format::Format,
    layouts::Layouts,
    sockets::SocketOwners,
};
use crate::{
    clock::Clock,
    event::{Direction, Event, EventKind, FileId},
    names,
};

pub struct Decoder {
    layouts: Layouts,
    clock: Clock,
    follow_children: bool,
    owners: SocketOwners,
    /// Last fatal signal delivered per process: the exit cause when BTF is missing.
    fatal_signal: HashMap<u32, i32>,
    /// si_code of the last SIGKILL generated per receiving process: a SIGKILL is
    /// delivered on the kernel's group-exit path with no siginfo, which its tracepoint
    /// reports as SI_USER whoever sent it (the OOM killer's is SI_KERNEL).
    sigkill_code: HashMap<u32, (i32, String)>,
}

fn comm(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is plain repr(C) data valid for any bit pattern.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// A [`RawRecord`], or a shorter copy (a [`tracer_common::SmallRecord`], a socket
/// record of [`tracer_common::SOCK_DATA_LEN`]) read as one: its data past what the
/// kernel copied is zero.
fn read_raw(bytes: &[u8]) -> Option<RawRecord> {
    if let Some(r) = read_record::<RawRecord>(bytes) {
        return Some(r);
    }
    let small: tracer_common::SmallRecord = read_record(bytes)?;
    let start = std::mem::offset_of!(RawRecord, data);
    let mut data = [0u8; tracer_common::RAW_DATA_LEN];
    let copied = &bytes[start..];
    data[..copied.len()].copy_from_slice(copied);
    Some(RawRecord { header: small.header, aux: small.aux, data })
}

/// A process the kernel programs started tracing on their own, which user space must
/// follow up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// The exec of the watched process's successor (`--follow-restarts`), this long
    /// after the watched process ended.
    Successor { gap_ns: u64 },
    /// A task moved into the `--cgroup` scope: only its own id is known.
    Joined { task: u32 },
    /// A traced task moved to another cgroup (not an adoption: a note for the sampler).
    Moved { task: u32 },
}

/// What a ring-buffer item says about an adoption, if it is one.
pub fn adoption(bytes: &[u8]) -> Option<Adoption> {
    // Called on every record: look at the header before copying anything bigger.
    let h: Header = read_record(bytes)?;
    if h.probe != Probe::ProcessExec as u32 && h.probe != Probe::CgroupAttach as u32 {
        return None;
    }
    let r = read_raw(bytes)?;
    match Probe::from_u32(r.header.probe)? {
        Probe::ProcessExec if r.aux[aux::EXEC_ADOPTED] == 1 => Some(Adoption::Successor { gap_ns: r.aux[aux::EXEC_GAP_NS] }),
        Probe::CgroupAttach if r.aux[1] == aux::CGROUP_MOVED => Some(Adoption::Moved { task: r.aux[0] as u32 }),
        Probe::CgroupAttach => Some(Adoption::Joined { task: r.aux[0] as u32 }),
        _ => None,
    }
}

/// Who started the sender of a fatal signal from outside ("bash[812] < sshd[640]"),
/// read now, while it likely still runs; None for other signals and for the kernel's.
fn sender_parents(sig: i32, sender: u32, receiver: u32) -> Option<String> {
    if !tracer_common::ends_from_outside(sig) || sender == 0 || sender == receiver {
        return None;
    }
    let chain = crate::process::ancestors(sender, 6);
    (!chain.is_empty()).then(|| chain.iter().map(|(p, c)| format!("{c}[{p}]")).collect::<Vec<_>>().join(" < "))
}

impl Decoder {
    /// A monotonic time in the records' wall-clock base.
    pub fn wall(&self, mono_ns: u64) -> u64 {
        self.clock.wall(mono_ns)
    }

    /// The name of a reset reason value, from tcp_send_reset's print fmt.
    pub fn reset_reason_name(&self, value: i64) -> String {
        self.layouts.reset_reasons.get(&value).cloned().unwrap_or_else(|| format!("{value}"))
    }

    /// Sockets a process had before tracing began, so that resets on them are its own.
    pub fn seed_sockets(&mut self, owner: u32, sockets: &[crate::process::OwnedSocket]) {
        for s in sockets {
            if s.listening {
                self.owners.seed_listener(owner, s.local.port());
            } else {
                self.owners.seed_connection(owner, s.local, s.remote);
            }
        }
    }

    pub fn new(layouts: Layouts, clock: Clock, follow_children: bool) -> Decoder {
        Decoder { layouts, clock, follow_children, owners: SocketOwners::default(), fatal_signal: HashMap::new(), sigkill_code: HashMap::new() }
    }

    fn base(&self, h: &Header, kind: EventKind) -> Event {
        Event { ts_ns: self.clock.wall(h.ts_ns), pid: h.tgid, tid: h.tid, comm: comm(&h.comm), kind }
    }

    /// Decodes one ring-buffer item. `None` for records this kernel's layout cannot
    /// explain (never a panic on kernel data).
    pub fn decode(&mut self, bytes: &[u8]) -> Option<Event> {
        let header: Header = read_record(bytes)?;
        let probe = Probe::from_u32(header.probe)?;
        match probe {
            Probe::Mmap if bytes.len() >= std::mem::size_of::<MmapFileRecord>() => {
                let rec: MmapFileRecord = read_record(bytes)?;
                Some(self.mem_syscall(probe, &rec.sys, Some(&rec.file)))
            }
            Probe::Mmap | Probe::Munmap | Probe::Brk | Probe::Mremap => {
                let rec: MemSyscall = read_record(bytes)?;
                Some(self.mem_syscall(probe, &rec, None))
            }
            Probe::ProcessExec if bytes.len() >= std::mem::size_of::<ExecRecord>() => {
                let rec: ExecRecord = read_record(bytes)?;
                let mut ev = self.exec(&rec.raw)?;
                if let EventKind::Exec { argv, argv_cut, .. } = &mut ev.kind {
                    let len = (rec.argv_len as usize).min(rec.argv.len());
                    if len > 0 {
                        *argv = Some(split_argv(&rec.argv[..len]));
                        *argv_cut = rec.argv_cut != 0;
                    }
                }
                Some(ev)
            }
            Probe::RssStat => {
                let rec: RssRecord = read_record(bytes)?;
                let member = self
                    .layouts
                    .rss_members
                    .get(&(rec.member as i64))
                    .cloned()
                    .unwrap_or_else(|| format!("{}", rec.member));
                Some(self.base(&rec.header, EventKind::Rss { member, bytes: rec.bytes }))
            }
            _ => {
                let rec = read_raw(bytes)?;
                self.raw(probe, &rec)
            }
        }
    }

    /// A verbatim tracepoint record, decoded with this kernel's layout of it.
    fn raw(&mut self, probe: Probe, rec: &RawRecord) -> Option<Event> {
        match probe {
            Probe::TaskNewtask => self.fork(rec),
            Probe::ProcessExec => self.exec(rec),
            Probe::ProcessExit => Some(self.exit(rec)),
            Probe::SignalGenerate => self.signal(rec),
            Probe::SignalDeliver => self.signal_deliver(rec),
            Probe::MarkVictim => self.oom_kill(rec),
            Probe::TcpSendReset | Probe::TcpReceiveReset => self.tcp_reset(probe, rec),
            Probe::InetSockSetState => self.sock_state(rec),
            _ => None,
        }
    }

    /// task:task_newtask: a thread or a process created.
    fn fork(&mut self, rec: &RawRecord) -> Option<Event> {
        let d = &rec.data[..];
        let h = &rec.header;
        let l = &self.layouts;
        let f = l.of(Probe::TaskNewtask)?;
        let flags = f.read_u64(d, "clone_flags").unwrap_or(0);
        let thread = flags & CLONE_THREAD != 0;
        Some(self.base(
            h,
            EventKind::Fork {
                child_pid: f.read_int(d, "pid")? as u32,
                child_comm: f.read_str(d, "comm").unwrap_or_default(),
                thread,
                clone_flags: flags,
                traced: thread || self.follow_children,
            },
        ))
    }

    /// sched:sched_process_exec.
    fn exec(&mut self, rec: &RawRecord) -> Option<Event> {
        let d = &rec.data[..];
        let h = &rec.header;
        let l = &self.layouts;
        let f = l.of(Probe::ProcessExec)?;
        Some(self.base(
            h,
            EventKind::Exec {
                filename: f.read_str(d, "filename").unwrap_or_default(),
                old_pid: f.read_int(d, "old_pid").unwrap_or(0) as u32,
                argv: None,
                argv_cut: false,
            },
        ))
    }

    /// signal:signal_generate: who sent which signal to whom.
    fn signal(&mut self, rec: &RawRecord) -> Option<Event> {
        let d = &rec.data[..];
        let h = &rec.header;
        let l = &self.layouts;
        let f = l.of(Probe::SignalGenerate)?;
        let sig = f.read_int(d, "sig")? as i32;
        let code = f.read_int(d, "code").unwrap_or(0) as i32;
        if sig == libc::SIGKILL {
            self.sigkill_code.insert(rec.aux[aux::TARGET_TGID] as u32, (code, names::si_code_name(sig, code)));
        }
        Some(self.base(
            h,
            EventKind::Signal {
                target_pid: rec.aux[aux::TARGET_TGID] as u32,
                target_tid: f.read_int(d, "pid").unwrap_or(0) as u32,
                target_comm: f.read_str(d, "comm").unwrap_or_default(),
                signal: sig,
                signal_name: names::signal_name(sig),
                si_code: code,
                si_code_name: names::si_code_name(sig, code),
                result: names::signal_result_name(f.read_int(d, "result").unwrap_or(-1)),
                group: f.read_int(d, "group").unwrap_or(0) != 0,
                peer: rec.aux[aux::SIGNAL_PEER] == 1,
                sender_parents: sender_parents(sig, h.tgid, rec.aux[aux::TARGET_TGID] as u32),
            },
        ))
    }

    /// signal:signal_deliver; remembers a fatal default action as the exit cause when BTF is missing.
    fn signal_deliver(&mut self, rec: &RawRecord) -> Option<Event> {
        let d = &rec.data[..];
        let h = &rec.header;
        let l = &self.layouts;
        let f = l.of(Probe::SignalDeliver)?;
        let sig = f.read_int(d, "sig")? as i32;
        let code = f.read_int(d, "code").unwrap_or(0) as i32;
        let sa_handler = f.read_u64(d, "sa_handler").unwrap_or(0);
        if sa_handler == libc::SIG_DFL as u64 && is_fatal_by_default(sig) {
            self.fatal_signal.insert(h.tgid, sig);
        }
        // A SIGKILL's own generation says who sent it; the delivery cannot.
        let (code, code_name) = match self.sigkill_code.get(&h.tgid) {
            Some(generated) if sig == libc::SIGKILL => generated.clone(),
            _ => (code, names::si_code_name(sig, code)),
        };
        Some(self.base(
            h,
            EventKind::SignalDeliver {
                signal: sig,
                signal_name: names::signal_name(sig),
                si_code: code,
                si_code_name: code_name,
                sa_handler,
                sa_flags: f.read_u64(d, "sa_flags").unwrap_or(0),
            },
        ))
    }

    /// oom:mark_victim: any OOM kill on the machine.
    fn oom_kill(&mut self, rec: &RawRecord) -> Option<Event> {
        let d = &rec.data[..];
        let h = &rec.header;
        let l = &self.layouts;
        let f = l.of(Probe::MarkVictim)?;
        let victim_tid = f.read_int(d, "pid")? as u32;
        let traced_tgid = rec.aux[aux::TARGET_TGID] as u32;
        let victim_pid = if traced_tgid != 0 { Some(traced_tgid) } else { crate::process::thread_group(victim_tid) };
        let victim_comm = f
            .read_str(d, "comm")
            .or_else(|| std::fs::read_to_string(format!("/proc/{victim_tid}/comm")).ok().map(|s| s.trim().to_string()))
            .unwrap_or_default();
        Some(self.base(
            h,
            EventKind::OomKill {
                victim_pid,
                victim_tid,
                victim_comm,
                is_target: traced_tgid != 0,
                total_vm_kb: f.read_u64(d, "total_vm"),
                anon_rss_kb: f.read_u64(d, "anon_rss"),
                file_rss_kb: f.read_u64(d, "file_rss"),
                shmem_rss_kb: f.read_u64(d, "shmem_rss"),
                pgtables_kb: f.read_u64(d, "pgtables"),
                uid: f.read_u64(d, "uid").map(|v| v as u32),
                oom_score_adj: f.read_int(d, "oom_score_adj").map(|v| v as i16),
            },
        ))
    }

    /// tcp:tcp_send_reset / tcp:tcp_receive_reset, not attributed yet.
    fn tcp_reset(&mut self, probe: Probe, rec: &RawRecord) -> Option<Event> {
        let d = &rec.data[..];
        let h = &rec.header;
        let l = &self.layouts;
        let (f, direction) = if probe == Probe::TcpSendReset {
            (l.of(Probe::TcpSendReset)?, Direction::Sent)
        } else {
            (l.of(Probe::TcpReceiveReset)?, Direction::Received)
        };
        let (local, remote) = socket_pair(f, d)?;
        let state = f.read_int(d, "state").filter(|&s| s != 0).map(|s| l.tcp_state_name(s));
        let reason = f
            .read_int(d, "reason")
            .map(|r| l.reset_reasons.get(&r).cloned().unwrap_or_else(|| format!("{r}")));
        Some(self.base(
            h,
            EventKind::TcpReset {
                direction,
                state,
                reason,
                saddr: local.to_string(),
                daddr: remote.to_string(),
                skaddr: f.read_u64(d, "skaddr").unwrap_or(0),
                attributed_by: None,
                context_pid: h.tgid,
                context_comm: comm(&h.comm),
            },
        ))
    }

    /// sock:inet_sock_set_state of a traced socket; feeds socket ownership.
    fn sock_state(&mut self, rec: &RawRecord) -> Option<Event> {
        let d = &rec.data[..];
        let h = &rec.header;
        let l = &self.layouts;
        let f = l.of(Probe::InetSockSetState)?;
        let owner = rec.aux[aux::TARGET_TGID] as u32;
        let (local, remote) = socket_pair(f, d)?;
        let skaddr = f.read_u64(d, "skaddr").unwrap_or(0);
        let new_state = l.tcp_state_name(f.read_int(d, "newstate")?);
        let old_state = l.tcp_state_name(f.read_int(d, "oldstate").unwrap_or(-1));
        let ts = self.clock.wall(h.ts_ns);
        self.owners.observe(ts, owner, skaddr, local, remote, &new_state);
        let mut ev = self.base(
            h,
            EventKind::TcpState { old_state, new_state, saddr: local.to_string(), daddr: remote.to_string(), skaddr },
        );
        ev.pid = owner;
        Some(ev)
    }

    fn exit(&mut self, rec: &RawRecord) -> Event {
        let h = &rec.header;
        let d = &rec.data[..];
        let group_dead = match self.layouts.of(Probe::ProcessExit).and_then(|f| f.read_int(d, "group_dead")) {
            Some(v) => v != 0,
            // Kernels before 6.x do not say; the leader's exit is the best guess.
            None => h.tid == h.tgid,
        };
        let (mut exit_code, mut signal, mut core_dumped, mut source) = (None, None, false, "unknown");
        if rec.aux[aux::EXIT_CODE_KNOWN] != 0 {
            let code = rec.aux[aux::EXIT_CODE] as i32;
            if code & 0x7f != 0 {
                signal = Some(code & 0x7f);
                core_dumped = code & 0x80 != 0;
            } else {
                exit_code = Some((code >> 8) & 0xff);
            }
            source = "task_exit_code";
        } else if let Some(&sig) = self.fatal_signal.get(&h.tgid) {
            signal = Some(sig);
            source = "fatal_signal";
        }
        if group_dead {
            self.fatal_signal.remove(&h.tgid);
            // Left behind, one entry per SIGKILL ever seen would grow for as long as the
            // tracer runs (host-wide, every SIGKILL on the machine).
            self.sigkill_code.remove(&h.tgid);
        }
        self.base(
            h,
            EventKind::Exit {
                group_dead,
                exit_code,
                signal,
                signal_name: signal.map(names::signal_name),
                core_dumped,
                source: source.to_string(),
            },
        )
    }

    fn mem_syscall(&self, probe: Probe, rec: &MemSyscall, identity: Option<&FileIdentity>) -> Event {
        let a = rec.args;
        let ret = rec.ret;
        let duration_ns = rec.header.ts_ns.saturating_sub(rec.enter_ns);
        let kind = match probe {
            Probe::Mmap => {
                let fd = a[4] as i32 as i64;
                let error = names::syscall_error(ret);
                let named = identity.and_then(file_id);
                let path = match (&named, identity) {
                    (Some((path, _)), _) => path.clone(),
                    // The kernel could not read the file (no BTF): /proc, if still there.
                    (None, Some(_)) => mapping_path(rec.header.tgid, ret as u64, fd),
                    (None, None) => None,
                };
                let file = named.map(|(_, id)| id);
                EventKind::Mmap {
                    addr: a[0],
                    len: a[1],
                    prot: names::prot_string(a[2]),
                    flags: names::mmap_flags_string(a[3]),
                    fd,
                    offset: a[5],
                    result: ret as u64,
                    error,
                    path,
                    duration_ns,
                    file,
                }
            }
            Probe::Munmap => EventKind::Munmap { addr: a[0], len: a[1], error: names::syscall_error(ret), duration_ns },
            Probe::Brk => EventKind::Brk { requested: a[0], result: ret as u64, duration_ns },
            _ => EventKind::Mremap {
                old_addr: a[0],
                old_len: a[1],
                new_len: a[2],
                flags: names::mremap_flags_string(a[3]),
                result: ret as u64,
                error: names::syscall_error(ret),
                duration_ns,
            },
        };
        self.base(&rec.header, kind)
    }

    /// Ties a reset to a traced process. Called late (after a short reorder window) so
    /// that the socket states that name a connection's ports, which the kernel reports
    /// just after the reset, are known.
    pub fn attribute(&self, ev: &mut Event) {
        let EventKind::TcpReset { saddr, daddr, skaddr, attributed_by, direction, .. } = &mut ev.kind else {
            return;
        };
        let (Ok(local), Ok(remote)) = (saddr.parse::<SocketAddr>(), daddr.parse::<SocketAddr>()) else {
            return;
        };
        let sent = *direction == Direction::Sent;
        if let Some((owner, how)) = self.owners.attribute(ev.ts_ns, *skaddr, local, remote, sent) {
            *attributed_by = Some(how.as_str().to_string());
            ev.pid = owner;
        }
    }
}

/// Signals whose default action terminates the process.
fn is_fatal_by_default(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD | libc::SIGCONT | libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU | libc::SIGURG | libc::SIGWINCH
    )
}

/// The path and identity the kernel read for a mapped file; `None` when it could not.
fn file_id(f: &FileIdentity) -> Option<(Option<String>, FileId)> {
    if f.flags & file_flags::KNOWN == 0 {
        return None;
    }
    let depth = (f.depth as usize).min(f.names.len());
    let mut cut = f.flags & file_flags::NAME_CUT != 0;
    let mut parts: Vec<String> = Vec::with_capacity(depth);
    for raw in f.names[..depth].iter().rev() {
        let name = comm(raw);
        if name.is_empty() {
            continue; // a mount crossed
        }
        // The kernel keeps NAME_LEN - 1 bytes and the NUL: a full slot may be a cut name.
        let name_cut = f.flags & file_flags::NAME_CUT != 0 && raw[..raw.len() - 1].iter().all(|&b| b != 0);
        parts.push(if name_cut { format!("{name}…") } else { name });
    }
    let path = if parts.is_empty() {
        None
    } else if f.flags & file_flags::ROOTED != 0 {
        Some(format!("/{}", parts.join("/")))
    } else {
        cut = true;
        Some(format!("…/{}", parts.join("/")))
    };
    let (major, minor) = (f.dev >> 20, f.dev & 0xf_ffff);
    Some((path, FileId { dev: format!("{major:02x}:{minor:02x}"), ino: f.ino, size: f.size.max(0) as u64, path_cut: cut }))
}

/// An exec'd program's arguments as its memory holds them: NUL-separated.
fn split_argv(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    bytes.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// The file behind a new mapping: /proc/PID/maps at the returned address, else the fd.
fn mapping_path(tgid: u32, addr: u64, fd: i64) -> Option<String> {
    if let Ok(maps) = std::fs::read_to_string(format!("/proc/{tgid}/maps")) {
        let prefix = format!("{addr:x}-");
        for line in maps.lines() {
            if line.starts_with(&prefix) {
                let path = line.split_whitespace().nth(5)?;
                if path.starts_with('/') {
                    return Some(path.to_string());
                }
            }
        }
    }
    std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok().map(|p| p.display().to_string())
}

/// (local, remote) of a TCP tracepoint in either layout: `saddr`/`daddr` as whole
/// sockaddrs (tcp_send_reset since 6.10) or `sport`/`dport`/`family` with v4 and v6
/// address arrays (everything else).
fn socket_pair(f: &Format, d: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    if f.field("sport").is_some() {
        let family = f.read_int(d, "family").unwrap_or(libc::AF_INET as i64) as i32;
        let sport = f.read_int(d, "sport")? as u16;
        let dport = f.read_int(d, "dport")? as u16;
        let (s, dst) = if family == libc::AF_INET6 {
            let s: [u8; 16] = f.read_bytes(d, "saddr_v6")?.try_into().ok()?;
            let t: [u8; 16] = f.read_bytes(d, "daddr_v6")?.try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(t)))
        } else {
            let s: [u8; 4] = f.read_bytes(d, "saddr")?.get(..4)?.try_into().ok()?;
            let t: [u8; 4] = f.read_bytes(d, "daddr")?.get(..4)?.try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(t)))
        };
        return Some((SocketAddr::new(s, sport), SocketAddr::new(dst, dport)));
    }
    Some((sockaddr(f.read_bytes(d, "saddr")?)?, sockaddr(f.read_bytes(d, "daddr")?)?))
}

fn sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?) as i32;
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        // No address (family 0): a reset without a socket on a kernel that left it empty.
        _ => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::layouts::tests::layouts_6_18;
    use tracer_common::RAW_DATA_LEN;

    fn header(probe: Probe, tgid: u32) -> Header {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"test");
        Header { ts_ns: 5_000, probe: probe as u32, tgid, tid: tgid, _pad: 0, comm }
    }

    fn raw(probe: Probe, tgid: u32, aux: [u64; 2], fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut rec = RawRecord { header: header(probe, tgid), aux, data: [0; RAW_DATA_LEN] };
        fill(&mut rec.data);
        let size = std::mem::size_of::<RawRecord>();
        // SAFETY: plain data viewed as bytes.
        unsafe { std::slice::from_raw_parts(&rec as *const RawRecord as *const u8, size) }.to_vec()
    }

    fn put<const N: usize>(d: &mut [u8], at: usize, v: [u8; N]) {
        d[at..at + N].copy_from_slice(&v);
    }

    #[test]
    fn exit_by_sigkill_from_task_exit_code() {
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(1_000_000), false);
        let bytes = raw(Probe::ProcessExit, 42, [9, 1], |d| put(d, 32, [1u8]));
        let ev = dec.decode(&bytes).unwrap();
        assert_eq!(ev.ts_ns, 1_005_000);
        match ev.kind {
            EventKind::Exit { group_dead, exit_code, signal, signal_name, source, .. } => {
                assert!(group_dead);
                assert_eq!((exit_code, signal), (None, Some(9)));
                assert_eq!(signal_name.as_deref(), Some("SIGKILL"));
                assert_eq!(source, "task_exit_code");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exit_status_3_and_fallback_to_fatal_signal() {
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(0), false);
        let ev = dec.decode(&raw(Probe::ProcessExit, 42, [3 << 8, 1], |_| {})).unwrap();
        assert!(matches!(ev.kind, EventKind::Exit { exit_code: Some(3), signal: None, .. }), "{ev:?}");
        // Without BTF: the SIGSEGV delivered with SIG_DFL is the cause.
        let deliver = raw(Probe::SignalDeliver, 42, [0; 2], |d| {
            put(d, 8, 11i32.to_ne_bytes());
            put(d, 16, 1i32.to_ne_bytes());
        });
        dec.decode(&deliver).unwrap();
        let ev = dec.decode(&raw(Probe::ProcessExit, 42, [0, 0], |_| {})).unwrap();
        match ev.kind {
            EventKind::Exit { signal, source, .. } => {
                assert_eq!(signal, Some(11));
                assert_eq!(source, "fatal_signal");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_small_record_reads_as_a_raw_one() {
        let mut rec = tracer_common::SmallRecord { header: header(Probe::SignalGenerate, 7), aux: [42, 0], data: [0; tracer_common::SMALL_DATA_LEN] };
        rec.data[8..12].copy_from_slice(&10i32.to_ne_bytes());
        rec.data[36..40].copy_from_slice(&42i32.to_ne_bytes());
        // SAFETY: plain data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(&rec as *const _ as *const u8, std::mem::size_of::<tracer_common::SmallRecord>())
        };
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(0), false);
        let ev = dec.decode(bytes).unwrap();
        assert!(matches!(&ev.kind, EventKind::Signal { signal: 10, target_pid: 42, target_tid: 42, .. }), "{ev:?}");
    }

    #[test]
    fn a_socket_record_copied_short_reads_as_the_whole_one() {
        // inet_sock_set_state of 6.18, as the kernel copies it where its layout is the
        // usual one: SOCK_DATA_LEN bytes, not RAW_DATA_LEN.
        let whole = raw(Probe::InetSockSetState, 7, [7, 0], |d| {
            put(d, 8, 0xffff_8881_0000_1000u64.to_ne_bytes());
            put(d, 16, 2i32.to_ne_bytes());
            put(d, 20, 1i32.to_ne_bytes());
            put(d, 24, 40000u16.to_ne_bytes());
            put(d, 26, 8080u16.to_ne_bytes());
            put(d, 28, 2u16.to_ne_bytes());
            put(d, 30, 6u16.to_ne_bytes());
            put(d, 32, [127, 0, 0, 1]);
            put(d, 36, [10, 0, 0, 2]);
        });
        let short = &whole[..std::mem::offset_of!(RawRecord, data) + tracer_common::SOCK_DATA_LEN];
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(0), false);
        let from_short = dec.decode(short).unwrap();
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(0), false);
        let from_whole = dec.decode(&whole).unwrap();
        assert_eq!(format!("{:?}", from_short.kind), format!("{:?}", from_whole.kind));
        let text = format!("{:?}", from_short.kind);
        assert!(text.contains("127.0.0.1:40000") && text.contains("10.0.0.2:8080") && text.contains("TCP_ESTABLISHED"), "{text}");
    }

    #[test]
    fn a_delivered_sigkill_carries_the_origin_of_its_generation() {
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(0), false);
        // The OOM killer's SIGKILL: generated with SI_KERNEL (0x80) for process 42...
        let generate = raw(Probe::SignalGenerate, 7, [42, 0], |d| {
            put(d, 8, 9i32.to_ne_bytes());
            put(d, 16, 0x80i32.to_ne_bytes());
            put(d, 36, 42i32.to_ne_bytes());
        });
        dec.decode(&generate).unwrap();
        // ...delivered on the group-exit path, which the tracepoint reports as SI_USER (0).
        let deliver = raw(Probe::SignalDeliver, 42, [0; 2], |d| {
            put(d, 8, 9i32.to_ne_bytes());
            put(d, 16, 0i32.to_ne_bytes());
        });
        let ev = dec.decode(&deliver).unwrap();
        assert!(matches!(&ev.kind, EventKind::SignalDeliver { si_code: 0x80, si_code_name, .. } if si_code_name == "SI_KERNEL"), "{ev:?}");
        // Another process's SIGKILL keeps what its tracepoint says.
        let other = raw(Probe::SignalDeliver, 43, [0; 2], |d| put(d, 8, 9i32.to_ne_bytes()));
        let ev = dec.decode(&other).unwrap();
        assert!(matches!(&ev.kind, EventKind::SignalDeliver { si_code_name, .. } if si_code_name == "SI_USER"), "{ev:?}");
    }

    #[test]
    fn oom_victim_fields_and_target_flag() {
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(0), false);
        let bytes = raw(Probe::MarkVictim, 1, [77, 0], |d| {
            put(d, 8, 78i32.to_ne_bytes());
            put(d, 12, ((9u32 << 16) | 200).to_ne_bytes());
            put(d, 200, *b"workload\0");
            put(d, 24, 65_000u64.to_ne_bytes());
            put(d, 64, 0i16.to_ne_bytes());
        });
        let ev = dec.decode(&bytes).unwrap();
        match ev.kind {
            EventKind::OomKill { victim_pid, victim_tid, victim_comm, is_target, anon_rss_kb, .. } => {
                assert_eq!((victim_pid, victim_tid, is_target), (Some(77), 78, true));
                assert_eq!(victim_comm, "workload");
                assert_eq!(anon_rss_kb, Some(65_000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn send_reset_decodes_sockaddrs_reason_and_is_attributed_by_listen_port() {
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(0), false);
        // The traced server (tgid 50) listens on 127.0.0.1:8000.
        let listen = raw(Probe::InetSockSetState, 50, [50, 0], |d| {
            put(d, 8, 0xdead_beefu64.to_ne_bytes());
            put(d, 16, 7i32.to_ne_bytes());
            put(d, 20, 10i32.to_ne_bytes());
            put(d, 24, 8000u16.to_ne_bytes());
            put(d, 28, (libc::AF_INET as u16).to_ne_bytes());
            put(d, 30, 6u16.to_ne_bytes());
            put(d, 32, [127, 0, 0, 1]);
        });
        let st = dec.decode(&listen).unwrap();
        assert!(matches!(&st.kind, EventKind::TcpState { new_state, .. } if new_state == "TCP_LISTEN"), "{st:?}");
        // After it died, a connect to 8000 is refused: RST NO_SOCKET, no socket.
        let rst = raw(Probe::TcpSendReset, 999, [0; 2], |d| {
            put(d, 28, 1u32.to_ne_bytes());
            put(d, 32, (libc::AF_INET as u16).to_ne_bytes());
            put(d, 34, 8000u16.to_be_bytes());
            put(d, 36, [127, 0, 0, 1]);
            put(d, 60, (libc::AF_INET as u16).to_ne_bytes());
            put(d, 62, 51234u16.to_be_bytes());
            put(d, 64, [127, 0, 0, 1]);
        });
        let mut ev = dec.decode(&rst).unwrap();
        dec.attribute(&mut ev);
        assert_eq!(ev.pid, 50);
        match &ev.kind {
            EventKind::TcpReset { reason, saddr, daddr, attributed_by, state, context_pid, .. } => {
                assert_eq!(reason.as_deref(), Some("NO_SOCKET"));
                assert_eq!((saddr.as_str(), daddr.as_str()), ("127.0.0.1:8000", "127.0.0.1:51234"));
                assert_eq!(attributed_by.as_deref(), Some("listen_port"));
                assert_eq!(state, &None);
                assert_eq!(*context_pid, 999);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reset_in_the_pre_6_10_layout_has_ports_and_no_reason() {
        let mut layouts = layouts_6_18();
        layouts.set("tcp_send_reset", Some(Format::parse(include_str!("testdata/5.15/tcp_send_reset")).unwrap()));
        let mut dec = Decoder::new(layouts, Clock::fixed(0), false);
        let bytes = raw(Probe::TcpSendReset, 9, [0; 2], |d| {
            put(d, 16, 0xabcdu64.to_ne_bytes());
            put(d, 24, 1i32.to_ne_bytes());
            put(d, 28, 8000u16.to_ne_bytes());
            put(d, 30, 40000u16.to_ne_bytes());
            put(d, 32, (libc::AF_INET as u16).to_ne_bytes());
            put(d, 34, [127, 0, 0, 1]);
            put(d, 38, [127, 0, 0, 2]);
        });
        match dec.decode(&bytes).unwrap().kind {
            EventKind::TcpReset { reason, saddr, daddr, state, skaddr, .. } => {
                assert_eq!(reason, None);
                assert_eq!((saddr.as_str(), daddr.as_str()), ("127.0.0.1:8000", "127.0.0.2:40000"));
                assert_eq!(state.as_deref(), Some("TCP_ESTABLISHED"));
                assert_eq!(skaddr, 0xabcd);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_or_unknown_records_are_dropped_not_panicking() {
        let mut dec = Decoder::new(layouts_6_18(), Clock::fixed(0), false);
        assert!(dec.decode(&[1, 2, 3]).is_none());
        let mut bytes = raw(Probe::ProcessExit, 1, [0; 2], |_| {});
        bytes[8..12].copy_from_slice(&999u32.to_ne_bytes());
        assert!(dec.decode(&bytes).is_none());
    }
}
