//! The crate's structure stays easy to see: no import circle between its modules (files), so
//! the arrows run one way (lib.rs is only a module list and re-exports), and no source file over
//! 600 lines. A module's imports are its `crate::a::...` / `super::a::...` paths outside comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

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
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    body.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// First path segments after `prefix::` (`crate::a::b` -> `a`; `crate::{a, b::c}` -> `a`, `b`).
fn targets(code: &str, prefix: &str) -> BTreeSet<String> {
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

#[test]
fn no_import_circle_between_modules_and_no_long_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if text.lines().count() > MAX_LINES {
            long.push(format!("{} ({} lines)", f.display(), text.lines().count()));
        }
        let m = module(&src, f);
        if m == "lib" {
            continue; // the module list and re-exports
        }
        let c = code(&text);
        let mut deps: BTreeSet<String> = targets(&c, "crate").into_iter().filter(|d| *d != m).collect();
        // `super::x` inside folder `a/` means `a/x` (or `a` itself for items of a/mod.rs).
        if let Some((parent, _)) = m.rsplit_once('/') {
            for t in targets(&c, "super") {
                let sib = format!("{parent}/{t}");
                deps.insert(if files.iter().any(|f| module(&src, f) == sib) { sib } else { parent.to_string() });
            }
        }
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
    assert!(long.is_empty(), "source files over {MAX_LINES} lines: {long:?}");
    assert!(graph.len() > 20, "the parser found too few modules: {:?}", graph.keys());
    assert!(graph["engine"].contains("conv_fast"), "the parser must see engine -> conv_fast: {:?}", graph["engine"]);
    // Depth-first search for a cycle, reporting its path.
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
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, &graph, &mut state, &mut Vec::new()) {
                panic!("import circle: {}", c.join(" -> "));
            }
        }
    }
}

/// The checker itself: it finds a circle and the members of brace groups.
#[test]
fn the_parser_sees_groups_and_ignores_comments() {
    let c = code("use crate::{a, b::{C, D}, e::f};\n// use crate::zzz;\nfn x() { crate::g::h(); other_crate::q(); }");
    let t: Vec<String> = targets(&c, "crate").into_iter().collect();
    assert_eq!(t, ["a", "b", "e", "g"]);
}
