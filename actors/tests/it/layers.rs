//! The kernel's modules import each other without a loop: every `crate::<module>` path in
//! `actors/src` (outside comments and test-only code) is an edge from the module it is written
//! in to the module it names, and the graph of top-level modules has no cycle. The README's
//! "Layers" section draws the floors this keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level module → module it imports → files where it does.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without the items marked `#[cfg(test)]` (a test
/// module may use anything).
fn production_code(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the item that follows: up to its closing brace or semicolon.
            let mut depth = 0usize;
            let mut opened = false;
            for item_line in lines.by_ref() {
                for c in item_line.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
                if (opened && depth == 0) || (!opened && item_line.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let without_comment = line.split("//").next().unwrap_or(line);
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| top_module(src, f))
        .filter(|m| m != "lib")
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let from = top_module(src, file);
        if from == "lib" {
            continue;
        }
        let code = production_code(&fs::read_to_string(file).unwrap());
        let relative = file.strip_prefix(src).unwrap().display().to_string();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name != from && modules.contains(&name) {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert(relative.clone());
            }
        }
    }
    graph
}

fn top_module(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The modules from which `start` can be reached again, if any.
fn cycle_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flat_map(BTreeMap::keys) {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(graph, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_module_of_the_kernel_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(
        graph.len() > 10,
        "the graph looks empty: {:?}",
        graph.keys()
    );
    let mut loops = Vec::new();
    for module in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, module) {
            let mut described = Vec::new();
            for (i, from) in cycle.iter().enumerate() {
                let to = &cycle[(i + 1) % cycle.len()];
                let files = &graph[from][to];
                described.push(format!("{from} -> {to} ({})", join(files)));
            }
            loops.push(described.join(", "));
        }
    }
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn the_check_sees_a_loop_when_there_is_one() {
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.to_owned())
            .or_default()
            .entry(to.to_owned())
            .or_default()
            .insert(format!("{from}.rs"));
    }
    assert_eq!(
        cycle_through(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(cycle_through(&graph, "d"), None);
    let code = production_code(
        "use crate::x;\n// crate::y\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\nfn f() {}\n",
    );
    assert!(code.contains("crate::x") && !code.contains("crate::y") && !code.contains("crate::z"));
}

fn join(files: &BTreeSet<String>) -> String {
    files
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
