//! The `crash-loop` scenario: the workload under a supervisor (a shell loop, as a
//! process manager would restart it), OOM-killed on each eager load and started again.
//! The tracer attaches to the supervisor with `--follow-children` while the supervisor
//! is stopped, so every worker is traced from its fork; the verdict is one crash loop.
use std::{
    fs::File,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    http,
    run::{prepare, finish, model_arg, pause, say, start_probe, stop_probe, stopping, wait_gone, wait_tracer, Finished, Options, Outcome},
    ChildGuard,
};

/// How many times the supervisor starts the workload.
pub const STARTS: u32 = 3;

/// The supervisor: joins the cgroup, stops itself until the tracer is attached, then
/// starts `"$@"` STARTS times, 0.3 s apart. $0 is the cgroup's folder.
const SUPERVISOR: &str = r#"echo $$ > "$0/cgroup.procs" || exit 1
kill -STOP $$
i=0
while [ $i -lt "$STARTS" ]; do
    "$@"
    i=$((i + 1))
    sleep 0.3
done"#;

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

pub(crate) fn run(opts: &Options) -> Result<Outcome> {
    let out = &opts.out_dir;
    let (super::run::Checkpoints { nllb, aya, .. }, cg) = prepare(opts)?;
    let port = http::free_port().context("no free port on 127.0.0.1")?;

    let mut supervisor = Command::new("/bin/sh");
    supervisor.arg("-c").arg(SUPERVISOR).arg(&cg.path).arg(&opts.bins.workload);
    supervisor.args(["serve", "--port", &port.to_string(), "--load", "eager"]);
    supervisor.arg("--model").arg(model_arg("nllb", &nllb)).arg("--model").arg(model_arg("aya", &aya));
    supervisor.env("STARTS", STARTS.to_string()).stdin(Stdio::null());
    let log = File::create(out.join("workload.log")).context("cannot create workload.log")?;
    supervisor.stdout(log.try_clone()?).stderr(log);
    let supervisor = ChildGuard(supervisor.spawn().context("cannot start the supervisor shell")?);
    let sup = supervisor.pid();
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(sup) != Some('T') {
        if Instant::now() > deadline || stopping() {
            bail!("the supervisor shell {sup} did not stop itself before its first start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let trace = out.join("trace.jsonl");
    let perfetto = out.join("trace.perfetto.json");
    let mut tracer = Command::new(&opts.bins.tracer);
    tracer.args(["--pid", &sup.to_string(), "--follow-children", "--grace", "2s"]);
    tracer.arg("--jsonl").arg(&trace).arg("--perfetto").arg(&perfetto);
    if !opts.tui {
        tracer.arg("--no-tui");
        let log = File::create(out.join("tracer.log")).context("cannot create tracer.log")?;
        tracer.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    }
    let mut tracer = ChildGuard(tracer.spawn().with_context(|| format!("cannot start {}", opts.bins.tracer.display()))?);
    say(opts, &format!("tracer {} attaching to the supervisor {sup} (stopped)", tracer.pid()));
    // Attached once the trace file has its first line.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&trace).map(|m| m.len()).unwrap_or(0) == 0 {
        if let Some(status) = tracer.0.try_wait()? {
            bail!("the tracer stopped ({status}) before it attached; see {}", out.join("tracer.log").display());
        }
        if Instant::now() > deadline || stopping() {
            bail!("the tracer did not attach within 60 s; see {}", out.join("tracer.log").display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    supervisor.signal(libc::SIGCONT);
    say(opts, &format!("supervisor {sup} starts workload serve --load eager on port {port}, {STARTS} times"));

    let (mut probe, probe_records) = start_probe(opts, port)?;
    wait_gone(sup, Duration::from_secs(600));
    pause(Duration::from_secs(1));
    stop_probe(&mut probe);
    say(opts, "the supervisor is done; waiting for the tracer to finish");
    let interrupted = wait_tracer(opts, &mut tracer);
    let oom_kills = cg.oom_kills();
    drop(cg);
    drop(supervisor);
    finish(opts, Finished { trace, perfetto, probe_records, server_pid: sup, killer_pid: None, oom_kills, models: None, interrupted })
}
