//! The gateway's layout (`docs/architecture.md`): modules import one way, with no cycle between
//! files, and the top-level folders depend only in the documented direction
//! (`cli → http → check → runtime/store/config`, `telemetry` and `error` under all).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import (besides itself).
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "cli",
        &[
            "http",
            "check",
            "report",
            "runtime",
            "store",
            "config",
            "telemetry",
            "error",
        ],
    ),
    (
        "http",
        &[
            "check",
            "report",
            "runtime",
            "store",
            "config",
            "telemetry",
            "error",
        ],
    ),
    ("report", &["store", "config"]),
    (
        "check",
        &["runtime", "store", "config", "telemetry", "error"],
    ),
    ("runtime", &["config", "telemetry", "error"]),
    ("config", &["error"]),
    ("store", &[]),
    ("telemetry", &[]),
    ("error", &["store"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `check/route.rs` → `["check", "route"]`; `check/mod.rs` → `["check"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts
}

/// Paths named after `crate::` (a `crate::{a, b::c}` group gives each member).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| !p.is_empty())
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                out.push(ident(member.trim()));
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            out.push(ident(&rest[..end]));
        }
    }
    out
}

/// Code only: comments and doc comments may name any module.
fn code_of(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Graph {
    /// file module → modules it imports.
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    for f in &files {
        let me = module_of(&src, f);
        if me.is_empty() {
            continue;
        }
        let text = code_of(&std::fs::read_to_string(f).expect("readable"));
        let mut to = BTreeSet::new();
        for path in crate_paths(&text) {
            // The longest prefix that is a module file is what this file depends on.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p));
            if let Some(t) = target
                && t != me
                && !t.starts_with(&me)
            {
                to.insert(t);
            }
        }
        edges.insert(me, to);
    }
    Graph { edges }
}

#[test]
fn top_level_modules_depend_in_one_direction() {
    let g = graph();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (from, tos) in &g.edges {
        let top = from[0].as_str();
        let Some(ok) = allowed.get(top) else {
            wrong.push(format!(
                "{} is not a documented top-level module",
                from.join("/")
            ));
            continue;
        };
        for to in tos {
            let t = to[0].as_str();
            if t != top && !ok.contains(&t) {
                wrong.push(format!("{} imports {}", from.join("/"), to.join("/")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layout:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycle_between_files() {
    let g = graph();
    // Depth-first search with colours; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit(
        n: &Vec<String>,
        g: &Graph,
        colour: &mut BTreeMap<Vec<String>, Colour>,
        stack: &mut Vec<Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        colour.insert(n.clone(), Colour::Grey);
        stack.push(n.clone());
        for m in g.edges.get(n).into_iter().flatten() {
            match colour.get(m).copied().unwrap_or(Colour::White) {
                Colour::White => visit(m, g, colour, stack, cycles),
                Colour::Grey => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let names: Vec<String> = stack[at..].iter().map(|s| s.join("::")).collect();
                    cycles.push(format!("{} -> {}", names.join(" -> "), m.join("::")));
                }
                Colour::Black => {}
            }
        }
        stack.pop();
        colour.insert(n.clone(), Colour::Black);
    }
    let mut colour = BTreeMap::new();
    let mut cycles = Vec::new();
    for n in g.edges.keys() {
        if colour.get(n).copied().unwrap_or(Colour::White) == Colour::White {
            visit(n, &g, &mut colour, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_crate_root_holds_few_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let root: Vec<String> = std::fs::read_dir(&src)
        .expect("src")
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "main.rs" && n != "lib.rs")
        .collect();
    assert!(root.len() <= 6, "cross-cutting files at the root: {root:?}");
}
