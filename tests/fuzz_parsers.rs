//! A short, deterministic fuzz run over the parsers that see untrusted bytes (GPT, verity
//! superblock, signature JSON, release files, mkosi configuration): mutated valid inputs must
//! give Ok or a typed error, never a panic. The cargo-fuzz targets in fuzz/ run them longer.

use initrd_sysext::format::{blob::Blob, gpt, release, signature, unit, verity};
use test_support::Rng;

/// Applies 1–8 random mutations: bit flips, byte sets, truncation, interesting values.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        if v.is_empty() {
            break;
        }
        let i = rng.below(v.len());
        match rng.below(5) {
            0 => v[i] ^= 1 << rng.below(8),
            1 => v[i] = rng.next_u64() as u8,
            2 => v.truncate(i),
            3 => v[i] = [0, 0xff, 0x7f, 0x80][rng.below(4)],
            _ => {
                let end = (i + 8).min(v.len());
                v[i..end].fill(0xff);
            }
        }
    }
    v
}

fn run(seed: u64, iterations: usize, input: &[u8], parse: impl Fn(&[u8])) {
    let mut rng = Rng::new(seed);
    parse(input);
    for _ in 0..iterations {
        parse(&mutate(&mut rng, input));
    }
}

fn sample_gpt() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let mut f = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(128 * 1024).unwrap();
    let part = |n: u64, role| gpt::NewPartition {
        type_uuid: gpt::type_uuid(gpt::Designator::Root, role, gpt::Arch::X86_64),
        uuid: initrd_sysext::format::uuid::Uuid([n as u8; 16]),
        offset: gpt::FIRST_OFFSET + n * 8192,
        size: 8192,
        flags: gpt::FLAG_READ_ONLY,
        label: "root-x86-64".into(),
    };
    let parts = [part(0, gpt::Role::Data), part(1, gpt::Role::Verity)];
    gpt::write(&mut f, Default::default(), &parts).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn gpt_reader_survives_mutations() {
    let img = sample_gpt();
    // Mutate only the first 20 KiB (MBR, header, entries) and keep the rest.
    let head = img[..20480].to_vec();
    run(1, 20_000, &head, |h| {
        let mut full = h.to_vec();
        full.extend_from_slice(&img[h.len().min(img.len())..]);
        let _ = gpt::read(&full[..]);
    });
}

#[test]
fn gpt_reader_survives_forged_valid_crcs() {
    // Mutations that keep the CRCs valid reach the field checks.
    let img = sample_gpt();
    let crc = |d: &[u8]| crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(d);
    let mut rng = Rng::new(7);
    for _ in 0..5_000 {
        let mut m = img.clone();
        let at = if rng.below(2) == 0 {
            512 + rng.below(92)
        } else {
            1024 + rng.below(256)
        };
        m[at] = rng.next_u64() as u8;
        let entries_crc = crc(&m[1024..1024 + 128 * 128]);
        m[512 + 88..512 + 92].copy_from_slice(&entries_crc.to_le_bytes());
        m[512 + 16..512 + 20].fill(0);
        let header_crc = crc(&m[512..512 + 92]);
        m[512 + 16..512 + 20].copy_from_slice(&header_crc.to_le_bytes());
        if let Ok(t) = gpt::read(&m[..]) {
            for p in t.partitions {
                assert!(p.offset + p.size <= m[..].size().unwrap());
            }
        }
    }
}

#[test]
fn verity_superblock_survives_mutations() {
    let p = verity::Params::sha256(1000, [3; 32], Default::default());
    let sb = p.superblock();
    run(2, 50_000, &sb, |b| {
        if let Ok(p) = verity::Params::parse(b) {
            let _ = p.level_blocks();
            let _ = p.hash_area_size();
        }
    });
}

#[test]
fn signature_json_survives_mutations() {
    let j = signature::SignatureJson {
        root_hash: "ab".repeat(32),
        certificate_fingerprint: Some("cd".repeat(32)),
        signature: vec![0x30, 0x82, 1, 2, 3, 4, 5],
    };
    let bytes = j.encode().unwrap();
    let short = bytes[..bytes.iter().position(|&b| b == 0).unwrap() + 4].to_vec();
    run(3, 50_000, &short, |b| {
        if let Ok(j) = signature::SignatureJson::parse(b) {
            let _ = signature::verify(&j.signature, &j.root_hash, &[]);
        }
    });
}

#[test]
fn release_parser_survives_mutations() {
    let text = b"ID=debian\nVERSION_ID=\"12\"\nNAME='Debian GNU/Linux'\nX=a\\ b\n# c\nSYSEXT_SCOPE=initrd system\n";
    run(4, 50_000, text, |b| {
        if let Ok(r) = release::Release::parse(&String::from_utf8_lossy(b)) {
            assert_eq!(release::Release::parse(&r.render()).unwrap(), r);
        }
    });
}

#[test]
fn unit_parser_survives_mutations() {
    let text = b"# c\n[Output]\nFormat=disk\nOutput=kubectl-3.0.%a\n[Content]\nPackages=systemd\n    udev\n; x\nBaseTrees=%O/base\n";
    run(5, 50_000, text, |b| {
        let text = String::from_utf8_lossy(b);
        for dialect in [&unit::MKOSI, &unit::REPART] {
            match unit::parse(std::path::Path::new("m.conf"), &text, dialect) {
                Ok(entries) => assert!(entries.iter().all(|e| !e.key.is_empty() && e.line >= 1)),
                Err(e) => assert!(e.line >= 1 && e.to_string().starts_with("m.conf:")),
            }
        }
    });
}
