//! The crate's structure stays easy to see: no import circle between its modules (files), so
//! the arrows run one way (lib.rs is only a module list and re-exports), and no source file over
//! 600 lines. A module's imports are its `crate::a::...` / `super::a::...` paths outside comments.

#[path = "support/module_graph.rs"]
mod module_graph;

use std::path::Path;

use module_graph::{code, find_circle, module_graph, targets};

const MAX_LINES: usize = 600;

#[test]
fn no_import_circle_between_modules_and_no_long_files() {
    let (graph, long) = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), MAX_LINES);
    assert!(long.is_empty(), "source files over {MAX_LINES} lines: {long:?}");
    assert!(graph.len() > 20, "the parser found too few modules: {:?}", graph.keys());
    assert!(graph["engine"].contains("conv_fast"), "the parser must see engine -> conv_fast: {:?}", graph["engine"]);
    if let Some(c) = find_circle(&graph) {
        panic!("import circle: {}", c.join(" -> "));
    }
}

/// The checker itself: it finds a circle and the members of brace groups.
#[test]
fn the_parser_sees_groups_and_ignores_comments() {
    let c = code("use crate::{a, b::{C, D}, e::f};\n// use crate::zzz;\nfn x() { crate::g::h(); other_crate::q(); }");
    let t: Vec<String> = targets(&c, "crate").into_iter().collect();
    assert_eq!(t, ["a", "b", "e", "g"]);
}
