//! Small formatting helpers for verdict lines: ports, counts, file names. Sizes and times
//! come from [`crate::units`], shared with every other renderer.
use std::net::SocketAddr;

pub use crate::units::{duration, format_bytes, format_bytes_delta, format_kb, time_of_day};

/// The port of an address as the trace writes it (`127.0.0.1:8000`, `[::1]:8000`).
pub fn port(addr: &str) -> Option<u16> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Some(a.port());
    }
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// `1 connection`, `3 connections`.
pub fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The last component of a path.
pub fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((_, name)) if !name.is_empty() => name,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_names() {
        assert_eq!(port("127.0.0.1:8000"), Some(8000));
        assert_eq!(port("[::1]:443"), Some(443));
        assert_eq!(port("garbage"), None);
        assert_eq!(port(""), None);
        assert_eq!(basename("/models/aya/model-00001.safetensors"), "model-00001.safetensors");
        assert_eq!(basename("plain"), "plain");
        assert_eq!(basename("/"), "/");
        assert_eq!(count(1, "reset"), "1 reset");
        assert_eq!(count(3, "reset"), "3 resets");
    }
}
