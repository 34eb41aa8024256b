//! The deployment files in deploy/ stay loadable and agree with each other and with the
//! README: the systemd unit passes `systemd-analyze verify`, the DaemonSet has what the
//! agent needs on a node, both grant the capabilities the README explains and no others,
//! and both start `tracer watch` with arguments the real parser accepts.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const UNIT: &str = "deploy/tracer-watch.service";
const DAEMONSET: &str = "deploy/daemonset.yaml";
/// What only the DaemonSet adds: a pod cannot set RLIMIT_MEMLOCK as the unit does.
const DAEMONSET_ONLY: &str = "SYS_RESOURCE";

/// The values of `key=` in the unit, in order (comments and sections skipped).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

fn unit_capabilities(unit: &str, key: &str) -> BTreeSet<String> {
    let values = unit_values(unit, key);
    assert_eq!(values.len(), 1, "{UNIT}: one {key}= line, got {values:?}");
    values[0].split_whitespace().map(String::from).collect()
}

/// The capabilities in the table of the README's "Run it as a service" section: rows that
/// start with "| `CAP_".
fn readme_capabilities() -> BTreeSet<String> {
    let readme = read("README.md");
    let mut lines = readme.lines().skip_while(|l| !(l.starts_with('#') && l.contains("Run it as a service")));
    let heading = lines.next().unwrap_or_else(|| panic!("README.md has no \"Run it as a service\" section"));
    let level = heading.chars().take_while(|&c| c == '#').count();
    let section: Vec<&str> = lines.take_while(|l| !(l.starts_with('#') && l.chars().take_while(|&c| c == '#').count() <= level)).collect();
    section
        .iter()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(cap, _)| cap))
        .filter(|cap| cap.starts_with("CAP_"))
        .map(String::from)
        .collect()
}

/// `tracer ARGS` parses with the real command line (so a renamed flag breaks this test,
/// not a host's agent at boot).
fn assert_tracer_accepts(args: &[String], whose: &str) {
    let argv = std::iter::once("tracer".to_string()).chain(args.iter().cloned());
    if let Err(e) = tracer::cli::Cli::try_parse_from(argv) {
        panic!("{whose}: tracer rejects {args:?}:\n{e}");
    }
}

fn exec_start_args(unit: &str) -> Vec<String> {
    let exec = unit_values(unit, "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let mut words = exec[0].split_whitespace().map(String::from);
    assert_eq!(words.next().as_deref(), Some("/usr/bin/tracer"), "{UNIT}: ExecStart runs the packaged binary");
    words.collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].into_iter().map(Path::new).find(|p| p.exists()) else {
        eprintln!("SKIP the_unit_passes_systemd_analyze_verify: systemd-analyze is not installed");
        return;
    };
    let unit = read(UNIT);
    // verify checks that ExecStart's program exists: point it at the one just built.
    let dir = std::env::temp_dir().join(format!("tracer-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("tracer-watch.service");
    let bin = tracer_tests::tracer_bin();
    std::fs::write(&copy, unit.replace("ExecStart=/usr/bin/tracer ", &format!("ExecStart={} ", bin.display()))).unwrap();
    let out = Command::new(analyze).arg("verify").arg(&copy).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed ({}):\n{stderr}", out.status);
    // Other units on this machine may draw warnings; ours must draw none.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("tracer-watch")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns about the unit:\n{}", ours.join("\n"));
}

#[test]
fn the_unit_runs_tracer_watch_with_capabilities_not_root() {
    let unit = read(UNIT);
    let bounding = unit_capabilities(&unit, "CapabilityBoundingSet");
    let ambient = unit_capabilities(&unit, "AmbientCapabilities");
    assert_eq!(bounding, ambient, "the unit holds exactly what it is granted");
    // Not root, and nothing gained through setuid binaries.
    assert_eq!(unit_values(&unit, "DynamicUser"), ["yes"]);
    assert_eq!(unit_values(&unit, "NoNewPrivileges"), ["yes"]);
    assert_eq!(unit_values(&unit, "LimitMEMLOCK"), ["infinity"]);
    let args = exec_start_args(&unit);
    assert_tracer_accepts(&args, UNIT);
    assert_eq!(args.first().map(String::as_str), Some("watch"));
    // Incidents go where the unit may write: its state directory.
    let state = unit_values(&unit, "StateDirectory");
    assert_eq!(state, ["tracer"]);
    assert!(flag(&args, "--incident-dir").is_some_and(|d| d.starts_with("/var/lib/tracer/")), "{args:?}");
    assert_eq!(flag(&args, "--metrics"), Some("127.0.0.1:9464"), "{args:?}");
}

fn daemonset() -> (Vec<Yaml>, Yaml) {
    let docs = YamlLoader::load_from_str(&read(DAEMONSET)).unwrap_or_else(|e| panic!("{DAEMONSET}: {e}"));
    let ds = docs.iter().find(|d| d["kind"].as_str() == Some("DaemonSet")).unwrap_or_else(|| panic!("{DAEMONSET}: no DaemonSet")).clone();
    (docs, ds)
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec().unwrap_or_else(|| panic!("not a list: {y:?}")).iter().map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}")).to_string()).collect()
}

#[test]
fn the_daemonset_has_what_the_agent_needs_on_a_node() {
    let (docs, ds) = daemonset();
    assert!(docs.iter().any(|d| d["kind"].as_str() == Some("Namespace") && d["metadata"]["name"].as_str() == Some("tracer")));
    assert_eq!(ds["metadata"]["namespace"].as_str(), Some("tracer"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true), "the host's processes");
    let containers = pod["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The unit's capabilities, in Kubernetes' spelling, plus the one a pod needs.
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    let mut expected: BTreeSet<String> =
        unit_capabilities(&read(UNIT), "AmbientCapabilities").iter().map(|c| c.strip_prefix("CAP_").unwrap().to_string()).collect();
    expected.insert(DAEMONSET_ONLY.to_string());
    assert_eq!(added, expected, "{DAEMONSET} against {UNIT}");

    // Arguments the tracer accepts, metrics on the pod IP, on the port Prometheus is told.
    let args = strings(&c["args"]);
    assert_tracer_accepts(&args, DAEMONSET);
    assert_eq!(args.first().map(String::as_str), Some("watch"));
    assert_eq!(flag(&args, "--metrics"), Some("0.0.0.0:9464"), "{args:?}");
    let ports = c["ports"].as_vec().expect("ports");
    assert!(ports.iter().any(|p| p["containerPort"].as_i64() == Some(9464)), "{ports:?}");
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9464"));

    // Mounts: each from the host path of the same name, read-only but the incidents.
    let incidents = flag(&args, "--incident-dir").expect("--incident-dir").to_string();
    let volumes = pod["volumes"].as_vec().expect("volumes");
    let mounts = c["volumeMounts"].as_vec().expect("volumeMounts");
    for (path, read_only) in [("/sys/kernel/tracing", true), ("/sys/fs/cgroup", true), (incidents.as_str(), false)] {
        let m = mounts.iter().find(|m| m["mountPath"].as_str() == Some(path)).unwrap_or_else(|| panic!("no mount at {path}"));
        assert_eq!(m["readOnly"].as_bool().unwrap_or(false), read_only, "{path} readOnly");
        let name = m["name"].as_str().unwrap();
        let v = volumes.iter().find(|v| v["name"].as_str() == Some(name)).unwrap_or_else(|| panic!("no volume {name}"));
        assert_eq!(v["hostPath"]["path"].as_str(), Some(path), "volume {name}");
    }

    // Small and bounded: an agent that starves the node's workloads is a cause, not a witness.
    let res = &c["resources"];
    assert_eq!(res["requests"]["cpu"].as_str(), Some("100m"));
    assert_eq!(res["limits"]["memory"].as_str(), Some("128Mi"));
}

#[test]
fn the_readme_explains_every_capability_granted() {
    let unit = unit_capabilities(&read(UNIT), "AmbientCapabilities");
    assert_eq!(readme_capabilities(), unit, "README.md's \"Run it as a service\" table against {UNIT}");
    assert!(read("README.md").contains(DAEMONSET_ONLY), "README.md should say why the DaemonSet adds {DAEMONSET_ONLY}");
}

/// The unit's promise, kept on the real kernel: `tracer watch` as `nobody` with exactly the
/// unit's capabilities (bounding and ambient, no new privileges, a small memlock limit as a
/// kernel ≥ 5.11 allows) sees a root-owned process killed by SIGTERM and explains it.
#[test]
fn the_agent_runs_as_nobody_with_exactly_the_units_capabilities() {
    if !tracer_tests::is_root() {
        eprintln!("SKIPPING LOUDLY: running the agent as nobody with capabilities needs root to hand them over");
        return;
    }
    let Some(setpriv) = which_setpriv() else {
        eprintln!("SKIPPING LOUDLY: setpriv (util-linux) is missing");
        return;
    };
    let unit = read(UNIT);
    let caps: Vec<String> = unit_capabilities(&unit, "AmbientCapabilities")
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    // The binary and the output folder where nobody can reach them.
    let dir = tracer_tests::TempDir::new("deploy-nobody");
    let bin = dir.0.join("tracer");
    std::fs::copy(tracer_tests::tracer_bin(), &bin).unwrap();
    let out = dir.0.join("out");
    std::fs::create_dir(&out).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A kernel that no longer charges BPF maps to RLIMIT_MEMLOCK (5.11+) runs with a small
    // one, as the unit's user would without LimitMEMLOCK.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let memlock_charged = (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) < (5, 11);
    let mut cmd = Command::new("prlimit");
    cmd.arg(if memlock_charged { "--memlock=unlimited" } else { "--memlock=65536" }).arg("--").arg(&setpriv);
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg(&bin)
        .args(["watch", "--no-incidents", "--settle", "500ms", "--duration", "10s", "--jsonl"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut agent = tracer_tests::ChildGuard(cmd.spawn().expect("setpriv"));
    let pipe = agent.0.stderr.take().expect("stderr");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&stderr);
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut pipe = pipe;
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // Attached once it says so (the programs are loaded and attached before that line).
    let jsonl = out.join("tracer-watch.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !stderr.lock().unwrap().contains("Ctrl-C stops") {
        if let Ok(Some(status)) = agent.0.try_wait() {
            std::thread::sleep(std::time::Duration::from_millis(100));
            panic!("tracer watch as nobody with {caps} ended ({status}) before it started:\n{}", stderr.lock().unwrap());
        }
        assert!(std::time::Instant::now() < deadline, "tracer watch as nobody did not start:\n{}", stderr.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut sleeper = tracer_tests::ChildGuard(Command::new("sleep").arg("60").spawn().unwrap());
    let pid = sleeper.pid();
    std::thread::sleep(std::time::Duration::from_millis(300));
    sleeper.signal(libc::SIGTERM);
    sleeper.wait_timeout(std::time::Duration::from_secs(5)).expect("sleep ended");
    let status = agent.wait_timeout(std::time::Duration::from_secs(30)).expect("the agent stops after --duration");
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        lines.iter().any(|e| e["kind"] == "exit" && e["pid"] == pid && e["signal_name"] == "SIGTERM"),
        "no end by SIGTERM of pid {pid} with {caps}:\n{text}"
    );
    assert!(lines.iter().any(|e| e["kind"] == "verdict" && e["pid"] == pid && e["cause"] == "killed_by_signal"), "{text}");
}

fn which_setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"].iter().map(PathBuf::from).find(|p| p.exists())
}
