//! Atomic outputs: written to a temporary file beside the target and renamed into place on
//! success; an existing target is kept unless forced; the temporary file goes on failure.

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

impl Output {
    pub fn create(target: &Path, force: bool) -> Result<Output, OutputError> {
        if !force && fs::symlink_metadata(target).is_ok() {
            return Err(OutputError::Exists(target.to_owned()));
        }
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

    /// Flushes and renames the file into place.
    pub fn commit(mut self) -> Result<PathBuf, OutputError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| OutputError::Io { path, source }
        };
        self.file.sync_data().map_err(err(&self.temp))?;
        fs::rename(&self.temp, &self.target).map_err(err(&self.target))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write(target: &Path, bytes: &[u8], force: bool) -> Result<PathBuf, OutputError> {
    use std::io::Write;
    let mut out = Output::create(target, force)?;
    out.file
        .write_all(bytes)
        .map_err(|source| OutputError::Io {
            path: out.temp.clone(),
            source,
        })?;
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
}
