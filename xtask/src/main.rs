//! `cargo xtask setup | test`: the project's own commands.
mod bench;
mod build_gpu;
mod dist;
mod exec;
mod foreign;
mod privilege;
mod kernels;
mod run_workload;
mod setup;
mod test;
mod unprivileged;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build chain setup and the test suite of tracer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF build chain (LLVM 22, nightly rust-src, bpf-linker); idempotent
    Setup(setup::Options),
    /// Run setup, then every test: unit tests and the root end-to-end scenarios
    Test(test::Options),
    /// Reproduce the reset of the bug report with the workload, explain it, show the fix (root)
    RunWorkload(run_workload::Options),
    /// Measure the tracer against strace and bpftrace, its loss, latency and cost, and the
    /// workload's model load; writes bench/results/ (root)
    Bench(bench::Options),
    /// Build the release artifacts: target/dist/tracer-VERSION-x86_64-linux.tar.gz (one
    /// binary for glibc 2.31+, man page, completions, licenses, INSTALL) and a .deb
    Dist(dist::Options),
    /// Build workload with CUDA (nvcc from PyPI wheels, no GPU needed) and a release tracer
    /// into target/gpu-dist/, with the device check script
    BuildGpu(build_gpu::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
        Command::Test(opts) => test::run(&opts),
        Command::RunWorkload(opts) => run_workload::run(&opts),
        Command::Bench(opts) => bench::run(&opts),
        Command::BuildGpu(opts) => build_gpu::run(&opts),
        Command::Dist(opts) => dist::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
