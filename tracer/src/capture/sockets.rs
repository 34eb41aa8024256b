//! Which sockets, connections and listening ports belong to traced processes, so that a
//! reset (a global event, often fired in softirq on an unrelated task) can be attributed
//! to its owner, also after the owner died.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

#[derive(Debug, Clone, Copy)]
struct OwnedSocket {
    owner: u32,
    since: u64,
    closed: Option<u64>,
    /// (local, remote) once both ports are known.
    tuple: Option<(SocketAddr, SocketAddr)>,
    /// The local port once bound (a listener has no remote).
    local_port: Option<u16>,
}

#[derive(Default, Debug)]
pub struct SocketOwners {
    /// skaddr -> its owner: a freed socket's address is reused by the kernel, so
    /// ownership only counts from first seen, until shortly after the close, and for the
    /// connection the socket had.
    by_socket: HashMap<u64, OwnedSocket>,
    by_connection: HashMap<(SocketAddr, SocketAddr), OwnedConnection>,
    listen_ports: HashMap<u16, u32>,
    /// Closed connections, oldest close first: past [`CLOSED_CONNECTIONS_KEPT`] the oldest
    /// are forgotten.
    closed_connections: VecDeque<((SocketAddr, SocketAddr), u64)>,
    /// Entries in `by_socket` at which the next sweep of expired ones runs.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct OwnedConnection {
    owner: u32,
    closed: Option<u64>,
}

/// A closed socket's address is reused by the kernel; resets on it count as the old
/// owner's only this long after the close.
const CLOSED_SOCKET_GRACE_NS: u64 = 1_000_000_000;

/// Closed connections whose 4-tuple still names its owner. The kernel answers a dead
/// server's clients with resets that carry no socket whenever they send, minutes later
/// for a pooled keep-alive connection, so they are kept by count, not by age; without a
/// bound a server that served millions of clients would keep millions of tuples.
const CLOSED_CONNECTIONS_KEPT: usize = 65_536;

/// The fewest entries at which expired ones are swept.
const SWEEP_AT_LEAST: usize = 4096;

/// How a reset was tied to its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// On a socket the owner had.
    Socket,
    /// On a connection the owner had (matched by its 4-tuple).
    Connection,
    /// Aimed at the owner: sent by the peer of one of its connections.
    PeerOfConnection,
    /// On a port the owner listened on, also after it died.
    ListenPort,
}

impl Attribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Socket => "socket",
            Attribution::Connection => "connection",
            Attribution::PeerOfConnection => "peer_of_connection",
            Attribution::ListenPort => "listen_port",
        }
    }
}

impl SocketOwners {
    /// A state change at `ts_ns` of a socket owned by `owner`; `local`/`remote` may still
    /// be unbound (port 0) early in a connect.
    pub fn observe(&mut self, ts_ns: u64, owner: u32, skaddr: u64, local: SocketAddr, remote: SocketAddr, new_state: &str) {
        if skaddr != 0 {
            let closed = (new_state == "TCP_CLOSE").then_some(ts_ns);
            let previous = self.by_socket.get(&skaddr).filter(|s| s.owner == owner && s.closed.is_none());
            let known = (local.port() != 0 && remote.port() != 0).then_some((local, remote));
            let socket = OwnedSocket {
                owner,
                since: previous.map_or(ts_ns, |s| s.since),
                closed,
                tuple: known.or(previous.and_then(|s| s.tuple)),
                local_port: (local.port() != 0).then_some(local.port()).or(previous.and_then(|s| s.local_port)),
            };
            self.by_socket.insert(skaddr, socket);
        }
        if new_state == "TCP_LISTEN" && local.port() != 0 {
            self.listen_ports.insert(local.port(), owner);
        }
        if local.port() != 0 && remote.port() != 0 {
            let key = (local, remote);
            let closed = (new_state == "TCP_CLOSE").then_some(ts_ns);
            self.by_connection.insert(key, OwnedConnection { owner, closed });
            if let Some(at) = closed {
                self.closed_connections.push_back((key, at));
                while self.closed_connections.len() > CLOSED_CONNECTIONS_KEPT {
                    let Some((oldest, at)) = self.closed_connections.pop_front() else { break };
                    // Unless the tuple was opened again since.
                    if self.by_connection.get(&oldest).is_some_and(|c| c.closed == Some(at)) {
                        self.by_connection.remove(&oldest);
                    }
                }
            }
        }
        if self.by_socket.len() >= self.sweep_at {
            self.sweep(ts_ns);
        }
    }

    /// Forgets sockets closed longer ago than they can still be attributed; the next
    /// sweep comes when the map has doubled, so each observation pays a constant share.
    fn sweep(&mut self, now_ns: u64) {
        self.by_socket.retain(|_, s| s.closed.is_none_or(|c| now_ns <= c + CLOSED_SOCKET_GRACE_NS));
        self.sweep_at = (2 * self.by_socket.len()).max(SWEEP_AT_LEAST);
    }

    /// Entries held, for the bound's test.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.by_socket.len() + self.by_connection.len()
    }

    /// A socket found at attach time (from /proc) rather than from a state change.
    pub fn seed_listener(&mut self, owner: u32, port: u16) {
        self.listen_ports.insert(port, owner);
    }

    pub fn seed_connection(&mut self, owner: u32, local: SocketAddr, remote: SocketAddr) {
        self.by_connection.insert((local, remote), OwnedConnection { owner, closed: None });
    }

    /// The owner of a reset at `ts_ns` on `skaddr` (0 when the kernel had no socket)
    /// between `local` (the side that sent or received it) and `remote`.
    pub fn attribute(&self, ts_ns: u64, skaddr: u64, local: SocketAddr, remote: SocketAddr, sent: bool) -> Option<(u32, Attribution)> {
        if skaddr != 0 {
            if let Some(s) = self.by_socket.get(&skaddr) {
                let in_time = s.since <= ts_ns && s.closed.is_none_or(|c| ts_ns <= c + CLOSED_SOCKET_GRACE_NS);
                // By ports: an IPv4-mapped socket may be written as v4 by one tracepoint
                // and v6 by another, its ports are the same.
                let same_connection = match (s.tuple, s.local_port) {
                    _ if local.port() == 0 => true,
                    (Some((l, r)), _) => (l.port(), r.port()) == (local.port(), remote.port()) || remote.port() == 0,
                    (None, Some(p)) => p == local.port(),
                    (None, None) => true,
                };
                if in_time && same_connection {
                    return Some((s.owner, Attribution::Socket));
                }
            }
        }
        let connection = |key| self.by_connection.get(&key).map(|c: &OwnedConnection| c.owner);
        if let Some(owner) = connection((local, remote)) {
            return Some((owner, Attribution::Connection));
        }
        if let Some(&owner) = self.listen_ports.get(&local.port()) {
            return Some((owner, Attribution::ListenPort));
        }
        // A reset sent *to* one of the owner's connections, e.g. our client refused by a
        // closed port. A received reset on the other end is the peer's business.
        if sent {
            if let Some(owner) = connection((remote, local)) {
                return Some((owner, Attribution::PeerOfConnection));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_socket_address_reused_later_does_not_own_earlier_resets() {
        let mut owners = SocketOwners::default();
        // Another process's socket at 0xbb is reset at t=5 and freed; at t=9 the kernel
        // hands the same address to our listener.
        owners.observe(9, 100, 0xbb, addr("127.0.0.1:8000"), addr("0.0.0.0:0"), "TCP_LISTEN");
        assert_eq!(owners.attribute(5, 0xbb, addr("127.0.0.1:40000"), addr("127.0.0.1:8000"), false), None);
        assert_eq!(owners.attribute(10, 0xbb, addr("127.0.0.1:8000"), addr("127.0.0.1:1"), false), Some((100, Attribution::Socket)));
    }

    #[test]
    fn a_closed_socket_address_reused_for_another_connection_is_not_ours() {
        let mut owners = SocketOwners::default();
        owners.observe(1, 7, 0xcc, addr("127.0.0.1:8000"), addr("127.0.0.1:40000"), "TCP_ESTABLISHED");
        owners.observe(2, 7, 0xcc, addr("127.0.0.1:8000"), addr("127.0.0.1:40000"), "TCP_CLOSE");
        // Within the grace period, an untraced process's socket at the same address.
        assert_eq!(owners.attribute(3, 0xcc, addr("127.0.0.1:50000"), addr("127.0.0.1:34617"), true), None);
        assert_eq!(
            owners.attribute(3, 0xcc, addr("127.0.0.1:8000"), addr("127.0.0.1:40000"), true),
            Some((7, Attribution::Socket))
        );
    }

    #[test]
    fn a_dead_listener_address_reused_by_a_client_socket_is_not_ours() {
        let mut owners = SocketOwners::default();
        owners.observe(1, 7, 0xdd, addr("127.0.0.1:8000"), addr("0.0.0.0:0"), "TCP_LISTEN");
        owners.observe(2, 7, 0xdd, addr("127.0.0.1:8000"), addr("0.0.0.0:0"), "TCP_CLOSE");
        assert_eq!(owners.attribute(3, 0xdd, addr("127.0.0.1:50636"), addr("127.0.0.1:8000"), false), None);
    }

    #[test]
    fn reset_on_former_listening_port_is_attributed_after_death() {
        let mut owners = SocketOwners::default();
        owners.observe(1, 100, 0xffff1, addr("127.0.0.1:8000"), addr("0.0.0.0:0"), "TCP_LISTEN");
        let got = owners.attribute(2, 0, addr("127.0.0.1:8000"), addr("127.0.0.1:51234"), true);
        assert_eq!(got, Some((100, Attribution::ListenPort)));
    }

    #[test]
    fn reset_sent_to_our_client_is_ours_but_the_peer_receiving_ours_is_not() {
        let mut owners = SocketOwners::default();
        owners.observe(1, 7, 0xaa, addr("127.0.0.1:40000"), addr("127.0.0.1:9"), "TCP_ESTABLISHED");
        let got = owners.attribute(2, 0, addr("127.0.0.1:9"), addr("127.0.0.1:40000"), true);
        assert_eq!(got, Some((7, Attribution::PeerOfConnection)));
        assert_eq!(owners.attribute(2, 0x55, addr("127.0.0.1:9"), addr("127.0.0.1:40000"), false), None);
        assert_eq!(owners.attribute(2, 0xaa, addr("127.0.0.1:40000"), addr("127.0.0.1:9"), false), Some((7, Attribution::Socket)));
    }

    #[test]
    fn closed_socket_address_stops_matching_after_the_grace() {
        let mut owners = SocketOwners::default();
        owners.observe(0, 7, 0xaa, addr("127.0.0.1:40000"), addr("127.0.0.1:9"), "TCP_CLOSE");
        let same = (addr("127.0.0.1:40000"), addr("127.0.0.1:9"));
        assert_eq!(owners.attribute(10, 0xaa, same.0, same.1, true), Some((7, Attribution::Socket)));
        // Later the address is some other socket's; only the 4-tuple can still tell.
        let other = (addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        assert_eq!(owners.attribute(5_000_000_000, 0xaa, other.0, other.1, true), None);
        assert_eq!(owners.attribute(5_000_000_000, 0xaa, same.0, same.1, true), Some((7, Attribution::Connection)));
    }

    #[test]
    fn a_million_connections_leave_a_bounded_map_and_attribute_recent_ones() {
        let mut owners = SocketOwners::default();
        // One connection a millisecond for 1,000 s, each closed 10 ms after it opened, on
        // reused socket addresses: a busy server's clients.
        let n = 1_000_000u64;
        let remote = |i: u64| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40000 + (i % 1000) as u16));
        let local = SocketAddr::from(([127, 0, 0, 1], 8000));
        let mut most = 0;
        for i in 0..n {
            let t = i * 1_000_000;
            let sk = 0x1000 + (i % 512) * 0x40;
            owners.observe(t, 7, sk, local, remote(i), "TCP_ESTABLISHED");
            owners.observe(t + 10_000_000, 7, sk, local, remote(i), "TCP_CLOSE");
            most = most.max(owners.held());
        }
        assert!(most <= CLOSED_CONNECTIONS_KEPT + 2 * 512 + SWEEP_AT_LEAST, "{most} entries held at most, not {n}");
        // A pooled connection's late send, an hour after the close: still the owner's.
        let hour_later = n * 1_000_000 + 3_600_000_000_000;
        assert_eq!(owners.attribute(hour_later, 0, local, remote(n - 1), true), Some((7, Attribution::Connection)));
        let kept_oldest = n - CLOSED_CONNECTIONS_KEPT as u64;
        assert_eq!(owners.attribute(hour_later, 0, local, remote(kept_oldest), true), Some((7, Attribution::Connection)));
        assert_eq!(owners.attribute(hour_later, 0, local, remote(kept_oldest - 1), true), None, "past the count kept");
    }

    #[test]
    fn port_never_owned_is_not_attributed() {
        let mut owners = SocketOwners::default();
        owners.observe(1, 7, 0xaa, addr("127.0.0.1:8000"), addr("0.0.0.0:0"), "TCP_LISTEN");
        assert_eq!(owners.attribute(2, 0, addr("127.0.0.1:8001"), addr("127.0.0.1:5555"), true), None);
        assert_eq!(owners.attribute(2, 0, addr("127.0.0.1:1"), addr("127.0.0.1:2"), true), None);
    }
}
