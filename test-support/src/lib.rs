//! Helpers shared by the workspace's tests (the root crate's tests/, cpio-builder's tests and
//! the QEMU rig): running commands with their command line and stderr in the panic message,
//! driving our binary's CLI, external tools that must be present, committed and generated
//! keys, small trees, and a seeded RNG so that fuzz-style runs reproduce.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod rng;

pub use rng::Rng;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A committed test key or certificate (`qemu-tests/keys/NAME`).
pub fn key(name: &str) -> PathBuf {
    repo().join("qemu-tests/keys").join(name)
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Panics unless `out` is a success, with the command line, status, stdout and stderr.
fn check(cmd: &Command, out: &Output) {
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command, panicking with its command line and output if it cannot start or fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    check(cmd, &out);
    out
}

/// [`run`] with `input` on stdin (fed from a thread, so large outputs cannot deadlock).
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    check(cmd, &out);
    out
}

/// Runs a shell script under `sh -e`; its stdout.
pub fn sh(script: &str) -> String {
    String::from_utf8(run(Command::new("sh").arg("-ec").arg(script)).stdout).unwrap()
}

/// An output's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether the external tool `name` is on PATH. When it is missing: panics if `CI` is set
/// (a test must not pass in CI without its tool), otherwise prints "skipping: NAME missing"
/// and returns false, so the caller returns early.
pub fn require_tool(name: &str) -> bool {
    let path = std::env::var_os("PATH");
    require_tool_in(name, path.as_deref(), std::env::var_os("CI").is_some())
}

fn require_tool_in(name: &str, path: Option<&OsStr>, ci: bool) -> bool {
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if name.contains('/') {
        executable(Path::new(name))
    } else {
        path.is_some_and(|path| std::env::split_paths(path).any(|d| executable(&d.join(name))))
    };
    if !found {
        assert!(!ci, "{name} is missing and CI is set: install it");
        eprintln!("skipping: {name} missing");
    }
    found
}

/// Writes files at relative paths under `root` with their modes, creating parents.
pub fn write_tree(root: &Path, files: &[(&str, &[u8], u32)]) {
    for (path, data, mode) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// A key pair in `dir` made by `bin genkey`: (NAME.key, NAME.crt), common name NAME.
pub fn genkey(bin: &Path, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (k, c) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    Cli::new(bin)
        .args(["genkey", "--key", s(&k), "--cert", s(&c), "--cn", name])
        .succeeds();
    (k, c)
}

/// Debian's kernel package, fetched and unpacked once per machine by
/// scripts/fetch-debian-kernel: the unpacked package's root (boot/, lib/modules/).
pub fn debian_kernel_root() -> PathBuf {
    let out = run(&mut Command::new(
        repo().join("scripts/fetch-debian-kernel"),
    ));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("root")
}

/// The static arm64 binary, cross-built by `scripts/build-static --target
/// aarch64-unknown-linux-gnu` (or waited for while scripts/test builds it in the background).
pub fn arm64_binary() -> PathBuf {
    let mut build = Command::new(repo().join("scripts/build-static"));
    let out = run(build.args(["--target", "aarch64-unknown-linux-gnu"]));
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build-static prints the binary's path"),
    )
}

/// One invocation of a CLI (our binary), checked in one line:
/// `Cli::new(bin).args([...]).fails_with(1, "substring")` or `.succeeds()`.
pub struct Cli {
    cmd: Command,
}

impl Cli {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cli {
            cmd: Command::new(program),
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Runs it and returns the output, whatever the exit status.
    pub fn output(mut self) -> Output {
        let cmd = &mut self.cmd;
        cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }

    /// Runs it to success (panics with the command line and output otherwise).
    pub fn succeeds(mut self) -> Output {
        run(&mut self.cmd)
    }

    /// Runs it and panics unless it exits with `code` and its stderr contains `needle`.
    pub fn fails_with(mut self, code: i32, needle: &str) -> Output {
        let cmd = &mut self.cmd;
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{cmd:?}: exit status {}, expected {code}\nstderr: {err}",
            out.status
        );
        assert!(
            err.contains(needle),
            "{cmd:?}: expected {needle:?} in stderr: {err}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_tool_finds_tools_on_path_and_skips_or_panics_without() {
        let path = std::env::var_os("PATH");
        assert!(require_tool_in("sh", path.as_deref(), false));
        assert!(require_tool_in("sh", path.as_deref(), true));
        assert!(require_tool_in("/bin/sh", None, true));
        assert!(!require_tool_in("no-such-tool-x", path.as_deref(), false));
        assert!(!require_tool_in("sh", None, false));
        let ci = std::panic::catch_unwind(|| require_tool_in("no-such-tool-x", None, true));
        assert!(ci.is_err(), "a missing tool must fail under CI");
    }

    #[test]
    fn run_reports_the_command_line_and_stderr() {
        let err = std::panic::catch_unwind(|| {
            run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("\"-c\"") && msg.contains("stderr: oops"),
            "{msg}"
        );
        assert_eq!(sh("printf x"), "x");
        let out = run_with_input(&mut Command::new("cat"), b"piped");
        assert_eq!(out.stdout, b"piped");
    }

    #[test]
    fn cli_checks_status_and_stderr() {
        let sh = || Cli::new("sh").args(["-c", "echo bad input >&2; exit 2"]);
        sh().fails_with(2, "bad input");
        assert!(std::panic::catch_unwind(|| sh().fails_with(1, "bad input")).is_err());
        assert!(std::panic::catch_unwind(|| sh().fails_with(2, "other")).is_err());
        assert!(std::panic::catch_unwind(|| sh().succeeds()).is_err());
        Cli::new("true").succeeds();
        let out = Cli::new("sh")
            .args(["-c", "echo $X"])
            .env("X", "y")
            .output();
        assert_eq!(out.stdout, b"y\n");
    }
}
