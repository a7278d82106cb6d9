//! Interop with kmod: `ModuleDb::modalias` on Debian's 6.1 module tree resolves this machine's
//! device modaliases, QEMU's, and one key derived from every `modules.alias` pattern to what
//! `modprobe --resolve-alias` does, in the same order; `kmod::fnmatch` agrees with glibc's
//! `fnmatch` (which kmod calls) on random patterns.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use initrd_sysext::format::kmod::{self, ModuleDb, Provider};
use test_support::require_tool;

/// Devices QEMU guests have, in their documented modalias forms.
const QEMU: [&str; 30] = [
    "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00", // virtio-blk-pci (transitional)
    "pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00", // virtio-scsi-pci
    "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", // virtio-net-pci
    "pci:v00001AF4d00001005sv00001AF4sd00000004bc00scFFi00", // virtio-rng-pci
    "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00", // virtio-blk-pci (modern)
    "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", // nvme
    "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", // ICH9 AHCI
    "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30", // qemu-xhci
    "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", // e1000
    "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00", // e1000e
    "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80", // PIIX IDE
    "pci:v00008086d00002918sv00001AF4sd00001100bc06sc01i00", // ICH9 LPC
    "pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00", // bochs-display
    "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00",     // usb-storage
    "usb:v0627p0001d0000dc00dsc00dp00ic03isc00ip00in00",     // usb-tablet
    "scsi:t-0x00",                                           // scsi-hd
    "scsi:t-0x05",                                           // scsi-cd
    "virtio:d00000001v00001AF4",
    "virtio:d00000002v00001AF4",
    "virtio:d00000003v00001AF4",
    "virtio:d00000004v00001AF4",
    "virtio:d00000008v00001AF4",
    "virtio:d00000009v00001AF4",
    "virtio:d00000010v00001AF4",
    "virtio:d00000012v00001AF4",
    "virtio:d0000001Av00001AF4",
    "acpi:QEMU0002:",
    "acpi:MSFT0101:",
    "acpi:PNP0B00:",
    "platform:i8042",
];

/// Resolves to `ext4` alone: separates the keys of one modprobe run.
const SENTINEL: &str = "fs-ext4";

/// The `modalias` files under /sys/devices.
fn this_machine() -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new("/sys/devices").to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let kind = e.file_type().unwrap();
            if kind.is_dir() && !kind.is_symlink() {
                stack.push(path);
            } else if e.file_name() == "modalias" {
                let text = fs::read_to_string(&path).unwrap_or_default();
                out.extend(Some(text.trim().to_owned()).filter(|t| !t.is_empty()));
            }
        }
    }
    out
}

/// A key a pattern should match: `*` as `star`, `?` as `0`, a bracket as its first byte.
fn derived(pattern: &str, star: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(star),
            '?' => out.push('0'),
            '[' => {
                let set: String = chars.by_ref().take_while(|&c| c != ']').collect();
                out.extend(set.trim_start_matches(['!', '^']).chars().next());
            }
            c => out.push(c),
        }
    }
    out
}

/// What kmod's lookup chain yields: a module name itself, else the `modules.alias` matches,
/// else a `modules.builtin` name, else the built-in aliases.
fn expected(db: &ModuleDb, key: &str) -> Vec<String> {
    let name = key.replace('-', "_");
    if db.modules.contains_key(&name) {
        return vec![name];
    }
    let found = db.modalias(key);
    let of = |p: Provider| -> Vec<String> {
        let matching = found.iter().filter(|d| d.provider == p);
        matching.map(|d| d.module.clone()).collect()
    };
    assert!(of(Provider::NotShipped).is_empty(), "{key}: {found:?}");
    match of(Provider::Loadable) {
        loadable if loadable.is_empty() && db.builtin.contains(&name) => vec![name],
        loadable if loadable.is_empty() => of(Provider::Builtin),
        loadable => loadable,
    }
}

/// `modprobe --resolve-alias` of each key, one run per chunk: each key's lines up to the
/// sentinel's `ext4`, first occurrences only (modprobe repeats a module matched twice).
fn modprobe(root: &Path, kver: &str, conf: &Path, keys: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for chunk in keys.chunks(1000) {
        let mut cmd = Command::new("modprobe");
        cmd.arg("-C").arg(conf).arg("-d").arg(root);
        cmd.args(["-S", kver, "-a", "--resolve-alias"]);
        for key in chunk {
            cmd.args([key.as_str(), SENTINEL]);
        }
        let o = cmd.output().unwrap();
        let text = String::from_utf8(o.stdout).unwrap();
        let mut lines = text.lines();
        for _ in chunk {
            let mut names: Vec<String> = Vec::new();
            for l in lines.by_ref().take_while(|l| *l != "ext4") {
                if !names.iter().any(|n| n == l) {
                    names.push(l.to_owned());
                }
            }
            out.push(names);
        }
        assert!(lines.next().is_none(), "modprobe output out of step");
    }
    out
}

#[test]
fn modalias_agrees_with_modprobe() {
    if !require_tool("modprobe") {
        return;
    }
    let root = test_support::debian_kernel_root();
    let base = root.join("lib/modules");
    let kver = fs::read_dir(&base).unwrap().next().unwrap().unwrap();
    let kver = kver.file_name().into_string().unwrap();
    let dir = base.join(&kver);
    let alias = fs::read_to_string(dir.join("modules.alias")).unwrap();
    let started = Instant::now();
    ModuleDb::parse(&dir, "", "", &alias, "").unwrap();
    let parse = started.elapsed();
    let db = ModuleDb::load(&dir).unwrap();
    assert!(db.aliases.len() > 20_000 && db.builtin_aliases.len() > 10);
    assert!(db.modules.len() > 3000, "{} modules", db.modules.len());

    let mut keys: Vec<String> = this_machine()
        .into_iter()
        .chain(QEMU.map(String::from))
        .collect();
    let devices = keys.len();
    let patterns: BTreeSet<&str> = alias.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    for star in ["", "1A"] {
        keys.extend(patterns.iter().map(|p| derived(p, star)));
    }
    let started = Instant::now();
    keys.iter().for_each(|k| drop(db.modalias(k)));
    let per_lookup = started.elapsed() / keys.len() as u32;
    // A key resolving to the sentinel's module would put modprobe's output out of step.
    let (keys, ours): (Vec<String>, Vec<Vec<String>>) = keys
        .into_iter()
        .filter(|k| !k.starts_with("symbol:"))
        .map(|k| (expected(&db, &k), k))
        .filter(|(e, _)| !e.iter().any(|m| m == "ext4"))
        .map(|(e, k)| (k, e))
        .unzip();
    let conf = tempfile::tempdir().unwrap();
    let theirs = modprobe(&root, &kver, conf.path(), &keys);
    let differ: Vec<String> = keys
        .iter()
        .zip(ours.iter().zip(&theirs))
        .filter(|(_, (a, b))| a != b)
        .map(|(k, (a, b))| format!("{k}: ours {a:?}, modprobe {b:?}"))
        .collect();
    let matched = ours[..devices].iter().filter(|m| !m.is_empty()).count();
    eprintln!(
        "compared {} modaliases with modprobe ({devices} devices, {matched} of them with a \
         driver; {} patterns): {} differ; modules.alias parsed in {parse:?}, {per_lookup:?} per lookup",
        keys.len(),
        db.aliases.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

extern "C" {
    /// glibc's, in the C locale (tests never call setlocale).
    #[link_name = "fnmatch"]
    fn glibc_fnmatch(
        pattern: *const std::ffi::c_char,
        text: *const std::ffi::c_char,
        flags: i32,
    ) -> i32;
}

#[test]
fn fnmatch_agrees_with_glibc() {
    // No `:`, `=` or `.`: `[:class:]`, `[=e=]` and `[.c.]` are not supported (kmod's
    // aliases never use them).
    const PATTERNS: [&[u8]; 2] = [b"*?[]!^-\\ab_0", b"**?[]!-\\aabb"];
    let mut rng = test_support::Rng::new(42);
    let mut random = |alphabet: &[u8], max: usize| -> Vec<u8> {
        let len = rng.below(max + 1);
        (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect()
    };
    let (mut compared, mut matches) = (0, 0);
    for _ in 0..200_000 {
        let pattern = random(PATTERNS[compared % 2], 10);
        let text = random(b"ab]-\\", 6);
        let c = |b: &[u8]| std::ffi::CString::new(b).unwrap();
        let (p, t) = (c(&pattern), c(&text));
        let theirs = unsafe { glibc_fnmatch(p.as_ptr(), t.as_ptr(), 0) } == 0;
        let ours = kmod::fnmatch(&pattern, &text);
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert_eq!(ours, theirs, "{:?} vs {:?}", show(&pattern), show(&text));
        compared += 1;
        matches += usize::from(theirs);
    }
    eprintln!("{compared} random pattern/text pairs agree with glibc ({matches} match)");
}
