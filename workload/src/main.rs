use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use workload::cli::{Cli, Command, GenModelArgs, ProbeArgs, ServeArgs, WeightFormat};
use workload::loader::{Loader, LoaderConfig};
use workload::registry::Registry;
use workload::server::{router, AppState};
use workload::shutdown::DrainingListener;
use workload::{device, probe, synth};

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Probe(args) => probe_main(args),
        Command::GenModel(args) => gen_model(args),
        Command::BuildInfo => {
            println!("{}", build_info());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("workload: {e:#}");
        std::process::exit(1);
    }
}

/// What `tracer doctor` needs to know about this binary.
fn build_info() -> serde_json::Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "candle": "0.11.1",
        "cuda": cfg!(feature = "cuda"),
        "backend": if cfg!(feature = "cuda") { "cuda" } else { "cpu" },
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, so
/// call it before announcing readiness: a signal that comes after must not be missed.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn serve(args: ServeArgs) -> Result<()> {
    let placement = device::place(args.device, args.dtype)?;
    tracing::info!("models run on {}", placement.description);
    if args.gpu_memory_limit.is_some() && !placement.device.is_cuda() {
        tracing::warn!("--gpu-memory-limit applies to GPU loads only; the models run on the CPU, so it is ignored");
    }
    let registry = Arc::new(Registry::new(args.models).map_err(anyhow::Error::msg)?);
    let rt = runtime()?;
    rt.block_on(async move {
        let stop = shutdown_signal()?;
        let addr = std::net::SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr}: pick a free port with --port (0 picks one), or stop what holds it")
        })?;
        let local = listener.local_addr()?;
        // Listen first: health answers from the first moment, as in the bug report,
        // where it said models_loaded: 1 before the process died.
        tracing::info!("listening on http://{local} (--load {})", args.load.name());
        let loader = Loader::start(
            LoaderConfig {
                mode: args.load,
                placement,
                memory_budget: args.memory_budget,
                gpu_memory_limit: args.gpu_memory_limit,
                max_new_tokens: args.max_new_tokens,
                crash_during_load: args.debug_crash_during_load,
            },
            &registry,
        )
        .context("cannot start the model loader thread")?;
        let state = Arc::new(AppState::new(registry, loader, args.max_text_chars));
        // See workload::shutdown for the order of a stop, and why.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel();
        let listener = DrainingListener::new(listener, stop_rx, drained_tx);
        let answering = listener.answering();
        let stopping = Arc::new(tokio::sync::Notify::new());
        let graceful = {
            let (state, stopping) = (state.clone(), stopping.clone());
            async move {
                stop.await;
                tracing::info!("shutting down: no new connections, finishing the requests in flight (at most {})", humantime_secs(args.shutdown_timeout));
                state.begin_shutdown();
                stopping.notify_one();
                let _ = stop_tx.send(true);
                // The accept queue is answered: the listener can close.
                let _ = drained_rx.await;
            }
        };
        let server = axum::serve(listener, router(state)).with_graceful_shutdown(graceful);
        let timeout = args.shutdown_timeout;
        tokio::select! {
            served = server => served.context("server failed")?,
            _ = async { stopping.notified().await; tokio::time::sleep(timeout).await } => {
                tracing::warn!("requests still in flight after --shutdown-timeout {}: exiting anyway", humantime_secs(timeout));
            }
        }
        let mut answering = answering.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(3), async { while answering.join_next().await.is_some() {} }).await;
        tracing::info!("stopped");
        Ok(())
    })
}

fn probe_main(args: ProbeArgs) -> Result<()> {
    let uri: hyper::Uri = args.url.parse().with_context(|| format!("--url {:?} is not a URL; use http://HOST:PORT", args.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url {:?}: only http:// is supported", args.url);
    }
    let host = uri.host().context("--url has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let rt = runtime()?;
    rt.block_on(async move {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let config = probe::ProbeConfig {
            addr,
            host: format!("{host}:{port}"),
            interval: args.interval,
            translate_interval: args.translate_interval,
            duration: args.duration,
            timeout: args.timeout,
            text: args.text,
            source: args.source,
            target: args.target,
            model: args.model,
        };
        let mut out: Box<dyn Write> = match &args.out {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        let summary = probe::run(config, &mut out, shutdown_signal()?).await.context("cannot write probe records")?;
        eprintln!("{}", summary.human());
        Ok(())
    })
}

fn gen_model(args: GenModelArgs) -> Result<()> {
    let dims = match (args.preset, args.bytes) {
        (Some(preset), _) => synth::shapes::preset_dims(args.arch, preset),
        (None, Some(bytes)) => synth::shapes::dims_for_bytes(args.arch, bytes, args.dtype.size()).map_err(anyhow::Error::msg)?,
        (None, None) => bail!("give --preset tiny|small|full or --bytes SIZE"),
    };
    let started = Instant::now();
    let spec = synth::GenSpec { arch: args.arch, dims, dtype: args.dtype, shard_bytes: args.shard_size, seed: args.seed };
    let report = match args.format {
        WeightFormat::Safetensors => synth::generate(&spec, &args.out)?,
        WeightFormat::Pytorch => synth::generate_pytorch(&spec, &args.out)?,
    };
    eprintln!(
        "workload: wrote a synthetic {} checkpoint to {}: {:.1} M parameters, {} of weights in {} file(s), {:.1} s",
        args.arch.name(),
        report.dir.display(),
        report.parameters as f64 / 1e6,
        host::bytes::human_bytes(report.weight_bytes),
        report.files.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
