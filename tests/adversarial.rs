//! A seeded mutation fuzzer over the binary: signed DDIs (erofs, squashfs), split images with
//! sidecars and initrds (plain cpio, zstd) are mutated where it matters, then `inspect`,
//! `inspect --json` and `verify` must exit 0 or 1 (never a panic, a signal or 2) within 10 s and
//! 256 MB of address space, and `verify` must refuse every mutant that changes a byte the
//! signature covers. `ADVERSARIAL_MUTANTS=N` runs more (from seed
//! `ADVERSARIAL_FIRST`, default 1), `ADVERSARIAL_SEED=S` runs only mutant S.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use initrd_sysext::format::{gpt, signature::SignatureJson, verity};
use test_support::{s, write_tree, Rng};

const BIN: &str = env!("CARGO_BIN_EXE_initrd-sysext");
/// Mutants per run: about a minute for a debug build on two cores.
const DEFAULT_MUTANTS: usize = 1000;
const TIMEOUT: Duration = Duration::from_secs(10);
const MEMORY_LIMIT: u64 = 256 << 20;
const UUID_SEED: &str = "11111111-2222-3333-4444-555555555555";

/// A byte range of one file, and whether `verify` must refuse any change to it.
#[derive(Debug, Clone)]
struct Region {
    name: &'static str,
    file: usize,
    start: usize,
    end: usize,
    kind: Kind,
}

/// What a region holds, for the edits that suit it and for what `verify` must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Bytes the signature does not cover (GPT, padding): anything may happen.
    Free,
    /// Bytes bound to the root hash (filesystem data, hash tree): any change is refused.
    Covered,
    /// The verity superblock: a change of any parameter but the UUID is refused.
    Superblock,
    /// The signature partition: a change of what it parses to is refused.
    SignatureJson,
    /// A `.roothash` sidecar: a change of the hash it decodes to is refused.
    RootHashText,
    /// A `.roothash.p7s` sidecar: a change of the DER is refused.
    Pkcs7,
    /// cpio headers (ASCII hex fields): edits keep hex digits more often.
    CpioHeaders,
    /// A zstd frame: either raw edits, or the inner archive edited and recompressed.
    Zstd,
}

/// One seed input: its files (the first is the one the commands name) and its regions.
struct Input {
    name: &'static str,
    files: Vec<(String, Vec<u8>)>,
    regions: Vec<Region>,
    /// Whether `verify` applies (DDIs and split images), else only `inspect`.
    image: bool,
    /// The verity superblock as built, for the semantic comparison.
    params: Option<verity::Params>,
    /// The signature as built.
    signature: Option<SignatureJson>,
}

struct Seeds {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    inputs: Vec<Input>,
}

fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env("SOURCE_DATE_EPOCH", "1");
    c
}

fn checked(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small extension tree: the release file, a few files, a directory of many, a symlink.
fn tree(root: &Path) {
    let release = "ID=_any\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=initrd\n";
    let mid: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write_tree(
        root,
        &[
            (
                "usr/lib/extension-release.d/extension-release.x",
                release.as_bytes(),
                0o644,
            ),
            ("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
            ("usr/lib/mid.bin", &mid, 0o644),
            ("opt/x/data", b"opt", 0o600),
            ("usr/lib/os-release", b"ID=debian\nVERSION_ID=12\n", 0o644),
        ],
    );
    for i in 0..40 {
        write_tree(
            root,
            &[(
                &format!("usr/share/many/f{i:02}"),
                format!("{i}").as_bytes(),
                0o644,
            )],
        );
    }
    std::os::unix::fs::symlink("tool", root.join("usr/bin/link")).unwrap();
    // Best effort: not every filesystem takes user xattrs.
    let _ = rustix::fs::setxattr(
        root.join("usr/bin/tool"),
        "user.test",
        b"hello",
        rustix::fs::XattrFlags::empty(),
    );
}

fn region(name: &'static str, file: usize, start: u64, end: u64, kind: Kind) -> Option<Region> {
    (end > start).then_some(Region {
        name,
        file,
        start: start as usize,
        end: end as usize,
        kind,
    })
}

/// The regions of a naked filesystem of `len` bytes whose first `covered` are hashed.
fn fs_regions(file: usize, base: u64, covered: u64, part_end: u64) -> Vec<Option<Region>> {
    let end = base + covered;
    vec![
        region("fs-head", file, base, end.min(base + 8192), Kind::Covered),
        region("fs-body", file, base, end, Kind::Covered),
        region(
            "fs-tail",
            file,
            end.saturating_sub(8192).max(base),
            end,
            Kind::Covered,
        ),
        region("fs-pad", file, end, part_end, Kind::Free),
    ]
}

fn hash_regions(file: usize, base: u64, p: &verity::Params, end: u64) -> Vec<Option<Region>> {
    let (tree, area) = (base + p.tree_offset(), base + p.hash_area_size());
    vec![
        region("verity-sb", file, base, base + 512, Kind::Superblock),
        region("verity-sb-pad", file, base + 512, tree, Kind::Free),
        region("verity-tree", file, tree, area, Kind::Covered),
        region("verity-pad", file, area, end, Kind::Free),
    ]
}

fn ddi(dir: &Path, tree: &Path, key: &Path, cert: &Path, fs: &str) -> Input {
    let out = dir.join(format!("{fs}.raw"));
    checked(bin().args([
        "build",
        "sysext",
        "--tree",
        s(tree),
        "--name",
        "x",
        "--id",
        "_any",
        "--key",
        s(key),
        "--cert",
        s(cert),
        "--fs",
        fs,
        "--seed",
        UUID_SEED,
        "--output",
        s(&out),
    ]));
    let img = fs::read(&out).unwrap();
    let table = gpt::read(&img[..]).unwrap();
    let role = |suffix: &str| {
        table
            .partitions
            .iter()
            .find(|p| p.label == format!("root-x86-64{suffix}"))
            .unwrap_or_else(|| panic!("no root-x86-64{suffix} in {:?}", table.partitions))
            .clone()
    };
    let (data, hash, sig) = (role(""), role("-verity"), role("-verity-sig"));
    let params = verity::Params::parse(&img[hash.offset as usize..]).unwrap();
    let sig_bytes = &img[sig.offset as usize..(sig.offset + sig.size) as usize];
    let json_len = sig_bytes.iter().position(|&b| b == 0).unwrap() as u64;
    let first = table.partitions.iter().map(|p| p.offset).min().unwrap();
    let last = table
        .partitions
        .iter()
        .map(|p| p.offset + p.size)
        .max()
        .unwrap();
    let mut regions = vec![
        region("gpt-primary", 0, 0, first, Kind::Free),
        region("gpt-backup", 0, last, img.len() as u64, Kind::Free),
        region(
            "sig-json",
            0,
            sig.offset,
            sig.offset + json_len,
            Kind::SignatureJson,
        ),
        region(
            "sig-pad",
            0,
            sig.offset + json_len,
            sig.offset + sig.size,
            Kind::SignatureJson,
        ),
    ];
    regions.extend(fs_regions(
        0,
        data.offset,
        params.data_size(),
        data.offset + data.size,
    ));
    regions.extend(hash_regions(
        0,
        hash.offset,
        &params,
        hash.offset + hash.size,
    ));
    Input {
        name: if fs == "erofs" {
            "ddi-erofs"
        } else {
            "ddi-squashfs"
        },
        regions: regions.into_iter().flatten().collect(),
        image: true,
        signature: Some(SignatureJson::parse(sig_bytes).unwrap()),
        params: Some(params),
        files: vec![("x.raw".into(), img)],
    }
}

fn split(dir: &Path, tree: &Path, key: &Path, cert: &Path, fs: &str) -> Input {
    let sub = dir.join(format!("split-{fs}"));
    fs::create_dir(&sub).unwrap();
    let out = sub.join("x.raw");
    checked(bin().args([
        "build",
        "sysext",
        "--tree",
        s(tree),
        "--name",
        "x",
        "--id",
        "_any",
        "--key",
        s(key),
        "--cert",
        s(cert),
        "--fs",
        fs,
        "--split",
        "--seed",
        UUID_SEED,
        "--output",
        s(&out),
    ]));
    let read = |ext: &str| fs::read(sub.join(format!("x.{ext}"))).unwrap();
    let (raw, hash) = (read("raw"), read("verity"));
    let params = verity::Params::parse(&hash).unwrap();
    let mut regions = fs_regions(0, 0, params.data_size(), raw.len() as u64);
    regions.extend(hash_regions(1, 0, &params, hash.len() as u64));
    let (roothash, p7s) = (read("roothash"), read("roothash.p7s"));
    assert_eq!(p7s[p7s.len() - RSA_VALUE - 4..][..4], RSA_HEADER);
    regions.push(region(
        "roothash",
        2,
        0,
        roothash.len() as u64,
        Kind::RootHashText,
    ));
    regions.push(region("p7s", 3, 0, p7s.len() as u64, Kind::Pkcs7));
    Input {
        name: if fs == "erofs" {
            "split-erofs"
        } else {
            "split-squashfs"
        },
        regions: regions.into_iter().flatten().collect(),
        image: true,
        params: Some(params),
        signature: None,
        files: vec![
            ("x.raw".into(), raw),
            ("x.verity".into(), hash),
            ("x.roothash".into(), roothash),
            ("x.roothash.p7s".into(), p7s),
        ],
    }
}

fn initrd(dir: &Path, tree: &Path, zstd: bool) -> Input {
    let init = dir.join("init-script");
    fs::write(&init, "#!/bin/sh\necho init\n").unwrap();
    let name = if zstd { "i.cpio.zst" } else { "i.cpio" };
    let out = dir.join(name);
    checked(bin().args([
        "build",
        "initrd",
        "--tree",
        s(tree),
        "--init",
        s(&init),
        "--compress",
        if zstd { "zstd" } else { "none" },
        "--output",
        s(&out),
    ]));
    let bytes = fs::read(&out).unwrap();
    let len = bytes.len() as u64;
    let kind = if zstd { Kind::Zstd } else { Kind::CpioHeaders };
    Input {
        name: if zstd { "initrd-zstd" } else { "initrd-cpio" },
        regions: vec![
            region("archive", 0, 0, len, kind).unwrap(),
            region("archive-head", 0, 0, len.min(1024), kind).unwrap(),
        ],
        image: false,
        params: None,
        signature: None,
        files: vec![(name.into(), bytes)],
    }
}

fn seeds() -> Seeds {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    checked(bin().args(["genkey", "--key", s(&key), "--cert", s(&cert)]));
    let t = dir.path().join("tree");
    tree(&t);
    let initrd_tree = dir.path().join("initrd-tree");
    tree(&initrd_tree);
    let inputs = vec![
        ddi(dir.path(), &t, &key, &cert, "erofs"),
        ddi(dir.path(), &t, &key, &cert, "squashfs"),
        split(dir.path(), &t, &key, &cert, "erofs"),
        split(dir.path(), &t, &key, &cert, "squashfs"),
        initrd(dir.path(), &initrd_tree, false),
        initrd(dir.path(), &initrd_tree, true),
    ];
    Seeds {
        _dir: dir,
        cert,
        inputs,
    }
}

/// One edit, described for the failure report.
fn edit(rng: &mut Rng, v: &mut Vec<u8>, r: &Region, log: &mut Vec<String>) {
    let end = r.end.min(v.len());
    if end <= r.start {
        return;
    }
    let at = r.start + rng.below(end - r.start);
    let hexy = matches!(r.kind, Kind::CpioHeaders | Kind::RootHashText) && rng.below(2) == 0;
    match rng.below(10) {
        0 | 1 if hexy => {
            v[at] = b"0123456789abcdefF"[rng.below(17)];
            log.push(format!("hex@{at}={}", v[at] as char));
        }
        0 | 1 => {
            let bit = rng.below(8);
            v[at] ^= 1 << bit;
            log.push(format!("flip@{at}.{bit}"));
        }
        2 | 3 => {
            v[at] = [0, 0xff, 0x7f, 0x80, 1, b' ', b'\n', rng.next_u64() as u8][rng.below(8)];
            log.push(format!("set@{at}={:#x}", v[at]));
        }
        4 => {
            // An interesting little-endian word: sizes, counts, offsets.
            let words: [u64; 8] = [0, 1, u64::MAX, 0x8000_0000, 0xffff_ffff, 4096, 1 << 40, 7];
            let w = words[rng.below(words.len())].to_le_bytes();
            let n = [2, 4, 8][rng.below(3)].min(end - at);
            v[at..at + n].copy_from_slice(&w[..n]);
            log.push(format!("word@{at}[{n}]={:#x}", u64::from_le_bytes(w)));
        }
        5 => {
            // Copy a range of the file over this spot.
            let n = [4, 16, 64, 512, 4096][rng.below(5)].min(end - at);
            let from = rng.below(v.len() - n + 1);
            v.copy_within(from..from + n, at);
            log.push(format!("copy {from}+{n}->{at}"));
        }
        6 => {
            let n = (1 + rng.below(64)).min(end - at);
            let byte = [0, 0xff, b'f'][rng.below(3)];
            v[at..at + n].fill(byte);
            log.push(format!("fill@{at}+{n}={byte:#x}"));
        }
        7 if rng.below(3) == 0 => {
            v.truncate(at);
            log.push(format!("truncate@{at}"));
        }
        8 if rng.below(3) == 0 => {
            let n = [1, 511, 4096, 65536][rng.below(4)];
            let from = rng.below(v.len());
            let mut tail = v[from..].to_vec();
            tail.resize(n, 0);
            v.extend_from_slice(&tail);
            log.push(format!("extend+{n} from {from}"));
        }
        _ => {
            let bit = rng.below(8);
            v[at] ^= 1 << bit;
            log.push(format!("flip@{at}.{bit}"));
        }
    }
}

/// One mutant: the files to write (None: removed) and what was done.
struct Mutant {
    files: Vec<Option<Vec<u8>>>,
    region: Region,
    log: Vec<String>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn mutate(input: &Input, seed: u64) -> Mutant {
    let mut rng = Rng::new(splitmix(seed));
    let region = input.regions[rng.below(input.regions.len())].clone();
    let mut files: Vec<Option<Vec<u8>>> = input.files.iter().map(|f| Some(f.1.clone())).collect();
    let mut log = Vec::new();
    // Split images: sometimes a sidecar goes missing.
    if input.files.len() > 1 && rng.below(40) == 0 {
        let gone = 1 + rng.below(input.files.len() - 1);
        files[gone] = None;
        log.push(format!("remove {}", input.files[gone].0));
        return Mutant { files, region, log };
    }
    let v = files[region.file].as_mut().unwrap();
    if region.kind == Kind::Zstd && rng.below(2) == 0 {
        // Edit the archive inside the frame and compress it again.
        let mut inner = Vec::new();
        zstd::stream::read::Decoder::with_buffer(&v[..])
            .unwrap()
            .single_frame()
            .read_to_end(&mut inner)
            .unwrap();
        let r = Region {
            end: inner.len(),
            kind: Kind::CpioHeaders,
            ..region.clone()
        };
        for _ in 0..1 + rng.below(4) {
            edit(&mut rng, &mut inner, &r, &mut log);
        }
        *v = zstd::encode_all(&inner[..], 1).unwrap();
        log.push("recompressed".into());
    } else {
        for _ in 0..1 + rng.below(4) {
            edit(&mut rng, v, &region, &mut log);
        }
    }
    Mutant { files, region, log }
}

/// The verdict `verify` owes a mutant.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Something the signature covers changed: exit 1.
    Refuse(String),
    /// Nothing covered changed (or only in a way that means the same): 0 or 1.
    Either,
}

fn expectation(input: &Input, m: &Mutant) -> Expect {
    let r = &m.region;
    let Some(after) = &m.files[r.file] else {
        return Expect::Refuse(format!("{} removed", input.files[r.file].0));
    };
    let before = &input.files[r.file].1;
    let changed = |a: usize, b: usize| after.get(a..b) != before.get(a..b);
    match r.kind {
        Kind::Free | Kind::CpioHeaders | Kind::Zstd => Expect::Either,
        Kind::Covered if changed(r.start, r.end) => Expect::Refuse("covered bytes changed".into()),
        Kind::Covered => Expect::Either,
        Kind::Superblock => {
            let orig = input.params.as_ref().unwrap();
            match after.get(r.start..).map(verity::Params::parse) {
                None | Some(Err(_)) => Expect::Refuse("superblock unreadable".into()),
                Some(Ok(p)) if p.data_blocks < orig.data_blocks => {
                    Expect::Refuse("lowered verity data_blocks".into())
                }
                Some(Ok(p)) => {
                    let same = verity::Params {
                        uuid: orig.uuid,
                        ..p
                    } == *orig;
                    if same {
                        Expect::Either
                    } else {
                        Expect::Refuse("verity parameters changed".into())
                    }
                }
            }
        }
        Kind::SignatureJson => {
            let orig = input.signature.as_ref().unwrap();
            let sig = input
                .regions
                .iter()
                .filter(|x| x.kind == Kind::SignatureJson);
            let (start, end) =
                sig.fold((usize::MAX, 0), |(a, b), x| (a.min(x.start), b.max(x.end)));
            let json_end = input
                .regions
                .iter()
                .find(|x| x.name == "sig-json")
                .unwrap()
                .end;
            if after.len() < json_end {
                return Expect::Refuse("signature JSON truncated".into());
            }
            let Ok(j) = SignatureJson::parse(&after[start..end.min(after.len())]) else {
                return Expect::Refuse("signature JSON unreadable".into());
            };
            let fp_changed = j.certificate_fingerprint.as_ref().is_some_and(|fp| {
                !orig
                    .certificate_fingerprint
                    .as_ref()
                    .unwrap()
                    .eq_ignore_ascii_case(fp)
            });
            if j.root_hash != orig.root_hash {
                Expect::Refuse("rootHash changed".into())
            } else if let Some(why) = pkcs7_changed(&orig.signature, &j.signature) {
                Expect::Refuse(why)
            } else if fp_changed {
                Expect::Refuse("certificateFingerprint changed".into())
            } else {
                Expect::Either
            }
        }
        Kind::RootHashText => {
            let text = String::from_utf8_lossy(after);
            let t = text.trim();
            let hex = t.bytes().all(|b| b.is_ascii_hexdigit());
            if hex && t.len().is_multiple_of(2) && t.len() < 64 {
                return Expect::Refuse(".roothash shorter than 64 hex characters".into());
            }
            let orig = String::from_utf8_lossy(before);
            if hex && t.eq_ignore_ascii_case(orig.trim()) {
                Expect::Either
            } else {
                Expect::Refuse("root hash changed".into())
            }
        }
        Kind::Pkcs7 => pkcs7_changed(before, after).map_or(Expect::Either, Expect::Refuse),
    }
}

/// Length of the RSA-2048 signature value that ends our PKCS#7 (NOATTR: no unsigned
/// attributes follow it), with its OCTET STRING header.
const RSA_VALUE: usize = 256;
const RSA_HEADER: [u8; 4] = [0x04, 0x82, 0x01, 0x00];

/// Whether a PKCS#7 changed in what binds it to the root hash: it lost bytes, or its RSA
/// signature value changed. The rest of the DER (version numbers, the issuer's spelling) is
/// covered by nothing and OpenSSL accepts many changes to it (the algorithm identifiers are
/// checked by us: `pkcs7_algorithm_identifiers_are_checked`); so are bytes appended after it,
/// which OpenSSL ignores (mutants 4770, 4890, 5862).
fn pkcs7_changed(before: &[u8], after: &[u8]) -> Option<String> {
    let value = |d: &[u8]| {
        d.get(before.len() - RSA_VALUE..before.len())
            .map(<[u8]>::to_vec)
    };
    if after.len() < before.len() {
        Some("PKCS#7 truncated".into())
    } else if value(before) != value(after) {
        Some("RSA signature value changed".into())
    } else {
        None
    }
}

/// How one run of the binary ended.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    elapsed: Duration,
    timed_out: bool,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs the binary with a 256 MB address-space limit, killed after 10 s.
fn run(dir: &Path, args: &[&str]) -> Run {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(MEMORY_LIMIT),
                maximum: Some(MEMORY_LIMIT),
            };
            rustix::process::setrlimit(rustix::process::Resource::As, limit)?;
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    use std::os::unix::process::ExitStatusExt;
    let mut stderr = String::new();
    let _ = fs::File::open(&err).and_then(|mut f| f.read_to_string(&mut stderr));
    Run {
        code: status.code(),
        signal: status.signal(),
        elapsed: start.elapsed(),
        timed_out,
        stdout: fs::read(&out).unwrap_or_default(),
        stderr,
    }
}

/// What is wrong with a run, if anything.
fn judge(run: &Run, json: bool) -> Option<String> {
    if run.timed_out {
        return Some(format!("still running after {TIMEOUT:?}"));
    }
    if let Some(sig) = run.signal {
        return Some(format!(
            "killed by signal {sig} (a panic=abort or OOM abort?)"
        ));
    }
    match run.code {
        Some(0 | 1) if run.stderr.contains("panicked") => Some("panicked".into()),
        Some(0) if json && serde_json::from_slice::<serde_json::Value>(&run.stdout).is_err() => {
            Some("inspect --json succeeded without JSON on stdout".into())
        }
        Some(0 | 1) => None,
        Some(c) => Some(format!("exit code {c}")),
        None => Some("no exit code".into()),
    }
}

struct Failure {
    seed: u64,
    what: String,
}

/// Writes mutant `seed` into `dir` and runs the commands on it; the failures.
fn check_mutant(seeds: &Seeds, dir: &Path, seed: u64, counts: &Counts) -> Vec<Failure> {
    let input = &seeds.inputs[(splitmix(seed ^ 0x5eed) % seeds.inputs.len() as u64) as usize];
    let m = mutate(input, seed);
    for ((name, _), data) in input.files.iter().zip(&m.files) {
        let p = dir.join(name);
        let _ = fs::remove_file(&p);
        if let Some(d) = data {
            fs::write(&p, d).unwrap();
        }
    }
    let target = dir.join(&input.files[0].0);
    let describe = |cmd: &str, why: &str, run: Option<&Run>| {
        let tail = run.map_or(String::new(), |r| {
            let e = r.stderr.trim_end();
            format!(" [stderr: {}]", &e[e.len().saturating_sub(300)..])
        });
        format!(
            "seed {seed}: {} {} {:?}: `{cmd}`: {why}{tail}",
            input.name, m.region.name, m.log
        )
    };
    let mut failures = Vec::new();
    let mut commands = vec![
        (vec!["inspect", s(&target)], false),
        (vec!["inspect", s(&target), "--json"], true),
    ];
    let expect = if input.image {
        expectation(input, &m)
    } else {
        Expect::Either
    };
    if input.image {
        commands.push((vec!["verify", s(&target), "--cert", s(&seeds.cert)], false));
    }
    for (args, json) in commands {
        let r = run(dir, &args);
        counts.runs.fetch_add(1, Ordering::Relaxed);
        let cmd = args[0..1].join(" ") + if json { " --json" } else { "" };
        if let Some(why) = judge(&r, json) {
            failures.push(describe(&cmd, &why, Some(&r)));
        } else if args[0] == "verify" {
            if let Expect::Refuse(_) = expect {
                counts.must_refuse.fetch_add(1, Ordering::Relaxed);
            }
            if let (Expect::Refuse(why), Some(0)) = (&expect, r.code) {
                failures.push(describe(&cmd, &format!("accepted, but {why}"), Some(&r)));
            }
        }
        let ms = r.elapsed.as_millis() as usize;
        counts.slowest_ms.fetch_max(ms, Ordering::Relaxed);
    }
    failures
        .into_iter()
        .map(|what| Failure { seed, what })
        .collect()
}

#[derive(Default)]
struct Counts {
    runs: AtomicUsize,
    must_refuse: AtomicUsize,
    slowest_ms: AtomicUsize,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
    )
}

#[test]
fn mutants_are_refused_cleanly_and_in_bounds() {
    let start = Instant::now();
    let seeds = seeds();
    for input in seeds.inputs.iter().filter(|i| i.image) {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in &input.files {
            fs::write(dir.path().join(name), data).unwrap();
        }
        let x = dir.path().join(&input.files[0].0);
        let r = run(dir.path(), &["verify", s(&x), "--cert", s(&seeds.cert)]);
        assert_eq!(r.code, Some(0), "{}: {}", input.name, r.stderr);
    }
    let (first, count) = match env_u64("ADVERSARIAL_SEED") {
        Some(seed) => (seed, 1),
        None => (
            env_u64("ADVERSARIAL_FIRST").unwrap_or(1),
            env_u64("ADVERSARIAL_MUTANTS").unwrap_or(DEFAULT_MUTANTS as u64),
        ),
    };
    let next = AtomicUsize::new(0);
    let counts = Counts::default();
    let failures = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let dir = tempfile::tempdir().unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                    if i >= count {
                        break;
                    }
                    let found = check_mutant(&seeds, dir.path(), first + i, &counts);
                    failures.lock().unwrap().extend(found);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|f| f.seed);
    eprintln!(
        "adversarial: {count} mutants, {} runs ({} verify runs that must refuse), slowest run \
         {} ms, {:.1} s in all, {} failures",
        counts.runs.load(Ordering::Relaxed),
        counts.must_refuse.load(Ordering::Relaxed),
        counts.slowest_ms.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        failures.len()
    );
    let report: Vec<String> = failures.iter().map(|f| f.what.clone()).collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Writes `input`'s files into a new directory; the directory and the image's path.
fn materialize(input: &Input) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in &input.files {
        fs::write(dir.path().join(name), data).unwrap();
    }
    let image = dir.path().join(&input.files[0].0);
    (dir, image)
}

fn input<'a>(seeds: &'a Seeds, name: &str) -> &'a Input {
    seeds.inputs.iter().find(|i| i.name == name).unwrap()
}

/// `verify` on `image` exits 1, cleanly and in bounds.
fn assert_refused(dir: &Path, image: &Path, cert: &Path) {
    let r = run(dir, &["verify", s(image), "--cert", s(cert)]);
    assert_eq!(judge(&r, false), None, "stderr: {}", r.stderr);
    assert_eq!(r.code, Some(1), "verify accepted it: {}", r.stderr);
}

/// Found by mutant 578 (`copy 312+4->148` in a split image's `.roothash.p7s`): the PKCS#7's
/// algorithm identifiers (signerInfo digestAlgorithm, digestEncryptionAlgorithm) can be
/// changed to OIDs that name no algorithm and OpenSSL still verifies the signature; the kernel
/// refuses such a signature (-ENOPKG), so `verify` passed an image that would not activate.
#[test]
fn pkcs7_algorithm_identifiers_are_checked() {
    let seeds = seeds();
    let split = input(&seeds, "split-squashfs");
    let sha256 = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    let rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let der = &split.files[3].1;
    let find = |oid: &[u8], from: usize| {
        from + der[from..]
            .windows(oid.len())
            .position(|w| w == oid)
            .unwrap()
    };
    // The first sha256 OID is in the digestAlgorithms set, the second in the signerInfo.
    let signer_digest = find(&sha256, find(&sha256, 0) + 1);
    for at in [signer_digest + 8, find(&rsa, 0) + 8] {
        let (dir, image) = materialize(split);
        let mut bad = der.clone();
        bad[at] = 0x7f;
        fs::write(dir.path().join("x.roothash.p7s"), bad).unwrap();
        assert_refused(dir.path(), &image, &seeds.cert);
    }
}
