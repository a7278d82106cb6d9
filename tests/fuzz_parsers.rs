//! A short, deterministic fuzz run over the parsers that see untrusted bytes (GPT, verity
//! superblock, signature JSON, release files, mkosi configuration, erofs, squashfs, cpio,
//! modules.dep and friends, TPM responses): mutated valid inputs must give Ok or a typed error, never a panic.
//! The cargo-fuzz targets in fuzz/ run the same entry points longer.

use std::fs;
use std::path::Path;

use initrd_sysext::format::lookup::Filesystem;
use initrd_sysext::format::{
    blob::Blob, erofs, gpt, kmod, release, signature, squashfs, tpm2, unit, verity,
};
use initrd_sysext::tree::{ScanOptions, Tree};
use test_support::{write_tree, Rng};

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

/// A small tree for the filesystem readers: the extension-release file (with an xattr when
/// the filesystem takes one), a file with a tail, a symlink, a directory of several entries.
fn fs_tree() -> (tempfile::TempDir, Tree) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let tail: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 253) as u8).collect();
    write_tree(
        &root,
        &[
            (FS_RELEASE, b"ID=_any\nSYSEXT_SCOPE=initrd\n", 0o644),
            ("usr/lib/os-release", b"ID=debian\n", 0o644),
            ("usr/bin/tool", &tail, 0o755),
        ],
    );
    for i in 0..12 {
        write_tree(&root, &[(&format!("usr/lib/f{i}"), &[i as u8; 3], 0o644)]);
    }
    std::os::unix::fs::symlink("tool", root.join("usr/bin/link")).unwrap();
    let _ = rustix::fs::setxattr(
        root.join(FS_RELEASE),
        "user.extension-release.strict",
        b"0",
        rustix::fs::XattrFlags::empty(),
    );
    let tree = Tree::scan(&root, &ScanOptions::default()).unwrap();
    (dir, tree)
}

const FS_RELEASE: &str = "usr/lib/extension-release.d/extension-release.x";

/// What the erofs and squashfs cargo-fuzz targets do with an opened image.
fn exercise_fs(r: &impl Filesystem) {
    for dir in ["", "usr", "usr/lib", "usr/lib/extension-release.d"] {
        let _ = r.list(dir);
    }
    for file in ["usr/lib/os-release", FS_RELEASE, "usr/bin/tool"] {
        let _ = r.read_file(file, 1 << 20);
        let _ = r.xattr(file, "user.extension-release.strict");
    }
}

fn image(write: impl FnOnce(&fs::File)) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    write(&fs::File::create(&path).unwrap());
    fs::read(&path).unwrap()
}

#[test]
fn erofs_reader_survives_mutations() {
    let (_dir, tree) = fs_tree();
    let opts = erofs::Options {
        uuid: [1; 16],
        build_time: 1,
    };
    let img = image(|f| {
        erofs::write(&tree, f, 0, &opts).unwrap();
    });
    let r = erofs::Reader::open(&img[..], 0).unwrap();
    assert_eq!(
        r.read_file(FS_RELEASE, 4096).unwrap(),
        b"ID=_any\nSYSEXT_SCOPE=initrd\n"
    );
    run(6, 3_000, &img, |b| {
        // Most mutants get a valid superblock checksum, so that the metadata is reached.
        let mut b = b.to_vec();
        if b.len() >= 4096 && b[0] != 0xff {
            b[1028..1032].fill(0);
            let crc = erofs::layout::crc32c(&b[1024..4096]);
            b[1028..1032].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok(r) = erofs::Reader::open(&b[..], 0) {
            exercise_fs(&r);
        }
    });
}

#[test]
fn squashfs_reader_survives_mutations() {
    let (_dir, tree) = fs_tree();
    let img = image(|f| {
        squashfs::write(&tree, f, 0, &squashfs::Options::default()).unwrap();
    });
    let r = squashfs::Reader::open(&img[..], 0).unwrap();
    assert_eq!(r.list("usr/bin").unwrap().len(), 2);
    run(7, 3_000, &img, |b| {
        if let Ok(r) = squashfs::Reader::open(b, 0) {
            exercise_fs(&r);
        }
    });
}

/// What the cpio cargo-fuzz target does: every entry, decompression capped at 16 MiB.
fn read_cpio(b: &[u8]) {
    for e in cpio_builder::Reader::new(b)
        .decompressed_limit(16 << 20)
        .flatten()
    {
        let _ = e.header();
    }
}

fn sample_cpio() -> Vec<u8> {
    let mut w = cpio_builder::Writer::new(Vec::new());
    let h = |name: &str, mode: u32| cpio_builder::Header {
        name: name.as_bytes().to_vec(),
        mode,
        ..Default::default()
    };
    use cpio_builder::mode::{S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};
    w.dir(&h("usr", S_IFDIR | 0o755)).unwrap();
    let data = b"#!/bin/sh\necho hi\n";
    w.file(
        &h("usr/tool", S_IFREG | 0o755),
        data.len() as u64,
        &mut &data[..],
    )
    .unwrap();
    w.symlink(&h("usr/link", S_IFLNK | 0o777), b"tool").unwrap();
    let mut console = h("console", S_IFCHR | 0o600);
    (console.rdev_major, console.rdev_minor) = (5, 1);
    w.special(&console).unwrap();
    w.finish().unwrap()
}

#[test]
fn cpio_reader_survives_mutations() {
    let plain = sample_cpio();
    assert_eq!(cpio_builder::Reader::new(&plain).count(), 4);
    run(8, 5_000, &plain, read_cpio);
    // A compressed member, then a plain one after it.
    let mut two = zstd::encode_all(&plain[..], 3).unwrap();
    two.resize(two.len().next_multiple_of(4), 0);
    two.extend_from_slice(&plain);
    assert_eq!(cpio_builder::Reader::new(&two).count(), 8);
    run(9, 3_000, &two, read_cpio);
    // Mutations inside the frame, compressed again.
    run(10, 2_000, &plain, |b| {
        read_cpio(&zstd::encode_all(b, 1).unwrap());
    });
}

/// What the kmod cargo-fuzz target does: four texts split at NUL bytes, then closures.
fn parse_kmod(b: &[u8]) {
    let text = String::from_utf8_lossy(b);
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("");
    let (dep, softdep, alias, builtin) = (next(), next(), next(), next());
    let Ok(db) = kmod::ModuleDb::parse(Path::new("/m"), dep, softdep, alias, builtin) else {
        return;
    };
    let names: Vec<&str> = db.modules.keys().take(8).map(String::as_str).collect();
    for required in [false, true] {
        if let Ok(order) = db.closure(&names, required) {
            let _ = db.render_dep(&order);
            let _ = db.render_softdep(&order);
        }
    }
    let _ = db.closure(&["dm-verity", "crc32c", "loop"], false);
}

#[test]
fn kmod_parsers_survive_mutations() {
    let text = b"kernel/drivers/md/dm-verity.ko.xz: kernel/drivers/md/dm-bufio.ko.xz kernel/drivers/md/dm-mod.ko.xz\n\
kernel/drivers/md/dm-mod.ko.xz:\nkernel/drivers/md/dm-bufio.ko.xz:\nkernel/lib/libcrc32c.ko.xz:\n\
kernel/crypto/crc32c_generic.ko.xz:\n\0softdep libcrc32c pre: crc32c post: dm-mod\n\0\
alias crc32c crc32c_generic\nalias pci:v*d* dm_mod\nalias dm dm-verity\n\0kernel/drivers/block/loop.ko\n";
    run(11, 10_000, text, parse_kmod);
}

// --- kmod alias patterns, modules.builtin.modinfo and the glob matcher ---

/// Alias text (wildcards too), modules.builtin.modinfo records and modaliases, split at
/// `\x01` bytes: lookups, an added module and closures through the wildcard index.
fn parse_kmod_aliases(b: &[u8]) {
    let text = String::from_utf8_lossy(b);
    let (alias, rest) = text.split_once('\u{1}').unwrap_or((&text, ""));
    let (modinfo, keys) = rest.split_once('\u{1}').unwrap_or((rest, ""));
    let dep = "a.ko: b.ko\nb.ko:\nusb-storage.ko: a.ko\n";
    let mut db = kmod::ModuleDb::parse(Path::new("/m"), dep, "", alias, "b\n").unwrap();
    db.parse_builtin_modinfo(modinfo.as_bytes());
    db.add_blacklist(keys.lines().next().unwrap_or(""));
    let list = |s: &str| vec![s.to_owned()];
    db.add(
        "x.ko".into(),
        "x",
        &list("a,usb-storage"),
        &list(keys),
        &list(modinfo),
    );
    for key in keys.lines().chain([alias, modinfo]) {
        for d in db.modalias(key) {
            let _ = db.blocked(&d.module);
        }
        let _ = db.closure(&[key], false);
    }
}

#[test]
fn kmod_alias_index_survives_mutations() {
    let text = b"alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb-storage\n\
alias usb:v13FDp3940d0[0-2]*dc*dsc*dp*ic*isc*ip*in* a\nalias pci:v[!0-9]?d*\\* b\n\
alias fs-x [x]\n\x01ext4.alias=fs-ext4\0nvme_core.alias=pci:v*d*sv*sd*bc01sc08*\0e.file=x\0\x01\
usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00\npci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\n\
fs-ext4\nfs-x\nusb:v13FDp3940d0100\n";
    run(12, 10_000, text, parse_kmod_aliases);
}

#[test]
fn fnmatch_random_patterns_finish_quickly() {
    const ALPHABET: &[u8] = b"*?[]!^-\\a\xff";
    let mut rng = Rng::new(13);
    let started = std::time::Instant::now();
    for _ in 0..2_000 {
        let pattern: Vec<u8> = (0..rng.below(64))
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        let text: Vec<u8> = (0..rng.below(2_000))
            .map(|_| b"a]-\\"[rng.below(4)])
            .collect();
        kmod::fnmatch(&pattern, &text);
    }
    let slow = "*a".repeat(200) + "b";
    assert!(!kmod::fnmatch(
        slow.as_bytes(),
        "a".repeat(100_000).as_bytes()
    ));
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

/// `elf::modinfo` over a real module (Debian's virtio_blk.ko) whose ELF header, then whose
/// section header table and names, are mutated (the code in between is never read).
#[test]
fn elf_modinfo_survives_mutations() {
    use initrd_sysext::format::elf;
    let modules = test_support::debian_kernel_root().join("lib/modules");
    let kver = fs::read_dir(&modules).unwrap().next().unwrap().unwrap();
    let ko = kver.path().join("kernel/drivers/block/virtio_blk.ko");
    let module = fs::read(&ko).unwrap();
    assert_eq!(elf::modinfo(&module).unwrap().name, "virtio_blk");
    run(12, 5_000, &module[..64], |h| {
        let mut full = h.to_vec();
        full.extend_from_slice(&module[h.len().min(64)..]);
        let _ = elf::modinfo(&full);
    });
    let shoff = u64::from_le_bytes(module[0x28..0x30].try_into().unwrap()) as usize;
    run(13, 5_000, &module[shoff..], |tail| {
        let _ = elf::modinfo(&[&module[..shoff], tail].concat());
    });
}

#[test]
fn tpm2_responses_survive_mutations() {
    let caps = [
        0x80, 0x01, 0, 0, 0, 37, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 3, 0, 4, 3, 0xff, 0xff, 0xff,
        0, 0x0b, 3, 0xff, 0xff, 0xff, 0, 0x0c, 4, 0xff, 0xff, 0xff,
    ];
    assert!(tpm2::parse_pcr_banks(&caps).is_err(), "last bank overruns");
    let mut fixed = caps.to_vec();
    fixed[33] = 3;
    assert_eq!(tpm2::parse_pcr_banks(&fixed).unwrap().len(), 3);
    run(14, 20_000, &fixed, |b| {
        let _ = tpm2::parse_pcr_banks(b);
        let _ = tpm2::check_pcr_extend(b);
    });
}
