//! The comparison: for each kernel and scenario the set of verdict causes, against the
//! host's; rendered as a markdown table, with the differences listed. How many resets
//! the verdicts explain is shown and noted, not compared.
use std::{collections::BTreeMap, fmt::Write};

use super::{Observed, Scenario, Verdicts};

/// One row: the host or a guest kernel.
pub struct Row {
    /// `host` or `Debian 12`.
    pub name: String,
    /// `uname -r`, and what it came from (package, cgroup layout).
    pub release: String,
    pub detail: String,
    /// QEMU start to /init (guests only).
    pub boot_s: Option<f64>,
    /// All its scenarios, wall clock.
    pub run_s: Option<f64>,
    pub cells: BTreeMap<Scenario, Observed>,
    /// Seconds each scenario took (the guest's clock for a guest).
    pub scenario_s: BTreeMap<Scenario, f64>,
    /// Boots before this one whose guest kernel crashed: the first lines of each oops.
    pub crashes: Vec<String>,
}

/// A kernel that could not be compared at all.
pub struct Skipped {
    pub name: String,
    pub why: String,
}

/// One scenario where a kernel disagrees with the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub kernel: String,
    pub scenario: Scenario,
    pub host: String,
    pub guest: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: host {}, here {}", self.kernel, self.scenario.name(), self.host, self.guest)
    }
}

/// `(none)` for a scenario without verdict, else the causes, and the resets they
/// explain: `killed_by_signal (3 resets)`.
pub fn verdicts_text(v: &Verdicts) -> String {
    if v.causes.is_empty() {
        return "(none)".into();
    }
    let causes = v.causes.iter().cloned().collect::<Vec<_>>().join(", ");
    match v.resets {
        0 => causes,
        1 => format!("{causes} (1 reset)"),
        n => format!("{causes} ({n} resets)"),
    }
}

/// The cell: the verdicts, then the facts the kernel programs read (`; ` between).
fn cell_text(v: &Verdicts) -> String {
    let mut s = verdicts_text(v);
    for f in &v.facts {
        s.push_str("; ");
        s.push_str(f);
    }
    s
}

fn observed_text(o: Option<&Observed>) -> String {
    match o {
        Some(Ok(v)) => cell_text(v),
        Some(Err(e)) => format!("no result: {}", first_line(e)),
        None => "not run".into(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn label(r: &Row) -> String {
    format!("{} {}", r.name, r.release)
}

/// Whether the kernel's causes are the host's (both gave a result).
fn same_causes(h: Option<&Observed>, g: Option<&Observed>) -> bool {
    matches!((h, g), (Some(Ok(a)), Some(Ok(b))) if a.causes == b.causes && a.facts == b.facts)
}

/// Every (kernel, scenario) where a kernel's causes are not the host's. A scenario that
/// gave no result, on the host or the kernel, is a difference too: nothing was compared.
pub fn differences(host: &Row, kernels: &[Row]) -> Vec<Difference> {
    let mut out = Vec::new();
    for k in kernels {
        for s in Scenario::ALL {
            let (h, g) = (host.cells.get(&s), k.cells.get(&s));
            if !same_causes(h, g) {
                out.push(Difference { kernel: label(k), scenario: s, host: observed_text(h), guest: observed_text(g) });
            }
        }
    }
    out
}

/// Where the causes agree but the verdicts explain another number of resets than on the
/// host: not a failure (kernels before 6.10 trace fewer resets), but worth reading.
pub fn notes(host: &Row, kernels: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for k in kernels {
        for crash in &k.crashes {
            out.push(format!("{}: the guest kernel crashed on an earlier boot and was booted again; its oops began: {crash}", label(k)));
        }
        for s in Scenario::ALL {
            if let (Some(Ok(h)), Some(Ok(g))) = (host.cells.get(&s), k.cells.get(&s)) {
                if h.causes == g.causes && h.resets != g.resets {
                    out.push(format!(
                        "{} {}: the same causes, but the verdicts explain {} reset(s) here and {} on the host",
                        label(k),
                        s.name(),
                        g.resets,
                        h.resets
                    ));
                }
            }
        }
    }
    out
}

fn secs(s: Option<f64>) -> String {
    s.map_or("–".into(), |s| format!("{s:.1} s"))
}

/// The markdown table: one row per kernel, one column per scenario; a guest's cell has ✓
/// when its causes are the host's, ✗ otherwise.
pub fn table(host: &Row, kernels: &[Row], skipped: &[Skipped]) -> String {
    let mut s = String::new();
    s.push_str("| kernel | boot | scenarios |");
    for sc in Scenario::ALL {
        let _ = write!(s, " {} |", sc.name());
    }
    s.push_str("\n|---|---|---|");
    for _ in Scenario::ALL {
        s.push_str("---|");
    }
    s.push('\n');
    let _ = write!(s, "| {} (reference) | – | {} |", label(host), secs(host.run_s));
    for sc in Scenario::ALL {
        let _ = write!(s, " {} |", observed_text(host.cells.get(&sc)).replace('|', "\\|"));
    }
    s.push('\n');
    for k in kernels {
        let _ = write!(s, "| {} | {} | {} |", label(k), secs(k.boot_s), secs(k.run_s));
        for sc in Scenario::ALL {
            let mark = if same_causes(host.cells.get(&sc), k.cells.get(&sc)) { "✓" } else { "✗" };
            let _ = write!(s, " {} {mark} |", observed_text(k.cells.get(&sc)).replace('|', "\\|"));
        }
        s.push('\n');
    }
    for k in skipped {
        let why = k.why.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = write!(s, "| {} | SKIPPED: {} |", k.name, why.replace('|', "\\|"));
        s.push_str(&" |".repeat(Scenario::ALL.len() + 1));
        s.push('\n');
    }
    s
}

/// Seconds per scenario, one row per kernel.
pub fn times(host: &Row, kernels: &[Row]) -> String {
    let mut s = String::from("| kernel |");
    for sc in Scenario::ALL {
        let _ = write!(s, " {} |", sc.name());
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(Scenario::ALL.len()));
    s.push('\n');
    for r in std::iter::once(host).chain(kernels) {
        let _ = write!(s, "| {} |", label(r));
        for sc in Scenario::ALL {
            let _ = write!(s, " {} |", secs(r.scenario_s.get(&sc).copied()));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(list: &[&str]) -> Observed {
        Ok(Verdicts { causes: list.iter().map(|s| s.to_string()).collect(), resets: 0, facts: Default::default() })
    }

    fn row(name: &str, cells: &[(Scenario, Observed)]) -> Row {
        Row {
            name: name.into(),
            release: "r".into(),
            detail: String::new(),
            boot_s: Some(5.04),
            run_s: Some(61.0),
            cells: cells.iter().cloned().collect(),
            scenario_s: BTreeMap::new(),
            crashes: Vec::new(),
        }
    }

    fn all(refused: &[&str]) -> Vec<(Scenario, Observed)> {
        Scenario::ALL
            .into_iter()
            .map(|s| match s {
                Scenario::Refused => (s, causes(refused)),
                Scenario::Oom => (s, causes(&["oom_killed"])),
                Scenario::MmapFile => (s, causes(&[])),
                _ => (s, causes(&["killed_by_signal"])),
            })
            .collect()
    }

    #[test]
    fn same_causes_no_difference() {
        let host = row("host", &all(&["connection_refused"]));
        let k = row("Debian 13", &all(&["connection_refused"]));
        assert!(differences(&host, &[k]).is_empty());
    }

    #[test]
    fn a_different_fact_is_a_difference() {
        let host = row("host", &all(&["connection_refused"]));
        let mut k = row("Debian 11", &all(&["connection_refused"]));
        if let Some(Ok(v)) = k.cells.get_mut(&Scenario::MmapFile) {
            v.facts.insert("mapped 16 MiB of model.bin, a ? file".into());
        }
        let d = differences(&host, &[k]);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].scenario, Scenario::MmapFile);
        assert!(d[0].guest.contains("a ? file"), "{}", d[0].guest);
    }

    #[test]
    fn a_different_cause_is_a_difference_and_a_cross() {
        let host = row("host", &all(&["connection_refused"]));
        let old = row("Debian 11", &all(&["reset_by_peer"]));
        let d = differences(&host, std::slice::from_ref(&old));
        assert_eq!(
            d,
            [Difference {
                kernel: "Debian 11 r".into(),
                scenario: Scenario::Refused,
                host: "connection_refused".into(),
                guest: "reset_by_peer".into()
            }]
        );
        assert_eq!(d[0].to_string(), "Debian 11 r refused: host connection_refused, here reset_by_peer");
        let t = table(&host, &[old], &[]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| kernel | boot | scenarios | oom | signal | refused | abort | killed_with_clients | mmap_file |");
        assert!(lines[2].starts_with("| host r (reference) | – | 61.0 s | oom_killed | killed_by_signal | connection_refused |"), "{t}");
        assert!(lines[3].contains("| 5.0 s | 61.0 s | oom_killed ✓ |"), "{t}");
        assert!(lines[3].contains("| reset_by_peer ✗ |"), "{t}");
        assert!(lines[3].ends_with("| (none) ✓ |"), "{t}");
    }

    #[test]
    fn resets_are_shown_and_noted_not_compared() {
        let with = |n| Ok(Verdicts { causes: ["killed_by_signal".to_string()].into(), resets: n, facts: Default::default() });
        let host = row("host", &[(Scenario::KilledWithClients, with(3))]);
        let old = row("Debian 11", &[(Scenario::KilledWithClients, with(0))]);
        let diffs = differences(&host, std::slice::from_ref(&old));
        assert!(!diffs.iter().any(|d| d.scenario == Scenario::KilledWithClients), "{diffs:?}");
        assert_eq!(
            notes(&host, std::slice::from_ref(&old)),
            ["Debian 11 r killed_with_clients: the same causes, but the verdicts explain 0 reset(s) here and 3 on the host"]
        );
        let t = table(&host, &[old], &[]);
        assert!(t.contains("| killed_by_signal (3 resets) |") && t.contains("| killed_by_signal ✓ |"), "{t}");
        assert_eq!(verdicts_text(&Verdicts { causes: ["a".to_string()].into(), resets: 1, facts: Default::default() }), "a (1 reset)");
        assert_eq!(verdicts_text(&Verdicts::default()), "(none)");
    }

    #[test]
    fn a_missing_result_is_a_difference() {
        let host = row("host", &all(&["connection_refused"]));
        let mut cells = all(&["connection_refused"]);
        cells.retain(|(s, _)| *s != Scenario::Abort);
        cells.push((Scenario::Abort, Err("no report (tracer exit 1)\nmore".into())));
        cells.retain(|(s, _)| *s != Scenario::MmapFile);
        let k = row("Debian 12", &cells);
        let d = differences(&host, std::slice::from_ref(&k));
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].guest, "no result: no report (tracer exit 1)");
        assert_eq!(d[1].guest, "not run");
        let t = table(&host, &[k], &[Skipped { name: "Debian 11".into(), why: "cannot reach the archive".into() }]);
        assert!(t.contains("| no result: no report (tracer exit 1) ✗ |"), "{t}");
        assert!(t.contains("| Debian 11 | SKIPPED: cannot reach the archive |"), "{t}");
        // Every row has as many cells as the header.
        let widths: Vec<usize> = t.lines().map(|l| l.matches(" |").count() + l.matches("---|").count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{t}");
    }
}
