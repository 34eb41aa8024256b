//! `cargo xtask setup | test`: the project's own commands.
mod exec;
mod run_workload;
mod setup;
mod test;

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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
        Command::Test(opts) => test::run(&opts),
        Command::RunWorkload(opts) => run_workload::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
