//! The module graph of one crate, for tests that keep the arrows running one way: a module's
//! imports are its `crate::a::...` / `super::a::...` paths outside comments (and, for a folder's
//! `mod.rs`, the files of the folder it names). Shared by gradkernel's layering test and the
//! workspace-wide check in `xtask/tests/import_circles.rs` (included by path).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules (by name: `engine`, `conv_fast`, `conv_fast/gram`) and the modules each imports,
/// plus the files over `max_lines` lines. `lib.rs` (the module list and re-exports) is left out.
pub fn module_graph(src: &Path, max_lines: usize) -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let mut files = Vec::new();
    sources(src, &mut files);
    let src = src.to_path_buf();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if text.lines().count() > max_lines {
            long.push(format!("{} ({} lines)", f.display(), text.lines().count()));
        }
        let m = module(&src, f);
        if m == "lib" {
            continue; // the module list and re-exports
        }
        let c = code(&text);
        let mut deps: BTreeSet<String> = targets(&c, "crate").into_iter().filter(|d| *d != m).collect();
        // `super::x` inside folder `a/` means `a/x` (or `a` itself for items of a/mod.rs);
        // `super::super::x` one folder further up (or the crate root's `x`).
        let c = c.replace("super::super::", "SUPER2::");
        let exists = |name: &str| files.iter().any(|f| module(&src, f) == name);
        if let Some((parent, _)) = m.rsplit_once('/') {
            for t in targets(&c, "super") {
                let sib = format!("{parent}/{t}");
                deps.insert(if exists(&sib) { sib } else { parent.to_string() });
            }
            let grand = parent.rsplit_once('/').map(|(g, _)| g.to_string());
            for t in targets(&c, "SUPER2") {
                let up = match &grand {
                    Some(g) => format!("{g}/{t}"),
                    None => t.clone(),
                };
                deps.insert(if exists(&up) { up } else { grand.clone().unwrap_or(t) });
            }
        }
        deps.remove(&m);
        graph.insert(m, deps);
    }
    // A folder's mod.rs may name its own files (`mod x; use x::...`): record those edges too.
    for m in graph.keys().cloned().collect::<Vec<_>>() {
        let text = code(&std::fs::read_to_string(files.iter().find(|f| module(&src, f) == m).unwrap()).unwrap());
        for (child, _) in graph.clone().iter().filter(|(c, _)| c.rsplit_once('/').is_some_and(|(p, _)| p == m)) {
            let name = child.rsplit_once('/').unwrap().1;
            if text.contains(&format!("{name}::")) {
                graph.get_mut(&m).unwrap().insert(child.clone());
            }
        }
    }
    (graph, long)
}

/// A circle of imports, as the modules along it (the first repeated at the end), if any.
pub fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn visit(
    m: &str,
    g: &BTreeMap<String, BTreeSet<String>>,
    state: &mut BTreeMap<String, u8>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    state.insert(m.to_string(), 1);
    path.push(m.to_string());
    for d in g.get(m).into_iter().flatten() {
        match state.get(d.as_str()).copied().unwrap_or(0) {
            1 => {
                let start = path.iter().position(|p| p == d).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(d.clone());
                return Some(cycle);
            }
            0 if g.contains_key(d.as_str()) => {
                if let Some(c) = visit(d, g, state, path) {
                    return Some(c);
                }
            }
            _ => {}
        }
    }
    path.pop();
    state.insert(m.to_string(), 2);
    None
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module name of a file: `engine`, `conv_fast` (its mod.rs), `conv_fast/gram`.
fn module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let s = rel.to_string_lossy().replace('\\', "/");
    s.strip_suffix("/mod").map(str::to_string).unwrap_or(s)
}

/// The code of a file without comments (line comments, doc comments) and without the
/// `#[cfg(test)]` unit-test module at its end (tests may import anything).
pub fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    body.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// First path segments after `prefix::` (`crate::a::b` -> `a`; `crate::{a, b::c}` -> `a`, `b`).
pub fn targets(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let pat = format!("{prefix}::");
    let mut rest = code;
    while let Some(i) = rest.find(&pat) {
        let before = rest[..i].chars().last();
        rest = &rest[i + pat.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `foo_crate::x` or `a::crate::` is not ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the brace group.
            let (mut depth, mut item, mut end) = (0, String::new(), 0);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = j;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
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

fn first_segment(s: &str) -> String {
    s.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}
