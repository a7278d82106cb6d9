//! Writing a [`Tree`] out as a plain directory (mkosi `Format=directory`): files, directories,
//! symlinks, device nodes and fifos with their modes, owners (when root), xattrs and mtimes.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, Timespec, Timestamps, UTIME_OMIT};

use crate::tree::{Kind, NodeId, Tree};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct DirectoryError {
    pub path: PathBuf,
    pub source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> DirectoryError + '_ {
    move |source| DirectoryError {
        path: path.to_owned(),
        source,
    }
}

/// Writes `tree` into `dest`, which must not exist yet. Hard links are written as copies.
pub fn write(tree: &Tree, dest: &Path) -> Result<(), DirectoryError> {
    fs::create_dir(dest).map_err(err(dest))?;
    let as_root = rustix::process::geteuid().is_root();
    let ids = tree.walk();
    for &id in ids.iter().skip(1) {
        let path = dest.join(tree.path(id));
        create(tree, id, &path)?;
        attributes(tree, id, &path, as_root)?;
    }
    // Directory modes and mtimes last: adding entries changes them, and a read-only directory
    // would refuse its children.
    for &id in ids.iter().rev() {
        if matches!(tree.nodes[id].kind, Kind::Dir { .. }) {
            let path = if id == 0 {
                dest.to_owned()
            } else {
                dest.join(tree.path(id))
            };
            let perm = fs::Permissions::from_mode(tree.nodes[id].meta.perm);
            fs::set_permissions(&path, perm).map_err(err(&path))?;
            times(tree, id, &path)?;
        }
    }
    Ok(())
}

fn create(tree: &Tree, id: NodeId, path: &Path) -> Result<(), DirectoryError> {
    let node = &tree.nodes[id];
    let dev = |kind: FileType, rdev: u64| {
        let mode = Mode::from_raw_mode(node.meta.perm);
        rustix::fs::mknodat(rustix::fs::CWD, path, kind, mode, rdev)
            .map_err(|e| err(path)(e.into()))
    };
    match &node.kind {
        Kind::Dir { .. } => fs::create_dir(path).map_err(err(path)),
        Kind::File { content, .. } => {
            let mut from = content.open().map_err(|e| DirectoryError {
                path: path.to_owned(),
                source: io::Error::other(e.to_string()),
            })?;
            let mut to = fs::File::create(path).map_err(err(path))?;
            io::copy(&mut from, &mut to).map_err(err(path))?;
            let perm = fs::Permissions::from_mode(node.meta.perm);
            fs::set_permissions(path, perm).map_err(err(path))
        }
        Kind::Symlink(target) => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path).map_err(err(path))
        }
        Kind::CharDev(rdev) => dev(FileType::CharacterDevice, *rdev),
        Kind::BlockDev(rdev) => dev(FileType::BlockDevice, *rdev),
        Kind::Fifo => dev(FileType::Fifo, 0),
        Kind::Socket => Ok(()), // a socket is only meaningful while bound: skipped
    }
}

/// Owner (as root), xattrs and, for non-directories, the mtime; never following symlinks.
fn attributes(tree: &Tree, id: NodeId, path: &Path, as_root: bool) -> Result<(), DirectoryError> {
    let meta = &tree.nodes[id].meta;
    if matches!(tree.nodes[id].kind, Kind::Socket) {
        return Ok(());
    }
    if as_root {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).map_err(err(path))?;
        // chown clears setuid/setgid: set the mode again (symlinks have none).
        if !matches!(tree.nodes[id].kind, Kind::Symlink(_) | Kind::Dir { .. }) {
            let perm = fs::Permissions::from_mode(meta.perm);
            fs::set_permissions(path, perm).map_err(err(path))?;
        }
    }
    for (name, value) in &meta.xattrs {
        let name = std::ffi::OsStr::from_bytes(name);
        rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
            .map_err(|e| err(path)(e.into()))?;
    }
    if !matches!(tree.nodes[id].kind, Kind::Dir { .. }) {
        times(tree, id, path)?;
    }
    Ok(())
}

fn times(tree: &Tree, id: NodeId, path: &Path) -> Result<(), DirectoryError> {
    let meta = &tree.nodes[id].meta;
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime,
            tv_nsec: meta.mtime_nsec.into(),
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err(path)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::ScanOptions;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_written_tree_scans_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("usr/bin")).unwrap();
        fs::write(src.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("usr/bin", src.join("bin")).unwrap();
        fs::create_dir(src.join("ro")).unwrap();
        fs::write(src.join("ro/file"), b"x").unwrap();
        fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        let opts = ScanOptions::default();
        let tree = Tree::scan(&src, &opts).unwrap();
        let dest = dir.path().join("dest");
        write(&tree, &dest).unwrap();
        let back = Tree::scan(&dest, &opts).unwrap();
        assert_eq!(back.nodes.len(), tree.nodes.len());
        for id in tree.walk() {
            let path = tree.path(id);
            let other = back.lookup(&path.to_string_lossy()).unwrap_or(0);
            let (a, b) = (&tree.nodes[id], &back.nodes[other]);
            assert_eq!(a.meta.perm, b.meta.perm, "{}", path.display());
            assert_eq!(a.meta.mtime, b.meta.mtime, "{}", path.display());
            assert_eq!(a.kind.type_bits(), b.kind.type_bits());
        }
        assert_eq!(
            fs::metadata(dest.join("usr/bin/tool")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert!(
            write(&tree, &dest).is_err(),
            "an existing destination is refused"
        );
    }
}
