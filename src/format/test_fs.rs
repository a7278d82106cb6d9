//! Test helpers for every filesystem reader (erofs, squashfs; unit tests and, through `#[path]`,
//! the tool tests): a reader must see exactly what the tree it was written from holds.

use std::path::Path;

use crate::format::lookup::{Filesystem, PathError};
use crate::tree::{Kind, ScanOptions, Tree};

/// A tree made by `populate` in `src` of a temporary directory, and scanned.
pub fn scanned(populate: fn(&Path)) -> (tempfile::TempDir, Tree) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    populate(&src);
    let tree = Tree::scan(&src, &ScanOptions::default()).unwrap();
    (tmp, tree)
}

/// Sets an xattr on `path` itself (not a symlink's target).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
}

/// Every directory lists like the tree, every file reads back, symlinks and special files are
/// refused as files, every xattr is found and absent ones are not. Paths for which `skip` is
/// true are left out (a reader may re-read a large directory's listing for each lookup).
pub fn assert_matches<F: Filesystem>(r: &F, tree: &Tree, what: &str, skip: impl Fn(&str) -> bool)
where
    F::Error: std::fmt::Debug,
{
    for id in tree.walk() {
        let node = &tree.nodes[id];
        let path = tree.path(id).to_str().unwrap().to_owned();
        if skip(&path) {
            continue;
        }
        let read = r.read_file(&path, u64::MAX);
        let refused = |e: &F::Error| F::path_error(e).cloned();
        match &node.kind {
            Kind::Dir { children } => {
                let want: Vec<(String, bool)> = children
                    .iter()
                    .map(|&c| {
                        let name = String::from_utf8(tree.nodes[c].name.clone()).unwrap();
                        (name, matches!(tree.nodes[c].kind, Kind::Dir { .. }))
                    })
                    .collect();
                assert_eq!(r.list(&path).unwrap(), want, "{what}: {path:?}");
                let e = read.as_ref().err().and_then(refused);
                assert!(
                    matches!(e, Some(PathError::NotAFile { .. })),
                    "{what}: {path:?}"
                );
            }
            Kind::File { content, .. } => {
                let got = read.unwrap_or_else(|e| panic!("{what}: {path:?}: {e}"));
                assert!(got == content.read().unwrap(), "{what}: {path:?}");
            }
            Kind::Symlink(_) => {
                let e = read.as_ref().err().and_then(refused);
                assert!(
                    matches!(e, Some(PathError::Symlink { .. })),
                    "{what}: {path:?}"
                );
            }
            _ => {
                let e = read.as_ref().err().and_then(refused);
                assert!(
                    matches!(e, Some(PathError::NotAFile { .. })),
                    "{what}: {path:?}"
                );
            }
        }
        for (name, value) in &node.meta.xattrs {
            let name = std::str::from_utf8(name).unwrap();
            let got = r.xattr(&path, name).unwrap();
            assert_eq!(got.as_ref(), Some(value), "{what}: {path:?} {name}");
        }
        assert_eq!(
            r.xattr(&path, "user.absent").unwrap(),
            None,
            "{what}: {path:?}"
        );
        assert_eq!(
            r.xattr(&path, "system.other").unwrap(),
            None,
            "{what}: {path:?}"
        );
    }
}
