//! The processes of the memory cgroup with the most resident memory, traced or not: who
//! else grew toward the limit when the target is OOM-killed.
use std::path::Path;

use crate::{event::MemberRss, process};

/// How many members a sample keeps, and how many it reads at most.
const KEEP: usize = 8;
const READ_AT_MOST: usize = 256;

fn page_size() -> u64 {
    // SAFETY: plain sysconf.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Resident bytes of `pid` (/proc/PID/statm's second field), if it still lives.
fn rss_bytes(pid: u32, page: u64) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

/// The largest members of the cgroup folder `dir` (and the cgroups below it).
pub fn top_members(dir: &Path) -> Vec<MemberRss> {
    let page = page_size();
    let mut out: Vec<MemberRss> = process::scope::members(dir)
        .into_iter()
        .take(READ_AT_MOST)
        .filter_map(|pid| Some(MemberRss { pid, comm: process::comm(pid), rss_bytes: rss_bytes(pid, page)? }))
        .filter(|m| m.rss_bytes > 0)
        .collect();
    out.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    out.truncate(KEEP);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_a_member_of_its_own_cgroup_with_its_rss() {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        // v2 ("0::/path") or v1's memory line.
        let rel = text
            .lines()
            .find(|l| l.starts_with("0::") || l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "memory")))
            .and_then(|l| l.splitn(3, ':').nth(2))
            .unwrap();
        let Ok(dir) = process::scope::resolve_cgroup(Path::new(rel)) else {
            eprintln!("no cgroup folder for {rel} here");
            return;
        };
        let me = std::process::id();
        let all = top_members(&dir);
        assert!(all.len() <= KEEP);
        assert!(all.windows(2).all(|w| w[0].rss_bytes >= w[1].rss_bytes), "{all:?}");
        if let Some(m) = all.iter().find(|m| m.pid == me) {
            // The truth from status: VmRSS in kB.
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
            let diff = (m.rss_bytes as i64 - (kb * 1024) as i64).unsigned_abs();
            assert!(diff < 16 << 20, "statm {} vs VmRSS {} kB", m.rss_bytes, kb);
            assert!(!m.comm.is_empty());
        }
    }
}
