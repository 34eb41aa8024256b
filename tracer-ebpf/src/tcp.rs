//! tcp:tcp_send_reset and tcp:tcp_receive_reset on the whole machine (passive resets run
//! in softirq where current is not the owner: user space attributes them), and
//! sock:inet_sock_set_state for sockets of traced processes, which is what makes that
//! attribution possible.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{aux, field, Probe};

use crate::{
    maps::{config_offset, config_u32, is_traced_tgid, CONFIG, LISTEN_PORTS, SOCKS},
    record::emit_raw,
};

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    emit_raw(&ctx, Probe::TcpSendReset, [0; 2]);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    emit_raw(&ctx, Probe::TcpReceiveReset, [0; 2]);
    0
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let (Some(sk_off), Some(sport_off), Some(state_off), Some(proto_off)) = (
        config_offset(field::SOCK_SKADDR),
        config_offset(field::SOCK_SPORT),
        config_offset(field::SOCK_NEWSTATE),
        config_offset(field::SOCK_PROTOCOL),
    ) else {
        return 0;
    };
    let protocol: u16 = unsafe { ctx.read_at::<u16>(proto_off) }.unwrap_or(0);
    if protocol as u32 != config_u32(&CONFIG.ipproto_tcp) {
        return 0;
    }
    let sk: u64 = unsafe { ctx.read_at::<u64>(sk_off) }.unwrap_or(0);
    let sport: u16 = unsafe { ctx.read_at::<u16>(sport_off) }.unwrap_or(0);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let owner = if is_traced_tgid(tgid) {
        let newstate: i32 = unsafe { ctx.read_at::<i32>(state_off) }.unwrap_or(-1);
        if newstate as u32 == config_u32(&CONFIG.tcp_listen_state) {
            let _ = LISTEN_PORTS.insert(&sport, &tgid, 0);
        }
        tgid
    } else if let Some(owner) = unsafe { SOCKS.get(&sk) } {
        *owner
    } else if let Some(owner) = unsafe { LISTEN_PORTS.get(&sport) } {
        // A connection accepted on a traced listener: created in softirq.
        *owner
    } else {
        return 0;
    };
    let _ = SOCKS.insert(&sk, &owner, 0);
    let mut extra = [0u64; 2];
    extra[aux::TARGET_TGID] = owner as u64;
    emit_raw(&ctx, Probe::InetSockSetState, extra);
    0
}
