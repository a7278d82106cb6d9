//! Checks written archives with the real tools: GNU cpio lists and extracts them (as root, so
//! device nodes and owners are restored) and bsdtar lists them with the written metadata.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};

use common::{expected, sample, write, Expected};
use cpio_builder::mode::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK};
use test_support::{is_root, run_with_input};

/// Runs `program args` in `dir` with `input` on stdin; panics unless it succeeds.
fn run(program: &str, args: &[&str], dir: &Path, input: &[u8]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("TZ", "UTC")
        .env("LC_ALL", "C");
    run_with_input(&mut cmd, input)
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn names(entries: &[Expected]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.header.name.clone()).unwrap())
        .collect()
}

/// `ls -l` style mode string, e.g. `-rwsr-xr-x`.
fn mode_string(mode: u32) -> String {
    let kind = match mode & S_IFMT {
        S_IFDIR => 'd',
        S_IFREG => '-',
        S_IFLNK => 'l',
        S_IFCHR => 'c',
        S_IFBLK => 'b',
        S_IFIFO => 'p',
        S_IFSOCK => 's',
        other => panic!("type {other:o}"),
    };
    let mut s = String::from(kind);
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set_char,
            (false, true) => set_char.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// glibc's decoding of a `dev_t`.
fn major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

#[test]
fn mode_strings_are_ls_style() {
    assert_eq!(mode_string(S_IFREG | 0o4755), "-rwsr-xr-x");
    assert_eq!(mode_string(S_IFDIR | 0o1777), "drwxrwxrwt");
    assert_eq!(mode_string(S_IFREG | 0o2644), "-rw-r-Sr--");
}

#[test]
fn gnu_cpio_lists_every_name_in_order() {
    let items = sample();
    let out = run("cpio", &["-t"], Path::new("."), &write(&items));
    assert_eq!(stdout_lines(&out), names(&expected(&items)));
}

/// The columns of one `bsdtar -tv` line (date columns dropped after checking).
fn bsdtar_columns(line: &str) -> Vec<String> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[5..8], ["Sep", "13", "2020"], "date in {line}");
    cols[..5]
        .iter()
        .chain(&cols[8..])
        .map(|c| c.to_string())
        .collect()
}

/// The columns `bsdtar -tv` should print for `e`; `link_to` is the first name of its
/// hard-link group if it is a later one (libarchive lists those as "link to").
fn bsdtar_expected(e: &Expected, link_to: Option<&str>) -> Vec<String> {
    let h = &e.header;
    let size = match h.mode & S_IFMT {
        S_IFCHR | S_IFBLK => format!("{},{}", h.rdev_major, h.rdev_minor),
        _ => e.data.len().to_string(),
    };
    let mut cols = vec![
        mode_string(h.mode),
        e.nlink.to_string(),
        h.uid.to_string(),
        h.gid.to_string(),
        size,
        String::from_utf8(h.name.clone()).unwrap(),
    ];
    if h.mode & S_IFMT == S_IFLNK {
        cols.push("->".into());
        cols.push(String::from_utf8(e.data.clone()).unwrap());
    }
    if let Some(first) = link_to {
        cols.extend(["link".into(), "to".into(), first.into()]);
    }
    cols
}

#[test]
fn bsdtar_lists_the_written_metadata() {
    let items = sample();
    let out = run("bsdtar", &["-tvf", "-"], Path::new("."), &write(&items));
    let got: Vec<Vec<String>> = stdout_lines(&out)
        .iter()
        .map(|l| bsdtar_columns(l))
        .collect();
    let mut first_names = HashMap::new();
    let mut want = Vec::new();
    for e in expected(&items) {
        let name = String::from_utf8(e.header.name.clone()).unwrap();
        let first = (e.nlink > 1).then(|| first_names.entry(e.ino).or_insert(name.clone()));
        let link_to = first.filter(|f| **f != name);
        want.push(bsdtar_expected(&e, link_to.map(|f| f.as_str())));
    }
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got, want);
    }
}

/// Checks one extracted path against what was written.
fn check_extracted(root: &Path, e: &Expected) {
    let h = &e.header;
    let path = root.join(String::from_utf8(h.name.clone()).unwrap());
    let md = fs::symlink_metadata(&path).unwrap_or_else(|err| panic!("{path:?}: {err}"));
    let what = format!("{path:?}");
    assert_eq!(md.mode(), h.mode, "{what}: mode {:o}", md.mode());
    assert_eq!((md.uid(), md.gid()), (h.uid, h.gid), "{what}: owner");
    let ft = md.file_type();
    if !ft.is_dir() && !ft.is_symlink() {
        // GNU cpio restores neither symlink times nor those of directories it writes into.
        assert_eq!(md.mtime() as u64, h.mtime, "{what}: mtime");
    }
    match h.mode & S_IFMT {
        S_IFREG => {
            if e.nlink == 1 || !e.data.is_empty() {
                assert_eq!(fs::read(&path).unwrap(), e.data, "{what}: content");
            }
        }
        S_IFLNK => assert_eq!(
            fs::read_link(&path).unwrap().as_os_str().as_encoded_bytes(),
            e.data,
            "{what}: target"
        ),
        S_IFCHR | S_IFBLK => {
            assert!(ft.is_char_device() || ft.is_block_device(), "{what}");
            assert_eq!(
                major_minor(md.rdev()),
                (h.rdev_major, h.rdev_minor),
                "{what}: rdev"
            );
        }
        S_IFIFO => assert!(ft.is_fifo(), "{what}"),
        S_IFSOCK => assert!(ft.is_socket(), "{what}"),
        _ => assert!(ft.is_dir(), "{what}"),
    }
}

#[test]
fn gnu_cpio_extracts_files_owners_devices_and_links() {
    assert!(
        is_root(),
        "this test restores owners and device nodes: run it as root"
    );
    let items = sample();
    let dir = tempfile::tempdir().unwrap();
    let args = ["-idm", "--no-absolute-filenames", "--quiet"];
    run(
        "sh",
        &["-c", &format!("umask 022; exec cpio {}", args.join(" "))],
        dir.path(),
        &write(&items),
    );
    let entries = expected(&items);
    for e in &entries {
        check_extracted(dir.path(), e);
    }
    let a = fs::metadata(dir.path().join("bin/a")).unwrap();
    let b = fs::metadata(dir.path().join("bin/b")).unwrap();
    assert_eq!(
        (a.ino(), a.nlink()),
        (b.ino(), 2),
        "bin/a and bin/b are one inode"
    );
    assert_eq!(fs::read(dir.path().join("bin/a")).unwrap(), b"hardlinked\n");
    let top: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(top.len(), 6, "nothing beyond the archive: {top:?}");
}
