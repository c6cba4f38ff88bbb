//! Checks of the workspace's structure that CI runs with the tests (issue 20):
//! - the stateless crates (the frontend and the two API crates) link no server crate, no
//!   RocksDB and no openraft (`cargo tree -e normal`);
//! - no crate has an import cycle between its modules. Modules are compared at two
//!   levels: a crate's top-level modules (a submodule's imports count as its top-level
//!   module's), and the children of each directory module among themselves (a child may
//!   use its parent's items). Edges come from `crate::` and `super::` paths in code
//!   (comments and `#[cfg(test)]` modules left out); the crate root (lib.rs, main.rs) only
//!   declares and re-exports, so edges to and from it are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Crates that must stay stateless: what a frontend (or any client) links.
const CLIENT_CRATES: [&str; 3] = ["cellar-frontend", "cellar-volume-api", "cellar-master-api"];
/// Crates none of [`CLIENT_CRATES`] may depend on, directly or not.
const FORBIDDEN: [&str; 7] = [
    "rocksdb",
    "librocksdb-sys",
    "openraft",
    "cellar-master",
    "cellar-volume",
    "cellar-blockstore",
    "cellar-dev",
];

#[test]
fn client_crates_link_no_server_rocksdb_or_openraft() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    for krate in CLIENT_CRATES {
        let out = Command::new(&cargo)
            .current_dir(workspace_root())
            .args(["tree", "-e", "normal", "-p", krate, "--prefix", "none", "--offline", "--locked"])
            .output()
            .expect("run cargo tree");
        assert!(out.status.success(), "cargo tree -p {krate}: {}", String::from_utf8_lossy(&out.stderr));
        let tree = String::from_utf8_lossy(&out.stdout);
        let names: BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
        assert!(names.contains(krate), "cargo tree -p {krate} printed no tree:\n{tree}");
        let bad: Vec<&str> = FORBIDDEN.iter().copied().filter(|f| names.contains(f)).collect();
        assert!(bad.is_empty(), "{krate} depends on {bad:?} (cargo tree -e normal -p {krate})");
    }
}

/// The workspace's member directories, from its Cargo.toml.
fn members(root: &Path) -> Vec<PathBuf> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("workspace Cargo.toml");
    let line = manifest.lines().find(|l| l.trim_start().starts_with("members")).expect("members line");
    line.split('"').skip(1).step_by(2).map(|m| root.join(m)).collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; the
/// crate root is the empty path.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file without comments and without its `#[cfg(test)]` test module.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "#[cfg(test)]" && lines.peek().is_some_and(|n| n.trim_start().starts_with("mod tests")) {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Paths named after `crate::` or `super::` in `code`, each as its segments, made
/// absolute from `module` (`super::` is relative to it). Grouped imports
/// (`crate::{a::X, b}`) give one path per item.
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (anchor, base) in
        [("crate::", Vec::new()), ("super::", module[..module.len().saturating_sub(1)].to_vec())]
    {
        let mut rest = code;
        while let Some(i) = rest.find(anchor) {
            let preceded_by_ident =
                rest[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            let after = &rest[i + anchor.len()..];
            rest = after;
            if preceded_by_ident {
                continue;
            }
            let mut stack = vec![(base.clone(), after)];
            while let Some((prefix, text)) = stack.pop() {
                let text = text.trim_start();
                if let Some(inner) = text.strip_prefix('{') {
                    for item in split_group(inner) {
                        stack.push((prefix.clone(), item));
                    }
                    continue;
                }
                let mut path = prefix;
                let mut t = text;
                loop {
                    let ident: String = t.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if ident.is_empty() {
                        break;
                    }
                    t = &t[ident.len()..];
                    if ident == "super" {
                        path.pop();
                    } else if ident != "self" {
                        path.push(ident);
                    }
                    match t.strip_prefix("::") {
                        Some(next) if next.trim_start().starts_with('{') => {
                            stack.push((path.clone(), next));
                            path.clear();
                            break;
                        }
                        Some(next) => t = next,
                        None => break,
                    }
                }
                if !path.is_empty() {
                    out.push(path);
                }
            }
        }
    }
    out
}

/// The top-level items of a brace group, up to its closing brace.
fn split_group(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&text[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// The strongly connected components of more than one node (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(edges) = s.graph.get(v) {
            for w in edges {
                if !s.index.contains_key(w.as_str()) {
                    visit(s, w);
                    let lw = s.low[w.as_str()];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on_stack.contains(w.as_str()) {
                    let iw = s.index[w.as_str()];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// The module graphs of one crate's `src`: the top-level graph under the key "" and,
/// for each directory module, the graph of its children under its path.
fn module_graphs(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_of(src, f), f.clone())).collect();
    let mut graphs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        if module.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for path in referenced_paths(&code_of(&text), module) {
            // The longest module the path names.
            let target = (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p));
            let Some(target) = target else { continue };
            // The deepest common ancestor decides the level: the edge joins its children.
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == module.len() || common == target.len() {
                continue; // a module and its own ancestor or descendant
            }
            let graph = graphs.entry(module[..common].join("::")).or_default();
            graph.entry(module[common].clone()).or_default().insert(target[common].clone());
        }
    }
    graphs
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut found = Vec::new();
    let mut modules_seen = 0;
    for member in members(&workspace_root()) {
        let src = member.join("src");
        let graphs = module_graphs(&src);
        modules_seen += graphs.values().map(|g| g.len()).sum::<usize>();
        for (parent, graph) in &graphs {
            for cycle in cycles(graph) {
                let level = if parent.is_empty() { String::new() } else { format!("{parent}::") };
                let level = level.as_str();
                let edges: Vec<String> = cycle
                    .iter()
                    .flat_map(|a| {
                        graph[a]
                            .iter()
                            .filter(|b| cycle.contains(b))
                            .map(move |b| format!("{level}{a} -> {level}{b}"))
                    })
                    .collect();
                found.push(format!("{}: {}", member.display(), edges.join(", ")));
            }
        }
    }
    assert!(
        modules_seen > 20,
        "the check found only {modules_seen} modules with imports: is it reading the tree?"
    );
    assert!(found.is_empty(), "import cycles between modules:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    let mut a = referenced_paths(
        &code_of("use crate::b::{X, c::Y};\n// crate::d::Z\nfn f() { super::e(); }"),
        &["a".to_string(), "f".to_string()],
    );
    a.sort();
    assert_eq!(
        a,
        vec![
            vec!["a".to_string(), "e".to_string()],
            vec!["b".into(), "X".into()],
            vec!["b".into(), "c".into(), "Y".into()]
        ]
    );
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
}
