//! Filling ring-buffer records.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    programs::TracePointContext,
    EbpfContext,
};
use tracer_common::{aux, CopiedRecord, ExecRecord, Header, Probe, RestartWatch, ARGV_LEN, RAW_DATA_LEN, SMALL_DATA_LEN};

use crate::maps::{count_lost, EVENTS, TGIDS, TIDS};

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

/// Copies the first `N` bytes of the tracepoint record, with `aux` values, into the
/// ring buffer.
#[inline(always)]
fn emit_copy<const N: usize>(ctx: &TracePointContext, probe: Probe, aux: [u64; 2]) {
    let before = crate::maps::ring_waiting();
    let Some(mut entry) = EVENTS.reserve::<CopiedRecord<N>>(0) else {
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
        if bpf_probe_read_kernel_buf(ctx.as_ptr() as *const u8, &mut data[..N]).is_err() {
            entry.discard(0);
            count_lost(probe as u32);
            return;
        }
    }
    entry.submit(crate::maps::submit_flags(before));
}

/// Copies the tracepoint record verbatim ([`RAW_DATA_LEN`] bytes).
#[inline(always)]
pub fn emit_raw(ctx: &TracePointContext, probe: Probe, aux: [u64; 2]) {
    emit_copy::<RAW_DATA_LEN>(ctx, probe, aux);
}

/// [`emit_raw`] for a record that ends within [`SMALL_DATA_LEN`] bytes.
#[inline(always)]
pub fn emit_small(ctx: &TracePointContext, probe: Probe, aux: [u64; 2]) {
    emit_copy::<SMALL_DATA_LEN>(ctx, probe, aux);
}

/// [`emit_raw`] for an inet_sock_set_state record of the usual layout, which ends within
/// [`tracer_common::SOCK_DATA_LEN`] bytes.
#[inline(always)]
pub fn emit_sock(ctx: &TracePointContext, probe: Probe, aux: [u64; 2]) {
    emit_copy::<{ tracer_common::SOCK_DATA_LEN }>(ctx, probe, aux);
}

/// sched_process_exec of a traced process: the record verbatim and the new program's
/// arguments.
#[inline(always)]
pub fn emit_exec(ctx: &TracePointContext) {
    let probe = Probe::ProcessExec;
    let before = crate::maps::ring_waiting();
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_lost(probe as u32);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        if !fill_exec(ctx, rec) {
            entry.discard(0);
            count_lost(probe as u32);
            return;
        }
    }
    entry.submit(crate::maps::submit_flags(before));
}

/// sched_process_exec of a process that is not traced while the restart watch is armed:
/// when it runs the watched process's arguments it is that process's successor, traced
/// from this exec on and reported; any other exec is dropped here.
#[inline(always)]
pub fn adopt_if_successor(ctx: &TracePointContext, watch: *mut RestartWatch) {
    let probe = Probe::ProcessExec;
    let before = crate::maps::ring_waiting();
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_lost(probe as u32);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        if !fill_exec(ctx, rec) || !same_arguments(&*rec, &*watch) {
            entry.discard(0);
            return;
        }
        let tgid = (*rec).raw.header.tgid;
        if TGIDS.insert(&tgid, &1, 0).and_then(|()| TIDS.insert(&tgid, &tgid, 0)).is_err() {
            entry.discard(0);
            count_lost(probe as u32);
            return;
        }
        (*watch).armed = 0;
        (*watch).of_tgid = tgid;
        (*rec).raw.aux[aux::EXEC_ADOPTED] = 1;
        (*rec).raw.aux[aux::EXEC_GAP_NS] = (*rec).raw.header.ts_ns.saturating_sub((*watch).ended_ns);
    }
    entry.submit(crate::maps::submit_flags(before));
}

/// Fills an exec record: header, the tracepoint record, the arguments. False when the
/// tracepoint record could not be read.
#[inline(always)]
unsafe fn fill_exec(ctx: &TracePointContext, rec: *mut ExecRecord) -> bool {
    unsafe {
        (*rec).raw.header = header(Probe::ProcessExec);
        (*rec).raw.aux = [0, 0];
        let data = &mut (*rec).raw.data;
        if bpf_probe_read_kernel_buf(ctx.as_ptr() as *const u8, &mut data[..RAW_DATA_LEN]).is_err() {
            return false;
        }
        let argv = &mut (*rec).argv;
        let (len, cut) = crate::file::read_argv(argv);
        (*rec).argv_len = len;
        (*rec).argv_cut = cut as u32;
    }
    true
}

/// Whether an exec's arguments are the watched process's, byte for byte.
#[inline(always)]
fn same_arguments(rec: &ExecRecord, watch: &RestartWatch) -> bool {
    let n = rec.argv_len as usize;
    if n == 0 || n != watch.argv_len as usize || rec.argv_cut != watch.argv_cut {
        return false;
    }
    for i in 0..ARGV_LEN {
        if i >= n {
            break;
        }
        if rec.argv[i] != watch.argv[i] {
            return false;
        }
    }
    true
}
