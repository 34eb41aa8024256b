//! What /proc says about a process, read where every layer can use it: does it exist,
//! its command line, threads, descendants and TCP sockets. Nothing here knows eBPF.
pub mod identity;
pub mod scope;
pub mod spawn;
pub mod target;

use std::collections::HashMap;

pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

pub fn cmdline(pid: u32) -> String {
    argv(pid).join(" ")
}

/// The arguments of `pid`, as its memory holds them (empty for a kernel thread or a
/// process gone).
pub fn argv(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| b.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default()
}

/// The name the kernel gives `pid` (empty when it is gone).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim_end().to_string()).unwrap_or_default()
}

/// The parent of `pid`: its pid and comm, while both are alive.
pub fn parent(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?.trim_end().to_string();
    Some((ppid, comm))
}

/// The thread group (process) a task belongs to: itself for a process's main thread.
pub fn thread_group(task: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{task}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

/// The arguments of `pid` exactly as its memory holds them (each NUL-terminated).
pub fn cmdline_bytes(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// Who started `pid`, nearest first, up to `depth` steps (pid 1 ends it): each parent's
/// pid and comm while they are alive.
pub fn ancestors(pid: u32, depth: usize) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut at = pid;
    while out.len() < depth && at > 1 {
        let Some((ppid, comm)) = parent(at) else { break };
        if ppid == 0 {
            break;
        }
        out.push((ppid, comm));
        at = ppid;
    }
    out
}

/// Thread ids of a process.
pub fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// All live descendants of `pid` (children, grandchildren...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()));
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// A TCP socket a process has open, from /proc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSocket {
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    pub listening: bool,
}

/// TCP sockets among the open files of `pid` (listeners and connections), so that a
/// server traced with `--pid` after it started listening is still known as the owner.
pub fn tcp_sockets(pid: u32) -> Vec<OwnedSocket> {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let link = std::fs::read_link(e.ok()?.path()).ok()?;
                link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
            })
            .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        out.extend(table.lines().skip(1).filter_map(|l| parse_proc_net_tcp_line(l, v6)).filter(|(inode, _)| inodes.contains(inode)).map(|(_, s)| s));
    }
    out
}

/// The process that listens on TCP `port` on this host (in our network namespace), by
/// the listener's inode in /proc/net/tcp{,6} and the fds of every process: the owner of
/// the far end of a local connection. Costly (it reads every process's fds): once per
/// port.
pub fn listener_owner(port: u16) -> Option<(u32, String)> {
    let mut inodes = std::collections::HashSet::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/net/{file}")) else { continue };
        for (inode, s) in table.lines().skip(1).filter_map(|l| parse_proc_net_tcp_line(l, v6)) {
            if s.listening && s.local.port() == port && inode != 0 {
                inodes.insert(inode);
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            let inode = link.to_str().and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                return Some((pid, comm(pid)));
            }
        }
    }
    None
}

/// One line of /proc/net/tcp{,6}: `sl local rem st ... uid timeout inode`.
fn parse_proc_net_tcp_line(line: &str, v6: bool) -> Option<(u64, OwnedSocket)> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let local = parse_proc_addr(cols.get(1)?, v6)?;
    let remote = parse_proc_addr(cols.get(2)?, v6)?;
    let state = u8::from_str_radix(cols.get(3)?, 16).ok()?;
    let inode = cols.get(9)?.parse().ok()?;
    // 0x0A is TCP_LISTEN in the kernel's numbering, which /proc prints in hex.
    Some((inode, OwnedSocket { local, remote, listening: state == 0x0a }))
}

fn parse_proc_addr(s: &str, v6: bool) -> Option<std::net::SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Addresses are printed as native-endian 32-bit words.
    let words: Vec<u32> = (0..ip.len() / 8).map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16)).collect::<Result<_, _>>().ok()?;
    let ip = if v6 {
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate().take(4) {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(bytes))
    } else {
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(words.first()?.to_ne_bytes()))
    };
    Some(std::net::SocketAddr::new(ip, port))
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    #[test]
    fn the_owner_of_a_listener_is_found_by_its_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listener_owner(port).map(|o| o.0), Some(std::process::id()));
        drop(l);
        assert_eq!(listener_owner(port), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_parse_to_addresses() {
        let line = "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        let (inode, s) = parse_proc_net_tcp_line(line, false).unwrap();
        assert_eq!(inode, 12345);
        assert_eq!(s.local, "127.0.0.1:8000".parse().unwrap());
        assert!(s.listening);
    }

    #[test]
    fn own_listening_socket_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = tcp_sockets(std::process::id());
        assert!(found.iter().any(|s| s.listening && s.local.port() == port), "{found:?}");
    }

    #[test]
    fn own_process_is_found_with_threads() {
        let me = std::process::id();
        assert!(process_exists(me));
        assert!(threads(me).contains(&me));
        assert!(!process_exists(u32::MAX - 1));
    }
}
