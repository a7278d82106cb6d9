//! Reads written archives back with the crate's reader: exact round trip, determinism, and
//! concatenated plain, zstd and gzip members as compressed by the real command-line tools.

mod common;

use std::process::Command;

use common::{expected, sample, small, write, Expected};
use cpio_builder::{path_order, Entry, Reader};
use test_support::run_with_input;

fn read(input: &[u8]) -> Vec<Entry> {
    Reader::new(input)
        .collect::<Result<_, _>>()
        .expect("archive reads back")
}

/// Pipes `input` through `program args`, returning its output.
fn filter(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    run_with_input(Command::new(program).args(args), input).stdout
}

fn pad_to(bytes: &mut Vec<u8>, multiple: usize) {
    bytes.resize(bytes.len().next_multiple_of(multiple), 0);
}

#[test]
fn sample_is_in_path_order() {
    let names: Vec<Vec<u8>> = expected(&sample())
        .into_iter()
        .map(|e| e.header.name)
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| path_order(a, b));
    assert_eq!(names, sorted);
}

#[test]
fn reads_back_exactly_what_was_written() {
    let items = sample();
    let got: Vec<Expected> = read(&write(&items))
        .into_iter()
        .map(|e| {
            assert_eq!(
                (e.member, e.raw.dev_major, e.raw.dev_minor, e.raw.check),
                (0, 0, 0, 0)
            );
            assert_eq!(e.raw.filesize as usize, e.data.len());
            Expected {
                header: e.header(),
                ino: e.raw.ino,
                nlink: e.raw.nlink,
                data: e.data,
            }
        })
        .collect();
    let want = expected(&items);
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got, want);
    }
    let links: Vec<&Expected> = got
        .iter()
        .filter(|e| e.header.name.starts_with(b"bin/"))
        .collect();
    assert_eq!(
        (links[0].ino, links[1].ino, links[0].nlink),
        (2, 2, 2),
        "hard links share inode 2"
    );
    assert_eq!(got.len(), 21);
    assert_eq!(
        got.last().unwrap().ino,
        20,
        "21 names of 20 inodes, numbered from 1"
    );
}

#[test]
fn same_input_gives_identical_bytes() {
    let first = write(&sample());
    let second = write(&sample());
    assert_eq!(first, second);
    let mut changed = sample();
    if let common::Item::File(h, _) = &mut changed[2] {
        h.mtime += 1;
    }
    assert_ne!(
        write(&changed),
        first,
        "the comparison can tell archives apart"
    );
}

#[test]
fn concatenated_plain_zstd_and_gzip_members_read_in_order() {
    let plain_items = sample();
    let zstd_items = small("zstd");
    let gzip_items = small("gzip");
    let mut input = write(&plain_items);
    pad_to(&mut input, 512);
    input.extend(filter("zstd", &["-q", "-c", "-19"], &write(&zstd_items)));
    pad_to(&mut input, 4);
    input.extend(filter("gzip", &["-n", "-c", "-9"], &write(&gzip_items)));
    input.extend([0; 16]);

    let got: Vec<(usize, Vec<u8>, Vec<u8>)> = read(&input)
        .into_iter()
        .map(|e| (e.member, e.name, e.data))
        .collect();
    let want: Vec<(usize, Vec<u8>, Vec<u8>)> = [plain_items, zstd_items, gzip_items]
        .iter()
        .enumerate()
        .flat_map(|(member, items)| {
            expected(items)
                .into_iter()
                .map(move |e| (member, e.header.name, e.data))
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn reads_an_archive_written_by_gnu_cpio() {
    let names = "bin\nbin/sh\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.path().join("bin/sh")).unwrap();
    let out = run_with_input(
        Command::new("cpio")
            .args(["-o", "-H", "newc", "--quiet"])
            .current_dir(dir.path()),
        names.as_bytes(),
    );
    assert_eq!(
        out.stdout.len() % 512,
        0,
        "GNU cpio pads to 512-byte blocks"
    );
    let entries = read(&out.stdout);
    let got: Vec<(&[u8], &[u8])> = entries.iter().map(|e| (&e.name[..], &e.data[..])).collect();
    assert_eq!(got, [(&b"bin"[..], &b""[..]), (b"bin/sh", b"busybox")]);
}
