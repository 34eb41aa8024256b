//! oom:mark_victim: every OOM kill on the machine, with the victim's TGID when traced.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{aux, field, Probe};

use crate::{
    maps::{config_offset, TIDS},
    record::emit_raw,
};

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let mut extra = [0u64; 2];
    if let Some(off) = config_offset(field::VICTIM_PID) {
        let victim: u32 = unsafe { ctx.read_at::<i32>(off) }.unwrap_or(0) as u32;
        if let Some(tgid) = unsafe { TIDS.get(&victim) } {
            extra[aux::TARGET_TGID] = *tgid as u64;
        }
    }
    emit_raw(&ctx, Probe::MarkVictim, extra);
    0
}
