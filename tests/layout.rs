//! The house as its texts describe it: the floors of `src/lib.rs`'s *Layout* (a module
//! imports only modules of its own floor or below, no two modules import each other,
//! the adapters never import `config`), and the module map of docs/architecture.md
//! (the lines of each module, as they are).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The adapters: each receives its own settings, never the configuration.
const ADAPTERS: [&str; 6] = ["redis_client", "auth", "graph", "budget", "sink", "state"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The crate's modules: `src/<m>.rs` or `src/<m>/`, the binaries aside.
fn modules() -> BTreeSet<String> {
    std::fs::read_dir(root().join("src"))
        .expect("src")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().to_string();
            let module = name.strip_suffix(".rs").unwrap_or(&name).to_string();
            (!["lib", "main", "bin"].contains(&module.as_str())).then_some(module)
        })
        .collect()
}

/// Every file under `path` (itself, if a file), with its extension among `kinds`.
fn files(path: &Path, kinds: &[&str]) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path, kinds));
        } else if kinds
            .iter()
            .any(|k| path.extension().is_some_and(|e| e == *k))
        {
            found.push(path);
        }
    }
    found
}

fn module_path(module: &str) -> PathBuf {
    let dir = root().join("src").join(module);
    match dir.is_dir() {
        true => dir,
        false => root().join("src").join(format!("{module}.rs")),
    }
}

/// The crate modules `module`'s code (its tests aside) names as `crate::<m>`.
fn imports(module: &str, all: &BTreeSet<String>) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for file in files(&module_path(module), &["rs"]) {
        let text = read(&file);
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for part in line.split("crate::").skip(1) {
                let names: Vec<&str> = match part.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .collect(),
                    None => vec![part],
                };
                for name in names {
                    let name: String = name
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if all.contains(&name) && name != module {
                        named.insert(name);
                    }
                }
            }
        }
    }
    named
}

/// The part of `text` after `start`, up to `end`.
fn section<'t>(text: &'t str, start: &str, end: &str) -> &'t str {
    let after = text
        .split(start)
        .nth(1)
        .unwrap_or_else(|| panic!("no {start:?}"));
    after.split(end).next().unwrap_or_default()
}

/// The floors of lib.rs's *Layout*, bottom first: the modules each bullet names in
/// backticks (`config::spec` names `config`); a module named in two bullets is refused.
fn floors(all: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let lib = read(&root().join("src/lib.rs"));
    let layout = section(&lib, "//! # Layout", "//! Only what");
    let mut floors = BTreeMap::new();
    let mut floor = 0;
    for line in layout.lines() {
        let text = line.trim_start_matches("//!");
        if text.starts_with(" - ") {
            floor += 1;
        }
        if floor == 0 {
            continue;
        }
        for quoted in text.split('`').skip(1).step_by(2) {
            let name = quoted.split("::").next().unwrap_or_default();
            if all.contains(name) {
                let first = *floors.entry(name.to_string()).or_insert(floor);
                assert_eq!(first, floor, "lib.rs's Layout names `{name}` on two floors");
            }
        }
    }
    floors
}

#[test]
fn every_module_imports_only_its_floor_and_below_as_lib_rs_says() {
    let all = modules();
    let floors = floors(&all);
    let unnamed: Vec<&String> = all.iter().filter(|m| !floors.contains_key(*m)).collect();
    assert!(
        unnamed.is_empty(),
        "lib.rs's Layout names no floor for {unnamed:?}"
    );
    let mut wrong = Vec::new();
    let mut graph = BTreeMap::new();
    for module in &all {
        let named = imports(module, &all);
        for other in &named {
            if floors[other] > floors[module] {
                wrong.push(format!(
                    "{module} (floor {}) imports {other} (floor {})",
                    floors[module], floors[other]
                ));
            }
        }
        graph.insert(module.clone(), named);
    }
    assert!(
        wrong.is_empty(),
        "imports that run back up:\n{}",
        wrong.join("\n")
    );
    for (module, named) in &graph {
        for other in named {
            assert!(
                !graph[other].contains(module),
                "{module} and {other} import each other"
            );
        }
    }
}

#[test]
fn no_adapter_imports_the_configuration() {
    let all = modules();
    for adapter in ADAPTERS {
        let named = imports(adapter, &all);
        assert!(
            !named.contains("config"),
            "{adapter} imports config: it should receive settings of its own, built by config"
        );
    }
}

/// The lines of `name` as the map counts them: Rust and Lua, every file of a folder.
fn lines_of(name: &str) -> usize {
    let path = root().join("src").join(name.trim_end_matches('/'));
    files(&path, &["rs", "lua"])
        .iter()
        .map(|f| read(f).lines().count())
        .sum()
}

#[test]
fn the_module_map_of_the_architecture_doc_counts_the_lines_there_are() {
    let doc = read(&root().join("docs/architecture.md"));
    let table = section(&doc, "| module | lines | what it is |", "\n\n");
    let mut wrong = Vec::new();
    let mut seen = 0;
    for row in table.lines().skip(2) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(names), Some(stated)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let names: Vec<&str> = names
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| n.ends_with(".rs") || n.ends_with('/'))
            .collect();
        let actual: usize = names.iter().map(|n| lines_of(n)).sum();
        let stated: usize = stated.replace(',', "").parse().unwrap_or(0);
        seen += 1;
        if actual != stated {
            wrong.push(format!(
                "{names:?}: the map says {stated}, there are {actual}"
            ));
        }
    }
    assert!(seen > 10, "{seen} rows read");
    assert!(
        wrong.is_empty(),
        "docs/architecture.md's module map:\n{}",
        wrong.join("\n")
    );
}
