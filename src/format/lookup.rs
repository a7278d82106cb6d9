//! What the erofs and squashfs readers share about paths: walking a relative path from the
//! root (`..` refused, symlinks not followed), the checks on what a walk finds, and the errors.

/// The kind of inode a lookup met, as far as a path walk cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PathError {
    #[error("{path:?}: '..' is not allowed in paths")]
    BadPath { path: String },
    #[error("{path:?}: no such file or directory")]
    NotFound { path: String },
    #[error("{path:?}: not a directory")]
    NotADirectory { path: String },
    #[error("{path:?}: is a symbolic link, which is not followed")]
    Symlink { path: String },
    #[error("{path:?}: not a regular file")]
    NotAFile { path: String },
    #[error("{path:?}: {size} bytes, over the limit of {max}")]
    TooBig { path: String, size: u64, max: u64 },
}

/// A filesystem read without mounting it (erofs, squashfs images; directories on the host);
/// paths are relative to its root and symlinks are never followed.
pub trait Filesystem {
    type Error: std::fmt::Display;
    /// The entries of `dir`: (name, is a directory), sorted by name.
    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>, Self::Error>;
    /// A regular file's bytes, if it holds at most `max`.
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>, Self::Error>;
    /// The value of extended attribute `name` (such as `user.foo`) of `path`, if it has one.
    fn xattr(&self, path: &str, name: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The lookup error inside `e`, if it is one.
    fn path_error(e: &Self::Error) -> Option<&PathError>;
    /// `e` says that the path does not exist.
    fn not_found(e: &Self::Error) -> bool {
        matches!(Self::path_error(e), Some(PathError::NotFound { .. }))
    }
}

/// Walks `path` from `root`: `step(node, parent, name)` looks `name` up in directory `node`
/// (whose path is `parent`) and gives the child, or None when there is none.
pub fn walk<N, E: From<PathError>>(
    path: &str,
    root: N,
    mut step: impl FnMut(N, &str, &str) -> Result<Option<N>, E>,
) -> Result<N, E> {
    let names = components(path).ok_or_else(|| PathError::BadPath { path: path.into() })?;
    let mut node = root;
    let mut walked = String::new();
    for name in names {
        let parent = walked.clone();
        push(&mut walked, name);
        node = step(node, &parent, name)?.ok_or(PathError::NotFound {
            path: walked.clone(),
        })?;
    }
    Ok(node)
}

/// Why a walk cannot go on through an inode of `kind` (not a directory) at `path`.
pub fn not_a_dir(kind: Kind, path: &str) -> PathError {
    match kind {
        Kind::Symlink => PathError::Symlink { path: path.into() },
        _ => PathError::NotADirectory { path: path.into() },
    }
}

/// Why an inode of `kind` (not a regular file) at `path` cannot be read as a file.
pub fn not_a_file(kind: Kind, path: &str) -> PathError {
    match kind {
        Kind::Symlink => PathError::Symlink { path: path.into() },
        _ => PathError::NotAFile { path: path.into() },
    }
}

/// A file or directory to read whole must hold at most `max` bytes.
pub fn check_size(size: u64, max: u64, path: &str) -> Result<(), PathError> {
    match size > max {
        true => Err(PathError::TooBig {
            path: path.into(),
            size,
            max,
        }),
        false => Ok(()),
    }
}

/// The names along a `/`-separated path relative to a filesystem root; empty and `.` parts
/// are skipped; None if a part is `..`.
fn components(path: &str) -> Option<Vec<&str>> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(|c| (c != "..").then_some(c))
        .collect()
}

/// Appends `name` to a relative path.
fn push(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('/');
    }
    path.push_str(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy tree: directories "a" and "a/b", file "a/f", symlink "l".
    fn step(node: &'static str, _: &str, name: &str) -> Result<Option<&'static str>, PathError> {
        let children: &[(&str, &str, &str)] = &[
            ("/", "a", "a"),
            ("/", "l", "l"),
            ("a", "b", "a/b"),
            ("a", "f", "a/f"),
        ];
        match node {
            "/" | "a" | "a/b" => {}
            "l" => return Err(not_a_dir(Kind::Symlink, node)),
            _ => return Err(not_a_dir(Kind::File, node)),
        }
        Ok(children
            .iter()
            .find(|(p, n, _)| *p == node && *n == name)
            .map(|c| c.2))
    }

    #[test]
    fn walks_relative_paths_without_dotdot_or_symlinks() {
        assert_eq!(walk("/a//./b/", "/", step).unwrap(), "a/b");
        assert_eq!(walk("", "/", step).unwrap(), "/");
        let err = |p: &str| walk(p, "/", step).unwrap_err().to_string();
        assert_eq!(err("a/../a"), "\"a/../a\": '..' is not allowed in paths");
        assert_eq!(err("a/x/y"), "\"a/x\": no such file or directory");
        assert_eq!(err("a/f/g"), "\"a/f\": not a directory");
        assert_eq!(
            err("l/g"),
            "\"l\": is a symbolic link, which is not followed"
        );
    }

    #[test]
    fn files_must_be_regular_and_small_enough() {
        assert!(check_size(10, 10, "f").is_ok());
        assert!(matches!(
            check_size(11, 10, "f"),
            Err(PathError::TooBig { .. })
        ));
        assert!(matches!(
            not_a_file(Kind::Dir, "d"),
            PathError::NotAFile { .. }
        ));
        assert!(matches!(
            not_a_file(Kind::Symlink, "l"),
            PathError::Symlink { .. }
        ));
        assert!(matches!(
            not_a_dir(Kind::Other, "o"),
            PathError::NotADirectory { .. }
        ));
    }
}
