//! Deterministic fuzz-style checks of the reader: every truncation and many byte mutations of
//! valid archives (plain, zstd, gzip) must give entries or a typed error, never a panic, and
//! whatever entries come out must be self-consistent.

mod common;

use std::io::Write;

use common::{sample, small, write};
use cpio_builder::{Entry, ReadError, Reader};
use test_support::Rng;

/// Reads all of `input`, checking invariants of every entry; returns the entry count and
/// the error that ended the iteration, if any.
fn read_checked(input: &[u8]) -> (usize, Option<ReadError>) {
    let mut count = 0;
    for item in Reader::new(input).decompressed_limit(1 << 20) {
        match item {
            Ok(e) => {
                assert_eq!(e.data.len(), e.raw.filesize as usize);
                assert_eq!(e.name.len() + 1, e.raw.namesize as usize);
                assert!(!e.name.contains(&0));
                count += 1;
                assert!(count <= 1 + input.len() * 64, "runaway iteration");
            }
            Err(err) => return (count, Some(err)),
        }
    }
    (count, None)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn every_truncation_is_an_error_except_trailer_padding() {
    let archive = write(&sample());
    let entries: Vec<Entry> = Reader::new(&archive).collect::<Result<_, _>>().unwrap();
    let full = entries.len();
    // The last entry (a directory, no data) is complete once its name is.
    let last = entries.last().unwrap();
    let last_complete = last.offset as usize + 110 + last.raw.namesize as usize;
    for cut in 0..archive.len() {
        let (count, err) = read_checked(&archive[..cut]);
        if cut == 0 || cut >= archive.len() - 3 {
            assert!(err.is_none(), "cut at {cut}: {err:?}");
            assert_eq!(count, if cut == 0 { 0 } else { full });
        } else {
            assert!(err.is_some(), "cut at {cut} read as complete");
            assert_eq!(
                count == full,
                cut >= last_complete,
                "cut at {cut}: {count} entries"
            );
        }
    }
}

#[test]
fn single_byte_mutations_never_panic() {
    let archive = write(&small("a"));
    let mut errors = 0;
    for pos in 0..archive.len() {
        for value in [0x00, 0xFF, b'0', b'7', b'F', b'/', archive[pos] ^ 1] {
            let mut mutated = archive.clone();
            mutated[pos] = value;
            errors += usize::from(read_checked(&mutated).1.is_some());
        }
    }
    assert!(errors > archive.len(), "mutations are detected: {errors}");
}

#[test]
fn random_edits_of_plain_and_compressed_members_never_panic() {
    let plain = write(&sample());
    let members = [
        plain.clone(),
        zstd::encode_all(&plain[..], 3).unwrap(),
        gzip(&plain),
        [
            plain.clone(),
            vec![0; 4],
            zstd::encode_all(&write(&small("z"))[..], 1).unwrap(),
        ]
        .concat(),
    ];
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    for member in &members {
        for _ in 0..2000 {
            let mut input = member.clone();
            for _ in 0..1 + rng.below(4) {
                let pos = rng.below(input.len());
                match rng.below(3) {
                    0 => input[pos] = rng.below(256) as u8,
                    1 => drop(input.remove(pos)),
                    _ => input.insert(pos, rng.below(256) as u8),
                }
            }
            read_checked(&input);
        }
    }
}

#[test]
fn huge_declared_sizes_fail_without_allocating() {
    let mut archive = write(&small("a"));
    // The file entry starts after "a" (112 bytes); set its c_filesize and c_namesize to the maximum.
    archive[112 + 54..112 + 62].copy_from_slice(b"FFFFFFFF");
    assert!(matches!(
        read_checked(&archive).1,
        Some(ReadError::Truncated { .. })
    ));
    archive[112 + 94..112 + 102].copy_from_slice(b"FFFFFFFF");
    assert!(matches!(
        read_checked(&archive).1,
        Some(ReadError::BadNameSize { .. })
    ));
}

#[test]
fn decompression_bombs_stop_at_the_limit() {
    let zeros = vec![0u8; 4 << 20];
    for bomb in [zstd::encode_all(&zeros[..], 19).unwrap(), gzip(&zeros)] {
        assert!(bomb.len() < 64 << 10);
        let err = read_checked(&bomb).1;
        assert!(
            matches!(
                err,
                Some(ReadError::TooLarge {
                    limit: 1_048_576,
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
