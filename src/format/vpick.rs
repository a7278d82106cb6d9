//! systemd's versioned directories (vpick, systemd.v(7)): the `.v` directory name, the entry
//! name grammar `NAME_VERSION[_ARCH][+LEFT[-DONE]]SUFFIX`, systemd's version order
//! (`strverscmp_improved`) and the choice of the best entry, as pure functions over names.

use std::cmp::Ordering;

use crate::format::gpt::Arch;
use crate::format::release::image_name;

/// systemd's architecture names: a known one that is not ours excludes an entry.
const ARCHITECTURES: [&str; 33] = [
    "arm64",
    "arm64-be",
    "arm",
    "arm-be",
    "alpha",
    "arc",
    "arc-be",
    "cris",
    "x86-64",
    "x86",
    "ia64",
    "loongarch64",
    "m68k",
    "mips64-le",
    "mips64",
    "mips-le",
    "mips",
    "nios2",
    "parisc64",
    "parisc",
    "ppc64-le",
    "ppc64",
    "ppc",
    "ppc-le",
    "riscv32",
    "riscv64",
    "s390x",
    "s390",
    "sh64",
    "sh",
    "sparc64",
    "sparc",
    "tilegx",
];

/// The architectures an entry may carry, by preference: native, then the secondary one systemd
/// accepts (32-bit x86 on x86-64, arm on arm64). Entries without one come after these.
pub fn local_architectures(arch: Arch) -> [&'static str; 2] {
    match arch {
        Arch::X86_64 => ["x86-64", "x86"],
        Arch::Arm64 => ["arm64", "arm"],
    }
}

/// A `.v` directory's name → (extension name, entry suffix): `hello.raw.v` → (`hello`, `.raw`),
/// `hello.v` → (`hello`, ``) whose entries are directories.
pub fn versioned_dir(dir_name: &str) -> Option<(&str, &str)> {
    let base = dir_name.strip_suffix(".v")?;
    let suffix = if base.ends_with(".raw") { ".raw" } else { "" };
    let name = image_name(base);
    (!name.is_empty()).then_some((name, suffix))
}

/// One entry of a `.v` directory, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub file: &'a str,
    pub version: &'a str,
    /// Index in the preference list (local architectures, then "none given").
    arch_rank: usize,
    /// `+LEFT[-DONE]`; absent: unlimited tries (ranks above any count), none done recorded.
    tries_left: Option<u32>,
    tries_done: Option<u32>,
}

/// Parses `file` as `BASENAME_VERSION[_ARCH][+LEFT[-DONE]]SUFFIX`; None when it does not match,
/// names a foreign architecture or carries an invalid version.
pub fn parse<'a>(
    file: &'a str,
    basename: &str,
    suffix: &str,
    arches: &[&str],
) -> Option<Entry<'a>> {
    let rest = file.strip_prefix(basename)?.strip_prefix('_')?;
    let mut rest = rest.strip_suffix(suffix)?;
    let (mut tries_left, mut tries_done) = (None, None);
    if let Some((head, tries)) = rest.rsplit_once('+') {
        if let Some((left, done)) = parse_tries(tries) {
            (rest, tries_left, tries_done) = (head, Some(left), done);
        }
    }
    // An unknown word after the last `_` counts as "no architecture" but is still cut off.
    let (version, arch) = match rest.rsplit_once('_') {
        Some((v, a)) => (v, ARCHITECTURES.contains(&a).then_some(a)),
        None => (rest, None),
    };
    let arch_rank = match arch {
        Some(a) => arches.iter().position(|&l| l == a)?,
        None => arches.len(),
    };
    version_is_valid(version).then_some(Entry {
        file,
        version,
        arch_rank,
        tries_left,
        tries_done,
    })
}

/// `LEFT` or `LEFT-DONE`: digits fitting 32 bits.
fn parse_tries(s: &str) -> Option<(u32, Option<u32>)> {
    match s.split_once('-') {
        Some((left, done)) => Some((tries_number(left)?, Some(tries_number(done)?))),
        None => Some((tries_number(s)?, None)),
    }
}

/// A count as systemd's `safe_atou` reads it (`strtoul` base 0): a leading `0` means octal,
/// so `010` is 8 and `08` is no number.
fn tries_number(d: &str) -> Option<u32> {
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match d.strip_prefix('0').filter(|rest| !rest.is_empty()) {
        Some(octal) => u32::from_str_radix(octal, 8).ok(),
        None => d.parse().ok(),
    }
}

/// What systemd accepts as a picked version (`version_is_valid_versionspec`, as Debian sid's
/// 262 checks; older releases took `,_+` instead of `~^`): a non-empty file name part of
/// letters, digits and `-.~^`.
fn version_is_valid(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 255
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.~^".contains(&b))
}

/// systemd's ranking of two entries: tries left at all, then version, then architecture
/// preference, then more tries left, then fewer done, then the file name.
fn rank(a: &Entry, b: &Entry) -> Ordering {
    let left = |e: &Entry| e.tries_left.unwrap_or(u32::MAX);
    let done = |e: &Entry| e.tries_done.unwrap_or(u32::MAX);
    (left(a) != 0)
        .cmp(&(left(b) != 0))
        .then_with(|| vercmp(a.version, b.version))
        .then_with(|| b.arch_rank.cmp(&a.arch_rank))
        .then_with(|| left(a).cmp(&left(b)))
        .then_with(|| done(b).cmp(&done(a)))
        .then_with(|| a.file.cmp(b.file))
}

/// The entry systemd's vpick picks among `files` (the names in a `.v` directory).
pub fn pick<'a>(
    files: impl IntoIterator<Item = &'a str>,
    basename: &str,
    suffix: &str,
    arches: &[&str],
) -> Option<Entry<'a>> {
    files
        .into_iter()
        .filter_map(|f| parse(f, basename, suffix, arches))
        .max_by(rank)
}

/// systemd's `strverscmp_improved`: segments of digits (numeric, newer than letters) or
/// letters; `~` sorts before everything (pre-releases), then `-`, then `^`, then `.`, and a
/// string with more segments is newer. Other characters only separate segments.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        (x, y) = (skip_separators(x), skip_separators(y));
        if x.first() == Some(&b'~') || y.first() == Some(&b'~') {
            let ord = (x.first() != Some(&b'~')).cmp(&(y.first() != Some(&b'~')));
            if ord != Ordering::Equal {
                return ord;
            }
            (x, y) = (&x[1..], &y[1..]);
        }
        if x.is_empty() || y.is_empty() {
            return x.first().cmp(&y.first());
        }
        for prefix in [b'-', b'^', b'.'] {
            let (px, py) = (x.first() == Some(&prefix), y.first() == Some(&prefix));
            if px || py {
                if px != py {
                    return py.cmp(&px);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
        let ord;
        (ord, x, y) = compare_segment(x, y);
        if ord != Ordering::Equal {
            return ord;
        }
    }
}

fn skip_separators(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|c| !c.is_ascii_alphanumeric() && !b"~-^.".contains(c))
        .count();
    &s[n..]
}

/// Compares the leading numeric (if either starts with a digit) or alphabetic segments; returns
/// the order and what follows each.
fn compare_segment<'a, 'b>(x: &'a [u8], y: &'b [u8]) -> (Ordering, &'a [u8], &'b [u8]) {
    let numeric =
        x.first().is_some_and(u8::is_ascii_digit) || y.first().is_some_and(u8::is_ascii_digit);
    let class: fn(&u8) -> bool = match numeric {
        true => u8::is_ascii_digit,
        false => u8::is_ascii_alphabetic,
    };
    let (sx, rx) = x.split_at(x.iter().take_while(|c| class(c)).count());
    let (sy, ry) = y.split_at(y.iter().take_while(|c| class(c)).count());
    let ord = match numeric {
        true => {
            let (tx, ty) = (trim_zeros(sx), trim_zeros(sy));
            (!sx.is_empty())
                .cmp(&!sy.is_empty())
                .then(tx.len().cmp(&ty.len()))
                .then(tx.cmp(ty))
        }
        // Letters: the common prefix as bytes, then the longer is newer.
        false => {
            let n = sx.len().min(sy.len());
            sx[..n].cmp(&sy[..n]).then(sx.len().cmp(&sy.len()))
        }
    };
    (ord, rx, ry)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    &s[s.iter().take_while(|&&c| c == b'0').count()..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order_matches_systemd() {
        // systemd's own documented order (string-util-fundamental.c), oldest first.
        let order = [
            "122.1",
            "123~rc1-1",
            "123",
            "123-a",
            "123-a.1",
            "123-1",
            "123-1.1",
            "123^post1",
            "123.a-1",
            "123.1-1",
            "123a-1",
            "124-1",
        ];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(vercmp(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(vercmp("1.010", "1.10"), Ordering::Equal);
        assert_eq!(vercmp("1_a", "1a"), Ordering::Equal);
        assert_eq!(vercmp("1.0~rc1", "1.0~rc2"), Ordering::Less);
        assert_eq!(vercmp("1.0~rc1", "1.0~"), Ordering::Greater);
        assert_eq!(vercmp("a", "1"), Ordering::Less);
        assert_eq!(vercmp("abc", "abcde"), Ordering::Less);
        assert_eq!(vercmp("9", "10"), Ordering::Less);
        assert_eq!(vercmp("", "0"), Ordering::Less);
    }

    const X86: [&str; 2] = ["x86-64", "x86"];

    fn picked<'a>(files: &[&'a str]) -> Option<&'a str> {
        pick(files.iter().copied(), "hello", ".raw", &X86).map(|e| e.file)
    }

    #[test]
    fn parses_entry_names() {
        let e = parse("hello_1.2_x86-64+3-1.raw", "hello", ".raw", &X86).unwrap();
        assert_eq!(e.version, "1.2");
        assert_eq!(
            (e.arch_rank, e.tries_left, e.tries_done),
            (0, Some(3), Some(1))
        );
        let e = parse("hello_1.2+0.raw", "hello", ".raw", &X86).unwrap();
        assert_eq!(
            (e.arch_rank, e.tries_left, e.tries_done),
            (2, Some(0), None)
        );
        // An unknown architecture word is cut off and counts as none.
        assert_eq!(
            parse("hello_1_foo.raw", "hello", ".raw", &X86)
                .unwrap()
                .version,
            "1"
        );
        assert_eq!(
            parse("hello_1~rc1^2.raw", "hello", ".raw", &X86)
                .unwrap()
                .version,
            "1~rc1^2"
        );
        // Counts are read as strtoul(base 0) does: a leading 0 is octal.
        let e = parse("hello_1+010-07.raw", "hello", ".raw", &X86).unwrap();
        assert_eq!((e.tries_left, e.tries_done), (Some(8), Some(7)));
        for bad in [
            "hello_1_arm64.raw",
            "hello.raw",
            "hello_.raw",
            "hello_1.raw.tmp",
            "hellox_1.raw",
            "hello_1,2.raw",
            "hello_1_2_x86-64.raw",
            // A `+` not followed by tries stays in the version, which makes it invalid.
            "hello_1+a.raw",
            "hello_1+08.raw",
            "hello_1+4294967296.raw",
        ] {
            assert_eq!(parse(bad, "hello", ".raw", &X86), None, "{bad}");
        }
        assert_eq!(parse("hello_2", "hello", "", &X86).unwrap().version, "2");
    }

    #[test]
    fn picks_as_systemd() {
        assert_eq!(
            picked(&["hello_1.raw", "hello_1.10.raw", "hello_1.9.raw"]),
            Some("hello_1.10.raw")
        );
        // Tries used up lose to anything with tries left, even older; alone they still win.
        assert_eq!(
            picked(&["hello_3+0.raw", "hello_2+1-2.raw"]),
            Some("hello_2+1-2.raw")
        );
        assert_eq!(picked(&["hello_3+0-3.raw"]), Some("hello_3+0-3.raw"));
        // Same version: native before secondary before none, then more tries left, fewer done.
        assert_eq!(
            picked(&["hello_1_x86.raw", "hello_1.raw", "hello_1_x86-64.raw"]),
            Some("hello_1_x86-64.raw")
        );
        assert_eq!(
            picked(&["hello_1.raw", "hello_1_x86.raw"]),
            Some("hello_1_x86.raw")
        );
        assert_eq!(
            picked(&["hello_1+2-1.raw", "hello_1+2-0.raw", "hello_1+1.raw"]),
            Some("hello_1+2-0.raw")
        );
        assert_eq!(
            picked(&["hello_1+5.raw", "hello_1.raw"]),
            Some("hello_1.raw")
        );
        assert_eq!(
            picked(&["hello_9_arm64.raw", "other_2.raw", "hello_x.raw~"]),
            None
        );
    }

    #[test]
    fn versioned_dir_names() {
        assert_eq!(versioned_dir("hello.raw.v"), Some(("hello", ".raw")));
        assert_eq!(versioned_dir("hello.v"), Some(("hello", "")));
        assert_eq!(versioned_dir("hello.raw"), None);
        assert_eq!(versioned_dir(".v"), None);
    }
}
