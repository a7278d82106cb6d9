//! Choosing and reading an extension-release file as systemd does, from any read-only
//! filesystem view: erofs and squashfs images read without mounting, or a directory on the
//! host (a mounted image or a directory extension).

use std::ffi::OsStr;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::format::lookup::{Filesystem, PathError};
use crate::format::release::{self, Candidate, SelectError};
use crate::format::unit;

/// Largest extension-release file read.
pub const RELEASE_MAX: u64 = 64 << 10;
pub const STRICT_XATTR: &str = "user.extension-release.strict";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
}

/// The extension-release file for image `name` in `dir` (a path within `fs`) and its text:
/// `extension-release.<name>` when it exists (one open, the common case), else systemd's choice
/// among the directory's `extension-release.*` files (`user.extension-release.strict=false`
/// lets a file match any name).
pub fn release_file<F: Filesystem>(
    fs: &F,
    dir: &str,
    name: &str,
) -> Result<(String, String), ReleaseError> {
    let exact = format!("{dir}/extension-release.{name}");
    match fs.read_file(&exact, RELEASE_MAX) {
        Ok(bytes) => return Ok((exact.clone(), utf8(&exact, bytes)?)),
        Err(e) if !F::not_found(&e) => return Err(read(&exact)(e)),
        Err(_) => {}
    }
    let mut candidates = Vec::new();
    for (file_name, is_dir) in fs.list(dir).map_err(read(dir))? {
        if is_dir || !file_name.starts_with("extension-release.") {
            continue;
        }
        let path = format!("{dir}/{file_name}");
        let strict = fs.xattr(&path, STRICT_XATTR).map_err(read(&path))?;
        candidates.push(Candidate {
            not_strict: strict
                .is_some_and(|v| unit::boolean(&String::from_utf8_lossy(&v)) == Some(false)),
            file_name,
        });
    }
    let chosen = release::select(&candidates, name)?;
    let path = format!("{dir}/{}", chosen.file_name);
    match fs.read_file(&path, RELEASE_MAX) {
        Ok(bytes) => Ok((path.clone(), utf8(&path, bytes)?)),
        Err(e) if F::not_found(&e) => Err(read(&path)(
            "not found inside the extension (a symlink leading out of it?)",
        )),
        Err(e) => Err(read(&path)(e)),
    }
}

fn read<E: Display>(path: &str) -> impl Fn(E) -> ReleaseError + '_ {
    move |e| ReleaseError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn utf8(path: &str, bytes: Vec<u8>) -> Result<String, ReleaseError> {
    String::from_utf8(bytes).map_err(|_| read(path)("not UTF-8"))
}

/// A directory tree on the host, a mounted image or a directory extension, held open: every
/// path in it is resolved inside it (absolute symlinks and `..` never leave it, as systemd's
/// chase), and only regular files are read, opened without blocking (a FIFO cannot hang us).
#[derive(Debug)]
pub struct Dir(OwnedFd);

impl Dir {
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(Dir(rustix::fs::open(path, flags, Mode::empty())?))
    }

    /// `rel` resolved inside the tree, opened with `flags`.
    pub fn open_in(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        open_in_root(self.0.as_fd(), rel, flags)
    }

    /// `rel` opened for reading if it is a regular file.
    fn open_regular(&self, rel: &str) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = self.open_in(rel, flags)?;
        if !FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        Ok(File::from(fd))
    }
}

/// Opens `path` resolved inside the directory `root` (O_CLOEXEC added): `openat2` with
/// RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, or on kernels without it (before 5.6) a walk one
/// component at a time with the same rules.
pub fn open_in_root(root: BorrowedFd, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
    static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
    let flags = flags | OFlags::CLOEXEC;
    let path = if path.is_empty() { "." } else { path };
    if !NO_OPENAT2.load(Relaxed) {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        // EAGAIN: a rename raced with a `..`; the kernel asks to retry.
        for _ in 0..8 {
            match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
                Err(Errno::AGAIN) => continue,
                Err(Errno::NOSYS) => break,
                other => return Ok(other?),
            }
        }
        NO_OPENAT2.store(true, Relaxed);
    }
    walk_in_root(root, path, flags)
}

/// The fallback of [`open_in_root`]: follows symlinks itself, an absolute target restarting
/// at `root` and `..` stopping at it; holds each directory open on the way (no path is
/// resolved twice).
pub fn walk_in_root(root: BorrowedFd, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
    fn components(path: &[u8], todo: &mut Vec<Vec<u8>>) {
        let parts = path.split(|&c| c == b'/');
        todo.extend(
            parts
                .filter(|c| !c.is_empty() && *c != b".")
                .rev()
                .map(<[u8]>::to_vec),
        );
    }
    let mut todo = Vec::new();
    components(path.as_bytes(), &mut todo);
    // The directories walked into below root; the current one is the last.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut hops = 0;
    while let Some(name) = todo.pop() {
        if name == b".." {
            stack.pop();
            continue;
        }
        let cur = stack.last().map_or(root, |d| d.as_fd());
        let name = OsStr::from_bytes(&name);
        let probe = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(cur, name, probe, Mode::empty())?;
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        if kind == FileType::Symlink {
            hops += 1;
            if hops > 40 {
                return Err(Errno::LOOP.into());
            }
            let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
            if target.as_bytes().starts_with(b"/") {
                stack.clear();
            }
            components(target.as_bytes(), &mut todo);
            continue;
        }
        if todo.is_empty() {
            return Ok(rustix::fs::openat(
                cur,
                name,
                flags | OFlags::NOFOLLOW,
                Mode::empty(),
            )?);
        }
        if kind != FileType::Directory {
            return Err(Errno::NOTDIR.into());
        }
        stack.push(fd);
    }
    let cur = stack.last().map_or(root, |d| d.as_fd());
    Ok(rustix::fs::openat(cur, ".", flags, Mode::empty())?)
}

impl Filesystem for Dir {
    type Error = io::Error;

    /// A missing directory lists as empty (nothing to choose from).
    fn list(&self, dir: &str) -> io::Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        let fd = match self.open_in(dir, OFlags::RDONLY | OFlags::DIRECTORY) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            other => other?,
        };
        for e in rustix::fs::Dir::read_from(&fd)? {
            let e = e?;
            let Ok(name) = e.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = match e.file_type() {
                FileType::Unknown => {
                    let st = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
                    FileType::from_raw_mode(st.st_mode) == FileType::Directory
                }
                t => t == FileType::Directory,
            };
            out.push((name.to_owned(), is_dir));
        }
        Ok(out)
    }

    /// One open and, for the few hundred bytes of a release file, one read; anything but a
    /// regular file is refused unread.
    fn read_file(&self, path: &str, max: u64) -> io::Result<Vec<u8>> {
        let file = self.open_regular(path)?;
        let mut buf = Vec::with_capacity(4096);
        file.take(max + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > max {
            let msg = format!("over the limit of {max} bytes");
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        Ok(buf)
    }

    fn xattr(&self, path: &str, name: &str) -> io::Result<Option<Vec<u8>>> {
        let Ok(file) = self.open_regular(path) else {
            return Ok(None);
        };
        let mut buf = [0u8; 16];
        match rustix::fs::fgetxattr(&file, name, &mut buf) {
            Ok(n) => Ok(Some(buf[..n].to_vec())),
            Err(_) => Ok(None),
        }
    }

    fn path_error(_: &io::Error) -> Option<&PathError> {
        None
    }

    fn not_found(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_reads_whole_files_of_any_size_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Dir::open(dir.path()).unwrap();
        for len in [0usize, 1, 4095, 4096, 4097, 10_000] {
            let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            std::fs::write(dir.path().join(format!("f{len}")), &text).unwrap();
            let got = fs.read_file(&format!("f{len}"), 10_000).unwrap();
            assert_eq!(got, text.as_bytes(), "length {len}");
        }
        assert!(fs.read_file("f10000", 9_999).is_err());
        assert!(Dir::not_found(&fs.read_file("missing", 10).unwrap_err()));
        assert!(fs.list("missing").unwrap().is_empty());
    }

    #[test]
    fn exact_name_first_then_the_one_loose_candidate() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("usr/lib/extension-release.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("extension-release.tool"), "ID=_any\n").unwrap();
        let fs = Dir::open(dir.path()).unwrap();
        let dir_rel = "usr/lib/extension-release.d";
        let (path, text) = release_file(&fs, dir_rel, "tool").unwrap();
        assert_eq!(
            (path.as_str(), text.as_str()),
            (
                "usr/lib/extension-release.d/extension-release.tool",
                "ID=_any\n"
            )
        );
        assert!(matches!(
            release_file(&fs, dir_rel, "other"),
            Err(ReleaseError::Select(SelectError::None(_)))
        ));
        std::fs::write(d.join("extension-release.tool"), [0xff]).unwrap();
        let e = release_file(&fs, dir_rel, "tool").unwrap_err().to_string();
        assert!(e.ends_with("extension-release.tool: not UTF-8"), "{e}");
    }
}

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// The inode an fd is open on.
    fn ino(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    /// openat2 and the fallback walk agree, and neither leaves the root.
    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("root");
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/os-release"), "ID=inside\n").unwrap();
        std::fs::write(dir.path().join("outside"), "x").unwrap();
        symlink("/etc/os-release", r.join("usr/lib/abs")).unwrap();
        symlink("../../../../../../etc/os-release", r.join("usr/lib/dotdot")).unwrap();
        symlink("../../outside", r.join("usr/lib/out")).unwrap();
        symlink("/usr", r.join("usr/lib/up")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        let root = Dir::open(&r).unwrap();
        let want = ino(&root.open_in("etc/os-release", OFlags::RDONLY).unwrap());
        for walk in [false, true] {
            let open = |p: &str| match walk {
                true => walk_in_root(root.0.as_fd(), p, OFlags::RDONLY),
                false => open_in_root(root.0.as_fd(), p, OFlags::RDONLY),
            };
            for p in [
                "usr/lib/abs",
                "usr/lib/dotdot",
                "/usr/lib/up/lib/abs",
                "../etc/os-release",
            ] {
                assert_eq!(ino(&open(p).unwrap()), want, "{p} (walk: {walk})");
            }
            let e = open("usr/lib/out").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "walk: {walk}");
            assert_eq!(open("loop").unwrap_err().raw_os_error(), Some(40));
            let e = open("etc/os-release/x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(20), "walk: {walk}");
            let root_ino = ino(&open("..").unwrap());
            assert_eq!(root_ino, ino(&open("").unwrap()), "walk: {walk}");
        }
    }

    /// A FIFO is refused at once, not waited on.
    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let fs = Dir::open(dir.path()).unwrap();
        for p in ["fifo", "d"] {
            let e = fs.read_file(p, 10).unwrap_err().to_string();
            assert_eq!(e, "not a regular file", "{p}");
        }
        assert!(fs.xattr("fifo", STRICT_XATTR).unwrap().is_none());
    }
}
