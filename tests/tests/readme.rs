//! The README is what a new user types: its commands must parse as the tool takes them,
//! its demo must print what it says, its legend must say what the verdicts say, and its
//! links must lead somewhere in a clone.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser;
use tracer::cli::Cli;
use tracer_tests::{require_root, tracer_bin, TempDir};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// The fenced blocks of `text` with their language tag.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, current.take()) {
            (Some(_), Some(block)) => out.push(block),
            (Some(lang), None) => current = Some((lang.trim().to_string(), String::new())),
            (None, Some((lang, mut body))) => {
                body.push_str(line);
                body.push('\n');
                current = Some((lang, body));
            }
            (None, None) => {}
        }
    }
    out
}

/// A shell command's words, as `sh` would split this simple form: quotes kept together,
/// `$(...)` replaced by a pid, comments dropped, ended by a pipe, list or redirection.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = command.chars().peekable();
    let mut started = false;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '$') if chars.peek() == Some(&'(') => {
                let mut depth = 0;
                for c in chars.by_ref() {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 1 => break,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
                word.push_str("4711");
                started = true;
            }
            (None, '#') if !started && word.is_empty() => break,
            // A pipe, a list or a redirection ends the tracer command.
            (None, '|' | ';' | '&' | '>' | '<') => break,
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started || !word.is_empty() {
        out.push(word);
    }
    out
}

/// Every `tracer` command in the README's shell blocks, joined over `\` line ends.
fn tracer_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (lang, body) in blocks(text) {
        if lang != "sh" {
            continue;
        }
        let joined = body.replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.trim().trim_start_matches("sudo -E ").trim_start_matches("sudo ");
            let rest = ["tracer ", "./target/release/tracer "].iter().find_map(|p| line.strip_prefix(p));
            if let Some(rest) = rest {
                out.push(format!("tracer {rest}"));
            }
        }
    }
    out
}

#[test]
fn every_tracer_command_in_the_readme_parses() {
    let text = readme();
    let commands = tracer_commands(&text);
    assert!(commands.len() >= 3, "the README shows how to run tracer: {commands:?}");
    for c in &commands {
        let argv = words(c);
        if let Err(e) = Cli::try_parse_from(&argv) {
            panic!("README command `{c}` does not parse ({argv:?}):\n{e}");
        }
    }
}

#[test]
fn the_reset_reason_legend_says_what_the_verdicts_say() {
    let text = readme();
    let legend: Vec<&str> = text.lines().filter(|l| l.starts_with("- `") && l.contains("`: ")).collect();
    let mut checked = 0;
    for line in legend {
        let (name, meaning) = line.trim_start_matches("- `").split_once("`: ").expect("- `NAME`: meaning");
        let Some(want) = tracer::names::reset_reason_meaning(name) else { continue };
        assert_eq!(meaning, want, "the README's legend of {name}");
        checked += 1;
    }
    assert!(checked >= 8, "the legend lists the reset reasons ({checked} found)");
    assert!(!text.contains("`TCP_STATE` a close with"), "the old, wrong TCP_STATE legend is gone");
}

#[test]
fn links_stay_inside_the_repository() {
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap_or(target);
            assert!(!file.starts_with("../"), "{doc} links outside the repository: {target}");
            assert!(root().join(file).exists(), "{doc} links to {target}, which a clone does not have");
        }
    }
}

/// The demo, run as written (in a cgroup of its own name, with this build's tracer):
/// its `grep | tail` prints the chain it describes, and the verdict names the limit.
#[test]
fn the_demo_prints_the_chain_it_describes() {
    require_root("the demo loads eBPF programs and makes a memory cgroup");
    if Command::new("python3").arg("-c").arg("pass").status().map_or(true, |s| !s.success()) {
        panic!("the README's demo runs python3, which is not installed: `apt-get install -y python3`");
    }
    let text = readme();
    let at = text.find("### Demo without the workload").expect("the demo section");
    let (_, body) = blocks(&text[at..]).into_iter().next().expect("the demo's commands");
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let name = format!("tracer-readme-demo-{}", std::process::id());
    let mut script = body
        .lines()
        .filter(|l| !l.contains("cargo "))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("sudo ", "")
        .replace("./target/release/tracer", &tracer_bin().display().to_string())
        .replace("/sys/fs/cgroup/memory/demo", &format!("/sys/fs/cgroup/memory/{name}"));
    if !v1 {
        // As the comments say for cgroup v2.
        script = script
            .replace(&format!("/sys/fs/cgroup/memory/{name}"), &format!("/sys/fs/cgroup/{name}"))
            .replace("memory.limit_in_bytes", "memory.max");
    }
    let dir = TempDir::new("readme-demo");
    let out = Command::new("sh").arg("-c").arg(&script).current_dir(&dir.0).output().unwrap();
    let cg = if v1 { format!("/sys/fs/cgroup/memory/{name}") } else { format!("/sys/fs/cgroup/{name}") };
    let _ = std::fs::remove_dir(&cg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kinds: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .map(|v| v["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["rss", "signal", "oom_kill", "exit"], "the demo's tail:\n{stdout}\n{stderr}");
    let signal = stdout.lines().find(|l| l.contains(r#""kind":"signal""#)).unwrap_or("");
    assert!(signal.contains(r#""si_code_name":"SI_KERNEL""#), "{signal}");
    assert!(stdout.lines().all(|l| l.len() < 1000), "no multi-KB line in the demo's output:\n{stdout}");
    assert!(
        stderr.contains("was OOM-killed at the memory cgroup limit (64.0 MiB)"),
        "the verdict names the demo's limit:\n{stderr}"
    );
}
