//! `docs/results.md` says only what is current and runs anywhere: no path of the machine the
//! runs were made on, no superseded section (history lives in its closing changelog only),
//! every image it shows exists, and every `reproduce` command names its data as `$DATA` or the
//! relative `../shared/datasets`.

use std::path::Path;

const CHANGELOG: &str = "## Changelog";

fn results_md() -> (String, std::path::PathBuf) {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let text = std::fs::read_to_string(docs.join("results.md")).expect("docs/results.md");
    (text, docs)
}

/// The problems of a results page: machine paths, history outside the changelog, missing images,
/// commands with data elsewhere.
fn problems(text: &str, docs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for p in ["/root", "/work/", "/home/", "/tmp/", "/Users/", "C:\\"] {
            if line.contains(p) {
                out.push(format!("line {}: machine path `{p}`: {line}", i + 1));
            }
        }
    }
    let (current, changelog) = text.split_once(CHANGELOG).unwrap_or((text, ""));
    if changelog.is_empty() {
        out.push(format!("no `{CHANGELOG}` section at the end"));
    } else if changelog.contains("\n## ") {
        out.push(format!("a section follows `{CHANGELOG}`: the changelog must be last"));
    }
    for (i, line) in current.lines().enumerate() {
        let lower = line.to_lowercase();
        for word in ["legacy", "superseded", "outdated", "no longer current"] {
            if lower.contains(word) {
                out.push(format!("line {}: `{word}` before the changelog: {line}", i + 1));
            }
        }
    }
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split('#').next().unwrap_or_default();
            let is_image = rest[..at].contains("![");
            if is_image && !docs.join(target).is_file() {
                out.push(format!("line {}: image {target} does not exist", i + 1));
            }
            rest = &after[end..];
        }
        if line.contains("reproduce fig") && line.contains("--data-dir") {
            let ok = line.contains("--data-dir \"$DATA\"") || line.contains("--data-dir ../shared/datasets");
            if !ok {
                out.push(format!("line {}: --data-dir is neither \"$DATA\" nor ../shared/datasets: {line}", i + 1));
            }
        }
    }
    out
}

#[test]
fn results_md_says_only_what_is_current_and_runs_from_a_fresh_clone() {
    let (text, docs) = results_md();
    let found = problems(&text, &docs);
    assert!(found.is_empty(), "docs/results.md:\n  {}", found.join("\n  "));
}

/// The check itself finds each kind of problem (so it cannot pass by reading nothing).
#[test]
fn the_results_check_finds_paths_history_missing_images_and_foreign_data_dirs() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let bad = "# Results\n\n`stiff reproduce fig8 --data-dir /work/shared/datasets`\n\n\
               ## Fig 8 (legacy protocol)\n\n![old](img/no-such.png)\n\n## Changelog\n\n* legacy runs\n";
    let found = problems(bad, &docs);
    assert!(found.iter().any(|p| p.contains("machine path `/work/`")), "{found:?}");
    assert!(found.iter().any(|p| p.contains("`legacy` before the changelog")), "{found:?}");
    assert!(found.iter().any(|p| p.contains("image img/no-such.png")), "{found:?}");
    assert!(found.iter().any(|p| p.contains("--data-dir is neither")), "{found:?}");
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(problems("# Results\n\nno changelog\n", &docs).iter().any(|p| p.contains("no `## Changelog`")));
}
