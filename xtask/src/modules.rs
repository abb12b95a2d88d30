//! `cargo xtask modules`: which top-level modules of `agent/src` import
//! which, read from the sources with `syn`; an import cycle fails it. The
//! agent's stages are meant to depend one way (sensor → settler → engine
//! → actions → sinks), and a cycle is how a back-edge shows up first.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use syn::visit::Visit;

/// Module → the modules it imports, for every top-level module of `src`.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Prints the graph of the agent's modules and fails on a cycle.
pub fn run(root: &Path) -> Result<()> {
    let graph = graph(&root.join("agent/src"))?;
    for (module, imports) in &graph {
        let list: Vec<&str> = imports.iter().map(String::as_str).collect();
        println!("{module} → {}", list.join(", "));
    }
    let cycles = cycles(&graph);
    if !cycles.is_empty() {
        for cycle in &cycles {
            eprintln!("import cycle: {}", cycle.join(" ↔ "));
        }
        bail!("{} import cycle(s) between agent modules", cycles.len());
    }
    println!("no import cycles between the agent's top-level modules");
    Ok(())
}

/// Reads every `.rs` file under `src` (a crate's source root).
pub fn graph(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.with_context(|| format!("listing {}", src.display()))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(src).expect("under src");
        let top = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .unwrap_or_default();
        if top == "lib" || top == "main" {
            continue;
        }
        graph.entry(top.clone()).or_default();
        files.push((top, path.to_owned()));
    }
    for (top, path) in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file = syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut imports = Imports::default();
        imports.visit_file(&file);
        let known: BTreeSet<String> = graph.keys().cloned().collect();
        let entry = graph.get_mut(&top).expect("listed above");
        entry.extend(
            imports
                .0
                .into_iter()
                .filter(|m| *m != top && known.contains(m)),
        );
    }
    Ok(graph)
}

/// The first segment after `crate` of every path in a file.
#[derive(Default)]
struct Imports(BTreeSet<String>);

impl<'ast> Visit<'ast> for Imports {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if let syn::UseTree::Path(path) = &item.tree
            && path.ident == "crate"
        {
            collect_use(&path.tree, &mut self.0);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if segments.next().is_some_and(|s| s.ident == "crate")
            && let Some(next) = segments.next()
        {
            self.0.insert(next.ident.to_string());
        }
        syn::visit::visit_path(self, path);
    }
}

fn collect_use(tree: &syn::UseTree, out: &mut BTreeSet<String>) {
    match tree {
        syn::UseTree::Path(p) => {
            out.insert(p.ident.to_string());
        }
        syn::UseTree::Name(n) => {
            out.insert(n.ident.to_string());
        }
        syn::UseTree::Rename(r) => {
            out.insert(r.ident.to_string());
        }
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| collect_use(t, out)),
        syn::UseTree::Glob(_) => {}
    }
}

/// Every set of modules that import each other, directly or round about
/// (strongly connected components larger than one module).
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let reaches = |from: &str, to: &str| -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for module in graph.keys() {
        if done.contains(module) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|other| *other == module || (reaches(module, other) && reaches(other, module)))
            .cloned()
            .collect();
        done.extend(component.iter().cloned());
        if component.len() > 1 {
            out.push(component);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn finds_direct_and_round_about_cycles_only() {
        let one_way = graph(&[
            ("sensor", "events"),
            ("engine", "sensor"),
            ("engine", "events"),
        ]);
        assert!(cycles(&one_way).is_empty());
        let back = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]);
        assert_eq!(cycles(&back), [["a", "b", "c"]]);
    }

    #[test]
    fn reads_use_trees_and_paths() {
        let file = syn::parse_file(
            "use crate::{events::{Body, Record}, fsio};\n\
             use super::x;\n\
             fn f() { crate::telemetry::Metrics::new(); }\n",
        )
        .unwrap();
        let mut imports = Imports::default();
        imports.visit_file(&file);
        let found: Vec<&str> = imports.0.iter().map(String::as_str).collect();
        assert_eq!(found, ["events", "fsio", "telemetry"]);
    }
}
