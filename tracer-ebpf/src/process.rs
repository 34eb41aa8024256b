//! task:task_newtask, sched:sched_process_exec, sched:sched_process_exit: follow the
//! traced thread groups and record how they end.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use tracer_common::{aux, field, Probe, CLONE_THREAD};

use crate::{
    maps::{config_offset, config_u32, is_traced_tgid, CONFIG, PENDING, RESTART_WATCH, TGIDS, TIDS},
    record::{adopt_if_successor, emit_exec, emit_raw},
};

/// task_newtask rather than sched_process_fork: it carries clone_flags, which is the only
/// way to tell a new thread from a new process without reading task_struct.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_traced_tgid(tgid) {
        return 0;
    }
    let (Some(pid_off), Some(flags_off)) =
        (config_offset(field::NEWTASK_PID), config_offset(field::NEWTASK_FLAGS))
    else {
        return 0;
    };
    let child: u32 = unsafe { ctx.read_at::<i32>(pid_off) }.unwrap_or(0) as u32;
    let flags: u64 = unsafe { ctx.read_at::<u64>(flags_off) }.unwrap_or(0);
    if child != 0 {
        let followed = if flags & CLONE_THREAD != 0 {
            TIDS.insert(&child, &tgid, 0)
        } else if config_u32(&CONFIG.follow_children) != 0 {
            TGIDS.insert(&child, &1, 0).and_then(|()| TIDS.insert(&child, &child, 0))
        } else {
            Ok(())
        };
        if followed.is_err() {
            warn!(&ctx, "tracer: filter map full, task {} of {} is not followed", child, tgid);
        }
    }
    emit_raw(&ctx, Probe::TaskNewtask, [0; 2]);
    0
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_traced_tgid(tgid) {
        emit_exec(&ctx);
    } else if config_u32(&CONFIG.follow_restarts) != 0 {
        if let Some(watch) = RESTART_WATCH.get_ptr_mut(0) {
            if unsafe { (*watch).armed } != 0 {
                adopt_if_successor(&ctx, watch);
            }
        }
    }
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced_tgid(tgid) {
        if config_u32(&CONFIG.host_wide) != 0 {
            host_wide_exit(&ctx, pid_tgid);
        }
        return 0;
    }
    let tid = pid_tgid as u32;
    let _ = TIDS.remove(&tid);
    // Its calls in flight: entries stay from call to call (see `mem`), not past the thread.
    let _ = PENDING.remove(&tid);
    // The end of the watched process (its main thread): look for its successor from now
    // on, before user space has even read this record.
    if tid == tgid && config_u32(&CONFIG.follow_restarts) != 0 {
        if let Some(watch) = RESTART_WATCH.get_ptr_mut(0) {
            unsafe {
                if (*watch).of_tgid == tgid {
                    (*watch).ended_ns = bpf_ktime_get_ns();
                    (*watch).armed = 1;
                }
            }
        }
    }
    let mut extra = [0u64; 2];
    let off = config_u32(&CONFIG.task_exit_code_offset);
    if off != u32::MAX {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        if let Ok(code) = unsafe { bpf_probe_read_kernel(task.add(off as usize) as *const i32) } {
            extra[aux::EXIT_CODE] = code as u32 as u64;
            extra[aux::EXIT_CODE_KNOWN] = 1;
        }
    }
    emit_raw(&ctx, Probe::ProcessExit, extra);
    0
}

/// `tracer watch`: an untraced process ended by a signal (its last thread, or its leader
/// where the kernel does not say which is last). Exits with a status are not reported:
/// a host runs thousands of short commands that end well. Without BTF the exit code
/// cannot be read here, and nothing is reported.
#[inline(always)]
fn host_wide_exit(ctx: &TracePointContext, pid_tgid: u64) {
    let off = config_u32(&CONFIG.task_exit_code_offset);
    if off == u32::MAX {
        return;
    }
    let last = match config_offset(field::EXIT_GROUP_DEAD) {
        Some(o) => unsafe { ctx.read_at::<u8>(o) }.unwrap_or(0) != 0,
        None => (pid_tgid >> 32) as u32 == pid_tgid as u32,
    };
    if !last {
        return;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Ok(code) = (unsafe { bpf_probe_read_kernel(task.add(off as usize) as *const i32) }) else {
        return;
    };
    if code & 0x7f == 0 {
        return;
    }
    let mut extra = [0u64; 2];
    extra[aux::EXIT_CODE] = code as u32 as u64;
    extra[aux::EXIT_CODE_KNOWN] = 1;
    emit_raw(ctx, Probe::ProcessExit, extra);
}
