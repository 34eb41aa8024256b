//! Resets: which are attributed to a traced process, on which service port, why the
//! kernel sent them while the owner was alive (by reason), connections refused, and how
//! bursts of them are merged into one verdict.
//!
//! Unattributed resets (`attributed_by: null`) are skipped: their `pid` is whatever task
//! was current in the kernel, not an owner, so nothing can be said about the target
//! from them, and no verdict is produced for them at all.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    fmt::{count, duration, port, time_of_day},
    process::Death,
    trace::Trace,
    Cause, Confidence, Link, Verdict,
};
use crate::event::{Direction, EventKind};

/// Resets of one kind on one port further apart than this are separate bursts.
pub(crate) const BURST_GAP_NS: u64 = 30_000_000_000;
/// Resets this long after a death's exit still happened "as it died" (sockets are closed
/// after the exit tracepoint, by the last thread to drop the file table).
pub(crate) const AT_DEATH_NS: u64 = 1_000_000_000;
/// A chain keeps this many resets of each kind; the rest are counted in the evidence.
pub(crate) const RESET_LINKS: usize = 3;
/// Ports from here up are ephemeral (Linux default ip_local_port_range starts at 32768).
const EPHEMERAL_FROM: u16 = 32768;

/// An attributed `tcp_reset`.
#[derive(Debug, Clone)]
pub(crate) struct Reset<'a> {
    pub idx: usize,
    pub ts: u64,
    pub owner: u32,
    pub sent: bool,
    pub reason: Option<&'a str>,
    pub state: Option<&'a str>,
    pub saddr: &'a str,
    pub daddr: &'a str,
    pub by: &'a str,
    pub local_port: Option<u16>,
    pub remote_port: Option<u16>,
    /// The owner's socket on this local address went SYN_SENT -> CLOSE as the reset came:
    /// its connect failed. How a refusal shows on kernels whose received resets carry no
    /// state (before 6.10), where the refusing side's NO_SOCKET reset is not traced either.
    pub connect_failed: bool,
    /// The owner's socket on this connection went ESTABLISHED -> CLOSE as the reset went
    /// out: an abortive close (unread data, or SO_LINGER 0), on kernels whose sent resets
    /// carry no reason (before 6.10).
    pub aborted: bool,
}

impl Reset<'_> {
    /// The reason as a label: the kernel's name, `received`, or `no reason`.
    pub fn reason_label(&self) -> String {
        match (self.sent, self.reason) {
            (false, None) => "received".into(),
            (_, Some(r)) if !r.is_empty() => r.to_string(),
            _ => "no reason".into(),
        }
    }

    fn is_no_socket(&self) -> bool {
        self.reason == Some("NO_SOCKET")
    }

    /// Sent by the peer's kernel, to the owner's connection.
    pub fn peer_sent(&self) -> bool {
        self.sent && self.by == "peer_of_connection"
    }

    /// The other end of the owner's connection.
    pub fn peer(&self) -> &str {
        if self.peer_sent() {
            self.saddr
        } else {
            self.daddr
        }
    }
}

/// How far apart a reset and its socket's SYN_SENT -> CLOSE may be.
const CONNECT_FAILED_NS: u64 = 100_000_000;

/// Attributed resets in time order.
pub(crate) fn attributed<'a>(t: &Trace<'a>) -> Vec<Reset<'a>> {
    // (owner, local address) -> times its connect failed; (owner, local, remote) -> times
    // an established connection was closed abortively.
    let mut failed: HashMap<(u32, &str), Vec<u64>> = HashMap::new();
    let mut aborted: HashMap<(u32, &str, &str), Vec<u64>> = HashMap::new();
    for (_, e) in t.iter() {
        if let EventKind::TcpState { old_state, new_state, saddr, daddr, .. } = &e.kind {
            if old_state == "TCP_SYN_SENT" && new_state == "TCP_CLOSE" {
                failed.entry((e.pid, saddr.as_str())).or_default().push(e.ts_ns);
            }
            if old_state == "TCP_ESTABLISHED" && new_state == "TCP_CLOSE" {
                aborted.entry((e.pid, saddr.as_str(), daddr.as_str())).or_default().push(e.ts_ns);
            }
        }
    }
    let near = |times: Option<&Vec<u64>>, ts: u64| times.is_some_and(|v| v.iter().any(|&c| c.abs_diff(ts) <= CONNECT_FAILED_NS));
    t.iter()
        .filter_map(|(i, e)| {
            let EventKind::TcpReset { direction, state, reason, saddr, daddr, attributed_by: Some(by), .. } = &e.kind else {
                return None;
            };
            if by.is_empty() {
                return None;
            }
            Some(Reset {
                idx: i,
                ts: e.ts_ns,
                owner: e.pid,
                sent: *direction == Direction::Sent,
                reason: reason.as_deref(),
                state: state.as_deref(),
                saddr,
                daddr,
                by,
                local_port: port(saddr),
                remote_port: port(daddr),
                connect_failed: near(failed.get(&(e.pid, saddr.as_str())), e.ts_ns),
                aborted: near(aborted.get(&(e.pid, saddr.as_str(), daddr.as_str())), e.ts_ns),
            })
        })
        .collect()
}

/// One line for a reset.
pub(crate) fn reset_what(r: &Reset) -> String {
    let local = r.local_port.map(|p| format!(":{p}")).unwrap_or_else(|| r.saddr.to_string());
    let state = r.state.map(|s| format!(", {s}")).unwrap_or_default();
    let reason = match r.reason {
        Some(x) if !x.is_empty() => x.to_string(),
        _ => "no reason".into(),
    };
    if r.sent {
        format!("RST sent to {} from {local} ({reason}{state})", r.daddr)
    } else {
        format!("RST received from {} on {local} ({reason}{state})", r.daddr)
    }
}

fn reset_link(t: &Trace, r: &Reset) -> Link {
    t.link(r.idx, reset_what(r))
}

/// Listening sockets seen in `tcp_state`: (ts, pid, port, event index, opened).
pub(crate) struct Listeners {
    changes: Vec<(u64, u32, u16, usize, bool)>,
    /// Ports each owner's resets were attributed by (a port it listened on).
    attributed_ports: BTreeSet<(u32, u16)>,
    /// (owner, local port) of connections the owner opened itself (it was in SYN_SENT).
    client_ports: BTreeSet<(u32, u16)>,
}

impl Listeners {
    pub fn new(t: &Trace, resets: &[Reset]) -> Self {
        let mut changes = Vec::new();
        let mut client_ports = BTreeSet::new();
        for (i, e) in t.iter() {
            let EventKind::TcpState { old_state, new_state, saddr, .. } = &e.kind else { continue };
            let Some(p) = port(saddr).filter(|&p| p != 0) else { continue };
            if old_state == "TCP_SYN_SENT" {
                client_ports.insert((e.pid, p));
            }
            if new_state == "TCP_LISTEN" {
                changes.push((e.ts_ns, e.pid, p, i, true));
            } else if old_state == "TCP_LISTEN" {
                changes.push((e.ts_ns, e.pid, p, i, false));
            }
        }
        let attributed_ports = resets.iter().filter(|r| r.by == "listen_port").filter_map(|r| Some((r.owner, r.local_port?))).collect();
        Listeners { changes, attributed_ports, client_ports }
    }

    /// Whether `pid` listened on `port` at some point.
    pub fn listened(&self, pid: u32, port: u16) -> bool {
        self.attributed_ports.contains(&(pid, port)) || self.changes.iter().any(|c| c.1 == pid && c.2 == port && c.4)
    }

    /// The last listen on `port` before `ts` (by `pid` when given): (ts, pid, index).
    pub fn last_listen(&self, port: u16, ts: u64, pid: Option<u32>) -> Option<(u64, u32, usize)> {
        self.changes
            .iter()
            .filter(|c| c.4 && c.2 == port && c.0 <= ts && pid.is_none_or(|p| p == c.1))
            .max_by_key(|c| (c.0, c.3))
            .map(|c| (c.0, c.1, c.3))
    }

    /// The first listen on `port` by `pid` after `ts`: (ts, pid, index).
    pub fn first_listen_after(&self, pid: u32, port: u16, ts: u64) -> Option<(u64, u32, usize)> {
        self.changes
            .iter()
            .filter(|c| c.4 && c.2 == port && c.1 == pid && c.0 > ts)
            .min_by_key(|c| (c.0, c.3))
            .map(|c| (c.0, c.1, c.3))
    }

    /// The close of that listener between `after` and `before`: (ts, index).
    pub fn closed_between(&self, pid: u32, port: u16, after: u64, before: u64) -> Option<(u64, usize)> {
        self.changes
            .iter()
            .filter(|c| !c.4 && c.1 == pid && c.2 == port && c.0 >= after && c.0 <= before)
            .min_by_key(|c| (c.0, c.3))
            .map(|c| (c.0, c.3))
    }
}

/// The port a reset is about: the local port for connections to the owner's listeners
/// (and for connects refused on this machine), the remote port for the owner's own
/// client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ServicePort {
    pub port: u16,
    pub local: bool,
}

impl ServicePort {
    /// "on :8000" for a local service, "to :443" for a remote one.
    pub fn phrase(&self) -> String {
        if self.local {
            format!("on :{}", self.port)
        } else {
            format!("to :{}", self.port)
        }
    }
}

pub(crate) fn service_port(r: &Reset, l: &Listeners) -> Option<ServicePort> {
    let local = |port| ServicePort { port, local: true };
    let remote = |port| ServicePort { port, local: false };
    match (r.local_port, r.remote_port) {
        // The peer's kernel reset a connection to the owner's listening port.
        (Some(_), Some(q)) if r.by == "peer_of_connection" && l.listened(r.owner, q) => Some(local(q)),
        (Some(p), _) if matches!(r.by, "listen_port" | "peer_of_connection") => Some(local(p)),
        (Some(p), _) if l.listened(r.owner, p) => Some(local(p)),
        (Some(p), Some(q)) if l.client_ports.contains(&(r.owner, p)) => Some(remote(q)),
        (Some(p), Some(q)) if p >= EPHEMERAL_FROM && q < EPHEMERAL_FROM => Some(remote(q)),
        (Some(p), _) => Some(local(p)),
        (None, Some(q)) => Some(remote(q)),
        (None, None) => None,
    }
}

/// The cause of a reset while its owner was alive.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AliveCause {
    pub cause: Cause,
    pub confidence: Confidence,
}

fn alive(cause: Cause, confidence: Confidence) -> Option<AliveCause> {
    Some(AliveCause { cause, confidence })
}

/// The peer reset the connection: a received RST, or one the peer's own kernel sent to
/// one of the owner's connections (a client that closed before reading the whole answer,
/// TCP_ABORT_ON_DATA): the peer's act, never the owner's.
pub(crate) fn reset_by_peer(r: &Reset) -> Option<AliveCause> {
    if !r.sent || (r.peer_sent() && !r.is_no_socket()) {
        return alive(Cause::ResetByPeer, Confidence::High);
    }
    None
}

/// The owner closed a connection with unread data (or disconnected with data).
pub(crate) fn abort_on_close(r: &Reset) -> Option<AliveCause> {
    // Before 6.10: no reason, but the owner's own socket went ESTABLISHED -> CLOSE.
    if r.sent && r.reason.is_none() && r.aborted {
        return alive(Cause::AbortOnClose, Confidence::Medium);
    }
    match r.reason? {
        "TCP_ABORT_ON_CLOSE" | "TCP_DISCONNECT_WITH_DATA" => alive(Cause::AbortOnClose, Confidence::High),
        _ => None,
    }
}

/// The owner closed with SO_LINGER 0. `TCP_STATE` is also what a disconnect reports
/// (README: "a close with SO_LINGER 0 or a disconnect"), so it is Medium.
pub(crate) fn linger_zero(r: &Reset) -> Option<AliveCause> {
    match r.reason? {
        "TCP_ABORT_ON_LINGER" => alive(Cause::LingerZero, Confidence::High),
        "TCP_STATE" => alive(Cause::LingerZero, Confidence::Medium),
        _ => None,
    }
}

pub(crate) fn tcp_memory_pressure(r: &Reset) -> Option<AliveCause> {
    (r.reason? == "TCP_ABORT_ON_MEMORY").then_some(())?;
    alive(Cause::TcpMemoryPressure, Confidence::High)
}

pub(crate) fn keepalive_timeout(r: &Reset) -> Option<AliveCause> {
    (r.reason? == "TCP_KEEPALIVE_TIMEOUT").then_some(())?;
    alive(Cause::KeepaliveTimeout, Confidence::High)
}

/// Nobody listened: NO_SOCKET on a port the owner listened on (it closed its listener),
/// or sent to one of the owner's client connections (its connect was refused), or a reset
/// the owner received while its connect was in SYN_SENT (the other side of the same).
pub(crate) fn connection_refused(r: &Reset) -> Option<AliveCause> {
    if !r.sent && r.state == Some("TCP_SYN_SENT") {
        return alive(Cause::ConnectionRefused, Confidence::High);
    }
    // Before 6.10 a received reset has no state: the socket's own transitions tell.
    if !r.sent && r.state.is_none() && r.connect_failed {
        return alive(Cause::ConnectionRefused, Confidence::High);
    }
    if !r.is_no_socket() || !matches!(r.by, "listen_port" | "peer_of_connection") {
        return None;
    }
    alive(Cause::ConnectionRefused, Confidence::High)
}

/// No rule fits: say what is known, blame nothing.
pub(crate) fn unexplained(_r: &Reset) -> AliveCause {
    AliveCause { cause: Cause::Unexplained, confidence: Confidence::Low }
}

/// The rules for a reset while its owner was alive, in order.
pub(crate) fn alive_cause(r: &Reset) -> AliveCause {
    connection_refused(r)
        .or_else(|| reset_by_peer(r))
        .or_else(|| abort_on_close(r))
        .or_else(|| linger_zero(r))
        .or_else(|| tcp_memory_pressure(r))
        .or_else(|| keepalive_timeout(r))
        .unwrap_or_else(|| unexplained(r))
}

/// What the kernel's reason says happened, for unexplained resets.
fn reason_meaning(r: &Reset) -> String {
    match r.reason {
        None if !r.sent => "the peer sent it".into(),
        None => "the kernel reported no reason (before Linux 6.10)".into(),
        Some("NOT_SPECIFIED") => "the kernel gave no reason (NOT_SPECIFIED)".into(),
        Some("NO_SOCKET") => "no socket for this connection any more: it had been closed (NO_SOCKET)".into(),
        Some("TCP_TIMEWAIT_SOCKET") => "a segment arrived on a connection already closed (TCP_TIMEWAIT_SOCKET)".into(),
        Some("TCP_ABORT_ON_DATA") if r.peer_sent() => {
            "the peer closed its socket while the answer was still arriving, so its kernel reset the connection (TCP_ABORT_ON_DATA): a client that stopped reading early".into()
        }
        Some("TCP_ABORT_ON_DATA") => "data arrived after the owner had closed its side (TCP_ABORT_ON_DATA)".into(),
        Some(
            x @ ("TCP_INVALID_ACK_SEQUENCE"
            | "TCP_RFC7323_PAWS"
            | "TCP_TOO_OLD_ACK"
            | "TCP_ACK_UNSENT_DATA"
            | "TCP_FLAGS"
            | "TCP_OLD_ACK"
            | "INVALID_SYN"),
        ) => format!("the peer sent a segment the kernel rejected ({x})"),
        Some(x) if x.starts_with("MPTCP_") => format!("an MPTCP reset ({x})"),
        Some(x) => format!("reason {x}, which this tracer does not interpret"),
    }
}

fn peers_line(group: &[&Reset]) -> String {
    let mut peers: BTreeMap<&str, u64> = BTreeMap::new();
    for r in group {
        *peers.entry(r.daddr).or_insert(0) += 1;
    }
    let shown: Vec<&str> = peers.keys().take(5).copied().collect();
    let more = if peers.len() > 5 { format!(" and {} more", peers.len() - 5) } else { String::new() };
    format!("peers: {}{more}", shown.join(", "))
}

fn reasons_line(group: &[&Reset]) -> String {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for r in group {
        *by.entry(r.reason_label()).or_insert(0) += 1;
    }
    by.iter()
        .map(|(k, n)| match crate::names::reset_reason_meaning(k) {
            Some(m) => format!("{k} x{n}: {m}"),
            None => format!("{k} x{n}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "15 resets from A to B (1.2 s, the first 6 in the chain): NO_SOCKET x12: nothing
/// listened...; TCP_ABORT_ON_CLOSE x3: the owner closed...".
fn span_line(group: &[&Reset], shown: usize) -> String {
    let (first, last) = (group.first().map(|r| r.ts).unwrap_or(0), group.last().map(|r| r.ts).unwrap_or(0));
    let n = group.len() as u64;
    let shown = if shown < group.len() { format!(", the first {shown} in the chain") } else { String::new() };
    let reasons = reasons_line(group);
    if n == 1 {
        format!("1 reset at {}: {reasons}", time_of_day(first))
    } else {
        format!(
            "{n} resets from {} to {} ({}{shown}): {reasons}",
            time_of_day(first),
            time_of_day(last),
            duration(last.saturating_sub(first))
        )
    }
}

/// Distinct connections (4-tuples) among resets.
/// Distinct connections: the two ends' views of one connection (a refused connect seen
/// as the refusing side's reset and as the connecting side's received one) count once.
fn connections(group: &[&Reset]) -> u64 {
    group.iter().map(|r| if r.saddr <= r.daddr { (r.saddr, r.daddr) } else { (r.daddr, r.saddr) }).collect::<BTreeSet<_>>().len() as u64
}

/// Resets of one owner, cause, port and reason, split into bursts.
pub(crate) fn bursts<'r, 'a>(resets: &[&'r Reset<'a>], l: &Listeners) -> Vec<(AliveCause, Option<ServicePort>, Vec<&'r Reset<'a>>)> {
    // By port number: a refused connect is NO_SOCKET "on :9" here and a reset received
    // "to :9" by the client, one incident.
    type Key = (u32, Option<u16>, String);
    let mut open: HashMap<Key, usize> = HashMap::new();
    let mut out: Vec<(AliveCause, Option<ServicePort>, Vec<&'r Reset<'a>>)> = Vec::new();
    for &r in resets {
        let c = alive_cause(r);
        let sp = service_port(r, l);
        // Unexplained resets keep their reasons apart; an explained burst is one cause
        // whatever names the kernel gave its resets (a refused connect is seen as NO_SOCKET
        // sent and as a reset received in SYN_SENT).
        let reason = if c.cause == Cause::Unexplained { r.reason_label() } else { String::new() };
        let key: Key = (r.owner, sp.map(|s| s.port), format!("{:?}/{reason}", c.cause));
        match open.get(&key) {
            Some(&k) if out[k].2.last().is_some_and(|p| r.ts.saturating_sub(p.ts) <= BURST_GAP_NS) => out[k].2.push(r),
            _ => {
                open.insert(key, out.len());
                out.push((c, sp, vec![r]));
            }
        }
    }
    out
}

/// The verdict for one burst of resets while the owner was alive. `later` is the owner's
/// death after the burst, if any.
pub(crate) fn alive_verdict(
    t: &Trace,
    l: &Listeners,
    c: &AliveCause,
    sp: Option<ServicePort>,
    group: &[&Reset],
    later: Option<&Death>,
) -> Option<Verdict> {
    let first = *group.first()?;
    let owner = first.owner;
    let who = t.who(owner);
    let n = group.len() as u64;
    let conns = count(connections(group), "connection");
    let on = sp.map(|s| format!(" {}", s.phrase())).unwrap_or_default();
    let reason = first.reason_label();
    let mut chain: Vec<Link> = group.iter().take(RESET_LINKS).map(|r| reset_link(t, r)).collect();
    let mut evidence = vec![span_line(group, chain.len()), peers_line(group)];
    let mut confidence = c.confidence;
    let summary = match c.cause {
        Cause::AbortOnClose if reason == "TCP_DISCONNECT_WITH_DATA" => {
            format!("{who} disconnected {conns}{on} with unread data; the kernel reset them (TCP_DISCONNECT_WITH_DATA)")
        }
        Cause::AbortOnClose if first.reason.is_none() => {
            evidence.push(
                "this kernel reports no reset reason (before Linux 6.10): the abortive close is inferred from the socket going from ESTABLISHED straight to CLOSE as the reset went out; unread data or SO_LINGER 0 both do that".into(),
            );
            format!("{who} closed {conns}{on} abortively (with unread data, or SO_LINGER 0); the kernel reset them")
        }
        Cause::AbortOnClose => format!("{who} closed {conns}{on} with unread data; the kernel reset them (TCP_ABORT_ON_CLOSE)"),
        Cause::LingerZero if reason == "TCP_STATE" => {
            format!("{who} reset {conns}{on} by closing with SO_LINGER 0 or disconnecting (TCP_STATE)")
        }
        Cause::LingerZero => format!("{who} closed {conns}{on} with SO_LINGER 0 (TCP_ABORT_ON_LINGER)"),
        Cause::TcpMemoryPressure => {
            format!("the kernel aborted {conns} of {who}{on} under TCP memory pressure (TCP_ABORT_ON_MEMORY)")
        }
        Cause::KeepaliveTimeout => {
            format!("the kernel reset {conns} of {who}{on} after keepalive probes went unanswered (TCP_KEEPALIVE_TIMEOUT)")
        }
        Cause::ResetByPeer => {
            let peer = if connections(group) == 1 { first.peer().to_string() } else { "the peers".to_string() };
            let rsts = if first.peer_sent() {
                let reason = first.reason.map(|r| format!(", {r}")).unwrap_or_default();
                evidence.push(format!("reason: {}", reason_meaning(first)));
                format!("{} sent by the peer's kernel{reason}", count(n, "RST"))
            } else if n == 1 {
                "1 RST received".to_string()
            } else {
                format!("{n} RSTs received")
            };
            let fate = first.remote_port.and_then(|p| peer_fate(t, owner, p, first.ts)).map(|f| format!("; {f}")).unwrap_or_default();
            format!("{peer} reset {conns} of {who}{on} ({rsts}){fate}")
        }
        Cause::ConnectionRefused => refused_summary(t, l, group, sp, &mut chain, &mut evidence, &mut confidence),
        _ => {
            let dir = if first.sent { "sent" } else { "received" };
            let state = first.state.map(|s| format!(", state {s}")).unwrap_or_default();
            evidence.push(format!("reason: {}", reason_meaning(first)));
            evidence.extend(t.lost_note());
            format!(
                "{} {dir}{on} for {who} {} unexplained: {}{state}, while {} was alive",
                count(n, "reset"),
                if n == 1 { "is" } else { "are" },
                reason_meaning(first),
                t.label(owner)
            )
        }
    };
    evidence.push(match later {
        Some(d) => format!("{} was alive at the resets; it ended later, at {}", t.label(owner), time_of_day(d.end_ns)),
        None => format!("{} was alive at the resets (no death of it in the trace)", t.label(owner)),
    });
    chain.sort_by_key(super::trace::link_key);
    Some(Verdict {
        cause: c.cause,
        summary,
        pid: Some(owner),
        comm: t.comm(owner).map(str::to_string),
        port: sp.map(|s| s.port),
        resets: n,
        first_ns: first.ts,
        last_ns: group.last().map(|r| r.ts).unwrap_or(first.ts),
        chain,
        evidence,
        confidence,
        action: None,
    })
}

/// The owner of the server a traced client reached on `port`, from the `peer` event of
/// its connect, and its fate at `ts`: "127.0.0.1:8000 belonged to pid 31337 (python3),
/// OOM-killed 4 ms before".
fn peer_fate(t: &Trace, client: u32, port: u16, ts: u64) -> Option<String> {
    let (remote, owner, comm) = t.ev.iter().filter(|e| e.pid == client && e.ts_ns <= ts).rev().find_map(|e| match &e.kind {
        EventKind::Peer { remote, owner_pid, owner_comm } if remote.rsplit(':').next() == Some(&port.to_string()) => {
            Some((remote.clone(), *owner_pid, owner_comm.clone()))
        }
        _ => None,
    })?;
    let before = |at: u64| super::fmt::duration(ts.saturating_sub(at));
    let near = || t.ev.iter().filter(|e| e.ts_ns <= ts + DEATH_NEAR_NS);
    // The OOM killer's own SIGKILL comes just before its mark: the kill names the cause.
    let mut oom = near().filter_map(|e| match &e.kind {
        EventKind::OomKill { victim_pid: Some(v), .. } if *v == owner => Some(format!("OOM-killed {} before", before(e.ts_ns))),
        _ => None,
    });
    let mut other = near().filter_map(|e| match &e.kind {
        EventKind::Signal { target_pid, peer: true, signal_name, sender_parents, .. } if *target_pid == owner => {
            let from = if e.pid == 0 { "the kernel".to_string() } else { format!("{}[{}]", e.comm, e.pid) };
            let by = sender_parents.as_deref().map(|p| format!(" ({from} was started by {p})")).unwrap_or_default();
            Some(format!("sent {signal_name} by {from} {} before{by}", before(e.ts_ns)))
        }
        EventKind::Exit { group_dead: true, signal_name: Some(sig), .. } if e.pid == owner => {
            Some(format!("dead of {sig} {} before", before(e.ts_ns)))
        }
        EventKind::Exit { group_dead: true, exit_code: Some(c), .. } if e.pid == owner => {
            Some(format!("exited with code {c} {} before", before(e.ts_ns)))
        }
        _ => None,
    });
    // The latest word on it before the reset: its last fatal signal, its OOM kill.
    let fate = oom.next_back().or_else(|| other.next_back());
    // An untraced server's other ends are not in the trace: say only whose it was.
    Some(match fate {
        Some(f) => format!("{remote} belonged to pid {owner} ({comm}), {f}"),
        None => format!("{remote} belonged to pid {owner} ({comm})"),
    })
}

/// A death this close after a reset is still its cause (probes' clocks differ a little).
const DEATH_NEAR_NS: u64 = 5_000_000;

/// "12 connects to :8000 were refused: pid N (x) had listened there until HH:MM:SS".
fn refused_summary(
    t: &Trace,
    l: &Listeners,
    group: &[&Reset],
    sp: Option<ServicePort>,
    chain: &mut Vec<Link>,
    evidence: &mut Vec<String>,
    confidence: &mut Confidence,
) -> String {
    let Some(&first) = group.first() else { return String::new() };
    let owner = first.owner;
    let who = t.who(owner);
    // Connects, not resets: one refused connect can show as two (both ends).
    let n = connections(group);
    let p = sp.map(|s| s.port).or(first.local_port).unwrap_or(0);
    // The owner's own connect, refused: the refusing side's reset (peer_of_connection) or
    // the one the owner's socket received.
    let received = !first.sent && first.by == "socket";
    if first.by == "peer_of_connection" || received {
        let p = if received { first.remote_port.unwrap_or(p) } else { p };
        if group.iter().any(|r| r.connect_failed && r.state.is_none() && !r.sent) {
            evidence.push(
                "this kernel reports no reset reason or state (before Linux 6.10): the refusal is inferred from the connecting socket going from SYN_SENT straight to CLOSE".into(),
            );
        }
        let before = l.last_listen(p, first.ts, None);
        let tail = match before {
            Some((ts, pid, idx)) => {
                chain.push(t.link(idx, format!("{} listened on :{p}", t.label(pid))));
                match l.closed_between(pid, p, ts, first.ts) {
                    Some((cts, cidx)) => {
                        chain.push(t.link(cidx, format!("{} closed its listener on :{p}", t.label(pid))));
                        format!("{} had listened there until {}", t.who(pid), time_of_day(cts))
                    }
                    None => format!("{} had listened there since {}", t.who(pid), time_of_day(ts)),
                }
            }
            None => "no traced process listened there in the trace".into(),
        };
        let verb = if n == 1 { "was" } else { "were" };
        let fate = peer_fate(t, owner, p, first.ts).map(|f| format!("; {f}")).unwrap_or_default();
        return format!("{} from {who} to :{p} {verb} refused: nothing listened on :{p} ({tail}){fate}", count(n, "connect"));
    }
    // listen_port: the owner listened here, is alive, and no longer does, or not yet:
    // a client that tries before the service is up is refused too.
    let opened = l.last_listen(p, first.ts, Some(owner));
    if opened.is_none() {
        if let Some((ts, _, idx)) = l.first_listen_after(owner, p, first.ts) {
            chain.push(t.link(idx, format!("{} started listening on :{p}", t.label(owner))));
            return format!(
                "{} to :{p} {} refused before {who} listened there (it started listening at {})",
                count(n, "connect"),
                if n == 1 { "was" } else { "were" },
                time_of_day(ts)
            );
        }
    }
    let fate = peer_fate(t, owner, p, first.ts).map(|f| format!("; {f}")).unwrap_or_default();
    let closed = opened.and_then(|(ts, _, _)| l.closed_between(owner, p, ts, first.ts));
    if let Some((_, _, idx)) = opened {
        chain.push(t.link(idx, format!("{} listened on :{p}", t.label(owner))));
    }
    match closed {
        Some((cts, cidx)) => {
            chain.push(t.link(cidx, format!("{} closed its listener on :{p}", t.label(owner))));
            format!(
                "{} to :{p} {} refused: {who} closed its listener at {} while it was still running{fate}",
                count(n, "connect"),
                if n == 1 { "was" } else { "were" },
                time_of_day(cts)
            )
        }
        None => {
            *confidence = Confidence::Medium;
            evidence.push(format!("the close of {}'s listener on :{p} is not in the trace", t.label(owner)));
            format!(
                "{} to :{p} {} refused: {who} had listened there but no longer did, while still running{fate}",
                count(n, "connect"),
                if n == 1 { "was" } else { "were" }
            )
        }
    }
}

/// The verdict for a death and the resets that followed it.
pub(crate) fn death_verdict(t: &Trace, l: &Listeners, d: &Death, resets: &[&Reset]) -> Verdict {
    let mut chain = d.chain.clone();
    let mut evidence = d.evidence.clone();
    if resets.is_empty() {
        return Verdict {
            cause: d.cause,
            summary: d.headline.clone(),
            pid: Some(d.pid),
            comm: t.comm(d.pid).map(str::to_string),
            port: None,
            resets: 0,
            first_ns: d.start_ns,
            last_ns: d.end_ns,
            chain,
            evidence,
            confidence: d.confidence,
            action: None,
        };
    }
    let refused: Vec<&Reset> = resets.iter().copied().filter(|r| r.is_no_socket() && r.state.is_none()).collect();
    let at_death: Vec<&Reset> = resets
        .iter()
        .copied()
        .filter(|r| !(r.is_no_socket() && r.state.is_none()) && r.ts <= d.end_ns.saturating_add(AT_DEATH_NS))
        .collect();
    let later: Vec<&Reset> = resets
        .iter()
        .copied()
        .filter(|r| !(r.is_no_socket() && r.state.is_none()) && r.ts > d.end_ns.saturating_add(AT_DEATH_NS))
        .collect();
    let ports = |g: &[&Reset]| g.iter().filter_map(|r| service_port(r, l)).collect::<BTreeSet<_>>();
    let ports_phrase = |set: &BTreeSet<ServicePort>| match set.len() {
        0 => String::new(),
        1 => set.iter().next().map(|s| format!(" {}", s.phrase())).unwrap_or_default(),
        _ => format!(" on {}", set.iter().map(|s| format!(":{}", s.port)).collect::<Vec<_>>().join(", ")),
    };
    let mut parts = Vec::new();
    let death_ports = ports(&at_death);
    if !at_death.is_empty() {
        let c = connections(&at_death);
        let verb = if c == 1 { "was" } else { "were" };
        parts.push(format!("{}{} {verb} reset as it died", count(c, "connection"), ports_phrase(&death_ports)));
    }
    if !refused.is_empty() {
        let rp = ports(&refused);
        let n = connections(&refused);
        let verb = if n == 1 { "was" } else { "were" };
        let to = |set: &BTreeSet<ServicePort>| ports_phrase(set).replacen(" on ", " to ", 1);
        if at_death.is_empty() {
            parts.push(format!("{}{} {verb} refused after it died", count(n, "connect"), to(&rp)));
        } else if rp == death_ports {
            parts.push(format!("{} {verb} refused", count(n, "later connect")));
        } else {
            parts.push(format!("{}{} {verb} refused", count(n, "later connect"), to(&rp)));
        }
        // The listener whose port now refuses: the owner's, before it died.
        for sp in rp.iter().filter(|s| s.local) {
            if let Some((_, pid, idx)) = l.last_listen(sp.port, d.end_ns, Some(d.pid)) {
                chain.push(t.link(idx, format!("{} listened on :{}", t.label(pid), sp.port)));
            }
        }
    }
    if !later.is_empty() {
        parts.push(format!("{} followed ({})", count(later.len() as u64, "later reset"), reasons_line(&later)));
    }
    let tail = match parts.len() {
        0 => String::new(),
        1 => parts[0].clone(),
        _ => {
            let (last, rest) = parts.split_last().map(|(a, b)| (a.clone(), b.join(", "))).unwrap_or_default();
            format!("{rest} and {last}")
        }
    };
    let mut shown = 0;
    for g in [&at_death, &refused, &later] {
        for r in g.iter().take(RESET_LINKS) {
            chain.push(reset_link(t, r));
            shown += 1;
        }
    }
    chain.sort_by_key(super::trace::link_key);
    let all_ports = ports(resets);
    // In trace order already.
    let sorted: Vec<&Reset> = resets.to_vec();
    evidence.push(span_line(&sorted, shown));
    if !refused.is_empty() {
        evidence.push(format!("connects refused after {} died: {}", t.label(d.pid), refused.len()));
    }
    evidence.push(peers_line(&sorted));
    let (first_ns, last_ns) = (sorted.first().map(|r| r.ts).unwrap_or(d.end_ns), sorted.last().map(|r| r.ts).unwrap_or(d.end_ns));
    Verdict {
        cause: d.cause,
        summary: if tail.is_empty() { d.headline.clone() } else { format!("{}; {tail}", d.headline) },
        pid: Some(d.pid),
        comm: t.comm(d.pid).map(str::to_string),
        port: (all_ports.len() == 1).then(|| all_ports.iter().next().map(|s| s.port)).flatten(),
        resets: resets.len() as u64,
        first_ns,
        last_ns,
        chain,
        evidence,
        confidence: d.confidence,
        action: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Direction;
    use crate::diagnose::{
        diagnose,
        testkit::{Tb, PID},
    };

    fn one(b: &Tb) -> Verdict {
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        v.into_iter().next().expect("one verdict")
    }

    #[test]
    fn a_client_is_told_whose_the_address_was_and_what_became_of_it() {
        let mut b = Tb::new(PID);
        b.push(100, PID, "python3", EventKind::Peer { remote: "127.0.0.1:8000".into(), owner_pid: 31337, owner_comm: "python3".into() });
        b.oom_kill(2_000, 31337, "python3", 31337, "python3", 100 * 1024, 1024);
        b.reset(2_004, PID, Direction::Received, None, Some("TCP_ESTABLISHED"), "127.0.0.1:40000", "127.0.0.1:8000", Some("socket"));
        let v = crate::diagnose::diagnose(&b.ev);
        let s = &v.iter().find(|v| v.pid == Some(PID) && v.cause == Cause::ResetByPeer).expect("a client verdict").summary;
        assert!(s.ends_with("; 127.0.0.1:8000 belonged to pid 31337 (python3), OOM-killed 4 ms before"), "{s}");
    }

    #[test]
    fn a_client_is_told_who_killed_its_server_and_the_server_gets_no_verdict_of_its_own() {
        let mut b = Tb::new(PID);
        b.push(100, PID, "python3", EventKind::Peer { remote: "127.0.0.1:8000".into(), owner_pid: 31337, owner_comm: "python3".into() });
        let i = b.signal(2_000, 900, "bash", 31337, 9, "SI_USER");
        if let EventKind::Signal { peer, sender_parents, .. } = &mut b.ev[i].kind {
            *peer = true;
            *sender_parents = Some("sshd[640] < systemd[1]".into());
        }
        b.reset(2_003, PID, Direction::Received, None, Some("TCP_ESTABLISHED"), "127.0.0.1:40000", "127.0.0.1:8000", Some("socket"));
        let v = crate::diagnose::diagnose(&b.ev);
        let s = &v.iter().find(|v| v.pid == Some(PID) && v.cause == Cause::ResetByPeer).expect("a client verdict").summary;
        assert!(
            s.ends_with("; 127.0.0.1:8000 belonged to pid 31337 (python3), sent SIGKILL by bash[900] 3 ms before (bash[900] was started by sshd[640] < systemd[1])"),
            "{s}"
        );
        assert!(!v.iter().any(|v| v.pid == Some(31337)), "the server is not traced: {v:#?}");
    }

    #[test]
    fn abort_on_close_while_alive() {
        let mut b = Tb::new(PID);
        b.listen(10, PID, 8000);
        b.rst(1_000, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        b.rst(1_001, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51236", "socket");
        let v = one(&b);
        assert_eq!(v.cause, Cause::AbortOnClose);
        assert_eq!((v.pid, v.port, v.resets), (Some(PID), Some(8000), 2));
        assert_eq!(v.confidence, Confidence::High);
        assert_eq!(
            v.summary,
            "pid 4711 (workload) closed 2 connections on :8000 with unread data; the kernel reset them (TCP_ABORT_ON_CLOSE)"
        );
        assert_eq!(v.chain[0].what, "RST sent to 127.0.0.1:51234 from :8000 (TCP_ABORT_ON_CLOSE, TCP_ESTABLISHED)");
    }

    #[test]
    fn linger_zero_by_either_reason_name() {
        for (reason, conf) in [("TCP_ABORT_ON_LINGER", Confidence::High), ("TCP_STATE", Confidence::Medium)] {
            let mut b = Tb::new(PID);
            b.rst(1_000, PID, reason, "127.0.0.1:8000", "127.0.0.1:51234", "socket");
            let v = one(&b);
            assert_eq!(v.cause, Cause::LingerZero, "{reason}");
            assert_eq!(v.confidence, conf, "{reason}");
            assert!(v.summary.contains("SO_LINGER 0"), "{}", v.summary);
        }
    }

    #[test]
    fn memory_pressure_and_keepalive() {
        let mut b = Tb::new(PID);
        b.rst(1_000, PID, "TCP_ABORT_ON_MEMORY", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        b.rst(2_000, PID, "TCP_KEEPALIVE_TIMEOUT", "127.0.0.1:8000", "127.0.0.1:51235", "socket");
        let v = diagnose(&b.ev);
        assert_eq!(v.iter().map(|v| v.cause).collect::<Vec<_>>(), [Cause::TcpMemoryPressure, Cause::KeepaliveTimeout]);
        assert!(v[0].summary.contains("TCP memory pressure"), "{}", v[0].summary);
        assert!(v[1].summary.contains("keepalive"), "{}", v[1].summary);
    }

    #[test]
    fn received_reset_is_the_peers_and_groups_by_the_remote_service_port() {
        let mut b = Tb::new(PID);
        for (i, local) in ["10.0.0.1:40001", "10.0.0.1:40002"].iter().enumerate() {
            b.reset(1_000 + i as u64, PID, Direction::Received, None, Some("TCP_ESTABLISHED"), local, "10.0.0.2:443", Some("socket"));
        }
        let v = one(&b);
        assert_eq!(v.cause, Cause::ResetByPeer);
        assert_eq!((v.port, v.resets), (Some(443), 2));
        assert_eq!(v.summary, "the peers reset 2 connections of pid 4711 (workload) to :443 (2 RSTs received)");
    }

    #[test]
    fn refused_on_a_closed_listener_while_alive() {
        let mut b = Tb::new(PID);
        b.listen(10, PID, 8000);
        b.unlisten(500, PID, 8000);
        for i in 0..4 {
            b.rst(1_000 + i, PID, "NO_SOCKET", "127.0.0.1:8000", &format!("127.0.0.1:{}", 50000 + i), "listen_port");
        }
        let v = one(&b);
        assert_eq!(v.cause, Cause::ConnectionRefused);
        assert_eq!((v.port, v.resets, v.confidence), (Some(8000), 4, Confidence::High));
        assert!(
            v.summary.starts_with("4 connects to :8000 were refused: pid 4711 (workload) closed its listener at 22:13:20.500"),
            "{}",
            v.summary
        );
        let kinds: Vec<&str> = v.chain.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["tcp_state", "tcp_state", "tcp_reset", "tcp_reset", "tcp_reset"]);
    }

    #[test]
    fn our_client_refused_by_a_port_nobody_listens_on() {
        let mut b = Tb::new(PID);
        b.rst(1_000, PID, "NO_SOCKET", "127.0.0.1:9", "127.0.0.1:40000", "peer_of_connection");
        let v = one(&b);
        assert_eq!(v.cause, Cause::ConnectionRefused);
        assert_eq!(v.port, Some(9));
        assert_eq!(
            v.summary,
            "1 connect from pid 4711 (workload) to :9 was refused: nothing listened on :9 (no traced process listened there in the trace)"
        );
    }

    #[test]
    fn a_refused_connect_seen_from_both_sides_is_one_verdict() {
        let mut b = Tb::new(PID);
        b.tcp_state(990, PID, "TCP_CLOSE", "TCP_SYN_SENT", "127.0.0.1:0", "127.0.0.1:9");
        b.rst(1_000, PID, "NO_SOCKET", "127.0.0.1:9", "127.0.0.1:40000", "peer_of_connection");
        b.reset(1_000, PID, Direction::Received, None, Some("TCP_SYN_SENT"), "127.0.0.1:40000", "127.0.0.1:9", Some("socket"));
        let v = one(&b);
        assert_eq!((v.cause, v.port, v.resets), (Cause::ConnectionRefused, Some(9), 2));
        // The kernel matrix found "2 connects ... were refused" for this single connect.
        assert!(v.summary.starts_with("1 connect from pid 4711 (workload) to :9 was refused"), "{}", v.summary);
    }

    /// Issue 13: before 6.10 a sent reset has no reason; an abortive close shows as the
    /// owner's socket going from ESTABLISHED straight to CLOSE as the reset goes out.
    #[test]
    fn an_abortive_close_on_a_kernel_without_reset_reasons_is_inferred_from_the_socket() {
        let mut b = Tb::new(PID);
        b.tcp_state(990, PID, "TCP_ESTABLISHED", "TCP_CLOSE", "127.0.0.1:37041", "127.0.0.1:50000");
        b.reset(990, PID, Direction::Sent, None, Some("TCP_CLOSE"), "127.0.0.1:37041", "127.0.0.1:50000", Some("socket"));
        let v = one(&b);
        assert_eq!((v.cause, v.confidence), (Cause::AbortOnClose, Confidence::Medium), "{v:#?}");
        assert!(v.evidence.iter().any(|e| e.contains("ESTABLISHED straight to CLOSE")), "{:?}", v.evidence);
        // A reason-less reset without that transition stays unexplained.
        let mut b = Tb::new(PID);
        b.reset(990, PID, Direction::Sent, None, Some("TCP_CLOSE"), "127.0.0.1:37041", "127.0.0.1:50000", Some("socket"));
        assert_eq!(one(&b).cause, Cause::Unexplained);
    }

    /// Issue 13: 5.10 and 6.1 fire no tcp_send_reset for a reset without a socket, and the
    /// received reset has no reason and no state.
    #[test]
    fn a_refused_connect_on_a_kernel_without_reset_reasons_is_inferred_from_the_socket() {
        let mut b = Tb::new(PID);
        b.tcp_state(990, PID, "TCP_CLOSE", "TCP_SYN_SENT", "127.0.0.1:0", "127.0.0.1:9");
        b.reset(1_000, PID, Direction::Received, None, None, "127.0.0.1:40000", "127.0.0.1:9", Some("socket"));
        b.tcp_state(1_000, PID, "TCP_SYN_SENT", "TCP_CLOSE", "127.0.0.1:40000", "127.0.0.1:9");
        let v = one(&b);
        assert_eq!((v.cause, v.port, v.resets, v.confidence), (Cause::ConnectionRefused, Some(9), 1, Confidence::High));
        assert!(v.summary.contains("to :9 was refused: nothing listened on :9"), "{}", v.summary);
        assert!(v.evidence.iter().any(|e| e.contains("inferred from the connecting socket")), "{:?}", v.evidence);
        // A reset received on an established connection stays the peer's reset.
        let mut b = Tb::new(PID);
        b.tcp_state(990, PID, "TCP_SYN_SENT", "TCP_ESTABLISHED", "127.0.0.1:40000", "127.0.0.1:9");
        b.reset(1_000, PID, Direction::Received, None, None, "127.0.0.1:40000", "127.0.0.1:9", Some("socket"));
        b.tcp_state(1_000, PID, "TCP_ESTABLISHED", "TCP_CLOSE", "127.0.0.1:40000", "127.0.0.1:9");
        assert_eq!(one(&b).cause, Cause::ResetByPeer);
    }

    /// Issue 14: clients that close before the body arrives make their own kernels send
    /// TCP_ABORT_ON_DATA to the server's connections: that is the clients' act, one verdict.
    #[test]
    fn clients_that_close_early_reset_the_server_once_grouped_never_as_the_server() {
        let mut b = Tb::new(PID);
        b.listen(10, PID, 8000);
        for i in 0..4 {
            b.rst(1_000 + i * 10, PID, "TCP_ABORT_ON_DATA", &format!("127.0.0.1:{}", 50_000 + i), "127.0.0.1:8000", "peer_of_connection");
        }
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!((v[0].cause, v[0].port, v[0].resets), (Cause::ResetByPeer, Some(8000), 4));
        assert!(v[0].summary.starts_with("the peers reset 4 connections of pid 4711 (workload)"), "{}", v[0].summary);
        assert!(v[0].summary.contains("4 RSTs sent by the peer's kernel, TCP_ABORT_ON_DATA"), "{}", v[0].summary);
        assert!(v[0].evidence.iter().any(|e| e.contains("stopped reading early")), "{:?}", v[0].evidence);
    }

    #[test]
    fn a_linger_close_by_a_client_is_about_the_port_it_connected_to() {
        let mut b = Tb::new(PID);
        b.tcp_state(990, PID, "TCP_SYN_SENT", "TCP_ESTABLISHED", "127.0.0.1:40000", "127.0.0.1:45000");
        b.rst(1_000, PID, "TCP_STATE", "127.0.0.1:40000", "127.0.0.1:45000", "socket");
        let v = one(&b);
        assert_eq!((v.cause, v.port), (Cause::LingerZero, Some(45000)));
    }

    #[test]
    fn a_reset_just_before_a_clean_exit_is_the_process_own_close() {
        let mut b = Tb::new(PID);
        b.listen(10, PID, 8000);
        b.rst(1_000, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        b.exit_code(1_001, PID, 0);
        let v = one(&b);
        assert_eq!(v.cause, Cause::AbortOnClose, "{}", v.summary);
    }

    #[test]
    fn a_connect_before_the_service_listened_is_refused_not_yet() {
        let mut b = Tb::new(PID);
        b.rst(1_000, PID, "NO_SOCKET", "127.0.0.1:8000", "127.0.0.1:51234", "listen_port");
        b.listen(1_030, PID, 8000);
        let v = one(&b);
        assert_eq!(v.cause, Cause::ConnectionRefused);
        assert!(v.summary.contains("refused before pid 4711 (workload) listened there"), "{}", v.summary);
    }

    #[test]
    fn not_specified_while_alive_is_unexplained_not_a_made_up_cause() {
        let mut b = Tb::new(PID);
        b.listen(10, PID, 8000);
        b.rst(1_000, PID, "NOT_SPECIFIED", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        let v = one(&b);
        assert_eq!(v.cause, Cause::Unexplained);
        assert_eq!(v.confidence, Confidence::Low);
        assert!(v.summary.contains("NOT_SPECIFIED"), "{}", v.summary);
        assert!(v.summary.contains("state TCP_ESTABLISHED"), "{}", v.summary);
        assert!(v.summary.contains("was alive"), "{}", v.summary);
    }

    #[test]
    fn unknown_reason_names_and_null_reasons_are_unexplained() {
        let mut b = Tb::new(PID);
        b.rst(1_000, PID, "TCP_SOMETHING_NEW", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        b.reset(40_000, PID, Direction::Sent, None, Some("TCP_ESTABLISHED"), "127.0.0.1:8000", "127.0.0.1:51235", Some("socket"));
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 2, "{v:#?}");
        assert!(v.iter().all(|v| v.cause == Cause::Unexplained));
        assert!(v[0].summary.contains("TCP_SOMETHING_NEW"), "{}", v[0].summary);
        assert!(v[1].summary.contains("no reason"), "{}", v[1].summary);
    }

    #[test]
    fn a_burst_is_one_verdict_and_a_later_burst_another() {
        let mut b = Tb::new(PID);
        b.listen(10, PID, 8000);
        for i in 0..50 {
            b.rst(1_000 + i * 10, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", &format!("127.0.0.1:{}", 50000 + i), "socket");
        }
        b.rst(100_000, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:60000", "socket");
        b.rst(100_010, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:9000", "127.0.0.1:60001", "socket");
        let v = diagnose(&b.ev);
        assert_eq!(v.iter().map(|v| (v.resets, v.port)).collect::<Vec<_>>(), [(50, Some(8000)), (1, Some(8000)), (1, Some(9000))]);
        assert_eq!((v[0].first_ns, v[0].last_ns), (b.ts(1_000), b.ts(1_490)));
        assert_eq!(v[0].chain.len(), RESET_LINKS);
        assert!(v[0].evidence[0].contains("50 resets") && v[0].evidence[0].contains("(490 ms, the first 3 in the chain): TCP_ABORT_ON_CLOSE x50: the owner closed the socket (or died) with data it had not read"), "{:?}", v[0].evidence);
    }

    #[test]
    fn unattributed_resets_get_no_verdict() {
        let mut b = Tb::new(PID);
        b.listen(10, PID, 8000);
        // Another service on the machine: the capture could not tie these to the target.
        for i in 0..5 {
            b.reset(1_000 + i, 333, Direction::Sent, Some("NO_SOCKET"), None, "127.0.0.1:5432", "127.0.0.1:40000", None);
        }
        b.reset(2_000, 0, Direction::Received, None, None, "10.0.0.1:40000", "10.0.0.2:443", Some(""));
        assert!(diagnose(&b.ev).is_empty());
    }

    #[test]
    fn service_port_of_a_client_connection_is_the_remote_one() {
        let b = Tb::new(PID);
        let t = Trace::new(&b.ev);
        let l = Listeners::new(&t, &[]);
        let r = Reset {
            idx: 0,
            ts: 0,
            owner: PID,
            sent: false,
            reason: None,
            state: None,
            saddr: "10.0.0.1:45000",
            daddr: "10.0.0.2:8443",
            by: "socket",
            local_port: Some(45000),
            remote_port: Some(8443),
            connect_failed: false,
            aborted: false,
        };
        assert_eq!(service_port(&r, &l), Some(ServicePort { port: 8443, local: false }));
        let r = Reset { saddr: "10.0.0.1:8000", local_port: Some(8000), remote_port: Some(45000), ..r };
        assert_eq!(service_port(&r, &l), Some(ServicePort { port: 8000, local: true }));
    }
}
