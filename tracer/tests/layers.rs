//! The layering of the `tracer` crate, checked from its sources: a module may use only
//! modules of a lower layer, so no two modules import each other and none imports one
//! above it. ARCHITECTURE.md explains the layers; this test keeps them true.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Top-level modules of `tracer/src`, bottom layer first.
const LAYERS: &[&[&str]] = &[
    // What every layer uses: names of kernel constants, units, time, /proc, the event model.
    &["names", "units", "clock", "process", "event"],
    &["summary", "mappings", "forecast"],
    &["timeline"],
    // Producers of events.
    &["capture", "sample"],
    // Pure diagnosis.
    &["diagnose"],
    // The sink trait.
    &["sink"],
    // Sinks and renderers.
    &["export", "tui"],
    &["session"],
    // Subcommands.
    &["commands", "doctor"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules named after `crate::` in `src`: `crate::a::b`, and each item of
/// `crate::{a, b::{c, d}}`.
fn crate_refs(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut end = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        out.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    end = i;
                    break;
                }
                item.push(c);
            }
            out.insert(first_segment(&item));
            rest = &group[end..];
        } else {
            out.insert(first_segment(rest));
        }
    }
    out.remove("");
    out
}

/// The code of a file without `//` comments: a doc link is not a dependency.
fn without_comments(src: &str) -> String {
    src.lines().map(|l| l.split_once("//").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

fn first_segment(s: &str) -> String {
    s.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        let refs = uses.entry(name.clone()).or_default();
        for f in files {
            refs.extend(crate_refs(&without_comments(&std::fs::read_to_string(&f).unwrap())));
        }
        refs.remove(&name);
    }
    let mut wrong = Vec::new();
    for (module, refs) in &uses {
        let Some(layer) = layer_of(module) else {
            wrong.push(format!("{module} is in no layer: add it to LAYERS and ARCHITECTURE.md"));
            continue;
        };
        for r in refs {
            match layer_of(r) {
                Some(l) if l < layer => {}
                Some(_) => wrong.push(format!("{module} uses {r}, which is not below it")),
                None => wrong.push(format!("{module} uses {r}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n  {}\nuses: {uses:#?}", wrong.join("\n  "));
    // Every layer's module exists (a renamed module must not leave a stale rule).
    for m in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(uses.contains_key(*m) || *m == "event", "no module {m} in src/");
    }
}

#[test]
fn the_reference_parser_reads_groups_and_paths() {
    let refs = crate_refs("use crate::{a::{b, c}, d, e::f};\nlet x = crate::g::h(); crate::{\n  i,\n};");
    assert_eq!(refs, ["a", "d", "e", "g", "i"].iter().map(|s| s.to_string()).collect());
    assert!(crate_refs(&without_comments("//! see [`crate::doctor`]\nuse crate::x;")).len() == 1);
}
