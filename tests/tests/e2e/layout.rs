//! The crates depend on each other one way (shared types <- auth, job engine <- API), and the module graph of each
//! crate has no cycle: a module reaches only the ones below it (docs/modules.md draws both), so that any layer can
//! be moved into a crate of its own.

use signer_e2e::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules of the same crate it names (`crate::<module>`), tests left out.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
        if matches!(module.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let in_comment = code[..at].rsplit('\n').next().unwrap().contains("//");
            if !name.is_empty() && name != module && !in_comment {
                uses.insert(name);
            }
        }
    }
    graph
}

/// A cycle of the graph, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            return Some(path[start..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

/// The workspace crates a crate's `[dependencies]` name (dev-dependencies left out).
fn crate_dependencies(dir: &str) -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_default();
    dependencies
        .lines()
        .filter(|line| line.starts_with("signer_"))
        .map(|line| line.split([' ', '.', '=']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn crates_depend_one_way() {
    let expected: [(&str, &[&str]); 4] = [
        ("worker/types", &[]),
        ("api/auth", &["signer_types"]),
        ("worker", &["signer_types"]),
        ("api", &["signer_auth", "signer_types", "signer_worker"]),
    ];
    for (dir, names) in expected {
        let names: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(crate_dependencies(dir), names, "{dir}/Cargo.toml");
    }
}

#[test]
fn no_crate_has_a_module_cycle() {
    for krate in ["worker/types/src", "worker/src", "api/auth/src", "api/src"] {
        let graph = module_graph(&root().join(krate));
        assert!(graph.len() > 3, "{krate}: {graph:?}");
        assert_eq!(cycle(&graph), None, "{krate}: {graph:#?}");
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("config", vec!["error_text"]),
        ("acl", vec!["config", "job"]),
        ("job", vec!["config"]),
        ("error_text", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycle(&graph), None);
    let mut looped = graph.clone();
    looped.get_mut("config").unwrap().insert("acl".into());
    let found = cycle(&looped).expect("config -> acl -> config");
    assert!(found.contains(&"acl".to_owned()) && found.contains(&"config".to_owned()));
}

/// Every section of the design note the code, the migrations and the tests cite is one of `docs/DESIGN.md`, and
/// nothing cites a document the repository does not hold (the team's specification lives outside it). The
/// markers are spelt in pieces so that this file does not cite them.
#[test]
fn design_references_resolve_inside_the_repository() {
    let design = std::fs::read_to_string(root().join("docs/DESIGN.md")).unwrap();
    let mut files = [
        "worker",
        "api",
        "tests/src",
        "tests/tests",
        "tests/python",
        "migrations",
        "deploy/kinto",
    ]
    .map(|d| root().join(d))
    .to_vec();
    let mut cited = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if !path
            .extension()
            .is_some_and(|e| e == "rs" || e == "sql" || e == "py")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let where_ = path.strip_prefix(root()).unwrap().display().to_string();
        let outside = [concat!("spec ", "§"), concat!("signer", "-spec")];
        assert!(
            !outside.iter().any(|m| text.contains(m)),
            "{where_} cites the spec"
        );
        for marker in [concat!("DESIGN", ".md §"), concat!("DESIGN", " §")] {
            for (at, _) in text.match_indices(marker) {
                let section: String = text[at + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                assert!(
                    design.contains(&format!("\n## {section}. ")),
                    "{where_}: section {section:?} of the design note"
                );
                cited += 1;
            }
        }
    }
    assert!(cited >= 2, "the migrations cite §4");
}
