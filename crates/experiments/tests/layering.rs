//! The crate's module layering, checked on its sources: no import circle between files, shared
//! modules import no pipeline and nothing above them, a pipeline imports no other pipeline, the
//! runner and `index.md` name no pipeline, and no file reaches 500 lines. The pipelines are the
//! registry's ([`stiff_experiments::registry::pipelines`]), never a list written here.
//!
//! An import is a `use` statement (`crate::`, `super::`, `self::` or a child module of the file)
//! or a `crate::` path in the code; it points at the deepest module file the path names. Code
//! from the first `#[cfg(test)]` line on (the file's unit tests) is not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file's module path: `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`, `lib.rs` is `[]`.
type ModPath = Vec<String>;

/// Every `.rs` file under `src`, by module path.
fn modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut m: ModPath = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
                if m.last().is_some_and(|l| l == "mod" || (m.len() == 1 && l == "lib")) {
                    m.pop();
                }
                out.insert(m, p);
            }
        }
    }
    out
}

/// The file's code without comments and without its unit tests.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is rare in this crate; cutting there only loses code.
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The paths of a `use` tree: `a::{b, c::{d, e as f}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        // `e as f` points where `e` does.
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let prefix = tree[..open].trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .flat_map(expand_use)
        .map(|p| format!("{prefix}{p}"))
        .collect()
}

/// Every path a file imports: its `use` statements (whole, across lines) and `crate::` paths in code.
fn imported_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = find_use(rest) {
        let after = &rest[i..];
        let end = after.find(';').unwrap_or(after.len());
        let stmt = after[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        out.extend(expand_use(stmt.trim_start_matches("use ")));
        rest = &after[end..];
    }
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("crate::") {
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if word_start {
            let path: String =
                code[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            out.push(path);
        }
    }
    out
}

/// Position of the next `use ` keyword at the start of a statement (after `pub`, `pub(crate)`, ...).
fn find_use(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("use ") {
        let at = from + i;
        let before = code[..at].trim_end_matches(' ');
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let lead = before[line_start..].trim();
        if lead.is_empty() || lead == "pub" || lead.starts_with("pub(") {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

/// The module file `path` (as written in module `me`) points at; `None`: another crate.
fn resolve(path: &str, me: &ModPath, files: &BTreeMap<ModPath, PathBuf>) -> Option<ModPath> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty() && *s != "*").collect();
    let mut at: ModPath;
    let mut rest = segs.as_slice();
    match rest.first().copied() {
        Some("crate") => {
            at = vec![];
            rest = &rest[1..];
        }
        Some("self") => {
            at = me.clone();
            rest = &rest[1..];
        }
        Some("super") => {
            at = me.clone();
            while rest.first() == Some(&"super") {
                at.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A child module of this file (`pub use config::X` in a mod.rs), else another crate.
            let mut child = me.clone();
            child.push(first.to_string());
            if !files.contains_key(&child) {
                return None;
            }
            at = me.clone();
        }
        None => return None,
    }
    for s in rest {
        let mut next = at.clone();
        next.push(s.to_string());
        if !files.contains_key(&next) {
            break;
        }
        at = next;
    }
    Some(at)
}

/// The import graph of the crate under `src`: file -> files it imports (itself excluded).
fn import_graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let files = modules(src);
    let mut graph = BTreeMap::new();
    for (m, p) in &files {
        let code = code_of(&std::fs::read_to_string(p).unwrap());
        let targets: BTreeSet<ModPath> =
            imported_paths(&code).iter().filter_map(|path| resolve(path, m, &files)).filter(|t| t != m).collect();
        graph.insert(m.clone(), targets);
    }
    graph
}

/// Every import circle, each as its files in order (`a -> b -> a`), one per strongly connected
/// group of files.
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>, name: impl Fn(&ModPath) -> String) -> Vec<String> {
    // Two files are in one circle when each reaches the other.
    let reach = |from: &ModPath| -> BTreeSet<ModPath> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for t in graph.get(&n).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    stack.push(t.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&ModPath, BTreeSet<ModPath>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut reported: BTreeSet<ModPath> = BTreeSet::new();
    let mut out = Vec::new();
    for m in graph.keys() {
        if reported.contains(m) || !reaches[m].contains(m) {
            continue;
        }
        let group: BTreeSet<ModPath> = reaches[m].iter().filter(|o| reaches[*o].contains(m)).cloned().collect();
        reported.extend(group.iter().cloned());
        // The shortest way back to `m` inside its group (breadth first), as the circle shown.
        let mut prev: BTreeMap<ModPath, ModPath> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([m.clone()]);
        let mut last = None;
        while let Some(n) = queue.pop_front() {
            if graph[&n].contains(m) {
                last = Some(n);
                break;
            }
            for t in &graph[&n] {
                if group.contains(t) && !prev.contains_key(t) && t != m {
                    prev.insert(t.clone(), n.clone());
                    queue.push_back(t.clone());
                }
            }
        }
        let mut path = vec![m.clone()];
        let mut n = last.expect("a file in a circle reaches itself");
        let mut back = vec![];
        while &n != m {
            back.push(n.clone());
            n = prev[&n].clone();
        }
        path.extend(back.into_iter().rev());
        path.push(m.clone());
        let members: Vec<String> = group.iter().map(&name).collect();
        out.push(format!(
            "{} (a circle among {} files: {})",
            path.iter().map(&name).collect::<Vec<_>>().join(" -> "),
            members.len(),
            members.join(", ")
        ));
    }
    out
}

fn file_name<'a>(files: &'a BTreeMap<ModPath, PathBuf>, src: &'a Path) -> impl Fn(&ModPath) -> String + 'a {
    let files = files.clone();
    move |m: &ModPath| files[m].strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/")
}

/// The pipelines of the registry: (module folder under `src/`, type name).
fn registered_pipelines(src: &Path) -> Vec<(String, String)> {
    let out: Vec<(String, String)> = stiff_experiments::registry::pipelines()
        .iter()
        .map(|p| {
            let path: Vec<&str> = p.type_path().split("::").collect();
            assert!(path.len() >= 3, "{}: expected crate::module::Type", p.type_path());
            (path[1].to_string(), path[path.len() - 1].to_string())
        })
        .collect();
    for (m, _) in &out {
        assert!(src.join(m).join("mod.rs").is_file(), "registered pipeline module {m} has no folder src/{m}/");
    }
    out
}

/// The crate's `src/`. `STIFF_LAYERING_SRC=<dir>` checks another copy of it for circles (e.g. an
/// older commit's, from `git archive`); the registry checks always use this build's.
fn crate_src() -> PathBuf {
    std::env::var_os("STIFF_LAYERING_SRC")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), PathBuf::from)
}

#[test]
fn no_import_runs_back_up_and_the_runner_names_no_pipeline() {
    let src = crate_src();
    let files = modules(&src);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let graph = import_graph(&src);
    assert!(graph.values().map(BTreeSet::len).sum::<usize>() > 50, "the import graph is nearly empty: parser broken?");

    let circles = cycles(&graph, file_name(&files, &src));
    assert!(
        circles.is_empty(),
        "{} import circles (arrows must run one way):\n  {}",
        circles.len(),
        circles.join("\n  ")
    );

    let registered = registered_pipelines(&src);
    let pipelines: Vec<&str> = registered.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(pipelines.len(), stiff_experiments::registry::pipelines().len());
    let above = ["registry", "runner", "index"];
    let name = file_name(&files, &src);
    for (m, targets) in &graph {
        let rel = name(m);
        let text = std::fs::read_to_string(&files[m]).unwrap();
        assert!(text.lines().count() < 500, "{rel}: {} lines (limit 500)", text.lines().count());
        let top = m.first().map_or("lib", String::as_str);
        let forbidden: Vec<&str> = if pipelines.contains(&top) {
            // A pipeline: not another pipeline, nothing above.
            pipelines.iter().filter(|p| **p != top).chain(above.iter()).copied().collect()
        } else if top == "runner" || top == "index" {
            pipelines.clone()
        } else if top == "registry" || top == "lib" {
            vec!["runner", "index"]
        } else {
            // Shared vocabulary and helpers.
            pipelines.iter().chain(above.iter()).copied().collect()
        };
        for t in targets {
            let t_top = t.first().map_or("lib", String::as_str);
            assert!(!forbidden.contains(&t_top), "{rel} imports {}, against the layering in lib.rs", name(t));
        }
        if top == "runner" || top == "index" {
            let figures = stiff_experiments::registry::figures();
            let quoted = figures.iter().map(|f| format!("\"{}\"", f.name));
            for word in registered.iter().map(|(_, ty)| ty.clone()).chain(quoted) {
                assert!(!text.contains(&word), "{rel} names a pipeline or figure ({word})");
            }
        }
    }
}

/// The circle finder itself, on a made-up crate: a circle of three files through `super::`, a
/// child re-export and a `crate::` path in code is found with its path; a one-way tree is not.
#[test]
fn the_circle_finder_finds_a_circle_and_only_that() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    let write = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod p;\npub mod shared;\nuse std::path::Path;\n");
    write("shared.rs", "// use crate::p::a; (a comment, not an import)\npub struct S;\n");
    write("p/mod.rs", "pub mod a;\npub mod b;\npub mod c;\npub use a::{A, B as Bee};\n");
    write("p/a.rs", "use super::b::{\n    Thing,\n    other::Deep,\n};\npub struct A;\n");
    write("p/b.rs", "use crate::shared::S;\nfn f() { let _ = crate::p::c::g(); }\n");
    write("p/c.rs", "pub(crate) use super::a::A;\n#[cfg(test)]\nmod tests { use crate::p::mod_b; }\n");
    let files = modules(src);
    let graph = import_graph(src);
    let circles = cycles(&graph, file_name(&files, src));
    assert_eq!(
        circles,
        vec!["p/a.rs -> p/b.rs -> p/c.rs -> p/a.rs (a circle among 3 files: p/a.rs, p/b.rs, p/c.rs)".to_string()]
    );
    assert!(graph[&vec!["p".to_string()]].contains(&vec!["p".to_string(), "a".to_string()]), "{graph:?}");
    assert!(graph[&vec![]].is_empty(), "std is another crate: {graph:?}");
    assert!(graph[&vec!["shared".to_string()]].is_empty(), "a comment counted as an import: {graph:?}");

    // Break the circle: c no longer imports a.
    write("p/c.rs", "pub fn g() {}\n");
    assert!(cycles(&import_graph(src), file_name(&modules(src), src)).is_empty());
}
