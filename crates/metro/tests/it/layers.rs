//! The house's rules, checked on the source: no two modules use each other (at any level of
//! any crate: siblings depend one way), ARCHITECTURE.md's table names every top-level module
//! of metro-core and metro and what each may use, and the code uses nothing else; the core
//! does no I/O and reads no clock.
//!
//! Paths are read from the text: every `crate::`, `super::` and `self::` path (with `use`
//! groups in braces) outside comments and before a file's first `#[cfg(test)]` (tests may
//! reach anywhere). A module is a `NAME.rs` or `NAME/mod.rs` file; an inline `mod` block
//! would be read as part of its file, and the sources have none but test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One source file: its module path inside the crate and its text, without comment lines
/// and without its tests.
struct Source {
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_string()),
    }
    parts
}

fn strip(text: &str) -> String {
    let body = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| {
            // A trailing comment; `//` inside a string literal (a URL) is cut too, which can
            // only hide a path, never invent one.
            l.find("//").map_or(l, |i| &l[..i])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sources(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).unwrap();
                out.push(Source {
                    module: module_path(src, &p),
                    text: strip(&text),
                    path: p,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every absolute module path a file names: `crate::a::b`, `super::x`, `use self::{..}` and
/// the branches of brace groups, resolved against the file's own module path.
fn referenced(src: &Source) -> Vec<Vec<String>> {
    let t = src.text.as_bytes();
    let text = &src.text;
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let rest = &t[i..];
        let start = [&b"crate::"[..], b"super::", b"self::"]
            .iter()
            .any(|k| rest.starts_with(k));
        let preceded = i > 0 && (is_ident(t[i - 1]) || t[i - 1] == b':');
        if start && !preceded {
            let mut base = src.module.clone();
            let mut j = i;
            // Leading `crate`, `super`, `self` segments.
            loop {
                let r = &t[j..];
                if r.starts_with(b"crate::") {
                    base.clear();
                    j += "crate::".len();
                } else if r.starts_with(b"super::") {
                    base.pop();
                    j += "super::".len();
                } else if r.starts_with(b"self::") {
                    j += "self::".len();
                } else {
                    break;
                }
            }
            j = tree(text, j, &base, &mut out);
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads a use tree at `j` (`a::b`, `a::{b, c::d}`, `{a, b}`) below `base`; pushes every
/// path it names; returns where it ended.
fn tree(text: &str, mut j: usize, base: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let b = text.as_bytes();
    let mut path = base.to_vec();
    loop {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b'{' {
            j += 1;
            loop {
                j = tree(text, j, &path, out);
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                match b.get(j) {
                    Some(b',') => j += 1,
                    Some(b'}') => return j + 1,
                    _ => return j,
                }
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if b.get(j) == Some(&b'}') {
                    return j + 1;
                }
            }
        }
        let s = j;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        if s == j {
            break;
        }
        path.push(text[s..j].to_string());
        if b[j..].starts_with(b"::") {
            j += 2;
        } else {
            break;
        }
    }
    out.push(path);
    j
}

/// For every module with children (`scope`): which child uses which other child.
type Graph = BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>>;

fn graph(srcs: &[Source]) -> Graph {
    let modules: BTreeSet<Vec<String>> = srcs.iter().map(|s| s.module.clone()).collect();
    let mut g = Graph::new();
    for m in &modules {
        if let Some((_, parent)) = m.split_last() {
            g.entry(parent.to_vec())
                .or_default()
                .entry(m.last().unwrap().clone())
                .or_default();
        }
    }
    for s in srcs {
        for r in referenced(s) {
            // The deepest scope holding both the user and the used path, and the two
            // children of it they are under.
            let common = s.module.iter().zip(&r).take_while(|(a, b)| a == b).count();
            if common >= s.module.len() || common >= r.len() {
                continue; // a module using its own descendants, or its ancestors' items
            }
            let scope = &s.module[..common];
            let (from, to) = (&s.module[common], &r[common]);
            let mut to_path = scope.to_vec();
            to_path.push(to.clone());
            if modules.contains(&to_path)
                && let Some(children) = g.get_mut(scope)
            {
                children.get_mut(from).unwrap().insert(to.clone());
            }
        }
    }
    g
}

/// A cycle among `edges`, if any, as the modules on it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|x| x == m).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n)
            && let Some(c) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

const CRATES: [&str; 4] = ["metro-core", "metro", "metro-testkit", "metro-bench"];

#[test]
fn no_two_modules_use_each_other() {
    let mut problems = Vec::new();
    for krate in CRATES {
        let src = workspace().join("crates").join(krate).join("src");
        let g = graph(&sources(&src));
        for (scope, edges) in &g {
            if let Some(c) = cycle(edges) {
                problems.push(format!(
                    "{krate}: in `crate::{}`: {}",
                    scope.join("::"),
                    c.join(" -> ")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "module cycles:\n{}",
        problems.join("\n")
    );
}

/// ARCHITECTURE.md's table: for each top-level module of `krate`, the names in its "may
/// use" column (first path segments; crate names are kept as they are).
fn table(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let doc = fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    let prefix = format!("| `crates/{krate}/src/");
    let mut rows = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with(&prefix)) {
        let path = &line[prefix.len()..line[prefix.len()..].find('`').unwrap() + prefix.len()];
        let module = path
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let may = line.trim_end().trim_end_matches('|');
        let may = &may[may.rfind('|').unwrap() + 1..];
        let names: BTreeSet<String> = may
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|n| n.split("::").next().unwrap().to_string())
            .collect();
        if module != "main" {
            rows.insert(module, names);
        }
    }
    rows
}

#[test]
fn architecture_names_every_module_and_what_it_uses() {
    let mut problems = Vec::new();
    for krate in ["metro-core", "metro"] {
        let src = workspace().join("crates").join(krate).join("src");
        let srcs: Vec<Source> = sources(&src)
            .into_iter()
            .filter(|s| !s.path.ends_with("main.rs"))
            .collect();
        let g = graph(&srcs);
        let allowed = table(krate);
        let top = g.get(&Vec::new()).cloned().unwrap_or_default();
        assert!(top.len() >= 6, "{krate}: found only {:?}", top.keys());
        for (module, uses) in &top {
            let Some(may) = allowed.get(module) else {
                problems.push(format!("{krate}: `{module}` has no row in ARCHITECTURE.md"));
                continue;
            };
            for u in uses {
                if !may.contains(u) {
                    problems.push(format!(
                        "{krate}: `{module}` uses `{u}`, which its row in ARCHITECTURE.md does \
                         not list (it lists {may:?})"
                    ));
                }
            }
        }
        for module in allowed.keys() {
            if !top.contains_key(module) {
                problems.push(format!(
                    "{krate}: ARCHITECTURE.md has a row for `{module}`, which is not a module"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_core_does_no_io_and_reads_no_clock() {
    let src = workspace().join("crates/metro-core/src");
    let banned = [
        "std::fs",
        "std::io::Read",
        "std::io::Write",
        "std::net::TcpStream",
        "std::net::UdpSocket",
        "std::time::Instant",
        "std::time::SystemTime",
        "std::thread",
        "std::env",
        "std::process",
    ];
    let mut problems = Vec::new();
    for s in sources(&src) {
        for b in banned {
            if s.text.contains(b) {
                problems.push(format!("{}: {b}", s.path.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// The checker itself, on made-up sources: it must see what it is meant to see.

fn fake(module: &[&str], text: &str) -> Source {
    Source {
        module: module.iter().map(|s| s.to_string()).collect(),
        path: PathBuf::from(module.join("/")),
        text: strip(text),
    }
}

#[test]
fn the_checker_reads_paths_groups_and_super() {
    let s = fake(
        &["agent", "config", "validate"],
        "use super::super::fleet::{GroupBy, X};\nuse crate::{pcap, analyze::{a, b}};\n\
         // use crate::plot;\nfn f() { crate::docs::x(); let y = foo::crate::z; }\n\
         #[cfg(test)]\nmod tests { use crate::generate; }",
    );
    let got: BTreeSet<String> = referenced(&s).iter().map(|p| p.join("::")).collect();
    let want: BTreeSet<String> = [
        "agent::fleet::GroupBy",
        "agent::fleet::X",
        "pcap",
        "analyze::a",
        "analyze::b",
        "docs::x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
}

#[test]
fn the_checker_finds_a_cycle_between_siblings_and_not_a_parent_s_use() {
    let srcs = [
        fake(&["a"], "pub mod x; pub mod y;"),
        fake(&["a", "x"], "use super::y::Thing;"),
        fake(&["a", "y"], "use crate::a::x::Other;"),
        fake(&["b"], "use crate::a::x;"),
    ];
    let g = graph(&srcs);
    let c = cycle(&g[&vec!["a".to_string()]]).expect("x <-> y is a cycle");
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(cycle(&g[&Vec::new()]).is_none(), "b -> a only: {g:?}");
    assert_eq!(g[&Vec::new()]["b"], BTreeSet::from(["a".to_string()]));
}
