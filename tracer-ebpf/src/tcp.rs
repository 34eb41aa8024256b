//! tcp:tcp_send_reset and tcp:tcp_receive_reset on the whole machine (passive resets run
//! in softirq where current is not the owner: user space attributes them), and
//! sock:inet_sock_set_state for sockets of traced processes, which is what makes that
//! attribution possible.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{aux, field, usual_layout as usual, Probe, OTHER_RESET_NO_REASON, OTHER_RESET_RECEIVED};

use crate::{
    maps::{config_offset, config_u32, is_traced_tgid, record_at, usual_layout, CLIENT_PORTS, CONFIG, LISTEN_PORTS, OTHER_RESETS, SOCKS},
    record::{emit_raw, emit_sock},
};

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let in_sockaddr = config_u32(&CONFIG.send_rst_ports_in_sockaddr) != 0;
    if involves_traced(&ctx, field::SEND_RST_SKADDR, field::SEND_RST_SPORT, field::SEND_RST_DPORT, in_sockaddr) {
        emit_raw(&ctx, Probe::TcpSendReset, [0; 2]);
    } else {
        let reason = config_offset(field::SEND_RST_REASON)
            .and_then(|off| unsafe { ctx.read_at::<u32>(off) }.ok())
            .filter(|r| *r < OTHER_RESET_NO_REASON)
            .unwrap_or(OTHER_RESET_NO_REASON);
        count_other(reason);
    }
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let in_sockaddr = config_u32(&CONFIG.recv_rst_ports_in_sockaddr) != 0;
    if involves_traced(&ctx, field::RECV_RST_SKADDR, field::RECV_RST_SPORT, field::RECV_RST_DPORT, in_sockaddr) {
        emit_raw(&ctx, Probe::TcpReceiveReset, [0; 2]);
    } else {
        count_other(OTHER_RESET_RECEIVED);
    }
    0
}

/// Whether a reset can be a traced process's: its socket is one, or either port is one
/// a traced process listened on or connected from. A superset of what user space
/// attributes (ports are reused); everything else is only counted.
#[inline(always)]
fn involves_traced(ctx: &TracePointContext, sk_field: usize, sport_field: usize, dport_field: usize, in_sockaddr: bool) -> bool {
    if config_u32(&CONFIG.filter_resets) == 0 {
        return true;
    }
    let (Some(sk_off), Some(sport_off), Some(dport_off)) =
        (config_offset(sk_field), config_offset(sport_field), config_offset(dport_field))
    else {
        return true;
    };
    // On loopback the refusing side's reset runs in the connecting process's own
    // connect(), before its socket's port is known here.
    if is_traced_tgid((bpf_get_current_pid_tgid() >> 32) as u32) {
        return true;
    }
    let sk: u64 = unsafe { ctx.read_at::<u64>(sk_off) }.unwrap_or(0);
    if sk != 0 && unsafe { SOCKS.get(&sk) }.is_some() {
        return true;
    }
    let port = |off: usize| -> u16 {
        let raw: u16 = unsafe { ctx.read_at::<u16>(off) }.unwrap_or(0);
        if in_sockaddr { u16::from_be(raw) } else { raw }
    };
    let (sport, dport) = (port(sport_off), port(dport_off));
    unsafe {
        LISTEN_PORTS.get(&sport).is_some()
            || LISTEN_PORTS.get(&dport).is_some()
            || CLIENT_PORTS.get(&sport).is_some()
            || CLIENT_PORTS.get(&dport).is_some()
    }
}

#[inline(always)]
fn count_other(slot: u32) {
    if let Some(counter) = OTHER_RESETS.get_ptr_mut(slot) {
        unsafe { *counter += 1 };
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let Some((sk, sport, newstate, protocol)) = read_sock_state(&ctx) else {
        return 0;
    };
    if protocol as u32 != config_u32(&CONFIG.ipproto_tcp) {
        return 0;
    }
    // Only connect() and listen() run in the owner's own context. Every other transition
    // may run in softirq on whatever task was current (on loopback: often the peer), so
    // current says nothing about ownership there.
    let current = (bpf_get_current_pid_tgid() >> 32) as u32;
    let known = unsafe { SOCKS.get(&sk) }.copied();
    let owner = match known {
        Some(owner) => owner,
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
    // A connecting socket has no port yet at SYN_SENT: it is recorded at the first
    // transition that has one (ESTABLISHED, or CLOSE for a refused connect).
    // Both maps are LRU: an update there costs a node swap under a lock, a lookup does
    // not, so what is already recorded is not written again.
    if sport != 0
        && newstate != config_u32(&CONFIG.tcp_listen_state)
        && unsafe { CLIENT_PORTS.get(&sport) }.copied() != Some(owner)
    {
        let _ = CLIENT_PORTS.insert(&sport, &owner, 0);
    }
    if newstate == config_u32(&CONFIG.tcp_close_state) {
        // The address will be reused for someone else's socket.
        if known.is_some() {
            let _ = SOCKS.remove(&sk);
        }
    } else if known != Some(owner) {
        let _ = SOCKS.insert(&sk, &owner, 0);
    }
    let mut extra = [0u64; 2];
    extra[aux::TARGET_TGID] = owner as u64;
    if usual_layout(usual::SOCK) {
        emit_sock(&ctx, Probe::InetSockSetState, extra);
    } else {
        emit_raw(&ctx, Probe::InetSockSetState, extra);
    }
    0
}

/// (skaddr, sport, newstate, protocol): plain loads where the layout is the usual one.
#[inline(always)]
fn read_sock_state(ctx: &TracePointContext) -> Option<(u64, u16, u32, u16)> {
    if usual_layout(usual::SOCK) {
        return Some((
            record_at::<u64, { usual::SOCK_SKADDR }>(ctx),
            record_at::<u16, { usual::SOCK_SPORT }>(ctx),
            record_at::<i32, { usual::SOCK_NEWSTATE }>(ctx) as u32,
            record_at::<u16, { usual::SOCK_PROTOCOL }>(ctx),
        ));
    }
    let (Some(sk_off), Some(sport_off), Some(state_off), Some(proto_off)) = (
        config_offset(field::SOCK_SKADDR),
        config_offset(field::SOCK_SPORT),
        config_offset(field::SOCK_NEWSTATE),
        config_offset(field::SOCK_PROTOCOL),
    ) else {
        return None;
    };
    let protocol: u16 = unsafe { ctx.read_at::<u16>(proto_off) }.unwrap_or(0);
    let sk: u64 = unsafe { ctx.read_at::<u64>(sk_off) }.unwrap_or(0);
    let sport: u16 = unsafe { ctx.read_at::<u16>(sport_off) }.unwrap_or(0);
    let newstate = unsafe { ctx.read_at::<i32>(state_off) }.unwrap_or(-1) as u32;
    Some((sk, sport, newstate, protocol))
}
