//! Who a process is for the people who run it: its container, pod or systemd unit, told
//! from its cgroup path. The host agent names every event and verdict with it, and keeps
//! it per pid so that a process already gone when its event is handled (OOM-killed,
//! signalled) still has its pod.
//!
//! Container runtimes write their ids into cgroup names, and each cgroup driver spells
//! them its own way; the shapes recognised here (one segment each, any depth):
//!
//! | runtime | systemd driver | cgroupfs driver |
//! |---|---|---|
//! | Docker | `docker-<64hex>.scope` | `/docker/<64hex>` |
//! | containerd (Kubernetes CRI, nerdctl) | `cri-containerd-<64hex>.scope`, `nerdctl-<64hex>.scope` | `/kubepods/<qos>/pod<uid>/<64hex>` |
//! | CRI-O | `crio-<64hex>.scope` (`crio-conmon-<64hex>.scope` is its monitor) | `.../pod<uid>/crio-<64hex>` |
//! | Podman | `libpod-<64hex>.scope` (`libpod-conmon-<64hex>.scope` is its monitor) | `/libpod_parent/libpod-<64hex>` |
//!
//! Kubernetes pods are `kubepods-<qos>-pod<uid with _>.slice` (systemd; guaranteed pods
//! have no qos part) or `pod<uid>` below `kubepods/<qos>` (cgroupfs).
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The path in the hierarchy, as /proc/PID/cgroup gives it: "/system.slice/nginx.service".
    pub cgroup: String,
    /// The inode of the cgroup's folder, which is the kernel's cgroup id (what
    /// `bpf_get_current_cgroup_id` returns for a v2 path), when the folder could be found.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup_id: Option<u64>,
    pub runtime: Runtime,
    /// The full 64-hex container id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container_id: Option<String>,
    /// The Kubernetes pod's uid, with its dashes (the systemd driver writes underscores).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod_uid: Option<String>,
    /// guaranteed, burstable or besteffort.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub qos: Option<String>,
    /// The innermost systemd unit the host's systemd manages: "nginx.service",
    /// "docker-<id>.scope", "session-3.scope". Units below a container's scope belong to
    /// the container's own init, which `systemctl` on the host does not know.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Docker,
    /// containerd, under Kubernetes (CRI) or not.
    Containerd,
    #[serde(rename = "crio")]
    CriO,
    Podman,
    /// No container: a systemd service or scope.
    Systemd,
    /// Neither: a cgroup someone made by hand, or the root.
    Plain,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "crio",
            Runtime::Podman => "podman",
            Runtime::Systemd => "systemd",
            Runtime::Plain => "plain",
        }
    }
}

/// Labels end up in Prometheus series and log attributes, where an unbounded string is a
/// cost on every sample; 96 holds "pod <36-char uid>/<12>" and any common unit name.
const MAX_LABEL: usize = 96;

impl Identity {
    /// A short label for people and metrics: "pod <uid>/<container 12>", "docker <12>",
    /// "nginx.service", else the cgroup path (its end, when long: that is where the
    /// distinguishing part is).
    pub fn service(&self) -> String {
        let short = |id: &str| id.chars().take(12).collect::<String>();
        let label = match (&self.pod_uid, &self.container_id, &self.unit) {
            (Some(pod), Some(id), _) => format!("pod {pod}/{}", short(id)),
            (Some(pod), None, _) => format!("pod {pod}"),
            (None, Some(id), _) => format!("{} {}", self.runtime.as_str(), short(id)),
            (None, None, Some(unit)) => unit.clone(),
            (None, None, None) => self.cgroup.clone(),
        };
        bounded(label)
    }
}

fn bounded(label: String) -> String {
    let n = label.chars().count();
    if n <= MAX_LABEL {
        return label;
    }
    let tail: String = label.chars().skip(n - (MAX_LABEL - 1)).collect();
    format!("…{tail}")
}

/// What one segment of a cgroup path says about containers.
enum Segment {
    Container(Runtime, String),
    /// The runtime's per-container monitor (conmon): next to the container, not in it.
    Monitor(Runtime),
}

/// Runtimes that name a container's cgroup `<prefix><id>[.scope]`.
const PREFIXES: [(&str, Runtime); 5] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::CriO),
    ("libpod-", Runtime::Podman),
    ("nerdctl-", Runtime::Containerd),
];

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `above`: the segments before this one, outermost first.
fn container_segment(seg: &str, above: &[&str]) -> Option<Segment> {
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, runtime) in PREFIXES {
        let Some(rest) = name.strip_prefix(prefix) else { continue };
        if rest.strip_prefix("conmon-").is_some_and(is_container_id) {
            return Some(Segment::Monitor(runtime));
        }
        if is_container_id(rest) {
            return Some(Segment::Container(runtime, rest.to_string()));
        }
    }
    if seg.len() == name.len() && is_container_id(name) {
        // A bare id is the cgroupfs driver's, which does not say whose it is: Docker puts
        // it under /docker; kubelet's pods run on containerd since dockershim left
        // (Kubernetes 1.24), and containerd outside Kubernetes uses /<namespace>/<id>.
        let runtime = if above.contains(&"docker") { Runtime::Docker } else { Runtime::Containerd };
        return Some(Segment::Container(runtime, name.to_string()));
    }
    None
}

/// A Kubernetes pod's segment: its uid (dashes restored) and QoS class.
fn pod_segment(seg: &str, parent: Option<&str>, above: &[&str]) -> Option<(String, String)> {
    let name = seg.strip_suffix(".slice").unwrap_or(seg);
    let (qos, uid) = if seg.len() != name.len() {
        // systemd: kubepods-burstable-pod<uid>.slice, kubepods-pod<uid>.slice (guaranteed);
        // kind nests it as kubelet-kubepods-...
        let at = name.rfind("-pod")?;
        let before = &name[..at];
        if !before.contains("kubepods") {
            return None;
        }
        let qos = if before.ends_with("-burstable") {
            "burstable"
        } else if before.ends_with("-besteffort") {
            "besteffort"
        } else {
            "guaranteed"
        };
        (qos, &name[at + 4..])
    } else {
        // cgroupfs: /kubepods/burstable/pod<uid>, /kubepods/pod<uid> (guaranteed).
        let uid = name.strip_prefix("pod")?;
        if !above.iter().any(|s| s.starts_with("kubepods")) {
            return None;
        }
        let qos = match parent {
            Some("burstable") => "burstable",
            Some("besteffort") => "besteffort",
            _ => "guaranteed",
        };
        (qos, uid)
    };
    let uid = uid.replace('_', "-");
    // A uid is a UUID, or for a static pod the 32-hex hash of its manifest.
    let hex = uid.bytes().filter(u8::is_ascii_hexdigit).count();
    let ok = (uid.len() == 36 && hex == 32 && uid.bytes().filter(|&b| b == b'-').count() == 4) || (uid.len() == 32 && hex == 32);
    ok.then(|| (uid, qos.to_string()))
}

fn is_unit(seg: &str) -> bool {
    seg.len() > ".scope".len() && (seg.ends_with(".service") || seg.ends_with(".scope"))
}

/// The identity a cgroup path names, from the path alone (no cgroup id).
///
/// Seen from a private cgroup namespace (a pod's), paths outside it start with `/..`;
/// those steps are skipped: the segments that name a container, pod or unit are the
/// same.
pub fn parse(cgroup_path: &str) -> Identity {
    let segs: Vec<&str> = cgroup_path.split('/').filter(|s| !s.is_empty() && *s != "..").collect();
    // The innermost container: with Docker in Docker or kind, that is the workload's.
    let mut container: Option<(usize, Runtime, Option<String>)> = None;
    let mut pod: Option<(String, String)> = None;
    for (i, seg) in segs.iter().enumerate() {
        match container_segment(seg, &segs[..i]) {
            Some(Segment::Container(rt, id)) => container = Some((i, rt, Some(id))),
            Some(Segment::Monitor(rt)) => container = Some((i, rt, None)),
            None => {}
        }
        // A pod below the container is one of a nested cluster's: keep the innermost.
        if let Some(p) = pod_segment(seg, i.checked_sub(1).map(|p| segs[p]), &segs[..i]) {
            pod = Some(p);
        }
    }
    let unit_scope = container.as_ref().map_or(segs.len(), |c| c.0 + 1);
    let unit = segs[..unit_scope].iter().rev().find(|s| is_unit(s)).map(|s| s.to_string());
    let runtime = match (&container, &unit) {
        (Some((_, rt, _)), _) => *rt,
        (None, Some(_)) => Runtime::Systemd,
        (None, None) => Runtime::Plain,
    };
    let (pod_uid, qos) = pod.unzip();
    Identity {
        cgroup: if cgroup_path.is_empty() { "/".to_string() } else { cgroup_path.to_string() },
        cgroup_id: None,
        runtime,
        container_id: container.and_then(|c| c.2),
        pod_uid,
        qos,
        unit,
    }
}

/// Which hierarchy a path of /proc/PID/cgroup is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Hierarchy {
    Unified,
    Memory,
}

/// The line of /proc/PID/cgroup that places the process: the unified (v2) one, unless it
/// says only "/" while the v1 memory controller says more. That happens on hybrid hosts
/// where nothing uses the unified hierarchy (this project's CI puts processes in
/// memory:/process_api/<id> and leaves them at 0::/).
fn placement(text: &str) -> Option<(Hierarchy, &str)> {
    let mut unified = None;
    let mut memory = None;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (it.next(), it.next(), it.next()) else { continue };
        if controllers.is_empty() {
            unified = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            memory = Some(path);
        }
    }
    match (unified, memory) {
        (Some(u), Some(m)) if u == "/" && m != "/" => Some((Hierarchy::Memory, m)),
        (Some(u), _) => Some((Hierarchy::Unified, u)),
        (None, Some(m)) => Some((Hierarchy::Memory, m)),
        (None, None) => None,
    }
}

/// A cgroup mount from /proc/self/mountinfo.
#[derive(Clone, Debug)]
struct CgroupMount {
    hierarchy: Hierarchy,
    /// The cgroup the mount shows at its mount point (not "/" for a container's view).
    root: String,
    point: PathBuf,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if f.len() < 5 || r.len() < 3 {
            continue;
        }
        let hierarchy = match r[0] {
            "cgroup2" => Hierarchy::Unified,
            "cgroup" if r[2].split(',').any(|o| o == "memory") => Hierarchy::Memory,
            _ => continue,
        };
        out.push(CgroupMount { hierarchy, root: host::memcg::unescape(f[3]), point: PathBuf::from(host::memcg::unescape(f[4])) });
    }
    out
}

impl CgroupMount {
    /// Where cgroup `path` would be under this mount, when the mount shows that part of
    /// the hierarchy (whether or not the folder exists).
    fn folder_of(&self, path: &str) -> Option<PathBuf> {
        let below = if self.root == "/" {
            path
        } else {
            let rest = path.strip_prefix(self.root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest
        };
        Some(self.point.join(below.trim_start_matches('/')))
    }
}

/// The folder of cgroup `path` under one of the mounts of its hierarchy, where it exists.
fn cgroup_dir(mounts: &[CgroupMount], hierarchy: Hierarchy, path: &str) -> Option<PathBuf> {
    mounts.iter().filter(|m| m.hierarchy == hierarchy).find_map(|m| m.folder_of(path).filter(|d| d.is_dir()))
}

/// Tells whether cgroups are gone, from the mounts read once.
pub struct CgroupLookup {
    mounts: Vec<CgroupMount>,
}

impl CgroupLookup {
    pub fn new() -> CgroupLookup {
        CgroupLookup { mounts: read_mounts() }
    }

    /// Whether the cgroup at `path` (as /proc/PID/cgroup gives it) is gone: some cgroup
    /// mount would show it, and none does. False when no mount could (it cannot be told).
    pub fn gone(&self, path: &str) -> bool {
        // Outside this process's cgroup namespace: no mount shows it.
        if path.split('/').any(|part| part == "..") {
            return false;
        }
        let mut covered = false;
        for dir in self.mounts.iter().filter_map(|m| m.folder_of(path)) {
            covered = true;
            if dir.is_dir() {
                return false;
            }
        }
        covered
    }
}

impl Default for CgroupLookup {
    fn default() -> Self {
        Self::new()
    }
}

fn identity_in(text: &str, mounts: &[CgroupMount]) -> Option<Identity> {
    let (hierarchy, path) = placement(text)?;
    let mut id = parse(path);
    id.cgroup_id = cgroup_dir(mounts, hierarchy, path).and_then(|d| std::fs::metadata(d).ok()).map(|m| m.ino());
    Some(id)
}

fn read_mounts() -> Vec<CgroupMount> {
    cgroup_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// The identity of a live process (None once it is gone).
pub fn of_pid(pid: u32) -> Option<Identity> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    identity_in(&text, &read_mounts())
}

/// Field 22 of /proc/PID/stat, the start time in clock ticks after boot: with the pid it
/// names one process, also after the pid is reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised comm (which may hold spaces), fields start at 3.
    stat.rsplit_once(')')?.1.split_whitespace().nth(22 - 3)?.parse().ok()
}

struct Entry {
    start: u64,
    /// Shared by every process of one cgroup, and by each event that names it.
    identity: Arc<Identity>,
    /// The last refresh that found the process alive (or when `get` read it).
    seen: Instant,
}

/// pid -> identity, so that an OOM-killed or signalled process that is already gone when
/// its event is handled still has its pod.
///
/// `get` answers from the cache without looking at /proc: after a pid is reused, the old
/// identity is given until the next `refresh` sees the new start time (the window is one
/// refresh interval, and only after the pid space wrapped around).
#[derive(Default)]
pub struct IdentityCache {
    entries: HashMap<u32, Entry>,
}

impl IdentityCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lists /proc and reads /proc/PID/cgroup only for pids not seen before (pid and
    /// start time, so a reused pid is read again); identities are worked out once per
    /// distinct cgroup path per refresh, since most processes share a few cgroups.
    ///
    /// Measured on a 2-core VM (kernel 6.18, debug build at opt-level 1) with 3,000
    /// processes (`refresh_cost`, ignored): the first call 59 ms, each later one 22 ms
    /// (7 µs a process, nearly all of it reading /proc/PID/stat): ~1 % of a core every 2 s.
    pub fn refresh(&mut self) {
        let now = Instant::now();
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        let mut mounts: Option<Vec<CgroupMount>> = None;
        // Per refresh only: a restarted service gets a new cgroup (new id) at the same path.
        let mut by_text: HashMap<String, Option<Arc<Identity>>> = HashMap::new();
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Some(start) = start_time(pid) else { continue };
            if let Some(e) = self.entries.get_mut(&pid) {
                if e.start == start {
                    e.seen = now;
                    continue;
                }
            }
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { continue };
            // The pid may have been reused between the two reads: then this text is not
            // the one the start time was read for.
            if start_time(pid) != Some(start) {
                continue;
            }
            let identity = by_text
                .entry(text)
                .or_insert_with_key(|text| identity_in(text, mounts.get_or_insert_with(read_mounts)).map(Arc::new))
                .clone();
            if let Some(identity) = identity {
                self.entries.insert(pid, Entry { start, identity, seen: now });
            }
        }
    }

    /// Cached, else read now (and cached).
    pub fn get(&mut self, pid: u32) -> Option<Arc<Identity>> {
        if let Some(e) = self.entries.get(&pid) {
            return Some(e.identity.clone());
        }
        let start = start_time(pid)?;
        let identity = Arc::new(of_pid(pid)?);
        self.entries.insert(pid, Entry { start, identity: identity.clone(), seen: Instant::now() });
        Some(identity)
    }

    /// Forget pids gone for longer than `keep` (dead ones are kept a while for late events).
    pub fn expire(&mut self, keep: Duration) {
        let now = Instant::now();
        self.entries.retain(|_, e| now.duration_since(e.seen) <= keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const ID: &str = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
    const ID2: &str = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";
    const UID: &str = "74c13223-5a00-11e9-b385-42010a80018d";
    const UID_: &str = "74c13223_5a00_11e9_b385_42010a80018d";

    fn id(path: &str) -> Identity {
        parse(path)
    }

    fn expect(path: &str, runtime: Runtime, container: Option<&str>, pod: Option<(&str, &str)>, unit: Option<&str>) -> Identity {
        let got = parse(path);
        let want = Identity {
            cgroup: path.to_string(),
            cgroup_id: None,
            runtime,
            container_id: container.map(String::from),
            pod_uid: pod.map(|p| p.0.to_string()),
            qos: pod.map(|p| p.1.to_string()),
            unit: unit.map(String::from),
        };
        assert_eq!(got, want, "{path}");
        got
    }

    #[test]
    fn docker_with_either_cgroup_driver() {
        let i = expect(&format!("/docker/{ID}"), Runtime::Docker, Some(ID), None, None);
        assert_eq!(i.service(), "docker 9ec39b91f3d7");
        let scope = format!("docker-{ID}.scope");
        let i = expect(&format!("/system.slice/{scope}"), Runtime::Docker, Some(ID), None, Some(&scope));
        assert_eq!(i.service(), "docker 9ec39b91f3d7");
        // Rootless Docker: the user's systemd makes the scope.
        expect(&format!("/user.slice/user-1000.slice/user@1000.service/user.slice/{scope}"), Runtime::Docker, Some(ID), None, Some(&scope));
    }

    #[test]
    fn kubernetes_containerd_with_the_systemd_driver() {
        let scope = format!("cri-containerd-{ID}.scope");
        let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/{scope}");
        let i = expect(&path, Runtime::Containerd, Some(ID), Some((UID, "burstable")), Some(&scope));
        assert_eq!(i.service(), format!("pod {UID}/9ec39b91f3d7"));
        let path = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/{scope}");
        expect(&path, Runtime::Containerd, Some(ID), Some((UID, "besteffort")), Some(&scope));
        // Guaranteed pods sit right under kubepods.slice.
        let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/{scope}");
        expect(&path, Runtime::Containerd, Some(ID), Some((UID, "guaranteed")), Some(&scope));
        // The pod's own slice: a pod, no container.
        let i = expect(&format!("/kubepods.slice/kubepods-pod{UID_}.slice"), Runtime::Plain, None, Some((UID, "guaranteed")), None);
        assert_eq!(i.service(), format!("pod {UID}"));
    }

    #[test]
    fn kubernetes_with_the_cgroupfs_driver() {
        expect(&format!("/kubepods/burstable/pod{UID}/{ID}"), Runtime::Containerd, Some(ID), Some((UID, "burstable")), None);
        expect(&format!("/kubepods/besteffort/pod{UID}/{ID}"), Runtime::Containerd, Some(ID), Some((UID, "besteffort")), None);
        expect(&format!("/kubepods/pod{UID}/{ID}"), Runtime::Containerd, Some(ID), Some((UID, "guaranteed")), None);
        expect(&format!("/kubepods/burstable/pod{UID}/crio-{ID}"), Runtime::CriO, Some(ID), Some((UID, "burstable")), None);
        // A static pod's uid is its manifest's hash.
        let hash = "5b6a1d3c2e1f4a0b9c8d7e6f5a4b3c2d";
        expect(&format!("/kubepods/burstable/pod{hash}/{ID}"), Runtime::Containerd, Some(ID), Some((hash, "burstable")), None);
        // "pod..." outside kubepods is just a name.
        expect(&format!("/pod{UID}"), Runtime::Plain, None, None, None);
    }

    #[test]
    fn cri_o_and_its_monitor() {
        let slice = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let scope = format!("crio-{ID}.scope");
        expect(&format!("{slice}/{scope}"), Runtime::CriO, Some(ID), Some((UID, "burstable")), Some(&scope));
        // conmon watches the container from beside it: same pod, no container.
        let conmon = format!("crio-conmon-{ID}.scope");
        let i = expect(&format!("{slice}/{conmon}"), Runtime::CriO, None, Some((UID, "burstable")), Some(&conmon));
        assert_eq!(i.service(), format!("pod {UID}"));
        // crun's systemd subgroup inside the scope.
        expect(&format!("{slice}/{scope}/container"), Runtime::CriO, Some(ID), Some((UID, "burstable")), Some(&scope));
    }

    #[test]
    fn podman_rootful_rootless_and_cgroupfs() {
        let scope = format!("libpod-{ID}.scope");
        let i = expect(&format!("/machine.slice/{scope}"), Runtime::Podman, Some(ID), None, Some(&scope));
        assert_eq!(i.service(), "podman 9ec39b91f3d7");
        expect(&format!("/user.slice/user-1000.slice/user@1000.service/user.slice/{scope}"), Runtime::Podman, Some(ID), None, Some(&scope));
        // Podman pods and containers running systemd get a `container` subgroup.
        expect(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/user-libpod_pod_{ID2}.slice/{scope}/container"),
            Runtime::Podman,
            Some(ID),
            None,
            Some(&scope),
        );
        expect(&format!("/machine.slice/machine-libpod_pod_{ID2}.slice/{scope}"), Runtime::Podman, Some(ID), None, Some(&scope));
        expect(&format!("/libpod_parent/libpod-{ID}"), Runtime::Podman, Some(ID), None, None);
        let conmon = format!("libpod-conmon-{ID}.scope");
        expect(&format!("/machine.slice/{conmon}"), Runtime::Podman, None, None, Some(&conmon));
    }

    #[test]
    fn systemd_units_sessions_and_plain_cgroups() {
        let i = expect("/system.slice/nginx.service", Runtime::Systemd, None, None, Some("nginx.service"));
        assert_eq!(i.service(), "nginx.service");
        expect("/user.slice/user-1000.slice/session-3.scope", Runtime::Systemd, None, None, Some("session-3.scope"));
        expect(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-f22f14d2-3d44-4304-9879-3fdd0df7b08e.scope",
            Runtime::Systemd,
            None,
            None,
            Some("vte-spawn-f22f14d2-3d44-4304-9879-3fdd0df7b08e.scope"),
        );
        expect("/init.scope", Runtime::Systemd, None, None, Some("init.scope"));
        let i = expect("/tracer-test-123", Runtime::Plain, None, None, None);
        assert_eq!(i.service(), "/tracer-test-123");
        let i = expect("/", Runtime::Plain, None, None, None);
        assert_eq!(i.service(), "/");
        assert_eq!(id("").cgroup, "/");
        // A slice holds no processes on v2, but may on v1: it is not a unit of its own.
        expect("/system.slice", Runtime::Plain, None, None, None);
    }

    #[test]
    fn nested_cgroups_belong_to_their_container() {
        // systemd inside a container makes its own units below the container's scope.
        let scope = format!("docker-{ID}.scope");
        expect(&format!("/system.slice/{scope}/init.scope"), Runtime::Docker, Some(ID), None, Some(&scope));
        expect(&format!("/system.slice/{scope}/system.slice/nginx.service"), Runtime::Docker, Some(ID), None, Some(&scope));
        // The host's systemd does not manage a cgroupfs container: no unit at all.
        expect(&format!("/docker/{ID}/init.scope"), Runtime::Docker, Some(ID), None, None);
        // kind: a Kubernetes node in a Docker container; the pod's container is the one.
        let inner = format!("cri-containerd-{ID2}.scope");
        let path = format!("/system.slice/{scope}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/{inner}");
        expect(&path, Runtime::Containerd, Some(ID2), Some((UID, "burstable")), Some(&inner));
        // Docker in Docker with cgroupfs.
        expect(&format!("/docker/{ID}/docker/{ID2}"), Runtime::Docker, Some(ID2), None, None);
    }

    #[test]
    fn a_private_cgroup_namespace_still_names_the_pod() {
        let path = format!("/../../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope");
        let i = parse(&path);
        assert_eq!((i.runtime, i.container_id.as_deref(), i.pod_uid.as_deref()), (Runtime::Containerd, Some(ID), Some(UID)));
        assert_eq!(i.cgroup, path);
        assert_eq!(parse("/../../system.slice/nginx.service").unit.as_deref(), Some("nginx.service"));
    }

    #[test]
    fn ids_must_be_whole() {
        // Short, upper-case or overlong ids are names, not container ids.
        expect("/docker/abc123", Runtime::Plain, None, None, None);
        expect(&format!("/docker/{}", ID.to_uppercase()), Runtime::Plain, None, None, None);
        expect(&format!("/system.slice/docker-{ID}0.scope"), Runtime::Systemd, None, None, Some(&format!("docker-{ID}0.scope")));
        expect("/system.slice/docker.service", Runtime::Systemd, None, None, Some("docker.service"));
        expect("/system.slice/containerd.service", Runtime::Systemd, None, None, Some("containerd.service"));
        // containerd's own cgroupfs layout: /<namespace>/<id>.
        expect(&format!("/default/{ID}"), Runtime::Containerd, Some(ID), None, None);
        expect(&format!("/system.slice/nerdctl-{ID}.scope"), Runtime::Containerd, Some(ID), None, Some(&format!("nerdctl-{ID}.scope")));
    }

    #[test]
    fn labels_are_bounded() {
        let long = format!("/{}", "a/".repeat(200));
        let s = parse(&long).service();
        assert_eq!(s.chars().count(), MAX_LABEL);
        assert!(s.starts_with('…') && s.ends_with("a/"), "{s}");
    }

    #[test]
    fn serialized_with_snake_case_runtimes_and_no_empty_fields() {
        let i = parse(&format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope"));
        let v = serde_json::to_value(&i).unwrap();
        assert_eq!(v["runtime"], "crio");
        assert_eq!(v["qos"], "guaranteed");
        assert!(v.get("cgroup_id").is_none());
        let plain = serde_json::to_value(parse("/x")).unwrap();
        assert_eq!(plain, serde_json::json!({"cgroup": "/x", "runtime": "plain"}));
        let back: Identity = serde_json::from_value(v).unwrap();
        assert_eq!(back, i);
        assert_eq!(serde_json::to_value(Runtime::Containerd).unwrap(), "containerd");
    }

    #[test]
    fn the_line_that_places_a_process() {
        // Pure v2.
        assert_eq!(placement("0::/system.slice/x.service\n"), Some((Hierarchy::Unified, "/system.slice/x.service")));
        // v1 only: the memory controller's line, among others.
        let v1 = format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        assert_eq!(placement(&v1), Some((Hierarchy::Memory, format!("/docker/{ID}").as_str())));
        assert_eq!(parse(placement(&v1).unwrap().1).container_id.as_deref(), Some(ID));
        // Hybrid with the unified hierarchy used: it wins.
        let hybrid = "4:memory:/system.slice/a.service\n0::/system.slice/a.service\n";
        assert_eq!(placement(hybrid), Some((Hierarchy::Unified, "/system.slice/a.service")));
        // Hybrid with nothing in the unified hierarchy: memory says where it is.
        let unused = "4:memory:/process_api/269d49\n0::/\n";
        assert_eq!(placement(unused), Some((Hierarchy::Memory, "/process_api/269d49")));
        assert_eq!(placement("4:memory:/\n0::/\n"), Some((Hierarchy::Unified, "/")));
        assert_eq!(placement("4:cpu,cpuacct:/\n"), None);
        // A path with a colon stays whole.
        assert_eq!(placement("0::/a:b\n"), Some((Hierarchy::Unified, "/a:b")));
    }

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:40 /kubepods.slice /host\\040cg rw - cgroup2 cgroup2 rw
";

    #[test]
    fn mounts_are_found_for_both_hierarchies() {
        let m = cgroup_mounts(MOUNTINFO);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!((m[0].hierarchy, m[0].point.to_str()), (Hierarchy::Memory, Some("/sys/fs/cgroup/memory")));
        assert_eq!((m[1].hierarchy, m[1].point.to_str()), (Hierarchy::Unified, Some("/sys/fs/cgroup/unified")));
        assert_eq!((m[2].root.as_str(), m[2].point.to_str()), ("/kubepods.slice", Some("/host cg")));
    }

    #[test]
    fn the_folder_is_looked_up_under_the_mounts_root() {
        let tmp = std::env::temp_dir().join(format!("tracer-identity-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("pods/a")).unwrap();
        let mounts = vec![
            CgroupMount { hierarchy: Hierarchy::Unified, root: "/kubepods.slice".into(), point: tmp.join("pods") },
            CgroupMount { hierarchy: Hierarchy::Memory, root: "/".into(), point: tmp.clone() },
        ];
        assert_eq!(cgroup_dir(&mounts, Hierarchy::Unified, "/kubepods.slice/a"), Some(tmp.join("pods/a")));
        assert_eq!(cgroup_dir(&mounts, Hierarchy::Unified, "/kubepods.slice"), Some(tmp.join("pods")));
        // A sibling that only shares the prefix's characters is not below the root.
        assert_eq!(cgroup_dir(&mounts, Hierarchy::Unified, "/kubepods.slicex/a"), None);
        assert_eq!(cgroup_dir(&mounts, Hierarchy::Memory, "/pods/a"), Some(tmp.join("pods/a")));
        assert_eq!(cgroup_dir(&mounts, Hierarchy::Memory, "/missing"), None);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn this_process_is_where_proc_self_cgroup_says_with_its_folders_inode() {
        let me = of_pid(std::process::id()).expect("our own identity");
        // The truth, read independently: the lines of /proc/self/cgroup and the folder.
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let line = |want: &dyn Fn(&str) -> bool| {
            text.lines().find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_, c, p) = (it.next()?, it.next()?, it.next()?);
                want(c).then(|| p.to_string())
            })
        };
        let unified = line(&|c: &str| c.is_empty());
        let memory = line(&|c: &str| c.split(',').any(|x| x == "memory"));
        let (root, expected) = match (&unified, &memory) {
            (Some(u), Some(m)) if u == "/" && m != "/" => ("memory", m.clone()),
            (Some(u), _) => ("unified", u.clone()),
            (None, Some(m)) => ("memory", m.clone()),
            (None, None) => panic!("no usable line in {text}"),
        };
        assert_eq!(me.cgroup, expected, "{text}");
        assert_eq!(me, Identity { cgroup_id: me.cgroup_id, ..parse(&expected) });
        let base = match root {
            "memory" => vec!["/sys/fs/cgroup/memory"],
            _ => vec!["/sys/fs/cgroup/unified", "/sys/fs/cgroup"],
        };
        let folder = base
            .iter()
            .map(|b| std::path::Path::new(b).join(expected.trim_start_matches('/')))
            .find(|d| d.join("cgroup.procs").is_file() && std::fs::read_to_string(d.join("cgroup.procs")).unwrap().lines().any(|l| l == std::process::id().to_string()));
        let Some(folder) = folder else {
            eprintln!("SKIP the inode check: {expected} is not under {base:?} here (a cgroup namespace?)");
            return;
        };
        assert_eq!(me.cgroup_id, Some(std::fs::metadata(&folder).unwrap().ino()), "{}", folder.display());
    }

    #[test]
    fn a_child_that_exited_is_still_answered_after_refresh_until_expired() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let mut cache = IdentityCache::new();
        cache.refresh();
        assert!(cache.len() > 1, "a refresh finds more than one process");
        let alive = cache.get(pid).expect("the child, alive");
        // A child starts in its parent's cgroup.
        let me = of_pid(std::process::id()).unwrap();
        assert_eq!(*alive, me);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(of_pid(pid).is_none(), "pid {pid} reaped");
        cache.refresh();
        assert_eq!(cache.get(pid), Some(alive.clone()), "the dead child's identity");
        // Kept while younger than `keep`, forgotten after; the living stay.
        cache.expire(Duration::from_secs(60));
        assert_eq!(cache.get(pid), Some(alive));
        std::thread::sleep(Duration::from_millis(30));
        cache.refresh();
        cache.expire(Duration::from_millis(20));
        assert_eq!(cache.get(pid), None, "expired");
        assert!(cache.get(std::process::id()).is_some());
    }

    #[test]
    fn a_removed_cgroup_is_gone_and_an_uncovered_one_cannot_be_told() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("pod-a")).unwrap();
        let lookup = CgroupLookup { mounts: vec![CgroupMount { hierarchy: Hierarchy::Unified, root: "/kubepods".into(), point: tmp.path().into() }] };
        assert!(!lookup.gone("/kubepods/pod-a"));
        assert!(lookup.gone("/kubepods/pod-b"));
        assert!(!lookup.gone("/kubepodsX/pod-b"), "not below the mount's root: cannot be told");
        assert!(!lookup.gone("/system.slice/x.service"));
        assert!(!lookup.gone("/kubepods/../pod-b"), "outside the namespace: cannot be told");
        assert!(!CgroupLookup { mounts: Vec::new() }.gone("/anything"));

        // The real mounts, with a cgroup made and removed.
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let base = if v1.join("memory.limit_in_bytes").exists() { v1 } else { Path::new("/sys/fs/cgroup") };
        let name = format!("/tracer-unit-lookup-{}", std::process::id());
        let dir = base.join(name.trim_start_matches('/'));
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("SKIP the real-cgroup half: cannot create {} ({e}; not root?)", dir.display());
            return;
        }
        let alive = CgroupLookup::new().gone(&name);
        std::fs::remove_dir(&dir).unwrap();
        assert!(!alive, "{name} exists");
        assert!(CgroupLookup::new().gone(&name), "{name} was removed");
    }

    #[test]
    fn a_pid_not_listed_yet_is_read_on_demand() {
        let mut cache = IdentityCache::new();
        assert!(cache.is_empty());
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let got = cache.get(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(got.as_deref(), of_pid(std::process::id()).as_ref());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(u32::MAX), None);
    }

    /// The number in `refresh`'s comment: `cargo test -p tracer --lib refresh_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "starts 3,000 processes"]
    fn refresh_cost() {
        let mut children: Vec<_> = (0..3000).map(|_| std::process::Command::new("sleep").arg("120").spawn().unwrap()).collect();
        let mut cache = IdentityCache::new();
        let t = Instant::now();
        cache.refresh();
        let first = t.elapsed();
        let mut later = Duration::ZERO;
        for _ in 0..5 {
            let t = Instant::now();
            cache.refresh();
            later += t.elapsed();
        }
        eprintln!("{} processes: first refresh {first:?}, later ones {:?} each", cache.len(), later / 5);
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
