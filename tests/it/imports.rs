//! No import cycles: within the library (src/), and within each binary (cli/, daemon/),
//! no module imports another that imports it back, directly or round a loop.
//!
//! The graph is read from the source text: a module is a file (inline `mod x { … }`
//! blocks belong to their file), and it imports every module named by its `use` trees
//! and its paths (`crate::x::…`, `super::…`, `self::…`, or a child module's name). Test
//! code does not count: `#[cfg(test)]` items (`mod tests { … }`) and `*_tests.rs` files
//! may import anything. The crate root (lib.rs, main.rs) is not a node: it declares the
//! modules, and a path through its re-exports (`crate::Error`) leads to the module that
//! defines them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One module of the graph: a source file.
struct Module {
    /// Path from the crate root, e.g. `["store", "users"]`; empty for the root.
    path: Vec<String>,
    file: PathBuf,
    /// The source with comments, literals and test items blanked (same byte offsets).
    text: String,
    /// Names of the modules this file declares (`mod x;`).
    children: Vec<String>,
}

/// Blank comments, string / char literals (contents, keeping newlines) so that only code
/// is scanned. Byte offsets are kept, so the raw text can still be read at any offset.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (0, i);
                while j < b.len() {
                    if b[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            // Raw strings: r"…", r#"…"#, br#"…"# (not the end of an identifier).
            b'r' if (i == 0
                || !ident(b[i - 1])
                || (b[i - 1] == b'b' && (i < 2 || !ident(b[i - 2]))))
                && matches!(b.get(i + 1), Some(b'"' | b'#')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1; // r#ident
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = src[start..].find(&close).map_or(b.len(), |n| start + n);
                blank(&mut out, start, end);
                i = end + close.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            }
            // A char literal ('x', '\n', '\u{1f}', '{'), not a lifetime ('a).
            b'\'' => {
                let end = if b.get(i + 1) == Some(&b'\\') {
                    src.get(i + 3..)
                        .and_then(|r| r.find('\''))
                        .map(|n| i + 3 + n)
                } else {
                    let len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
                };
                match end {
                    Some(e) => {
                        blank(&mut out, i + 1, e);
                        i = e + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8: only ASCII replaces whole characters")
}

/// The end (exclusive) of the item starting at `i`: through its balanced `{ … }` block,
/// or its `;`, whichever comes first.
fn item_end(t: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < t.len() {
        match t[i] {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => return i + 1,
            b'{' if depth == 0 => {
                let mut braces = 0usize;
                while i < t.len() {
                    match t[i] {
                        b'{' => braces += 1,
                        b'}' => {
                            braces -= 1;
                            if braces == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                return i;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Blank every `#[cfg(test)]` item (with its other attributes and its whole body).
fn drop_test_items(text: &str) -> String {
    let mut t = text.as_bytes().to_vec();
    let mut from = 0;
    while let Some(n) = std::str::from_utf8(&t[from..])
        .ok()
        .and_then(|s| s.find("#[cfg(test)]"))
    {
        let start = from + n;
        let end = item_end(&t, start + "#[cfg(test)]".len());
        for c in &mut t[start..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = end;
    }
    String::from_utf8(t).expect("still UTF-8")
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other,
}

/// Tokens with their byte offsets (just enough of Rust for paths and `use` trees).
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let b = text.as_bytes();
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 {
            let s = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            let word = text[s..i].trim_start_matches('$').trim_start_matches("r#");
            v.push((Tok::Ident(word.to_string()), s));
        } else if b[i..].starts_with(b"::") {
            v.push((Tok::Colons, i));
            i += 2;
        } else {
            let t = match c {
                b'{' => Tok::Open,
                b'}' => Tok::Close,
                b',' => Tok::Comma,
                b';' => Tok::Semi,
                b'*' => Tok::Star,
                _ => Tok::Other,
            };
            v.push((t, i));
            i += 1;
        }
    }
    v
}

/// Expand one `use` tree starting at `toks[*i]` into full paths.
fn use_tree(toks: &[(Tok, usize)], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    while let Some((t, _)) = toks.get(*i) {
        match t {
            Tok::Colons => *i += 1,
            Tok::Ident(s) => {
                path.push(s.clone());
                *i += 1;
                if toks.get(*i).map(|t| &t.0) != Some(&Tok::Colons) {
                    if toks.get(*i).map(|t| &t.0) == Some(&Tok::Ident("as".into())) {
                        *i += 2;
                    }
                    out.push(path);
                    return;
                }
            }
            Tok::Star => {
                *i += 1;
                out.push(path);
                return;
            }
            Tok::Open => {
                *i += 1;
                while let Some((t, _)) = toks.get(*i) {
                    match t {
                        Tok::Close => {
                            *i += 1;
                            return;
                        }
                        Tok::Comma => *i += 1,
                        _ => {
                            let before = *i;
                            use_tree(toks, i, path.clone(), out);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
                return;
            }
            _ => return,
        }
    }
}

/// Where `mod name;` declared in `file` lives.
fn child_file(file: &Path, is_dir_owner: bool, name: &str) -> PathBuf {
    let dir = file.parent().expect("a file has a directory");
    let base = if is_dir_owner {
        dir.to_path_buf()
    } else {
        dir.join(file.file_stem().expect("a file has a name"))
    };
    let flat = base.join(format!("{name}.rs"));
    if flat.exists() {
        flat
    } else {
        base.join(name).join("mod.rs")
    }
}

/// Every non-test module file reachable from the crate root through `mod x;`.
fn load(root: &Path) -> Vec<Module> {
    let mut mods = Vec::new();
    let mut todo = vec![(Vec::<String>::new(), root.to_path_buf())];
    while let Some((path, file)) = todo.pop() {
        let raw = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let text = drop_test_items(&strip(&raw));
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if text.contains("#![cfg(test)]") || name.ends_with("_tests.rs") {
            continue;
        }
        let is_dir_owner = path.is_empty() || name == "mod.rs";
        let toks = tokens(&text);
        let mut children = Vec::new();
        for (k, (t, at)) in toks.iter().enumerate() {
            let (Tok::Ident(m), Some((Tok::Ident(child), _)), Some((Tok::Semi, _))) =
                (t, toks.get(k + 1), toks.get(k + 2))
            else {
                continue;
            };
            if m != "mod" {
                continue;
            }
            // A `#[path = "…"]` attribute right before the declaration: its literal was
            // blanked in `text`, so read it from the raw source at the same offsets.
            let mut before = text[..*at].trim_end();
            for vis in ["pub(crate)", "pub(super)", "pub"] {
                if let Some(b) = before.strip_suffix(vis) {
                    before = b.trim_end();
                    break;
                }
            }
            let explicit = before
                .strip_suffix(']')
                .and_then(|a| a.rfind("#["))
                .filter(|s| text[s + 2..].trim_start().starts_with("path"))
                .and_then(|s| {
                    let q = s + text[s..].find('"')?;
                    let len = raw[q + 1..].find('"')?;
                    Some(raw[q + 1..q + 1 + len].to_string())
                });
            let child_path = match explicit {
                Some(p) => file.parent().expect("a directory").join(p),
                None => child_file(&file, is_dir_owner, child),
            };
            let mut p = path.clone();
            p.push(child.clone());
            children.push(child.clone());
            todo.push((p, child_path));
        }
        mods.push(Module {
            path,
            file,
            text,
            children,
        });
    }
    mods.sort_by(|a, b| a.path.cmp(&b.path));
    mods
}

/// An edge's evidence: the file and line of the first reference.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn display(path: &[String]) -> String {
    path.join("::")
}

/// The module import graph of the crate whose root file is `root`.
fn graph(root: &Path) -> Graph {
    let mods = load(root);
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    // The root's `pub use a::b::Name;` re-exports: `crate::Name` is module `a::b`'s.
    let mut reexports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(r) = mods.iter().find(|m| m.path.is_empty()) {
        let toks = tokens(&r.text);
        for k in 0..toks.len() {
            if toks[k].0 == Tok::Ident("use".into()) {
                let mut i = k + 1;
                let mut paths = Vec::new();
                use_tree(&toks, &mut i, Vec::new(), &mut paths);
                for mut p in paths {
                    if let Some(name) = p.pop() {
                        reexports.insert(name, p);
                    }
                }
            }
        }
    }
    let mut g = Graph::new();
    for m in mods.iter().filter(|m| !m.path.is_empty()) {
        let me = display(&m.path);
        let edges = g.entry(me.clone()).or_default();
        let toks = tokens(&m.text);
        // Inline modules (`mod x { … }`): `super` and `self` inside them are relative to
        // them, but what they import is their file's.
        let mut inline: Vec<(usize, String)> = Vec::new();
        let mut depth = 0usize;
        let mut k = 0;
        while k < toks.len() {
            let (t, at) = &toks[k];
            match t {
                Tok::Open => depth += 1,
                Tok::Close => {
                    depth = depth.saturating_sub(1);
                    if inline.last().is_some_and(|(d, _)| *d == depth) {
                        inline.pop();
                    }
                }
                _ => {}
            }
            let mut paths = Vec::new();
            let starts_path = k == 0 || toks[k - 1].0 != Tok::Colons;
            match t {
                Tok::Ident(w) if w == "mod" => {
                    if let (Some((Tok::Ident(name), _)), Some((Tok::Open, _))) =
                        (toks.get(k + 1), toks.get(k + 2))
                    {
                        inline.push((depth, name.clone()));
                    }
                    k += 1;
                    continue;
                }
                Tok::Ident(w) if w == "use" => {
                    let mut i = k + 1;
                    use_tree(&toks, &mut i, Vec::new(), &mut paths);
                    k = i.max(k + 1);
                }
                Tok::Ident(first)
                    if starts_path && toks.get(k + 1).map(|t| &t.0) == Some(&Tok::Colons) =>
                {
                    let mut p = vec![first.clone()];
                    let mut i = k + 1;
                    while let (Some((Tok::Colons, _)), Some((Tok::Ident(s), _))) =
                        (toks.get(i), toks.get(i + 1))
                    {
                        p.push(s.clone());
                        i += 2;
                    }
                    paths.push(p);
                    k = i;
                }
                _ => k += 1,
            }
            let here: Vec<String> = m
                .path
                .iter()
                .cloned()
                .chain(inline.iter().map(|(_, n)| n.clone()))
                .collect();
            for p in paths {
                let Some(target) = resolve(&p, &here, m, &known, &reexports) else {
                    continue;
                };
                let name = display(&target);
                if name != me && !target.is_empty() {
                    let line = m.text[..*at].matches('\n').count() + 1;
                    edges.entry(name).or_insert_with(|| {
                        let file = m.file.strip_prefix(env!("CARGO_MANIFEST_DIR"));
                        format!("{}:{line}", file.unwrap_or(&m.file).display())
                    });
                }
            }
        }
    }
    g
}

/// The module a path written in module `here` names (the longest known prefix).
fn resolve(
    p: &[String],
    here: &[String],
    m: &Module,
    known: &BTreeSet<Vec<String>>,
    reexports: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let mut full: Vec<String> = match p.first()?.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here.to_vec(),
        c if here.len() == m.path.len() && m.children.iter().any(|x| x == c) => m.path.clone(),
        _ => return None, // another crate, or a name this module imported
    };
    let mut rest = p
        .iter()
        .skip(usize::from(p[0] == "crate" || p[0] == "self"))
        .peekable();
    while rest.peek().is_some_and(|s| *s == "super") {
        rest.next();
        full.pop()?;
    }
    full.extend(rest.filter(|s| *s != "self").cloned());
    let module = (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|prefix| known.contains(prefix))?;
    if module.is_empty() {
        // Through the root: a module, or one of its re-exports.
        return full
            .first()
            .and_then(|name| reexports.get(name))
            .and_then(|to| {
                resolve(
                    &[vec!["crate".to_string()], to.clone()].concat(),
                    &[],
                    m,
                    known,
                    &BTreeMap::new(),
                )
            });
    }
    Some(module)
}

/// Every import loop, as `a -> b -> … -> a` with where each step is written.
fn cycles(g: &Graph) -> Vec<String> {
    // Tarjan's strongly connected components; each with more than one module holds a loop.
    struct S<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        sccs: Vec<Vec<&'g str>>,
    }
    fn visit<'g>(s: &mut S<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.g.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.sccs.push(scc);
            }
        }
    }
    let mut s = S {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        sccs: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    let mut found = Vec::new();
    for scc in &s.sccs {
        let inside: BTreeSet<&str> = scc.iter().copied().collect();
        // One shortest loop through the first module, by breadth-first search.
        let start = scc[0];
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        'bfs: while let Some(v) = queue.pop_front() {
            for w in g[v]
                .keys()
                .map(String::as_str)
                .filter(|w| inside.contains(w))
            {
                if w == start {
                    closing = Some(v);
                    break 'bfs;
                }
                if !prev.contains_key(w) {
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        let mut lp = vec![start];
        let mut v = closing.expect("a strongly connected component has a loop");
        while v != start {
            lp.push(v);
            v = prev[v];
        }
        lp[1..].reverse();
        lp.push(start);
        // Every import among the tangle's modules: breaking the loop means removing some.
        let edges: Vec<String> = scc
            .iter()
            .flat_map(|v| {
                g[*v]
                    .iter()
                    .filter(|(w, _)| inside.contains(w.as_str()))
                    .map(move |(w, at)| format!("  {v} -> {w}  ({at})"))
            })
            .collect();
        found.push(format!("{}\n{}", lp.join(" -> "), edges.join("\n")));
    }
    found
}

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn assert_no_cycles(rel: &str) {
    let g = graph(&root(rel));
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "import cycles among the modules of {rel}:\n{}",
        found.join("\n")
    );
}

#[test]
fn core_modules_import_no_cycle() {
    let g = graph(&root("src/lib.rs"));
    // The reader sees the graph at all: known edges, through `use` trees, paths, `super::`
    // and the root's re-exports.
    for (from, to) in [
        ("login", "audit"),
        ("login", "store::sessions"),
        ("store::users", "store::orgs"),
        ("store::users", "store"),
        ("store::orgs", "error"),
        ("forgot", "login"),
    ] {
        assert!(
            g.get(from).is_some_and(|e| e.contains_key(to)),
            "{from} -> {to} not seen: {g:#?}"
        );
    }
    assert!(
        !g.contains_key("fuzz_tests") && !g.contains_key("login::tests"),
        "{g:#?}"
    );
    assert_no_cycles("src/lib.rs");
}

#[test]
fn cli_modules_import_no_cycle() {
    assert_no_cycles("cli/main.rs");
}

#[test]
fn daemon_modules_import_no_cycle() {
    assert_no_cycles("daemon/main.rs");
}

/// The reader itself: a loop through a `use` tree, `super::`, a child's name and a
/// re-export is found; test modules, comments and strings are not read.
#[test]
fn the_cycle_finder_finds_cycles() {
    let dir = std::env::temp_dir().join(format!("authd-imports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(dir.join(p), s).unwrap();
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod store;\npub use a::Thing;\n#[cfg(test)]\n#[path = \"t_tests.rs\"]\nmod t;\n");
    write(
        "a.rs",
        "use crate::{b, store::{self as s}};\n// crate::c::f\npub struct Thing;\n",
    );
    write("b.rs", "pub fn f() -> char { let _ = \"crate::c::x\"; '{' }\n#[cfg(test)]\nmod tests { use crate::c; }\n");
    write("c.rs", "pub fn g() { let _ = crate::Thing; }\n");
    write(
        "store/mod.rs",
        "pub mod inner;\npub fn h() { inner::k() }\n",
    );
    write("store/inner.rs", "pub fn k() { super::super::b::f() }\n");
    write("t_tests.rs", "use crate::a;\n");
    let g = graph(&dir.join("lib.rs"));
    let edges: Vec<String> = g
        .iter()
        .flat_map(|(f, e)| e.keys().map(move |t| format!("{f}->{t}")))
        .collect();
    assert_eq!(
        edges,
        [
            "a->b",
            "a->store",
            "c->a",
            "store->store::inner",
            "store::inner->b"
        ],
        "{g:#?}"
    );
    assert!(cycles(&g).is_empty());
    write("store/inner.rs", "pub fn k() { super::super::c::g() }\n");
    let found = cycles(&graph(&dir.join("lib.rs")));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("a -> store -> store::inner -> c -> a\n"),
        "{}",
        found[0]
    );
}
