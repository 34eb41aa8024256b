//! kmem:rss_stat for the traced processes' own mm, aggregated in the kernel: a record only
//! when a member moved by the configured threshold, so a multi-gigabyte load yields
//! hundreds of records rather than millions.
//!
//! Two programs, one attached. `rss_stat` is the classic tracepoint: the kernel fills a
//! record for every call, summing the per-CPU counter under its lock and hashing the mm,
//! before the program runs. `rss_stat_btf` is the BTF tracepoint: it gets `(mm, member)`
//! and nothing built. It reads the counter's central `count` (exact to within every CPU's
//! batch), and sums the per-CPU slots itself only when that could cross the threshold, so
//! what it reports is the same exact value the classic record holds.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::{bpf_get_current_task_btf, bpf_map_lookup_percpu_elem}},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{field, kfield, usual_layout as usual, Probe, RssKey, RssRecord, RSS_MAX_CPUS};

use crate::{
    maps::{config_offset, count_lost, is_traced_tgid, kernel_offset, record_at, rss_threshold, usual_layout, CONFIG, EVENTS, RSS_LAST},
    record::header,
};

#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_traced_tgid(tgid) {
        return 0;
    }
    let Some((curr, member, size)) = read_record(&ctx) else {
        return 0;
    };
    // curr == 0: another task's mm changed while we ran (reclaim, ptrace); not ours.
    if curr == 0 {
        return 0;
    }
    aggregate(tgid, member, size);
    0
}

/// Emits `size` for (tgid, member) if it moved by the threshold since the last record.
#[inline(always)]
fn aggregate(tgid: u32, member: i32, size: i64) {
    let key = RssKey { tgid, member };
    match RSS_LAST.get_ptr_mut(&key) {
        Some(last) => unsafe {
            let delta = size - *last;
            if delta.abs() < rss_threshold() {
                return;
            }
            *last = size;
        },
        None => {
            let _ = RSS_LAST.insert(&key, &size, 0);
        }
    }
    emit(member, size);
}

#[inline(always)]
fn emit(member: i32, size: i64) {
    let before = crate::maps::ring_waiting();
    let Some(mut entry) = EVENTS.reserve::<RssRecord>(0) else {
        count_lost(Probe::RssStat as u32);
        return;
    };
    entry.write(RssRecord {
        header: header(Probe::RssStat),
        member,
        _pad: 0,
        bytes: size,
    });
    entry.submit(crate::maps::submit_flags(before));
}

/// MM_SWAPENTS and the rest: the kernel has 4 counters (NR_MM_COUNTERS).
const MM_COUNTERS: i32 = 4;

#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat_btf(ctx: BtfTracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_traced_tgid(tgid) {
        return 0;
    }
    let mm: u64 = ctx.arg(0);
    let member: i32 = ctx.arg(1);
    if !(0..MM_COUNTERS).contains(&member) || mm == 0 {
        return 0;
    }
    // Another task's mm (reclaim, ptrace, the new mm an exec fills, the old one an exec
    // or an exit tears down): not ours, as `curr == 0` in the record.
    if !is_current_mm(mm) {
        return 0;
    }
    let layout = unsafe { core::ptr::read_volatile(&raw const CONFIG.rss_counters) };
    let counter = mm + layout.mm_rss_stat as u64 + member as u64 * layout.counter_size as u64;
    let key = RssKey { tgid, member };
    let last = RSS_LAST.get_ptr_mut(&key);
    if let Some(last) = last {
        let Ok(count) = (unsafe { bpf_probe_read_kernel((counter + layout.counter_count as u64) as *const i64) }) else {
            count_lost(Probe::RssStat as u32);
            return 0;
        };
        // Far from the threshold by more than the slots can hold: no need to read them.
        if ((count << layout.page_shift) - unsafe { *last }).abs() < rss_threshold() - layout.slack_bytes as i64 {
            return 0;
        }
    }
    let Some(size) = exact(counter, &layout) else {
        count_lost(Probe::RssStat as u32);
        return 0;
    };
    match last {
        Some(last) => unsafe {
            if (size - *last).abs() < rss_threshold() {
                return 0;
            }
            *last = size;
        },
        None => {
            let _ = RSS_LAST.insert(&key, &size, 0);
        }
    }
    emit(member, size);
    0
}

/// Whether `mm` is the current task's.
#[inline(always)]
fn is_current_mm(mm: u64) -> bool {
    let Some(mm_off) = kernel_offset(kfield::TASK_MM) else {
        return false;
    };
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // A plain load: the task is a BTF pointer and the offset a constant of the frozen
    // configuration, so the verifier checks it against the struct.
    let current = unsafe { core::ptr::read_volatile(task.add(mm_off) as *const u64) };
    current == mm
}

/// One element per CPU, never written: `bpf_map_lookup_percpu_elem` gives each CPU's
/// copy of it, whose address less the per-CPU pointer in the map's struct is that CPU's
/// per-CPU offset.
#[map]
static PCPU_ANCHOR: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// [0]: the per-CPU pointer of PCPU_ANCHOR's element, read once from the map's struct.
#[map]
static PCPU_BASE: Array<u64> = Array::with_max_entries(1, 0);

/// A word to pass a kernel address through, so that the verifier sees a number (allowed
/// for programs loaded with CAP_PERFMON): addresses of maps and map values cannot take
/// arithmetic as pointers.
#[map]
static ADDRESS_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn as_number(ptr: u64) -> Option<u64> {
    let slot = ADDRESS_SCRATCH.get_ptr_mut(0)?;
    unsafe {
        core::ptr::write_volatile(slot, ptr);
        Some(core::ptr::read_volatile(slot))
    }
}

/// The per-CPU pointer of PCPU_ANCHOR's element.
#[inline(always)]
fn pcpu_base(layout: &tracer_common::RssCounterLayout) -> Option<u64> {
    let cached = PCPU_BASE.get_ptr_mut(0)?;
    let known = unsafe { core::ptr::read_volatile(cached) };
    if known != 0 {
        return Some(known);
    }
    let map = as_number(&raw const PCPU_ANCHOR as u64)?;
    let base = unsafe { bpf_probe_read_kernel((map + layout.array_pptrs as u64) as *const u64) }.ok()?;
    if base == 0 {
        return None;
    }
    unsafe { core::ptr::write_volatile(cached, base) };
    Some(base)
}

/// The counter's value in bytes: `count` plus every CPU's slot, as the kernel's
/// `percpu_counter_sum_positive` adds them, but without its lock. A batch folded into
/// `count` while the slots are read changes `count`, so the sum is taken again once if
/// it moved; a fold caught between its two stores can still count a batch twice or not
/// at all for that instant. None when a read fails (counted as lost by the caller).
#[inline(always)]
fn exact(counter: u64, layout: &tracer_common::RssCounterLayout) -> Option<i64> {
    let slots = unsafe { bpf_probe_read_kernel((counter + layout.counter_counters as u64) as *const u64) }.ok()?;
    let base = pcpu_base(layout)?;
    let count_at = (counter + layout.counter_count as u64) as *const i64;
    let key: u32 = 0;
    let mut pages = 0;
    for _attempt in 0..2 {
        let before = unsafe { bpf_probe_read_kernel(count_at) }.ok()?;
        pages = before;
        for cpu in 0..RSS_MAX_CPUS {
            if cpu >= layout.cpus {
                break;
            }
            let copy = unsafe {
                bpf_map_lookup_percpu_elem(
                    &raw const PCPU_ANCHOR as *mut core::ffi::c_void,
                    &raw const key as *const core::ffi::c_void,
                    cpu,
                )
            };
            if copy.is_null() {
                return None;
            }
            let offset = as_number(copy as u64)?.wrapping_sub(base);
            let slot: i32 = unsafe { bpf_probe_read_kernel(slots.wrapping_add(offset) as *const i32) }.ok()?;
            pages += slot as i64;
        }
        if unsafe { bpf_probe_read_kernel(count_at) }.ok()? == before {
            break;
        }
    }
    Some(pages.max(0) << layout.page_shift)
}
/// (curr, member, size): plain loads where the layout is the usual one (most of this
/// program's cost otherwise is three helper calls), else through the configured offsets.
#[inline(always)]
fn read_record(ctx: &TracePointContext) -> Option<(u32, i32, i64)> {
    if usual_layout(usual::RSS) {
        return Some((
            record_at::<u32, { usual::RSS_CURR }>(ctx),
            record_at::<i32, { usual::RSS_MEMBER }>(ctx),
            record_at::<i64, { usual::RSS_SIZE }>(ctx),
        ));
    }
    let (Some(curr_off), Some(member_off), Some(size_off)) = (
        config_offset(field::RSS_CURR),
        config_offset(field::RSS_MEMBER),
        config_offset(field::RSS_SIZE),
    ) else {
        return None;
    };
    let curr: u32 = unsafe { ctx.read_at::<u32>(curr_off) }.unwrap_or(0);
    let member: i32 = unsafe { ctx.read_at::<i32>(member_off) }.unwrap_or(-1);
    let size = unsafe { ctx.read_at::<i64>(size_off) }.ok()?;
    Some((curr, member, size))
}
