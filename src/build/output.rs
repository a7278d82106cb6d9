//! Atomic outputs: written to a temporary file beside the target and renamed into place on
//! success; an existing target is kept unless forced; the temporary file goes on failure.
//! The outputs of one build ([`Outputs`]) appear together or not at all.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} exists (use --force to replace it)")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A file being written; it becomes `target` on [`Output::commit`], and vanishes if dropped.
pub struct Output {
    pub file: File,
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

/// Refuses to replace `target` unless forced, and a directory even then.
fn check_target(target: &Path, force: bool) -> Result<(), OutputError> {
    match fs::symlink_metadata(target) {
        Err(_) => Ok(()),
        Ok(_) if !force => Err(OutputError::Exists(target.to_owned())),
        Ok(md) if md.is_dir() => Err(OutputError::Io {
            path: target.to_owned(),
            source: io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
        }),
        Ok(_) => Ok(()),
    }
}

impl Output {
    pub fn create(target: &Path, force: bool) -> Result<Output, OutputError> {
        check_target(target, force)?;
        Output::create_unchecked(target)
    }

    fn create_unchecked(target: &Path) -> Result<Output, OutputError> {
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|source| OutputError::Io {
                path: temp.clone(),
                source,
            })?;
        Ok(Output {
            file,
            temp,
            target: target.to_owned(),
            committed: false,
        })
    }

    /// Writes all of `bytes` at the current position.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        use std::io::Write;
        self.file
            .write_all(bytes)
            .map_err(|source| OutputError::Io {
                path: self.temp.clone(),
                source,
            })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    fn sync(&self) -> Result<(), OutputError> {
        self.file.sync_data().map_err(|source| OutputError::Io {
            path: self.temp.clone(),
            source,
        })
    }

    fn rename(&mut self) -> Result<PathBuf, OutputError> {
        fs::rename(&self.temp, &self.target).map_err(|source| OutputError::Io {
            path: self.target.clone(),
            source,
        })?;
        self.committed = true;
        Ok(self.target.clone())
    }

    /// Flushes and renames the file into place.
    pub fn commit(mut self) -> Result<PathBuf, OutputError> {
        self.sync()?;
        self.rename()
    }
}

/// The files of one build: every target is checked before anything is written, each is
/// written to its own temporary, and they are renamed into place only once all are complete.
/// Dropped uncommitted, the temporaries go; if a rename fails, the targets already renamed
/// in are removed too, so that no partial set is left.
pub struct Outputs(Vec<Output>);

impl Outputs {
    pub fn create(targets: &[PathBuf], force: bool) -> Result<Outputs, OutputError> {
        for t in targets {
            check_target(t, force)?;
        }
        let outputs = targets.iter().map(|t| Output::create_unchecked(t));
        Ok(Outputs(outputs.collect::<Result<_, _>>()?))
    }

    /// The output for `target` (one of those it was created with).
    pub fn get(&mut self, i: usize) -> &mut Output {
        &mut self.0[i]
    }

    /// Flushes every file, then renames them all into place; the targets.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, OutputError> {
        for o in &self.0 {
            o.sync()?;
        }
        let mut done = Vec::new();
        for o in &mut self.0 {
            match o.rename() {
                Ok(target) => done.push(target),
                Err(e) => {
                    for target in &done {
                        let _ = fs::remove_file(target);
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// `X.<ext>` beside image `X.raw` (or beside `X`).
pub fn sidecar(image: &Path, ext: &str) -> PathBuf {
    let s = image.to_string_lossy();
    let stem = s.strip_suffix(".raw").unwrap_or(&s);
    PathBuf::from(format!("{stem}.{ext}"))
}

/// Writes `bytes` to `target` atomically.
pub fn write(target: &Path, bytes: &[u8], force: bool) -> Result<PathBuf, OutputError> {
    let mut out = Output::create(target, force)?;
    out.write_all(bytes)?;
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_existing_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("out.raw");
        write(&t, b"one", false).unwrap();
        assert!(matches!(
            write(&t, b"two", false),
            Err(OutputError::Exists(_))
        ));
        assert_eq!(fs::read(&t).unwrap(), b"one");
        write(&t, b"two", true).unwrap();
        assert_eq!(fs::read(&t).unwrap(), b"two");
        drop(Output::create(&dir.path().join("x"), false).unwrap());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.raw")]);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn outputs_appear_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
        // An existing target: refused before anything is created.
        fs::write(&targets[2], "old").unwrap();
        assert!(matches!(
            Outputs::create(&targets, false),
            Err(OutputError::Exists(p)) if p == targets[2]
        ));
        assert_eq!(names(dir.path()), ["c"]);
        // Forced over a directory: refused before anything is created.
        fs::remove_file(&targets[2]).unwrap();
        fs::create_dir(&targets[2]).unwrap();
        assert!(Outputs::create(&targets, true).is_err());
        assert_eq!(names(dir.path()), ["c"]);
        fs::remove_dir(&targets[2]).unwrap();
        // Dropped before commit: no temporaries, no targets.
        let mut outs = Outputs::create(&targets, false).unwrap();
        outs.get(0).write_all(b"x").unwrap();
        drop(outs);
        assert!(names(dir.path()).is_empty());
        // A rename that fails (a directory appeared meanwhile): the others are taken back.
        let outs = Outputs::create(&targets, false).unwrap();
        fs::create_dir_all(targets[2].join("sub")).unwrap();
        assert!(outs.commit().is_err());
        assert_eq!(names(dir.path()), ["c"]);
        fs::remove_dir_all(&targets[2]).unwrap();
        let outs = Outputs::create(&targets, false).unwrap();
        assert_eq!(outs.commit().unwrap(), targets);
        assert_eq!(names(dir.path()), ["a", "b", "c"]);
    }
}
