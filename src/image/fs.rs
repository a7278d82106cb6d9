//! Choosing and reading an extension-release file as systemd does, from any read-only
//! filesystem view: erofs and squashfs images read without mounting, or a directory on the
//! host (a mounted image or a directory extension).

use std::fmt::Display;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

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
    let bytes = fs.read_file(&path, RELEASE_MAX).map_err(read(&path))?;
    Ok((path.clone(), utf8(&path, bytes)?))
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

/// A directory tree on the host: a mounted image or a directory extension.
pub struct Dir<'a>(pub &'a Path);

impl Dir<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Filesystem for Dir<'_> {
    type Error = io::Error;

    /// A missing directory lists as empty (nothing to choose from).
    fn list(&self, dir: &str) -> io::Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(self.path(dir)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            other => other?,
        };
        for e in entries {
            let e = e?;
            if let Ok(name) = e.file_name().into_string() {
                out.push((name, e.file_type()?.is_dir()));
            }
        }
        Ok(out)
    }

    /// One open and, for the few hundred bytes of a release file, one read.
    fn read_file(&self, path: &str, max: u64) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(path))?;
        let mut buf = Vec::with_capacity(4096);
        file.take(max + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > max {
            let msg = format!("over the limit of {max} bytes");
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        Ok(buf)
    }

    fn xattr(&self, path: &str, name: &str) -> io::Result<Option<Vec<u8>>> {
        let mut buf = [0u8; 16];
        match rustix::fs::getxattr(self.path(path), name, &mut buf) {
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
        let fs = Dir(dir.path());
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
        let fs = Dir(dir.path());
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
