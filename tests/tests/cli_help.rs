//! Every flag of the two programs users type has a help line.
use clap::{Command, CommandFactory};

/// Flags of `cmd` and its subcommands without a help line (`help` and `version` aside).
fn flags_without_help(cmd: &Command) -> Vec<String> {
    let mut out: Vec<String> = cmd
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .filter(|a| a.get_help().is_none() && a.get_long_help().is_none())
        .map(|a| format!("{} {}", cmd.get_name(), a.get_id()))
        .collect();
    for sub in cmd.get_subcommands() {
        out.extend(flags_without_help(sub));
    }
    out
}

#[test]
fn every_flag_of_tracer_and_workload_has_a_help_line() {
    for (name, cmd) in [("tracer", tracer::cli::Cli::command()), ("workload", workload::cli::Cli::command())] {
        let missing = flags_without_help(&cmd);
        assert!(missing.is_empty(), "{name}: flags without help: {missing:?}");
    }
}
