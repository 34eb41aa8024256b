//! Maps shared by the programs, and the configuration global written by user space.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{KernelConfig, PendingSyscall, RestartWatch, RssKey, OTHER_RESET_SLOTS, PROBE_COUNT};

/// Set by user space before load (offsets from tracefs, BTF, thresholds).
#[unsafe(no_mangle)]
pub static CONFIG: KernelConfig = KernelConfig::empty();

/// Thread groups being traced: TGID -> 1.
#[map]
pub static TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Threads of traced groups: TID -> TGID. Signals and OOM victims name a thread.
#[map]
pub static TIDS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Memory syscalls of traced threads: TID -> the arguments of its call in flight, or of
/// its last call marked consumed; removed when the thread exits.
#[map]
pub static PENDING: HashMap<u32, PendingSyscall> = HashMap::with_max_entries(65536, 0);

/// Last emitted RSS per (TGID, member).
#[map]
pub static RSS_LAST: HashMap<RssKey, i64> = HashMap::with_max_entries(16384, 0);

/// Sockets that belong to a traced process: sock address -> TGID.
#[map]
pub static SOCKS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// Local ports a traced process listened on: port -> TGID.
#[map]
pub static LISTEN_PORTS: HashMap<u16, u32> = HashMap::with_max_entries(4096, 0);

/// Local ports of connections traced processes opened (connect): port -> TGID. With
/// LISTEN_PORTS, what a reset must involve to be reported (see `filter_resets`).
#[map]
pub static CLIENT_PORTS: LruHashMap<u16, u32> = LruHashMap::with_max_entries(16384, 0);

/// Resets that involved no traced socket or port, counted per reason instead of being
/// reported (slots: [`tracer_common::OTHER_RESET_SLOTS`]).
#[map]
pub static OTHER_RESETS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OTHER_RESET_SLOTS, 0);

/// Servers on this host that traced clients connected to (not traced themselves): TGID
/// -> 1. Only the fatal signals sent to them are reported (their fate, for the client's
/// resets).
#[map]
pub static PEERS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// The restart watch (`--follow-restarts`): [0] says whose successor is wanted and what
/// it must exec; written by user space, armed at that process's end.
#[map]
pub static RESTART_WATCH: Array<RestartWatch> = Array::with_max_entries(1, 0);

/// Ring buffer reservations that failed, per CPU and per probe. Never silent loss.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROBE_COUNT, 0);

/// The one ring buffer to user space; user space sets its size before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[inline(always)]
pub fn config_offset(index: usize) -> Option<usize> {
    // Volatile: the global is rewritten by user space at load; the compiler must not
    // fold the zero-initialised value.
    let off = unsafe { core::ptr::read_volatile(&raw const CONFIG.offsets[index]) };
    if off == tracer_common::UNKNOWN_OFFSET {
        None
    } else {
        Some(off as usize)
    }
}

/// A kernel struct member's offset from BTF ([`tracer_common::kfield`]), if known.
#[inline(always)]
pub fn kernel_offset(index: usize) -> Option<usize> {
    let off = unsafe { core::ptr::read_volatile(&raw const CONFIG.kernel_offsets[index]) };
    if off == u32::MAX { None } else { Some(off as usize) }
}

#[inline(always)]
pub fn config_u32(field: &u32) -> u32 {
    unsafe { core::ptr::read_volatile(field) }
}

/// Whether user space found the records of `bit` ([`tracer_common::usual_layout`]) laid
/// out as compiled in, so [`record_at`] may read them.
#[inline(always)]
pub fn usual_layout(bit: u32) -> bool {
    config_u32(&CONFIG.usual_layouts) & bit != 0
}

/// The record's `T` at byte `OFF`, with a plain load: no helper call. `OFF` is a constant
/// because the verifier accepts a record load only at an offset fixed in the program, and
/// not in the first 8 bytes (the common fields); the kernel then refuses to attach the
/// program to a tracepoint whose record ends before the furthest such load.
#[inline(always)]
pub fn record_at<T: Copy, const OFF: usize>(ctx: &aya_ebpf::programs::TracePointContext) -> T {
    use aya_ebpf::EbpfContext as _;
    // SAFETY: the verifier checks the access (a read of the context at a fixed offset).
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(OFF) as *const T) }
}

#[inline(always)]
pub fn rss_threshold() -> i64 {
    unsafe { core::ptr::read_volatile(&raw const CONFIG.rss_threshold_bytes) as i64 }
}

#[inline(always)]
pub fn is_traced_tgid(tgid: u32) -> bool {
    unsafe { TGIDS.get(&tgid).is_some() }
}

/// Bytes waiting in the ring now: read before a reservation, for [`submit_flags`].
#[inline(always)]
pub fn ring_waiting() -> u64 {
    EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64)
}

/// Flags for submitting a record reserved when [`ring_waiting`] said `before`: no wake-up
/// while the ring holds less than `wake_at_bytes` (the reader drains on its tick), and
/// one forced wake-up each time the waiting bytes cross another multiple of it. Not one
/// per record: a forced wake-up queues an irq_work, a self-interrupt (a VM exit under a
/// hypervisor), and while a slower reader keeps the ring above the mark every record
/// would pay it (1.1-1.4 us an `inet_sock_set_state` in the rst bench). Every crossing
/// lies within some record's span from its `before` to its submit, so records reserved
/// on other CPUs in between can add a wake-up, never hide one.
#[inline(always)]
pub fn submit_flags(before: u64) -> u64 {
    let wake_at = unsafe { core::ptr::read_volatile(&raw const CONFIG.wake_at_bytes) };
    if wake_at == 0 {
        return 0;
    }
    if tracer_common::wakes_reader(before, ring_waiting(), wake_at) {
        aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64
    } else {
        aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn count_lost(probe: u32) {
    if let Some(counter) = LOST.get_ptr_mut(probe) {
        unsafe { *counter += 1 };
    }
}
