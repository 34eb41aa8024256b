//! syscalls:sys_{enter,exit}_{mmap,munmap,brk,mremap} of traced processes: one record
//! per completed call, with its arguments and result.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use tracer_common::{field, usual_layout as usual, MemSyscall, MmapFileRecord, PendingSyscall, Probe};

use crate::{
    file::identify,
    maps::{config_offset, count_lost, is_traced_tgid, record_at, usual_layout, EVENTS, PENDING},
    record::header,
};

#[inline(always)]
fn enter<const ARGS: usize>(ctx: &TracePointContext, probe: Probe) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced_tgid((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(args) = read_args::<ARGS>(ctx) else {
        return 0;
    };
    let pending = PendingSyscall {
        args,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        probe: probe as u32,
        _pad: 0,
    };
    let tid = pid_tgid as u32;
    // A thread's entry stays from one call to the next (it goes when the thread exits):
    // written in place, as a hash-map update or delete costs a node swap under a lock on
    // each of a million calls a second.
    if let Some(slot) = PENDING.get_ptr_mut(&tid) {
        unsafe { *slot = pending };
    } else if PENDING.insert(&tid, &pending, 0).is_err() {
        count_lost(probe as u32);
        warn!(ctx, "tracer: pending-syscall map full, a memory syscall of {} is lost", tid);
    }
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext, probe: Probe) -> u32 {
    // No traced-process lookup here: an entry that is not consumed was written by this
    // thread's enter for this very call, after that lookup (entries go at thread exit).
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = PENDING.get_ptr_mut(&tid) else {
        return 0;
    };
    let pending = unsafe { *slot };
    // Consumed: an exit with no enter before it (the call began before tracing did) must
    // not pair with this one.
    unsafe { (*slot).probe = CONSUMED };
    if pending.probe != probe as u32 {
        return 0;
    }
    let ret: i64 = if usual_layout(usual::SYSCALLS) {
        record_at::<i64, { usual::SYS_RET }>(ctx)
    } else {
        match config_offset(field::SYS_RET) {
            Some(off) => unsafe { ctx.read_at::<i64>(off) }.unwrap_or(0),
            None => 0,
        }
    };
    let sys = MemSyscall { header: header(probe), args: pending.args, ret, enter_ns: pending.enter_ns };
    if probe == Probe::Mmap && ret >= 0 && (pending.args[4] as i32) >= 0 && pending.args[3] & MAP_ANONYMOUS == 0 {
        emit_mmap_file(sys, pending.args[4] as i32 as u64);
        return 0;
    }
    let before = crate::maps::ring_waiting();
    let Some(mut entry) = EVENTS.reserve::<MemSyscall>(0) else {
        count_lost(probe as u32);
        return 0;
    };
    entry.write(sys);
    entry.submit(crate::maps::submit_flags(before));
    0
}

/// The arguments of a sys_enter record: `N` plain loads where the layout is the usual
/// one (the rest zero), else six words from the configured offset (a syscall with fewer
/// has whatever follows its record in the trace buffer there: never read).
#[inline(always)]
fn read_args<const N: usize>(ctx: &TracePointContext) -> Option<[u64; 6]> {
    if usual_layout(usual::SYSCALLS) {
        const A: usize = usual::SYS_ARGS;
        // Loads past the record's end would make the kernel refuse to attach.
        let arg = |present: bool, value: fn(&TracePointContext) -> u64| if present { value(ctx) } else { 0 };
        return Some([
            arg(N > 0, |c| record_at::<u64, A>(c)),
            arg(N > 1, |c| record_at::<u64, { A + 8 }>(c)),
            arg(N > 2, |c| record_at::<u64, { A + 16 }>(c)),
            arg(N > 3, |c| record_at::<u64, { A + 24 }>(c)),
            arg(N > 4, |c| record_at::<u64, { A + 32 }>(c)),
            arg(N > 5, |c| record_at::<u64, { A + 40 }>(c)),
        ]);
    }
    let off = config_offset(field::SYS_ARGS)?;
    Some(unsafe { ctx.read_at::<[u64; 6]>(off) }.unwrap_or([0; 6]))
}

/// A [`PendingSyscall::probe`] no probe has: the entry's call has exited.
const CONSUMED: u32 = u32::MAX;

/// MAP_ANONYMOUS from <linux/mman.h>: no file behind the mapping.
const MAP_ANONYMOUS: u64 = 0x20;

/// A successful mmap of a file: the syscall and the file behind its fd, named now.
#[inline(always)]
fn emit_mmap_file(sys: MemSyscall, fd: u64) {
    let before = crate::maps::ring_waiting();
    let Some(mut entry) = EVENTS.reserve::<MmapFileRecord>(0) else {
        count_lost(Probe::Mmap as u32);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).sys = sys;
        identify(fd, &raw mut (*rec).file);
    }
    entry.submit(crate::maps::submit_flags(before));
}

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    enter::<{ usual::MMAP_ARGS }>(&ctx, Probe::Mmap)
}

#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    exit(&ctx, Probe::Mmap)
}

#[tracepoint]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    enter::<{ usual::MUNMAP_ARGS }>(&ctx, Probe::Munmap)
}

#[tracepoint]
pub fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    exit(&ctx, Probe::Munmap)
}

#[tracepoint]
pub fn sys_enter_brk(ctx: TracePointContext) -> u32 {
    enter::<{ usual::BRK_ARGS }>(&ctx, Probe::Brk)
}

#[tracepoint]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    exit(&ctx, Probe::Brk)
}

#[tracepoint]
pub fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    enter::<{ usual::MREMAP_ARGS }>(&ctx, Probe::Mremap)
}

#[tracepoint]
pub fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    exit(&ctx, Probe::Mremap)
}
