//! cgroup:cgroup_attach_task: with `--cgroup`, a task moved into the traced cgroup (or a
//! cgroup below it) is traced from that moment, whoever moved it: a supervisor outside
//! the cgroup (systemd, containerd) starts services this way.
use aya_ebpf::{helpers::bpf_probe_read_kernel_buf, macros::tracepoint, programs::TracePointContext, EbpfContext};
use tracer_common::{aux, field, Probe, SCOPE_PATH_LEN};

use crate::{
    maps::{config_offset, config_u32, CONFIG, TGIDS, TIDS},
    record::emit_raw,
};

#[tracepoint]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let (Some(root_off), Some(pid_off), Some(path_off)) =
        (config_offset(field::CGATTACH_ROOT), config_offset(field::CGATTACH_PID), config_offset(field::CGATTACH_PATH))
    else {
        return 0;
    };
    let pid = unsafe { ctx.read_at::<i32>(pid_off) }.unwrap_or(0) as u32;
    if pid == 0 {
        return 0;
    }
    if unsafe { TIDS.get(&pid) }.is_some() {
        // A traced task moved (`sh -c 'echo $$ > cgroup.procs; exec ...'`): user space
        // samples its new memory cgroup at once instead of at the next interval.
        emit_raw(&ctx, Probe::CgroupAttach, [pid as u64, aux::CGROUP_MOVED]);
        return 0;
    }
    let len = config_u32(&CONFIG.scope_path_len) as usize;
    if len == 0 || len > SCOPE_PATH_LEN {
        return 0;
    }
    let want_root = unsafe { core::ptr::read_volatile(&raw const CONFIG.scope_root) };
    let root: i32 = unsafe { ctx.read_at::<i32>(root_off) }.unwrap_or(-2);
    if want_root != -1 && root != want_root {
        return 0;
    }
    if !under_scope(&ctx, path_off, len) {
        return 0;
    }
    // Its thread group is known only to user space (the record has the task's own id):
    // user space corrects a thread's entry when it reads the record.
    if TGIDS.insert(&pid, &1, 0).and_then(|()| TIDS.insert(&pid, &pid, 0)).is_err() {
        return 0;
    }
    emit_raw(&ctx, Probe::CgroupAttach, [pid as u64, 0]);
    0
}

/// Whether the record's `dst_path` is the scope's path or a path below it.
#[inline(always)]
fn under_scope(ctx: &TracePointContext, path_off: usize, len: usize) -> bool {
    let loc: u32 = match unsafe { ctx.read_at::<u32>(path_off) } {
        Ok(v) => v,
        Err(_) => return false,
    };
    let (off, size) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
    // `size` counts the NUL; the path must be at least as long as the scope's.
    if size < len + 1 {
        return false;
    }
    let mut path = [0u8; SCOPE_PATH_LEN + 1];
    // The record lives in a per-CPU trace buffer far larger than this read.
    if unsafe { bpf_probe_read_kernel_buf((ctx.as_ptr() as *const u8).wrapping_add(off), &mut path) }.is_err() {
        return false;
    }
    for i in 0..SCOPE_PATH_LEN {
        if i >= len {
            break;
        }
        let want = unsafe { core::ptr::read_volatile(&raw const CONFIG.scope_path[i]) };
        if path[i] != want {
            return false;
        }
    }
    // The scope "/" holds everything; otherwise the next byte ends the path or a name.
    let next = if len < path.len() { path[len] } else { 0 };
    len == 1 || next == 0 || next == b'/'
}
