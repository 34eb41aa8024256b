//! Records shared by the kernel programs (`tracer-ebpf`) and the user side (`tracer`).
//!
//! Everything here is plain `#[repr(C)]` data: the kernel writes these structs into the
//! ring buffer and user space reads them back byte for byte. Field offsets of tracepoint
//! records are *not* baked in: user space reads them from tracefs and hands them to the
//! programs in [`KernelConfig`].
#![no_std]

/// An offset that is not known on this kernel (field absent from the format file).
pub const UNKNOWN_OFFSET: u16 = u16::MAX;

/// Declares [`Probe`], [`PROBE_COUNT`] and [`Probe::ALL`] from one list, so that the
/// three cannot drift apart. Values are the indices 0, 1, 2... in order.
macro_rules! probes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// Which tracepoint (or syscall family) produced a record. Also the index of the
        /// per-kind lost counter, so that loss is accounted per kind. What user space knows
        /// about each one (its programs, tracepoints, group, label) is in its probe table.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Probe {
            $($(#[$doc])* $name = $value,)*
        }

        /// Number of [`Probe`] values; size of the lost-counter array.
        pub const PROBE_COUNT: u32 = [$($value),*].len() as u32;

        impl Probe {
            pub const ALL: [Probe; PROBE_COUNT as usize] = [$(Probe::$name),*];
        }
    };
}

probes! {
    TaskNewtask = 0,
    ProcessExec = 1,
    ProcessExit = 2,
    SignalGenerate = 3,
    SignalDeliver = 4,
    MarkVictim = 5,
    RssStat = 6,
    TcpSendReset = 7,
    TcpReceiveReset = 8,
    InetSockSetState = 9,
    Mmap = 10,
    Munmap = 11,
    Brk = 12,
    Mremap = 13,
    CgroupAttach = 14,
}

impl Probe {
    pub fn from_u32(v: u32) -> Option<Probe> {
        Probe::ALL.get(v as usize).copied().filter(|p| *p as u32 == v)
    }
}

/// Indices into [`KernelConfig::offsets`]: the tracepoint fields the programs themselves
/// must read to filter or aggregate. Everything else is decoded in user space from the
/// raw record copy.
pub mod field {
    /// signal:signal_generate `pid` (the receiving thread).
    pub const SIGGEN_PID: usize = 0;
    /// oom:mark_victim `pid` (the victim thread).
    pub const VICTIM_PID: usize = 1;
    /// task:task_newtask `pid` (the new task).
    pub const NEWTASK_PID: usize = 2;
    /// task:task_newtask `clone_flags`.
    pub const NEWTASK_FLAGS: usize = 3;
    /// kmem:rss_stat `curr`.
    pub const RSS_CURR: usize = 4;
    /// kmem:rss_stat `member`.
    pub const RSS_MEMBER: usize = 5;
    /// kmem:rss_stat `size`.
    pub const RSS_SIZE: usize = 6;
    /// sock:inet_sock_set_state `skaddr`.
    pub const SOCK_SKADDR: usize = 7;
    /// sock:inet_sock_set_state `sport`.
    pub const SOCK_SPORT: usize = 8;
    /// sock:inet_sock_set_state `newstate`.
    pub const SOCK_NEWSTATE: usize = 9;
    /// sock:inet_sock_set_state `protocol`.
    pub const SOCK_PROTOCOL: usize = 10;
    /// syscalls:sys_enter_* first argument.
    pub const SYS_ARGS: usize = 11;
    /// syscalls:sys_exit_* `ret`.
    pub const SYS_RET: usize = 12;
    /// sched:sched_process_exit `group_dead` (absent before 6.x: then unknown).
    pub const EXIT_GROUP_DEAD: usize = 13;
    /// cgroup:cgroup_attach_task `dst_root` (the hierarchy's id).
    pub const CGATTACH_ROOT: usize = 14;
    /// cgroup:cgroup_attach_task `pid` (the task moved).
    pub const CGATTACH_PID: usize = 15;
    /// cgroup:cgroup_attach_task `dst_path` (its `__data_loc` word).
    pub const CGATTACH_PATH: usize = 16;
    /// signal:signal_generate `sig`.
    pub const SIGGEN_SIG: usize = 17;
    /// tcp:tcp_send_reset `skaddr`, its local and remote port (a `sport`/`dport` field,
    /// or the port inside a `saddr`/`daddr` sockaddr: see
    /// [`super::KernelConfig::send_rst_ports_in_sockaddr`]) and `reason` (6.10+).
    pub const SEND_RST_SKADDR: usize = 18;
    pub const SEND_RST_SPORT: usize = 19;
    pub const SEND_RST_DPORT: usize = 20;
    pub const SEND_RST_REASON: usize = 21;
    /// tcp:tcp_receive_reset `skaddr`, `sport`, `dport` (as for tcp_send_reset).
    pub const RECV_RST_SKADDR: usize = 22;
    pub const RECV_RST_SPORT: usize = 23;
    pub const RECV_RST_DPORT: usize = 24;
    /// signal:signal_deliver `sig` and `sa_handler`.
    pub const SIGDEL_SIG: usize = 25;
    pub const SIGDEL_HANDLER: usize = 26;
    pub const COUNT: usize = 28;
}

/// The record layouts the hottest programs read with plain loads from the record instead
/// of a `bpf_probe_read` per field (a helper call each, half of `rss_stat`'s cost). The
/// verifier only accepts a record load at an offset fixed in the program, and the kernel
/// refuses to attach a program that loads past its record's end, so these are compiled
/// in; user space sets the bit in
/// [`KernelConfig::usual_layouts`] only where the kernel's own format has each field at
/// that offset and size, and the programs read through the configured offsets otherwise.
pub mod usual_layout {
    /// Bit of [`super::KernelConfig::usual_layouts`]: kmem:rss_stat is as below.
    pub const RSS: u32 = 1;
    /// Bit: every memory syscall's sys_enter has its arguments (`*_ARGS` of them) from
    /// `SYS_ARGS` on and its sys_exit its `ret` at `SYS_RET`.
    pub const SYSCALLS: u32 = 2;
    /// Bit: signal:signal_generate and signal:signal_deliver are as below.
    pub const SIGNALS: u32 = 4;
    /// Bit: sock:inet_sock_set_state is as below and ends within [`super::SOCK_DATA_LEN`]
    /// bytes, so that much of it is copied instead of [`super::RAW_DATA_LEN`].
    pub const SOCK: u32 = 8;
    /// kmem:rss_stat `curr` (u32), `member` (i32), `size` (i64): 5.8 to 6.18 alike.
    pub const RSS_CURR: usize = 12;
    pub const RSS_MEMBER: usize = 16;
    pub const RSS_SIZE: usize = 24;
    /// syscalls:sys_enter_* first argument (six u64), syscalls:sys_exit_* `ret` (i64).
    pub const SYS_ARGS: usize = 16;
    pub const SYS_RET: usize = 16;
    /// signal:signal_generate `sig` (i32), `pid` (i32); signal:signal_deliver `sig`
    /// (i32), `sa_handler` (u64).
    pub const SIGGEN_SIG: usize = 8;
    pub const SIGGEN_PID: usize = 36;
    pub const SIGDEL_SIG: usize = 8;
    pub const SIGDEL_HANDLER: usize = 24;
    /// sock:inet_sock_set_state `skaddr` (u64), `newstate` (i32), `sport` (u16),
    /// `protocol` (u16).
    pub const SOCK_SKADDR: usize = 8;
    pub const SOCK_NEWSTATE: usize = 20;
    pub const SOCK_SPORT: usize = 24;
    pub const SOCK_PROTOCOL: usize = 30;
    /// Arguments each memory syscall's sys_enter record holds (mmap, munmap, brk,
    /// mremap): the kernel refuses to attach a program that loads past the record's end.
    pub const MMAP_ARGS: usize = 6;
    pub const MUNMAP_ARGS: usize = 2;
    pub const BRK_ARGS: usize = 1;
    pub const MREMAP_ARGS: usize = 5;
}

/// Configuration handed to the kernel programs as a read-only global before load.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelConfig {
    /// Emit an rss_stat record when a member moved by at least this many bytes since the
    /// last record for the same process and member.
    pub rss_threshold_bytes: u64,
    /// Records are submitted without waking the reader, which reads on its own tick,
    /// except the one that brings the bytes waiting across a multiple of this: then it is
    /// woken at once. 0: the kernel's default (wake the reader when it waits), one
    /// wake-up per record at a low rate.
    pub wake_at_bytes: u64,
    /// Offset of `exit_code` in `struct task_struct`, from BTF; `u32::MAX` when unknown.
    pub task_exit_code_offset: u32,
    /// Non-zero: new processes forked by a traced process are traced too.
    pub follow_children: u32,
    /// Value of TCP_LISTEN in sock:inet_sock_set_state, from its print fmt.
    pub tcp_listen_state: u32,
    /// IPPROTO_TCP in sock:inet_sock_set_state, from its print fmt.
    pub ipproto_tcp: u32,
    /// TCP_SYN_SENT, TCP_SYN_RECV and TCP_CLOSE, from the same print fmt.
    pub tcp_syn_sent_state: u32,
    pub tcp_syn_recv_state: u32,
    pub tcp_close_state: u32,
    /// Non-zero: when the process named in the restart watch ends, the exec program
    /// compares every exec on the host with it and traces the first one that runs the
    /// same arguments (`--follow-restarts`, see [`RestartWatch`]).
    pub follow_restarts: u32,
    /// `--cgroup`: the hierarchy id of the traced cgroup (`dst_root` of
    /// cgroup_attach_task; -1: any hierarchy), and its path in that hierarchy. A task
    /// moved into it or below is traced from that moment. `scope_path_len` 0: no scope.
    pub scope_root: i32,
    pub scope_path_len: u32,
    pub scope_path: [u8; SCOPE_PATH_LEN],
    /// Non-zero: resets that involve no traced socket, listening port or client port
    /// are only counted (per reason, in the OTHER_RESETS map), not reported. Set when
    /// the reset tracepoints' sockets and ports can be read.
    pub filter_resets: u32,
    /// Non-zero when the reset tracepoints' port offsets point into a sockaddr (the port
    /// in network byte order), as in 6.10+'s tcp_send_reset; zero for `sport`/`dport`
    /// fields in host order.
    pub send_rst_ports_in_sockaddr: u32,
    pub recv_rst_ports_in_sockaddr: u32,
    /// Non-zero (`tracer watch`): the rare events of every process on the host are
    /// reported, not only the traced ones': fatal signals and ends by a signal (OOM kills
    /// always are; resets of untraced sockets are counted, as `filter_resets` says).
    /// Memory detail stays with traced processes.
    pub host_wide: u32,
    /// Bits of [`usual_layout`]: the records the kernel's formats show to be laid out as
    /// compiled in, read with plain loads.
    pub usual_layouts: u32,
    /// Tracepoint field offsets, indexed by [`field`]; [`UNKNOWN_OFFSET`] when absent.
    pub offsets: [u16; field::COUNT],
    /// Kernel struct member offsets from BTF, indexed by [`kfield`]; `u32::MAX` when
    /// unknown (no BTF, or a member this kernel does not have).
    pub kernel_offsets: [u32; kfield::COUNT],
    /// Where the BTF rss_stat program reads the mm's counters; used only when that
    /// program is the one attached.
    pub rss_counters: RssCounterLayout,
}

/// How the BTF tracepoint program for rss_stat reads a process's RSS without the record
/// the classic tracepoint builds: `mm->rss_stat[member]` is a `struct percpu_counter`, its
/// exact value `count` plus every CPU's `counters` slot (what the classic record holds).
/// Per-CPU slots are found through a per-CPU array map of the program's own: the kernel
/// gives each CPU's copy of its element, and the map's struct gives the per-CPU pointer
/// they derive from, so the difference is that CPU's per-CPU offset. All from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssCounterLayout {
    /// `mm_struct.rss_stat`.
    pub mm_rss_stat: u32,
    /// `sizeof(struct percpu_counter)`: the stride of that array.
    pub counter_size: u32,
    /// `percpu_counter.count` (s64).
    pub counter_count: u32,
    /// `percpu_counter.counters` (`s32 __percpu *`).
    pub counter_counters: u32,
    /// `bpf_array.pptrs`: where a per-CPU array map keeps its elements' per-CPU pointers.
    pub array_pptrs: u32,
    /// Possible CPUs: the per-CPU slots summed (at most [`RSS_MAX_CPUS`]).
    pub cpus: u32,
    /// log2 of the page size: the counters count pages.
    pub page_shift: u32,
    pub _pad: u32,
    /// Bytes by which `count` alone can differ from the sum (every online CPU's slot holds
    /// less than the counter's batch; an offline CPU's is folded into `count`): while
    /// `count` is further than this from the threshold the slots need not be read. Only
    /// when a record comes is decided by it, never what the record says.
    pub slack_bytes: u64,
}

/// The most CPUs the BTF rss_stat program sums; hosts with more use the classic
/// tracepoint.
pub const RSS_MAX_CPUS: u32 = 256;

impl RssCounterLayout {
    pub const fn unknown() -> Self {
        RssCounterLayout {
            mm_rss_stat: u32::MAX,
            counter_size: u32::MAX,
            counter_count: u32::MAX,
            counter_counters: u32::MAX,
            array_pptrs: u32::MAX,
            cpus: 0,
            page_shift: 0,
            _pad: 0,
            slack_bytes: 0,
        }
    }

    /// Every offset found, and a CPU count the program can sum.
    pub const fn is_complete(&self) -> bool {
        self.mm_rss_stat != u32::MAX
            && self.counter_size != u32::MAX
            && self.counter_count != u32::MAX
            && self.counter_counters != u32::MAX
            && self.array_pptrs != u32::MAX
            && self.cpus > 0
            && self.cpus <= RSS_MAX_CPUS
            && self.page_shift >= 12
            && self.page_shift < 32
    }
}

/// Indices into [`KernelConfig::kernel_offsets`]: the kernel structs the programs walk to
/// name the file behind an mmap (fd table -> file -> dentry chain, mounts crossed) and to
/// read an exec'd program's arguments. Each is `struct.member`.
pub mod kfield {
    /// task_struct.files
    pub const TASK_FILES: usize = 0;
    /// files_struct.fdt
    pub const FILES_FDT: usize = 1;
    /// fdtable.max_fds
    pub const FDT_MAX_FDS: usize = 2;
    /// fdtable.fd
    pub const FDT_FD: usize = 3;
    /// file.f_path
    pub const FILE_PATH: usize = 4;
    /// file.f_inode
    pub const FILE_INODE: usize = 5;
    /// path.mnt
    pub const PATH_MNT: usize = 6;
    /// path.dentry
    pub const PATH_DENTRY: usize = 7;
    /// inode.i_ino
    pub const INODE_INO: usize = 8;
    /// inode.i_size
    pub const INODE_SIZE: usize = 9;
    /// inode.i_sb
    pub const INODE_SB: usize = 10;
    /// super_block.s_dev
    pub const SB_DEV: usize = 11;
    /// dentry.d_name
    pub const DENTRY_NAME: usize = 12;
    /// dentry.d_parent
    pub const DENTRY_PARENT: usize = 13;
    /// qstr.name
    pub const QSTR_NAME: usize = 14;
    /// mount.mnt (the vfsmount inside a mount)
    pub const MOUNT_MNT: usize = 15;
    /// mount.mnt_parent
    pub const MOUNT_PARENT: usize = 16;
    /// mount.mnt_mountpoint
    pub const MOUNT_MOUNTPOINT: usize = 17;
    /// vfsmount.mnt_root
    pub const VFSMOUNT_ROOT: usize = 18;
    /// task_struct.mm
    pub const TASK_MM: usize = 19;
    /// mm_struct.arg_start
    pub const MM_ARG_START: usize = 20;
    /// mm_struct.arg_end
    pub const MM_ARG_END: usize = 21;
    /// qstr.len (inside an anonymous struct of qstr)
    pub const QSTR_LEN: usize = 22;
    pub const COUNT: usize = 24;

    /// `(index, struct, member)` for each offset, for user space to look up in BTF.
    pub const ALL: [(usize, &str, &str); 23] = [
        (TASK_FILES, "task_struct", "files"),
        (FILES_FDT, "files_struct", "fdt"),
        (FDT_MAX_FDS, "fdtable", "max_fds"),
        (FDT_FD, "fdtable", "fd"),
        (FILE_PATH, "file", "f_path"),
        (FILE_INODE, "file", "f_inode"),
        (PATH_MNT, "path", "mnt"),
        (PATH_DENTRY, "path", "dentry"),
        (INODE_INO, "inode", "i_ino"),
        (INODE_SIZE, "inode", "i_size"),
        (INODE_SB, "inode", "i_sb"),
        (SB_DEV, "super_block", "s_dev"),
        (DENTRY_NAME, "dentry", "d_name"),
        (DENTRY_PARENT, "dentry", "d_parent"),
        (QSTR_NAME, "qstr", "name"),
        (MOUNT_MNT, "mount", "mnt"),
        (MOUNT_PARENT, "mount", "mnt_parent"),
        (MOUNT_MOUNTPOINT, "mount", "mnt_mountpoint"),
        (VFSMOUNT_ROOT, "vfsmount", "mnt_root"),
        (TASK_MM, "task_struct", "mm"),
        (MM_ARG_START, "mm_struct", "arg_start"),
        (MM_ARG_END, "mm_struct", "arg_end"),
        (QSTR_LEN, "qstr", "len"),
    ];
}

impl KernelConfig {
    pub const fn empty() -> Self {
        KernelConfig {
            rss_threshold_bytes: 0,
            wake_at_bytes: 0,
            task_exit_code_offset: u32::MAX,
            follow_children: 0,
            tcp_listen_state: u32::MAX,
            ipproto_tcp: u32::MAX,
            tcp_syn_sent_state: u32::MAX,
            tcp_syn_recv_state: u32::MAX,
            tcp_close_state: u32::MAX,
            follow_restarts: 0,
            scope_root: -1,
            scope_path_len: 0,
            scope_path: [0; SCOPE_PATH_LEN],
            filter_resets: 0,
            send_rst_ports_in_sockaddr: 0,
            recv_rst_ports_in_sockaddr: 0,
            host_wide: 0,
            usual_layouts: 0,
            offsets: [UNKNOWN_OFFSET; field::COUNT],
            kernel_offsets: [u32::MAX; kfield::COUNT],
            rss_counters: RssCounterLayout::unknown(),
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelConfig {}

/// Process context of the task that was current when the tracepoint fired.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// A [`Probe`] value.
    pub probe: u32,
    pub tgid: u32,
    pub tid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// Bytes of the tracepoint record copied verbatim by [`RawRecord`]. Large enough for every
/// fixed field of the events copied this way and their `__data_loc` strings (comm,
/// filename); a longer exec filename is truncated.
pub const RAW_DATA_LEN: usize = 320;

/// A verbatim copy of the first `N` bytes of a tracepoint record, decoded in user space
/// with the field layout read from tracefs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CopiedRecord<const N: usize> {
    pub header: Header,
    /// Values the program computed that the record does not carry (see [`aux`]).
    pub aux: [u64; 2],
    pub data: [u8; N],
}

/// A rare tracepoint record (process, OOM, TCP), copied whole.
pub type RawRecord = CopiedRecord<RAW_DATA_LEN>;

/// Bytes of the tracepoint record kept by [`SmallRecord`]: the signal tracepoints'
/// records end before this.
pub const SMALL_DATA_LEN: usize = 64;

/// Bytes of sock:inet_sock_set_state's record copied where its layout is the usual one
/// (it ends with `daddr_v6` at 72 from 4.16 to 6.18).
pub const SOCK_DATA_LEN: usize = 72;

/// A frequent small record (signals): a fifth of the ring space. User space reads it as
/// a [`RawRecord`] whose data past [`SMALL_DATA_LEN`] is zero.
pub type SmallRecord = CopiedRecord<SMALL_DATA_LEN>;

/// Meaning of [`RawRecord::aux`] per probe.
pub mod aux {
    /// ProcessExit: aux[0] = task->exit_code, aux[1] = 1 when aux[0] was read.
    pub const EXIT_CODE: usize = 0;
    pub const EXIT_CODE_KNOWN: usize = 1;
    /// MarkVictim / SignalGenerate: aux[0] = TGID of the victim/receiver thread if traced
    /// (0 otherwise).
    pub const TARGET_TGID: usize = 0;
    /// SignalGenerate: aux[1] = 1 when the receiver is a traced client's server (a peer,
    /// not traced) and the signal is fatal; aux[0] is then the peer's pid.
    pub const SIGNAL_PEER: usize = 1;
    /// CgroupAttach: aux[0] = the task moved; aux[1] = [`CGROUP_MOVED`] for a traced task
    /// that moved, 0 for a task taken into the `--cgroup` scope.
    pub const CGROUP_MOVED: u64 = 1;
    /// ProcessExec: aux[0] = 1 for the exec of a process that was not traced and is
    /// from now on, the successor the restart watch found; aux[1] = the time since the
    /// watched process ended (ns).
    pub const EXEC_ADOPTED: usize = 0;
    pub const EXEC_GAP_NS: usize = 1;
}

/// One completed memory syscall of a traced process (mmap, munmap, brk, mremap): the
/// arguments from sys_enter and the return value from sys_exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemSyscall {
    pub header: Header,
    pub args: [u64; 6],
    pub ret: i64,
    /// Monotonic ns at sys_enter (header.ts_ns is at sys_exit).
    pub enter_ns: u64,
}

/// Steps of the path walk kept per mapped file, leaf first: a component's name, or an
/// empty slot where a mount was crossed. A path that needs more is cut (not ROOTED).
pub const PATH_DEPTH: usize = 16;
/// Bytes kept per path component, NUL included; a longer name is marked cut.
pub const NAME_LEN: usize = 64;

/// [`FileIdentity::flags`] bits.
pub mod file_flags {
    /// The fd resolved to a file and its inode was read.
    pub const KNOWN: u32 = 1;
    /// A component was longer than [`super::NAME_LEN`] - 1 bytes and is cut.
    pub const NAME_CUT: u32 = 4;
    /// The walk reached the top of its mounts: the path is whole from `/`. Without it
    /// the top components are missing (a deeper path, or a read that failed).
    pub const ROOTED: u32 = 8;
}

/// The file behind an fd, read in the kernel at the syscall: what /proc cannot say
/// after the fd is closed or the file renamed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileIdentity {
    /// `super_block.s_dev` (the kernel's dev_t: major << 20 | minor).
    pub dev: u32,
    /// Slots of `names` filled (an empty one: a mount crossed).
    pub depth: u32,
    pub ino: u64,
    /// `inode.i_size` at the syscall.
    pub size: i64,
    /// [`file_flags`] bits.
    pub flags: u32,
    pub _pad: u32,
    /// Path components, leaf first, each NUL-terminated; empty where a mount was crossed.
    pub names: [[u8; NAME_LEN]; PATH_DEPTH],
}

/// A completed mmap of a file: the syscall and the file behind its fd.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MmapFileRecord {
    pub sys: MemSyscall,
    pub file: FileIdentity,
}

/// Bytes of an exec'd program's arguments kept (NUL-separated, as in its memory).
pub const ARGV_LEN: usize = 256;

/// sched:sched_process_exec with the new program's arguments, read from its memory.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub raw: RawRecord,
    /// Bytes of `argv` filled; 0 when they could not be read.
    pub argv_len: u32,
    /// Non-zero when the arguments were longer than [`ARGV_LEN`].
    pub argv_cut: u32,
    pub argv: [u8; ARGV_LEN],
}

/// Slots of the OTHER_RESETS counters: a sent reset's reason value (below
/// [`OTHER_RESET_NO_REASON`]), [`OTHER_RESET_NO_REASON`] for a sent one without a reason
/// (before 6.10, or a value past the table), [`OTHER_RESET_RECEIVED`] for a received one.
pub const OTHER_RESET_SLOTS: u32 = 64;
pub const OTHER_RESET_NO_REASON: u32 = 62;
pub const OTHER_RESET_RECEIVED: u32 = 63;

/// Bytes of a `--cgroup` path (in its hierarchy) the kernel compares; a longer one is
/// followed by listing the cgroup only.
pub const SCOPE_PATH_LEN: usize = 128;

/// The restart watch (`--follow-restarts`): written by user space at the start, armed
/// by the exit program, read by the exec program.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RestartWatch {
    /// The traced process whose successor is wanted; the exec program moves it on to
    /// the successor it adopts, so that the next restart is followed too.
    pub of_tgid: u32,
    /// Non-zero from that process's end until a successor is adopted or user space
    /// stops the watch.
    pub armed: u32,
    /// Monotonic ns of that end.
    pub ended_ns: u64,
    /// Its arguments as in its memory (each NUL-terminated), the first [`ARGV_LEN`]
    /// bytes, and whether there were more: what a successor must exec.
    pub argv_len: u32,
    pub argv_cut: u32,
    pub argv: [u8; ARGV_LEN],
}

impl RestartWatch {
    /// The watch for `of_tgid`, whose arguments in memory are `cmdline`.
    pub fn new(of_tgid: u32, cmdline: &[u8]) -> RestartWatch {
        let mut argv = [0u8; ARGV_LEN];
        let n = cmdline.len().min(ARGV_LEN);
        argv[..n].copy_from_slice(&cmdline[..n]);
        RestartWatch { of_tgid, armed: 0, ended_ns: 0, argv_len: n as u32, argv_cut: (cmdline.len() > ARGV_LEN) as u32, argv }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for RestartWatch {}

/// Arguments of a memory syscall between its enter and exit, keyed by TID (the entry
/// stays, marked consumed, until the thread exits).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingSyscall {
    pub args: [u64; 6],
    pub enter_ns: u64,
    pub probe: u32,
    pub _pad: u32,
}

/// RSS of one member (file, anon, swap, shmem) of a traced process's mm, emitted when it
/// moved by at least the configured threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RssRecord {
    pub header: Header,
    pub member: i32,
    pub _pad: u32,
    pub bytes: i64,
}

/// Key of the in-kernel rss aggregation map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssKey {
    pub tgid: u32,
    pub member: i32,
}

/// SIGHUP, SIGINT, SIGQUIT, SIGABRT, SIGKILL, SIGTERM: the signals that end a process
/// from outside, whose sender is worth naming (a peer's fate, who started the sender).
#[inline(always)]
pub const fn ends_from_outside(sig: i32) -> bool {
    matches!(sig, 1 | 2 | 3 | 6 | 9 | 15)
}

/// CLONE_THREAD from <linux/sched.h>: the new task shares the thread group.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// Whether a record reserved when `before` bytes were waiting in the ring, and submitted
/// when `after` were, crossed a multiple of `wake_at`: the programs force a wake-up of the
/// reader then, and on no other record (`wake_at` 0: the kernel decides).
pub const fn wakes_reader(before: u64, after: u64, wake_at: u64) -> bool {
    wake_at != 0 && after / wake_at > before / wake_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_is_woken_once_per_multiple_crossed() {
        let (wake_at, taken) = (1000, 104);
        // Records reserved one after another, as on one CPU: the waiting bytes grow by
        // `taken` each time and the reader never drains.
        let woken = (0..100u64).filter(|n| wakes_reader(n * taken, (n + 1) * taken, wake_at)).count() as u64;
        assert_eq!(woken, 100 * taken / wake_at, "one wake-up per multiple of the mark");
        // Below the mark: none; reaching it exactly: the record that reached it.
        assert!(!wakes_reader(800, 999, wake_at));
        assert!(wakes_reader(999, 1000, wake_at));
        assert!(!wakes_reader(1000, 1104, wake_at));
        assert!(!wakes_reader(0, 5000, 0));
        // Two CPUs: A reads 900 and reserves, B reserves across 1000 before A submits.
        // Both spans hold the crossing: one wake-up too many, none missed.
        let (a_before, b_before, both_submitted) = (900, 904, 1008);
        assert!(wakes_reader(a_before, both_submitted, wake_at));
        assert!(wakes_reader(b_before, both_submitted, wake_at));
        // The reader drained meanwhile: it is awake, nothing to wake.
        assert!(!wakes_reader(1900, 300, wake_at));
    }
}
