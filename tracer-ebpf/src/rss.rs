//! kmem:rss_stat for the traced processes' own mm, aggregated in the kernel: a record only
//! when a member moved by the configured threshold, so a multi-gigabyte load yields
//! hundreds of records rather than millions.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{field, usual_layout as usual, Probe, RssKey, RssRecord};

use crate::{
    maps::{config_offset, count_lost, is_traced_tgid, record_at, rss_threshold, usual_layout, EVENTS, RSS_LAST},
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
    let key = RssKey { tgid, member };
    match RSS_LAST.get_ptr_mut(&key) {
        Some(last) => unsafe {
            let delta = size - *last;
            if delta.abs() < rss_threshold() {
                return 0;
            }
            *last = size;
        },
        None => {
            let _ = RSS_LAST.insert(&key, &size, 0);
        }
    }
    let before = crate::maps::ring_waiting();
    let Some(mut entry) = EVENTS.reserve::<RssRecord>(0) else {
        count_lost(Probe::RssStat as u32);
        return 0;
    };
    entry.write(RssRecord {
        header: header(Probe::RssStat),
        member,
        _pad: 0,
        bytes: size,
    });
    entry.submit(crate::maps::submit_flags(before));
    0
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
