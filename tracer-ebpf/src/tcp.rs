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
    let newstate = unsafe { ctx.read_at::<i32>(state_off) }.unwrap_or(-1) as u32;
    // Only connect() and listen() run in the owner's own context. Every other transition
    // may run in softirq on whatever task was current (on loopback: often the peer), so
    // current says nothing about ownership there.
    let current = (bpf_get_current_pid_tgid() >> 32) as u32;
    let owner = match unsafe { SOCKS.get(&sk) } {
        Some(owner) => *owner,
        None if newstate == config_u32(&CONFIG.tcp_syn_recv_state) => match unsafe { LISTEN_PORTS.get(&sport) } {
            // A connection accepted on a traced listener.
            Some(owner) => *owner,
            None => return 0,
        },
        None if (newstate == config_u32(&CONFIG.tcp_syn_sent_state)
            || newstate == config_u32(&CONFIG.tcp_listen_state))
            && is_traced_tgid(current) =>
        {
            current
        }
        None => return 0,
    };
    if newstate == config_u32(&CONFIG.tcp_listen_state) {
        let _ = LISTEN_PORTS.insert(&sport, &owner, 0);
    }
    if newstate == config_u32(&CONFIG.tcp_close_state) {
        // The address will be reused for someone else's socket.
        let _ = SOCKS.remove(&sk);
    } else {
        let _ = SOCKS.insert(&sk, &owner, 0);
    }
    let mut extra = [0u64; 2];
    extra[aux::TARGET_TGID] = owner as u64;
    emit_raw(&ctx, Probe::InetSockSetState, extra);
    0
}
