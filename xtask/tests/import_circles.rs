//! No crate of the workspace has an import circle between its modules (files): the arrows of
//! every crate run one way. gradkernel and experiments check more of their own layering; this
//! keeps the rest (cli, onnx, models, ...) from growing circles unnoticed (two were found by
//! looking, not by a test: cli's examples <-> gram and onnx's eval <-> shape_ops).

#[path = "../../crates/gradkernel/tests/support/module_graph.rs"]
mod module_graph;

use std::path::Path;

use module_graph::{find_circle, module_graph};

#[test]
fn no_crate_has_an_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut crates: Vec<_> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    crates.push(root.join("xtask"));
    crates.sort();
    assert!(crates.len() >= 12, "found {crates:?}");
    let mut circles = Vec::new();
    for c in &crates {
        let (graph, _) = module_graph(&c.join("src"), usize::MAX);
        if let Some(circle) = find_circle(&graph) {
            circles.push(format!("{}: {}", c.file_name().unwrap().to_string_lossy(), circle.join(" -> ")));
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

/// The check finds a circle when there is one.
#[test]
fn a_circle_is_found() {
    use std::collections::{BTreeMap, BTreeSet};
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(find_circle(&g).unwrap(), ["a", "b", "c", "a"]);
    let dir = tempdir_with(&[
        ("lib.rs", "mod x; mod y;"),
        ("x.rs", "use crate::y::Y; pub struct X;"),
        ("y.rs", "use crate::x::X; pub struct Y;"),
    ]);
    let (graph, _) = module_graph(&dir, usize::MAX);
    assert!(find_circle(&graph).is_some(), "{graph:?}");
}

fn tempdir_with(files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("import-circles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}
