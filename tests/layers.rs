//! SPEC §8: the top-level modules form layers and imports only point down
//! (cli → boot → runtime | build → image → format → tree); runtime and build are siblings and
//! do not import each other. Scans every source file for `crate::` paths.

use std::path::{Path, PathBuf};

/// Each top-level module and its layer (higher imports lower, never the reverse).
const LAYERS: [(&str, u8); 8] = [
    ("tree", 0),
    ("format", 1),
    ("image", 2),
    ("runtime", 3),
    ("build", 3),
    ("boot", 4),
    ("cli", 5),
    ("main", 6),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a source text names through `crate::x` or `crate::{x, y::z}`.
fn imported(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut upward = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let own = layer(module).unwrap_or_else(|| panic!("{}: not in a layer", rel.display()));
        let text = std::fs::read_to_string(f).unwrap();
        for m in imported(&text) {
            let l =
                layer(&m).unwrap_or_else(|| panic!("{}: crate::{m} is not a layer", rel.display()));
            if m != module && l >= own {
                upward.push(format!("{} imports crate::{m}", rel.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_imports() {
    let t = "use crate::format::gpt;\nuse crate::{image::dissect, tree::{Tree, Node}, build};";
    assert_eq!(imported(t), ["format", "image", "tree", "build"]);
}
