//! Case 4 (model load): a synthetic NLLB checkpoint loaded on the CPU by `workload serve`
//! (`--load eager` and `--load background`) and by Python `safetensors.numpy`, the page
//! cache dropped before each load. For the service: the load seconds it reports on
//! /models, its peak RSS (VmHWM), and `/health` latency while it loads (`workload probe`
//! every 20 ms).
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{
    proc::{Lines, Proc},
    stats::{median, percentile, ratio},
    stress::Bins,
    trace::realtime_ns,
};

const LOAD_TIMEOUT: Duration = Duration::from_secs(900);

const PYTHON_LOAD: &str = r#"
import json, resource, sys, time
import numpy, safetensors, safetensors.numpy
kept, total = [], 0
t0 = time.perf_counter()
for f in sys.argv[1:]:
    tensors = safetensors.numpy.load_file(f)
    total += sum(a.nbytes for a in tensors.values())
    kept.append(tensors)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "bytes": total, "versions": {"python": sys.version.split()[0],
    "numpy": numpy.__version__, "safetensors": safetensors.__version__}}))
"#;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// gen-model preset: full (the real NLLB-600M shapes, 2.4 GB), tiny for the smoke test.
    pub preset: String,
    pub runs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadRun {
    /// Load time: /models `load_seconds` for the service, around load_file for Python.
    pub seconds: f64,
    /// Service only: from spawn until /models said READY.
    pub wall_to_ready_s: Option<f64>,
    pub peak_rss_bytes: u64,
    pub health_requests: Option<usize>,
    pub health_errors: Option<usize>,
    pub health_p50_ms: Option<f64>,
    pub health_p99_ms: Option<f64>,
    /// Service only: from spawn to the first /health answer (a restart's downtime).
    #[serde(default)]
    pub first_health_ms: Option<f64>,
}

impl LoadRun {
    /// A load, or a floor beside it, that is not a service: only its seconds and peak RSS.
    fn timed(seconds: f64, peak_rss_bytes: u64) -> LoadRun {
        LoadRun {
            seconds,
            wall_to_ready_s: None,
            peak_rss_bytes,
            health_requests: None,
            health_errors: None,
            health_p50_ms: None,
            health_p99_ms: None,
            first_health_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    pub seconds_median: Option<f64>,
    pub gb_per_s: Option<f64>,
    pub peak_rss_over_checkpoint: Option<f64>,
    pub health_p50_ms: Option<f64>,
    pub health_p99_ms: Option<f64>,
    pub first_health_ms: Option<f64>,
    pub runs: Vec<LoadRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelLoad {
    pub plan: Plan,
    pub checkpoint: String,
    pub checkpoint_bytes: u64,
    pub cold_cache: bool,
    pub python_versions: Option<serde_json::Value>,
    pub variants: Vec<Variant>,
    /// The eager load bare and under the tracer, cold and warm cache.
    pub traced: Vec<TracedLoad>,
    pub skipped: Vec<String>,
    /// The hook the tracer's rss probe was on in the traced loads, as its trace_start
    /// names it (`kmem:rss_stat (BTF)`: the BTF tracepoint; `kmem:rss_stat`: the classic).
    #[serde(default)]
    pub rss_hook: Option<String>,
}

/// The rss probe's label in a trace's `trace_start` line.
fn rss_hook_of(trace: &Path) -> Option<String> {
    let text = std::fs::read_to_string(trace).ok()?;
    let start: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    start["probes"].as_array()?.iter().filter_map(|p| p.as_str()).find(|p| p.contains("rss_stat")).map(str::to_string)
}

/// Goal of the traced/bare load time ratio.
pub const TRACED_LOAD_GOAL: f64 = 1.05;

#[derive(Debug, Clone, Serialize)]
pub struct TracedLoad {
    pub cache: String,
    pub bare: Variant,
    pub traced: Variant,
    /// Traced load seconds over bare (medians).
    pub ratio: Option<f64>,
    /// Python `safetensors.numpy.load_file` on the same files in the same rounds.
    pub python: Option<Variant>,
    /// `dd` reading the same files to /dev/null: the floor.
    pub dd: Option<Variant>,
    /// The bare load's speed over Python's (Python seconds / bare seconds).
    pub speed_over_python: Option<f64>,
    /// Bare load seconds over `dd` seconds.
    pub seconds_over_dd: Option<f64>,
    /// The same load under the tracer with every probe group but `rss` (kmem:rss_stat):
    /// what the rest of the tracer costs, that hook aside.
    #[serde(default)]
    pub traced_without_rss: Option<Variant>,
    /// Traced-without-rss seconds over bare (medians).
    #[serde(default)]
    pub ratio_without_rss: Option<f64>,
    /// Warm cache only: fresh anonymous memory of the checkpoint's size, faulted in by as
    /// many threads as the load uses, a byte written per page, in the same rounds. A load
    /// into new memory pays at least this before it copies a byte.
    #[serde(default)]
    pub fresh_memory: Option<Variant>,
}

/// The tracer's probe groups but `rss`, for [`TracedLoad::traced_without_rss`] (`process`
/// is always on).
pub const ALL_BUT_RSS: &str = "signal,oom,mmap,tcp";

/// Goal: the load with a warm page cache at least this many times Python's speed.
pub const WARM_OVER_PYTHON_GOAL: f64 = 2.0;
/// Goal: the load with a cold page cache within this factor of `dd` reading the files.
pub const COLD_OVER_DD_GOAL: f64 = 1.10;

pub fn run(plan: &Plan, bins: &Bins, python: Option<&Path>, cache: &Path, scratch: &Path) -> Result<ModelLoad> {
    let dir = ensure_checkpoint(bins, &plan.preset, cache)?;
    let files = safetensors_files(&dir)?;
    let bytes: u64 = files.iter().map(|f| f.metadata().map(|m| m.len()).unwrap_or(0)).sum();
    let mut cold_cache = true;
    let mut variants = Vec::new();
    for mode in ["eager", "background"] {
        let mut runs = Vec::new();
        for i in 0..plan.runs {
            println!("xtask: bench model load: workload --load {mode} ({}/{})", i + 1, plan.runs);
            cold_cache &= drop_caches();
            runs.push(serve_load(bins, &dir, mode, &scratch.join(format!("probe-{mode}-{i}.jsonl")), None)?);
        }
        variants.push(variant(format!("workload serve --load {mode}"), runs, bytes));
    }
    // What attaching the tracer costs a loading model server: the same eager load under
    // `tracer run`, cold (page cache dropped) and warm (the checkpoint in the cache),
    // each beside a bare run of its own kind, alternating. Python's load and `dd` reading
    // the same files run in the same rounds: how fast the load is, against a peer and
    // against the floor.
    let mut traced = Vec::new();
    let mut rss_hook = None;
    let mut python_versions = None;
    let dd = crate::exec::on_path("dd");
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for cache_state in ["cold", "warm"] {
        let (mut bare, mut under, mut without_rss, mut py, mut floor, mut fresh) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if cache_state == "warm" {
            // One load to fill the page cache.
            serve_load(bins, &dir, "eager", &scratch.join("probe-warmup.jsonl"), None)?;
        }
        let cold = |ok: &mut bool| {
            if cache_state == "cold" {
                *ok &= drop_caches();
            }
        };
        for i in 0..plan.runs {
            let tracer = bins.tracer.as_path();
            for (tool, probes, who, runs) in [
                (None, None, "bare", &mut bare),
                (Some(tracer), None, "traced", &mut under),
                (Some(tracer), Some(ALL_BUT_RSS), "traced without rss", &mut without_rss),
            ] {
                println!("xtask: bench model load: eager, {cache_state} cache, {who} ({}/{})", i + 1, plan.runs);
                cold(&mut cold_cache);
                let trace = scratch.join(format!("trace-{cache_state}-{}-{i}.jsonl", who.replace(' ', "-")));
                let tracer = tool.map(|bin| Traced { bin, trace: &trace, probes });
                let probe_out = scratch.join(format!("probe-{cache_state}-{}-{i}.jsonl", who.replace(' ', "-")));
                runs.push(serve_load(bins, &dir, "eager", &probe_out, tracer)?);
            }
            if let Some(py_bin) = python {
                println!("xtask: bench model load: python, {cache_state} cache ({}/{})", i + 1, plan.runs);
                cold(&mut cold_cache);
                let (run, versions) = python_load(py_bin, &files)?;
                python_versions = Some(versions);
                py.push(run);
            }
            if let Some(dd) = &dd {
                cold(&mut cold_cache);
                floor.push(dd_read(dd, &files)?);
            }
            if cache_state == "warm" {
                fresh.push(fault_fresh_memory(bytes, workers)?);
            }
        }
        if rss_hook.is_none() {
            rss_hook = rss_hook_of(&scratch.join(format!("trace-{cache_state}-traced-0.jsonl")));
        }
        let bare = variant(format!("eager, {cache_state} cache, bare"), bare, bytes);
        let under = variant(format!("eager, {cache_state} cache, under `tracer run`"), under, bytes);
        let without_rss =
            variant(format!("eager, {cache_state} cache, under `tracer run --probes {ALL_BUT_RSS}`"), without_rss, bytes);
        let fresh = (!fresh.is_empty()).then(|| variant(format!("fresh memory faulted by {workers} threads"), fresh, bytes));
        let py = (!py.is_empty()).then(|| variant(format!("python, {cache_state} cache"), py, bytes));
        let floor = (!floor.is_empty()).then(|| variant(format!("dd, {cache_state} cache"), floor, bytes));
        traced.push(TracedLoad {
            cache: cache_state.into(),
            ratio: ratio(under.seconds_median, bare.seconds_median),
            speed_over_python: py.as_ref().and_then(|p| ratio(p.seconds_median, bare.seconds_median)),
            seconds_over_dd: floor.as_ref().and_then(|f| ratio(bare.seconds_median, f.seconds_median)),
            ratio_without_rss: ratio(without_rss.seconds_median, bare.seconds_median),
            bare,
            traced: under,
            traced_without_rss: Some(without_rss),
            python: py,
            dd: floor,
            fresh_memory: fresh,
        });
    }
    let mut skipped = Vec::new();
    if dd.is_none() {
        skipped.push("dd (the floor): not on PATH".into());
    }
    match python {
        Some(py) => {
            let mut runs = Vec::new();
            for i in 0..plan.runs {
                println!("xtask: bench model load: python safetensors.numpy ({}/{})", i + 1, plan.runs);
                cold_cache &= drop_caches();
                let (run, versions) = python_load(py, &files)?;
                python_versions = Some(versions);
                runs.push(run);
            }
            variants.push(variant("python safetensors.numpy.load_file".into(), runs, bytes));
        }
        None => skipped
            .push("python safetensors.numpy: no venv with safetensors (run `cargo xtask bench` to create it)".into()),
    }
    Ok(ModelLoad {
        plan: plan.clone(),
        checkpoint: dir.display().to_string(),
        checkpoint_bytes: bytes,
        cold_cache,
        python_versions,
        variants,
        traced,
        skipped,
        rss_hook,
    })
}

fn variant(name: String, runs: Vec<LoadRun>, bytes: u64) -> Variant {
    let col = |f: &dyn Fn(&LoadRun) -> Option<f64>| median(&runs.iter().filter_map(f).collect::<Vec<_>>());
    let seconds = col(&|r| Some(r.seconds));
    Variant {
        name,
        seconds_median: seconds,
        gb_per_s: ratio(Some(bytes as f64 / 1e9), seconds),
        peak_rss_over_checkpoint: ratio(col(&|r| Some(r.peak_rss_bytes as f64)), Some(bytes as f64)),
        health_p50_ms: col(&|r| r.health_p50_ms),
        health_p99_ms: col(&|r| r.health_p99_ms),
        first_health_ms: col(&|r| r.first_health_ms),
        runs,
    }
}

/// The checkpoint under `cache`, generated once (`workload gen-model`) and reused.
fn ensure_checkpoint(bins: &Bins, preset: &str, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(format!("nllb-{preset}"));
    if dir.join("config.json").is_file() && safetensors_files(&dir).is_ok_and(|f| !f.is_empty()) {
        println!("xtask: bench model load: reusing {}", dir.display());
        return Ok(dir);
    }
    let partial = cache.join(format!("nllb-{preset}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    println!("xtask: bench model load: generating a synthetic NLLB {preset} checkpoint in {} (once)", dir.display());
    let out = Command::new(&bins.workload)
        .args(["gen-model", "--arch", "nllb", "--preset", preset, "--out"])
        .arg(&partial)
        .output()
        .context("running workload gen-model")?;
    if !out.status.success() {
        bail!("workload gen-model failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    std::fs::rename(&partial, &dir).with_context(|| format!("moving the checkpoint to {}", dir.display()))?;
    Ok(dir)
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}

/// Empties the page cache (root): every load starts cold. False when it could not.
fn drop_caches() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// One load by `workload serve`; with `tracer` = (the tracer, its trace file), under
/// `tracer run --no-tui`, the figures still the service's own.
/// `tracer run` around a load: the binary, its trace file, `--probes` if not all.
#[derive(Clone, Copy)]
struct Traced<'a> {
    bin: &'a Path,
    trace: &'a Path,
    probes: Option<&'a str>,
}

fn serve_load(bins: &Bins, dir: &Path, mode: &str, probe_out: &Path, tracer: Option<Traced<'_>>) -> Result<LoadRun> {
    let started = Instant::now();
    let mut cmd = match tracer {
        Some(t) => {
            let mut c = Command::new(t.bin);
            c.arg("run");
            if let Some(p) = t.probes {
                c.args(["--probes", p]);
            }
            c.args(["--no-tui", "--jsonl"]).arg(t.trace).arg("--").arg(&bins.workload);
            c
        }
        None => Command::new(&bins.workload),
    };
    let mut server = Proc::spawn(
        cmd.args(["serve", "--port", "0", "--device", "cpu", "--load", mode, "--model"])
            .arg(format!("nllb={}", dir.display()))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "workload serve",
    )?;
    let log = Lines::read(server.child.stderr.take().context("workload stderr")?, "workload serve stderr");
    let line = log.wait_for("listening on http://127.0.0.1:", Duration::from_secs(60))?;
    let port: u16 = line
        .split("listening on http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {line:?}"))?;
    // A restarted service is down until this: it listens before it loads.
    let first_health_ms = loop {
        if http_get_json(port, "/health").is_ok() {
            break Some(started.elapsed().as_secs_f64() * 1e3);
        }
        if started.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut probe = Proc::spawn(
        Command::new(&bins.workload)
            .args(["probe", "--interval", "20ms", "--translate-interval", "0s", "--timeout", "5s", "--url"])
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--out")
            .arg(probe_out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "workload probe",
    )?;
    let probe_log = Lines::read(probe.child.stderr.take().context("probe stderr")?, "workload probe stderr");
    let deadline = Instant::now() + LOAD_TIMEOUT;
    let load_seconds = loop {
        if let Some(f) = server.try_wait() {
            bail!("workload serve ended while loading ({}):\n{}", f.describe(), log.text());
        }
        if let Ok(models) = http_get_json(port, "/models") {
            let m = &models[0];
            match m["state"].as_str() {
                Some("READY") => break m["load_seconds"].as_f64().context("READY without load_seconds")?,
                Some("FAILED") => bail!("the model failed to load: {}", m["reason"]),
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            bail!("the model was not READY within {LOAD_TIMEOUT:?}:\n{}", log.text());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ready_unix_s = realtime_ns() as f64 * 1e-9;
    let wall_to_ready_s = started.elapsed().as_secs_f64();
    // Under the tracer the service is the tracer's child.
    let service = match tracer {
        Some(_) => child_of(server.pid()).context("the service under `tracer run`")?,
        None => server.pid(),
    };
    let peak_rss_bytes = super::proc::status_bytes(service, "VmHWM").context("reading the service's VmHWM")?;
    probe.signal(libc::SIGINT);
    probe.wait_success(Duration::from_secs(30), &probe_log)?;
    // SAFETY: plain syscall on the service this bench started.
    unsafe { libc::kill(service as i32, libc::SIGTERM) };
    server.wait(Duration::from_secs(30))?;
    let health = health_while_loading(probe_out, ready_unix_s)?;
    let lat: Vec<f64> = health.iter().filter_map(|(ok, ms)| ok.then_some(*ms)).collect();
    Ok(LoadRun {
        seconds: load_seconds,
        wall_to_ready_s: Some(wall_to_ready_s),
        peak_rss_bytes,
        health_requests: Some(health.len()),
        health_errors: Some(health.iter().filter(|(ok, _)| !ok).count()),
        health_p50_ms: median(&lat),
        health_p99_ms: percentile(&lat, 99.0),
        first_health_ms,
    })
}

/// The first child of `pid`.
fn child_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// (answered OK, latency ms) of each /health probe sent before the model was READY.
fn health_while_loading(probe_out: &Path, ready_unix_s: f64) -> Result<Vec<(bool, f64)>> {
    let text = std::fs::read_to_string(probe_out).with_context(|| format!("reading {}", probe_out.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["op"] != "health" || v["unix_s"].as_f64().is_none_or(|t| t > ready_unix_s) {
            continue;
        }
        out.push((v["outcome"] == "ok", v["latency_ms"].as_f64().unwrap_or(f64::NAN)));
    }
    Ok(out)
}

/// GET `path` on the service; the JSON body.
fn http_get_json(port: u16, path: &str) -> Result<serde_json::Value> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("GET {path}: chunked answers are not read here");
    }
    Ok(serde_json::from_str(body)?)
}

/// `threads` threads writing a byte into every page of their share of `bytes` of new
/// anonymous memory, timed from the mapping to the last thread's end. Default backing (no
/// huge-page advice), as the loader gets it where huge pages are off or not advised.
fn fault_fresh_memory(bytes: u64, threads: usize) -> Result<LoadRun> {
    const PAGE: usize = 4096;
    let len = usize::try_from(bytes).context("checkpoint size")?.next_multiple_of(PAGE).max(PAGE);
    let started = Instant::now();
    // SAFETY: a new private anonymous mapping, checked below, unmapped before returning.
    let base = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if base == libc::MAP_FAILED {
        bail!("mapping {len} bytes of fresh memory: {}", std::io::Error::last_os_error());
    }
    let pages = len / PAGE;
    let per_thread = pages.div_ceil(threads.max(1));
    let base_addr = base as usize;
    std::thread::scope(|s| {
        for t in 0..threads.max(1) {
            let first = (t * per_thread).min(pages);
            let last = ((t + 1) * per_thread).min(pages);
            s.spawn(move || {
                for page in first..last {
                    // SAFETY: inside the mapping; each thread writes only its own pages.
                    unsafe { std::ptr::write_volatile((base_addr + page * PAGE) as *mut u8, 1) };
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(base, len) };
    Ok(LoadRun::timed(seconds, 0))
}

/// `dd` reading `files` to /dev/null, timed around the whole set.
fn dd_read(dd: &Path, files: &[PathBuf]) -> Result<LoadRun> {
    let started = Instant::now();
    for f in files {
        let out = Command::new(dd)
            .arg(format!("if={}", f.display()))
            .args(["of=/dev/null", "bs=8M"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", dd.display()))?;
        if !out.status.success() {
            bail!("dd {}: {}", f.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(LoadRun::timed(started.elapsed().as_secs_f64(), 0))
}

fn python_load(python: &Path, files: &[PathBuf]) -> Result<(LoadRun, serde_json::Value)> {
    let mut proc = Proc::spawn(
        Command::new(python)
            .args(["-c", PYTHON_LOAD])
            .args(files)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "python safetensors",
    )?;
    let mut stdout = proc.child.stdout.take().context("python stdout")?;
    let err = Lines::read(proc.child.stderr.take().context("python stderr")?, "python stderr");
    let mut text = String::new();
    stdout.read_to_string(&mut text)?;
    let done = proc.wait_success(LOAD_TIMEOUT, &err)?;
    let v: serde_json::Value = serde_json::from_str(text.trim()).with_context(|| format!("python printed {text:?}"))?;
    let seconds = v["seconds"].as_f64().context("python: no seconds")?;
    let run = LoadRun::timed(seconds, done.maxrss_bytes);
    Ok((run, v["versions"].clone()))
}
