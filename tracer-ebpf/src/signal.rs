//! signal:signal_generate (any sender; receiver traced, a traced client's server, or with
//! `host_wide` any receiver of a fatal signal) and signal:signal_deliver (in a
//! traced process).
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext};
use tracer_common::{aux, field, usual_layout as usual, Probe};

use crate::{
    maps::{config_offset, config_u32, is_traced_tgid, record_at, usual_layout, CONFIG, PEERS, TIDS},
    record::emit_small,
};

/// Current is the sender here; the receiver is the `pid` field, a thread id.
#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let receiver: u32 = if usual_layout(usual::SIGNALS) {
        record_at::<i32, { usual::SIGGEN_PID }>(&ctx) as u32
    } else {
        let Some(pid_off) = config_offset(field::SIGGEN_PID) else {
            return 0;
        };
        unsafe { ctx.read_at::<i32>(pid_off) }.unwrap_or(0) as u32
    };
    let mut extra = [0u64; 2];
    if let Some(tgid) = unsafe { TIDS.get(&receiver) } {
        extra[aux::TARGET_TGID] = *tgid as u64;
    } else if unsafe { PEERS.get(&receiver) }.is_some() && is_fatal(&ctx) {
        // A signal to a whole process names its leader, whose id is the peer's.
        extra[aux::TARGET_TGID] = receiver as u64;
        extra[aux::SIGNAL_PEER] = 1;
    } else if config_u32(&CONFIG.host_wide) != 0 && is_fatal(&ctx) {
        // `tracer watch`: every process's fatal signals, with their sender. A signal to
        // a whole process names its leader; one to a thread is filed under the thread's
        // id, which user space resolves while the process lives.
        extra[aux::TARGET_TGID] = receiver as u64;
    } else {
        return 0;
    }
    emit_small(&ctx, Probe::SignalGenerate, extra);
    0
}

/// Whether the signal generated is one that ends a server from outside.
#[inline(always)]
fn is_fatal(ctx: &TracePointContext) -> bool {
    let sig: i32 = if usual_layout(usual::SIGNALS) {
        record_at::<i32, { usual::SIGGEN_SIG }>(ctx)
    } else {
        let Some(off) = config_offset(field::SIGGEN_SIG) else {
            return false;
        };
        unsafe { ctx.read_at::<i32>(off) }.unwrap_or(0)
    };
    tracer_common::ends_from_outside(sig)
}

#[tracepoint]
pub fn signal_deliver(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_traced_tgid(tgid) {
        return 0;
    }
    // A signal the process handles itself was recorded when it was sent; its delivery to
    // the handler says nothing more and can come by the hundred thousand. Deliveries
    // with the default action (a death, a stop) are what the exit's cause comes from.
    let sig_and_handler = if usual_layout(usual::SIGNALS) {
        Some((record_at::<i32, { usual::SIGDEL_SIG }>(&ctx), record_at::<u64, { usual::SIGDEL_HANDLER }>(&ctx)))
    } else if let (Some(sig_off), Some(handler_off)) = (config_offset(field::SIGDEL_SIG), config_offset(field::SIGDEL_HANDLER)) {
        let sig: i32 = unsafe { ctx.read_at::<i32>(sig_off) }.unwrap_or(0);
        let handler: u64 = unsafe { ctx.read_at::<u64>(handler_off) }.unwrap_or(0);
        Some((sig, handler))
    } else {
        None
    };
    // SIG_DFL is 0; SIGKILL and SIGSTOP cannot be handled.
    if let Some((sig, handler)) = sig_and_handler {
        if handler != 0 && sig != 9 && sig != 19 {
            return 0;
        }
    }
    emit_small(&ctx, Probe::SignalDeliver, [0; 2]);
    0
}
