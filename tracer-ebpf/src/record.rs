//! Filling ring-buffer records.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    programs::TracePointContext,
    EbpfContext,
};
use tracer_common::{ExecRecord, Header, Probe, RawRecord, RAW_DATA_LEN};

use crate::maps::{count_lost, EVENTS};

#[inline(always)]
pub fn header(probe: Probe) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    Header {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        probe: probe as u32,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// Copies the tracepoint record verbatim, with `aux` values, into the ring buffer.
#[inline(always)]
pub fn emit_raw(ctx: &TracePointContext, probe: Probe, aux: [u64; 2]) {
    let Some(mut entry) = EVENTS.reserve::<RawRecord>(0) else {
        count_lost(probe as u32);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).header = header(probe);
        (*rec).aux = aux;
        let data = &mut (*rec).data;
        // The record lives in a per-CPU trace buffer far larger than RAW_DATA_LEN, so a
        // fixed-size read past a short record stays inside mapped memory.
        if bpf_probe_read_kernel_buf(ctx.as_ptr() as *const u8, &mut data[..RAW_DATA_LEN]).is_err() {
            entry.discard(0);
            count_lost(probe as u32);
            return;
        }
    }
    entry.submit(0);
}

/// sched_process_exec: the record verbatim and the new program's arguments; `watched`
/// marks a process that is not traced (a candidate successor, see `RESTART_WATCH`).
#[inline(always)]
pub fn emit_exec(ctx: &TracePointContext, watched: bool) {
    let probe = Probe::ProcessExec;
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_lost(probe as u32);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).raw.header = header(probe);
        (*rec).raw.aux = [watched as u64, 0];
        let data = &mut (*rec).raw.data;
        if bpf_probe_read_kernel_buf(ctx.as_ptr() as *const u8, &mut data[..RAW_DATA_LEN]).is_err() {
            entry.discard(0);
            count_lost(probe as u32);
            return;
        }
        let argv = &mut (*rec).argv;
        let (len, cut) = crate::file::read_argv(argv);
        (*rec).argv_len = len;
        (*rec).argv_cut = cut as u32;
    }
    entry.submit(0);
}
