//! Which sockets, connections and listening ports belong to traced processes, so that a
//! reset (a global event, often fired in softirq on an unrelated task) can be attributed
//! to its owner, also after the owner died.
use std::{collections::HashMap, net::SocketAddr};

#[derive(Default, Debug)]
pub struct SocketOwners {
    by_socket: HashMap<u64, u32>,
    by_connection: HashMap<(SocketAddr, SocketAddr), u32>,
    listen_ports: HashMap<u16, u32>,
}

/// How a reset was tied to its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
    Socket,
    Connection,
    ListenPort,
}

impl Attribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Socket => "socket",
            Attribution::Connection => "connection",
            Attribution::ListenPort => "listen_port",
        }
    }
}

impl SocketOwners {
    /// A state change of a socket owned by `owner`; `local`/`remote` may still be
    /// unbound (port 0) early in a connect.
    pub fn observe(&mut self, owner: u32, skaddr: u64, local: SocketAddr, remote: SocketAddr, listening: bool) {
        if skaddr != 0 {
            self.by_socket.insert(skaddr, owner);
        }
        if listening && local.port() != 0 {
            self.listen_ports.insert(local.port(), owner);
        }
        if local.port() != 0 && remote.port() != 0 {
            self.by_connection.insert((local, remote), owner);
        }
    }

    /// The owner of a reset on `skaddr` (0 when the kernel had no socket) between
    /// `local` (the side that sent or received it) and `remote`.
    pub fn attribute(&self, skaddr: u64, local: SocketAddr, remote: SocketAddr) -> Option<(u32, Attribution)> {
        if let Some(&owner) = self.by_socket.get(&skaddr).filter(|_| skaddr != 0) {
            return Some((owner, Attribution::Socket));
        }
        // The owner may be either end: our client refused by someone else's closed port.
        if let Some(&owner) = self
            .by_connection
            .get(&(local, remote))
            .or_else(|| self.by_connection.get(&(remote, local)))
        {
            return Some((owner, Attribution::Connection));
        }
        if let Some(&owner) = self.listen_ports.get(&local.port()) {
            return Some((owner, Attribution::ListenPort));
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
    fn reset_on_former_listening_port_is_attributed_after_death() {
        let mut owners = SocketOwners::default();
        owners.observe(100, 0xffff1, addr("127.0.0.1:8000"), addr("0.0.0.0:0"), true);
        let got = owners.attribute(0, addr("127.0.0.1:8000"), addr("127.0.0.1:51234"));
        assert_eq!(got, Some((100, Attribution::ListenPort)));
    }

    #[test]
    fn client_connection_matches_in_either_direction() {
        let mut owners = SocketOwners::default();
        owners.observe(7, 0xaa, addr("127.0.0.1:40000"), addr("127.0.0.1:9"), false);
        let got = owners.attribute(0, addr("127.0.0.1:9"), addr("127.0.0.1:40000"));
        assert_eq!(got, Some((7, Attribution::Connection)));
        assert_eq!(owners.attribute(0xaa, addr("127.0.0.1:1"), addr("127.0.0.1:2")), Some((7, Attribution::Socket)));
    }

    #[test]
    fn port_never_owned_is_not_attributed() {
        let mut owners = SocketOwners::default();
        owners.observe(7, 0xaa, addr("127.0.0.1:8000"), addr("0.0.0.0:0"), true);
        assert_eq!(owners.attribute(0, addr("127.0.0.1:8001"), addr("127.0.0.1:5555")), None);
        // a null socket never matches a recorded null
        assert_eq!(owners.attribute(0, addr("127.0.0.1:1"), addr("127.0.0.1:2")), None);
    }
}
