//! The in-memory file tree that every image writer consumes: scanned from a directory
//! (never following symlinks), reduced over a base tree, extended with generated files.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Index of a node in [`Tree::nodes`]. The root directory is always node 0.
pub type NodeId = usize;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: unsupported file type")]
    FileType { path: PathBuf },
    #[error("{0}: tree root is not a directory")]
    NotDir(PathBuf),
    #[error("{path}: cannot add, {reason}")]
    Add { path: String, reason: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Extended attributes: (full name such as `user.foo`, value), sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Inode metadata shared by all node kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub xattrs: Xattrs,
}

impl Meta {
    /// Root-owned metadata with the given permissions, for generated entries.
    pub fn generated(perm: u32, mtime: i64) -> Meta {
        Meta {
            perm,
            uid: 0,
            gid: 0,
            mtime,
            mtime_nsec: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl Content {
    /// Reads the whole content (for small files and tests).
    pub fn read(&self) -> Result<Vec<u8>, TreeError> {
        match self {
            Content::Path(p) => fs::read(p).map_err(io_err(p)),
            Content::Bytes(b) => Ok(b.clone()),
        }
    }

    /// Opens the content as a reader.
    pub fn open(&self) -> Result<Box<dyn io::Read + '_>, TreeError> {
        match self {
            Content::Path(p) => Ok(Box::new(fs::File::open(p).map_err(io_err(p))?)),
            Content::Bytes(b) => Ok(Box::new(&b[..])),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Children sorted by name (bytewise).
    Dir {
        children: Vec<NodeId>,
    },
    File {
        content: Content,
        size: u64,
    },
    Symlink(Vec<u8>),
    CharDev(u64),
    BlockDev(u64),
    Fifo,
    Socket,
}

impl Kind {
    /// A regular file whose content is read from `path` on the host when written out, and
    /// its size now.
    pub fn host_file(path: &Path) -> Result<(Kind, u64), TreeError> {
        let size = std::fs::metadata(path).map_err(io_err(path))?.len();
        let content = Content::Path(path.to_owned());
        Ok((Kind::File { content, size }, size))
    }

    /// The POSIX file type bits (`S_IFMT` part of `st_mode`).
    pub fn type_bits(&self) -> u32 {
        match self {
            Kind::Dir { .. } => 0o040000,
            Kind::File { .. } => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev(_) => 0o020000,
            Kind::BlockDev(_) => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// File name (empty for the root).
    pub name: Vec<u8>,
    pub parent: NodeId,
    pub meta: Meta,
    pub kind: Kind,
    /// For a hard link: the earlier node (in [`Tree::walk`] order) that is the same inode.
    /// Writers store that inode once; meta and kind are identical.
    pub hardlink_of: Option<NodeId>,
}

impl Node {
    /// Full `st_mode` (type bits | permission bits).
    pub fn mode(&self) -> u32 {
        self.kind.type_bits() | self.meta.perm
    }
}

/// A file tree. Node 0 is the root directory; every directory's `children` are sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// An `ExtraTrees=`/`--extra-tree` value: `SRC[:DST]`, DST defaulting to `/`.
pub fn extra_tree(value: &str) -> (PathBuf, String) {
    let (src, dst) = value.split_once(':').unwrap_or((value, "/"));
    (PathBuf::from(src), dst.to_owned())
}

/// Options applied while scanning a directory.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// `SOURCE_DATE_EPOCH`: mtimes later than this are clamped to it.
    pub clamp_mtime: Option<i64>,
}

impl Tree {
    /// An empty tree: a root directory with the given metadata.
    pub fn new(root: Meta) -> Tree {
        Tree {
            nodes: vec![Node {
                name: Vec::new(),
                parent: 0,
                meta: root,
                kind: Kind::Dir {
                    children: Vec::new(),
                },
                hardlink_of: None,
            }],
        }
    }

    /// Scans `dir` recursively without following symlinks.
    pub fn scan(dir: &Path, opts: &ScanOptions) -> Result<Tree, TreeError> {
        let md = fs::symlink_metadata(dir).map_err(io_err(dir))?;
        if !md.is_dir() {
            return Err(TreeError::NotDir(dir.to_owned()));
        }
        let mut scanner = Scanner {
            opts,
            inodes: HashMap::new(),
            tree: Tree::new(meta_of(dir, &md, opts)?),
        };
        scanner.scan_dir(dir, 0)?;
        Ok(scanner.tree)
    }

    pub fn root(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn children(&self, id: NodeId) -> &[NodeId] {
        match &self.nodes[id].kind {
            Kind::Dir { children } => children,
            _ => &[],
        }
    }

    /// Looks a child up by name.
    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let children = self.children(dir);
        children
            .binary_search_by(|&c| self.nodes[c].name.as_slice().cmp(name))
            .ok()
            .map(|i| children[i])
    }

    /// Resolves a relative path such as `usr/lib` (no symlinks followed).
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        components(path).try_fold(0, |dir, name| self.child(dir, name.as_bytes()))
    }

    /// Path of a node relative to the root (`""` for the root).
    pub fn path(&self, mut id: NodeId) -> PathBuf {
        let mut parts = Vec::new();
        while id != 0 {
            parts.push(OsStr::from_bytes(&self.nodes[id].name));
            id = self.nodes[id].parent;
        }
        parts.iter().rev().collect()
    }

    /// Node ids in depth-first pre-order, children by name: the canonical order.
    pub fn walk(&self) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![0];
        while let Some(id) = stack.pop() {
            out.push(id);
            stack.extend(self.children(id).iter().rev());
        }
        out
    }

    /// Number of directory entries naming each node's inode (hard links counted once per name;
    /// directories count `.` and their subdirectories' `..`).
    pub fn nlink(&self, id: NodeId) -> u32 {
        let node = &self.nodes[id];
        match &node.kind {
            Kind::Dir { children } => {
                2 + children
                    .iter()
                    .filter(|&&c| matches!(self.nodes[c].kind, Kind::Dir { .. }))
                    .count() as u32
            }
            _ => {
                let target = node.hardlink_of.unwrap_or(id);
                self.nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, n)| *i == target || n.hardlink_of == Some(target))
                    .count() as u32
            }
        }
    }

    /// Adds (or replaces) a node at `path`, creating missing parent directories with `dir_meta`.
    pub fn insert(
        &mut self,
        path: &str,
        meta: Meta,
        kind: Kind,
        dir_meta: &Meta,
    ) -> Result<NodeId, TreeError> {
        let parts: Vec<&str> = components(path).collect();
        let (last, dirs) = parts.split_last().ok_or(TreeError::Add {
            path: path.into(),
            reason: "empty path",
        })?;
        let mut dir = 0;
        for name in dirs {
            dir = match self.child(dir, name.as_bytes()) {
                Some(id) if matches!(self.nodes[id].kind, Kind::Dir { .. }) => id,
                Some(_) => {
                    return Err(TreeError::Add {
                        path: path.into(),
                        reason: "a parent is not a directory",
                    })
                }
                None => self.push_child(
                    dir,
                    name.as_bytes(),
                    dir_meta.clone(),
                    Kind::Dir {
                        children: Vec::new(),
                    },
                ),
            };
        }
        if let Some(id) = self.child(dir, last.as_bytes()) {
            if self.is_linked(id) {
                return Err(TreeError::Add {
                    path: path.into(),
                    reason: "it replaces a hard-linked file",
                });
            }
            let node = &mut self.nodes[id];
            node.meta = meta;
            node.kind = kind;
            return Ok(id);
        }
        Ok(self.push_child(dir, last.as_bytes(), meta, kind))
    }

    fn is_linked(&self, id: NodeId) -> bool {
        self.nodes[id].hardlink_of.is_some() || self.nodes.iter().any(|n| n.hardlink_of == Some(id))
    }

    fn push_child(&mut self, dir: NodeId, name: &[u8], meta: Meta, kind: Kind) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_vec(),
            parent: dir,
            meta,
            kind,
            hardlink_of: None,
        });
        let nodes = &self.nodes;
        if let Kind::Dir { children } = &self.nodes[dir].kind {
            let pos = children
                .binary_search_by(|&c| nodes[c].name.as_slice().cmp(name))
                .unwrap_err();
            let mut children = children.clone();
            children.insert(pos, id);
            self.nodes[dir].kind = Kind::Dir { children };
        }
        id
    }

    /// Copies `other` into this tree under directory `at` (created as needed), as mkosi's
    /// `ExtraTrees=` does: existing directories are merged, anything else is replaced.
    pub fn graft(&mut self, other: &Tree, at: &str) -> Result<(), TreeError> {
        let dir_meta = other.root().meta.clone();
        for id in other.walk().into_iter().skip(1) {
            let path = format!("{at}/{}", other.path(id).display());
            let node = &other.nodes[id];
            let is_dir = matches!(node.kind, Kind::Dir { .. });
            let have_dir = self
                .lookup(&path)
                .is_some_and(|e| matches!(self.nodes[e].kind, Kind::Dir { .. }));
            if is_dir && have_dir {
                continue;
            }
            let kind = match &node.kind {
                Kind::Dir { .. } => Kind::Dir {
                    children: Vec::new(),
                },
                k => k.clone(),
            };
            self.insert(&path, node.meta.clone(), kind, &dir_meta)?;
        }
        Ok(())
    }

    /// Scans each `(SRC, DST)` and grafts it at DST, in order (mkosi `ExtraTrees=`).
    pub fn graft_all(
        &mut self,
        trees: &[(PathBuf, String)],
        opts: &ScanOptions,
    ) -> Result<(), TreeError> {
        for (src, dst) in trees {
            self.graft(&Tree::scan(src, opts)?, dst)?;
        }
        Ok(())
    }

    /// Keeps only the nodes for which `keep` returns true (a dropped directory drops its
    /// subtree), renumbering ids. Hard links to a dropped node are re-anchored on the first
    /// kept link.
    pub fn retain(&self, mut keep: impl FnMut(&Tree, NodeId) -> bool) -> Tree {
        let mut map: Vec<Option<NodeId>> = vec![None; self.nodes.len()];
        let mut out = Tree::new(self.root().meta.clone());
        map[0] = Some(0);
        for id in self.walk().into_iter().skip(1) {
            let node = &self.nodes[id];
            let Some(parent) = map[node.parent] else {
                continue;
            };
            if !keep(self, id) {
                continue;
            }
            let kind = match &node.kind {
                Kind::Dir { .. } => Kind::Dir {
                    children: Vec::new(),
                },
                k => k.clone(),
            };
            let new = out.push_child(parent, &node.name, node.meta.clone(), kind);
            let anchor = node.hardlink_of.unwrap_or(id);
            // The first kept member of a link group becomes its anchor.
            out.nodes[new].hardlink_of = map[anchor].filter(|&a| a != new);
            if map[anchor].is_none() {
                map[anchor] = Some(new);
            }
            map[id] = Some(new);
        }
        out
    }

    /// The subtree under directory `dir` as a tree of its own (`dir` becomes the root).
    pub fn subtree(&self, dir: NodeId) -> Tree {
        // Give the root `dir`'s metadata and children; the walk then only sees the subtree.
        let mut rerooted = self.clone();
        rerooted.nodes[0].meta = self.nodes[dir].meta.clone();
        rerooted.nodes[0].kind = self.nodes[dir].kind.clone();
        for &c in self.children(dir) {
            rerooted.nodes[c].parent = 0;
        }
        rerooted.retain(|_, _| true)
    }

    /// Removes directories (other than the root) that have no children, repeatedly, if `pred`
    /// says so for them.
    pub fn prune_empty_dirs(&self, mut pred: impl FnMut(&Path) -> bool) -> Tree {
        let mut empty = vec![false; self.nodes.len()];
        for &id in self.walk().iter().rev().filter(|&&id| id != 0) {
            if let Kind::Dir { children } = &self.nodes[id].kind {
                empty[id] = children.iter().all(|&c| empty[c]) && pred(&self.path(id));
            }
        }
        self.retain(|_, id| !empty[id])
    }

    /// Total bytes of regular-file content (hard links counted once).
    pub fn content_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.hardlink_of.is_none())
            .map(|n| match n.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Splits a relative path into its non-empty components (`.` skipped).
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

struct Scanner<'a> {
    opts: &'a ScanOptions,
    inodes: HashMap<(u64, u64), NodeId>,
    tree: Tree,
}

impl Scanner<'_> {
    fn scan_dir(&mut self, dir: &Path, id: NodeId) -> Result<(), TreeError> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir))?;
        entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in entries {
            let path = dir.join(&name);
            let md = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let meta = meta_of(&path, &md, self.opts)?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir {
                    children: Vec::new(),
                }
            } else if ft.is_file() {
                Kind::File {
                    content: Content::Path(path.clone()),
                    size: md.len(),
                }
            } else if ft.is_symlink() {
                Kind::Symlink(
                    fs::read_link(&path)
                        .map_err(io_err(&path))?
                        .into_os_string()
                        .into_vec(),
                )
            } else if ft.is_char_device() {
                Kind::CharDev(md.rdev())
            } else if ft.is_block_device() {
                Kind::BlockDev(md.rdev())
            } else if ft.is_fifo() {
                Kind::Fifo
            } else if ft.is_socket() {
                Kind::Socket
            } else {
                return Err(TreeError::FileType { path });
            };
            let is_dir = ft.is_dir();
            let child = self.tree.push_child(id, name.as_bytes(), meta, kind);
            if !is_dir && md.nlink() > 1 {
                match self.inodes.get(&(md.dev(), md.ino())) {
                    Some(&first) => self.tree.nodes[child].hardlink_of = Some(first),
                    None => {
                        self.inodes.insert((md.dev(), md.ino()), child);
                    }
                }
            }
            if is_dir {
                self.scan_dir(&path, child)?;
            }
        }
        Ok(())
    }
}

use std::os::unix::ffi::OsStringExt;

fn meta_of(path: &Path, md: &fs::Metadata, opts: &ScanOptions) -> Result<Meta, TreeError> {
    let (mut mtime, mut nsec) = (md.mtime(), md.mtime_nsec() as u32);
    if let Some(clamp) = opts.clamp_mtime {
        if mtime >= clamp {
            (mtime, nsec) = (clamp, 0);
        }
    }
    Ok(Meta {
        perm: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime,
        mtime_nsec: nsec,
        xattrs: read_xattrs(path)?,
    })
}

/// Reads all extended attributes of `path` (not following symlinks), sorted by name.
fn read_xattrs(path: &Path) -> Result<Xattrs, TreeError> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(io_err(path)(e.into())),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut value) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 16, 0),
                Err(e) => return Err(io_err(path)(e.into())),
            }
        };
        value.truncate(len);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta::generated(0o755, 0)
    }

    fn file(bytes: &[u8]) -> Kind {
        Kind::File {
            content: Content::Bytes(bytes.to_vec()),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn insert_creates_parents_sorted() {
        let mut t = Tree::new(meta());
        t.insert("usr/lib/b", meta(), file(b"b"), &meta()).unwrap();
        t.insert("usr/lib/a", meta(), file(b"a"), &meta()).unwrap();
        t.insert("opt/x", meta(), file(b"x"), &meta()).unwrap();
        let paths: Vec<_> = t.walk().iter().map(|&id| t.path(id)).collect();
        let want = [
            "",
            "opt",
            "opt/x",
            "usr",
            "usr/lib",
            "usr/lib/a",
            "usr/lib/b",
        ];
        assert_eq!(paths, want.iter().map(PathBuf::from).collect::<Vec<_>>());
        assert_eq!(
            t.lookup("usr/lib/a").map(|id| t.path(id)),
            Some("usr/lib/a".into())
        );
        assert!(t.insert("usr/lib/a/z", meta(), file(b""), &meta()).is_err());
    }

    #[test]
    fn retain_reanchors_hardlinks() {
        let mut t = Tree::new(meta());
        let a = t.insert("a", meta(), file(b"x"), &meta()).unwrap();
        let b = t.insert("b", meta(), file(b"x"), &meta()).unwrap();
        let c = t.insert("c", meta(), file(b"x"), &meta()).unwrap();
        t.nodes[b].hardlink_of = Some(a);
        t.nodes[c].hardlink_of = Some(a);
        assert_eq!(t.nlink(a), 3);
        let r = t.retain(|t, id| t.nodes[id].name != b"a");
        let b2 = r.lookup("b").unwrap();
        let c2 = r.lookup("c").unwrap();
        assert_eq!(r.nodes[b2].hardlink_of, None);
        assert_eq!(r.nodes[c2].hardlink_of, Some(b2));
        assert_eq!(r.nlink(b2), 2);
    }

    #[test]
    fn graft_merges_directories_and_replaces_files() {
        let mut t = Tree::new(meta());
        t.insert("usr/bin/a", meta(), file(b"old"), &meta())
            .unwrap();
        let mut extra = Tree::new(meta());
        extra
            .insert("bin/a", meta(), file(b"new"), &meta())
            .unwrap();
        extra.insert("bin/b", meta(), file(b"b"), &meta()).unwrap();
        t.graft(&extra, "usr").unwrap();
        let a = t.lookup("usr/bin/a").unwrap();
        assert_eq!(t.nodes[a].kind, file(b"new"));
        assert!(t.lookup("usr/bin/b").is_some());
        t.graft(&extra, "opt/vendor").unwrap();
        assert!(t.lookup("opt/vendor/bin/b").is_some());
    }

    #[test]
    fn subtree_reroots() {
        let mut t = Tree::new(meta());
        t.insert("usr/bin/tool", meta(), file(b"t"), &meta())
            .unwrap();
        t.insert("opt/x", meta(), file(b"x"), &meta()).unwrap();
        let s = t.subtree(t.lookup("usr").unwrap());
        assert_eq!(s.nodes.len(), 3);
        assert!(s.lookup("bin/tool").is_some());
        assert!(s.lookup("opt").is_none());
    }

    #[test]
    fn prune_removes_nested_empty_dirs() {
        let mut t = Tree::new(meta());
        t.insert(
            "usr/share/empty/deeper",
            meta(),
            Kind::Dir { children: vec![] },
            &meta(),
        )
        .unwrap();
        t.insert("usr/bin/tool", meta(), file(b"t"), &meta())
            .unwrap();
        let p = t.prune_empty_dirs(|_| true);
        assert!(p.lookup("usr/share").is_none());
        assert!(p.lookup("usr/bin/tool").is_some());
    }

    #[test]
    fn scan_reads_types_links_and_clamps() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("usr/bin")).unwrap();
        fs::write(d.join("usr/bin/a"), b"hello").unwrap();
        fs::hard_link(d.join("usr/bin/a"), d.join("usr/bin/b")).unwrap();
        std::os::unix::fs::symlink("a", d.join("usr/bin/c")).unwrap();
        let t = Tree::scan(
            d,
            &ScanOptions {
                clamp_mtime: Some(5),
            },
        )
        .unwrap();
        let a = t.lookup("usr/bin/a").unwrap();
        let b = t.lookup("usr/bin/b").unwrap();
        let c = t.lookup("usr/bin/c").unwrap();
        assert_eq!(t.nodes[b].hardlink_of, Some(a));
        assert_eq!(t.nodes[c].kind, Kind::Symlink(b"a".to_vec()));
        assert_eq!(t.nodes[a].meta.mtime, 5);
        assert_eq!(t.content_bytes(), 5);
    }
}
