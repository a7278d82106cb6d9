//! PCR 13 (systemd's "sysexts" PCR), in one place for boot mode and its prediction: the event
//! systemd-stub measures for the `.raw` files it passes on (the whole cpio it builds of them),
//! the `sysext:NAME:ROOTHASH:FINGERPRINT` event boot mode measures per merged extension
//! (`confext:…` for a configuration extension), and the PCR value they give.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::format::release::{image_name, image_name_is_valid, Class};
use crate::format::tpm2::{Bank, Hasher};
use crate::image::dissect::{self, DissectError, Dissected, Protection};

/// systemd's TPM_PCR_INDEX_INITRD_SYSEXTS.
pub const PCR: u32 = 13;
/// Where systemd-stub puts the files in its cpio (directories 0555, files 0444).
const STUB_DIR: &str = ".extra/sysext";

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Dissect(#[from] DissectError),
    #[error("{path}: {reason}")]
    Refused { path: PathBuf, reason: String },
}

fn refused(path: &Path, reason: impl Into<String>) -> MeasureError {
    MeasureError::Refused {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The event boot mode measures for the extension `name` of `class` (`image` None for a
/// directory): `sysext:NAME:ROOTHASH:FINGERPRINT` (a confext: `confext:…`), the lowercase hex root hash when dm-verity checks the
/// image against it, the signing certificate's fingerprint as the signature partition names it
/// (`certificateFingerprint`) when the signature was checked, `-` otherwise. Both are hex or
/// `-`, so the event splits unambiguously from the right even if NAME holds a `:`.
pub fn event(class: Class, name: &str, image: Option<&Dissected>, checked: Protection) -> String {
    let root_hash = image
        .filter(|_| checked >= Protection::Verity)
        .and_then(Dissected::root_hash_hex);
    let fingerprint = image
        .filter(|_| checked == Protection::Signed)
        .and_then(|d| d.signature.as_ref()?.certificate_fingerprint.as_deref())
        .map(str::to_ascii_lowercase);
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    format!(
        "{}:{name}:{}:{}",
        class.name(),
        or_dash(root_hash),
        or_dash(fingerprint)
    )
}

/// The event for the extension of `class` at `path` as boot mode would merge it: a directory,
/// or a `*.raw` image (named without `.raw`, as found in a search directory) at the most it
/// offers.
fn extension_event(class: Class, path: &Path) -> Result<String, MeasureError> {
    let io_err = |source| MeasureError::Io {
        path: path.to_owned(),
        source,
    };
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| refused(path, "no UTF-8 file name"))?;
    let md = std::fs::metadata(path).map_err(io_err)?;
    let (name, image) = if md.is_dir() {
        (file, None)
    } else if md.is_file() && file.ends_with(".raw") {
        (image_name(file), Some(dissect::dissect(path, None)?))
    } else {
        return Err(refused(path, "neither a *.raw image nor a directory"));
    };
    if !image_name_is_valid(name) {
        return Err(refused(path, format!("invalid extension name {name:?}")));
    }
    let checked = image
        .as_ref()
        .map_or(Protection::Unprotected, Protection::offered);
    Ok(event(class, name, image.as_ref(), checked))
}

/// One stream hashed in several banks at once.
struct Hashers(Vec<Hasher>);

impl Hashers {
    fn update(&mut self, data: &[u8]) {
        self.0.iter_mut().for_each(|h| h.update(data));
    }
}

/// For `io::copy`.
impl Write for Hashers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The name systemd-stub gives `path` in its cpio: it takes regular files named `*.raw` (any
/// case), ASCII, at most 255 characters, not starting with `.`.
fn stub_name(path: &Path) -> Result<&str, MeasureError> {
    let name = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let raw = |n: &str| n.len() > 4 && n[n.len() - 4..].eq_ignore_ascii_case(".raw");
    // ASCII first: slicing at len - 4 is then a character boundary.
    if !name.is_ascii() || !raw(name) || name.len() > 255 || name.starts_with('.') {
        return Err(refused(
            path,
            "systemd-stub passes on only files named *.raw (ASCII, at most 255 characters, \
             not starting with .)",
        ));
    }
    Ok(name)
}

/// systemd-stub's cpio trailer, byte for byte (its one upper-case hex digit included).
const STUB_TRAILER: &[u8; 124] = b"070701\
    0000000000000000000000000000000000000001000000000000000000000000000000000000000000000000\
    0000000B00000000TRAILER!!!\0\0\0\0";

/// A newc header as systemd-stub's pack_cpio writes it (lower-case hex; uid, gid, mtime and
/// devices 0, nlink 1) with its name, NUL and padding; `out` is 4-byte aligned before and after.
fn stub_header(out: &mut Hashers, ino: u32, mode: u32, size: u32, name: &str) {
    let namesize = name.len() as u32 + 1;
    let mut head = String::from("070701");
    for word in [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0] {
        head += &format!("{word:08x}");
    }
    head += name;
    head.push('\0');
    let padded = head.len().next_multiple_of(4);
    out.update(head.as_bytes());
    out.update(&[0; 3][..padded - head.len()]);
}

/// systemd-stub's one event for the `.raw` files it found beside the UKI, in each bank: the
/// digest of the cpio it builds (`.extra` and `.extra/sysext` 0555, then the files 0444
/// sorted by name, inodes from 1, the trailer). Written here rather than with cpio-builder:
/// the measurement is of the stub's exact bytes, lower-case hex and nlink 1 for directories.
/// None without files: the stub then measures nothing.
pub fn stub_event(files: &[PathBuf], banks: &[Bank]) -> Result<Option<Vec<Vec<u8>>>, MeasureError> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut named: Vec<(&str, &PathBuf)> = Vec::new();
    for f in files {
        named.push((stub_name(f)?, f));
    }
    named.sort();
    if let Some(w) = named.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(refused(w[1].1, "a second file of that name"));
    }
    let mut out = Hashers(banks.iter().map(|b| b.hasher()).collect());
    stub_header(&mut out, 1, 0o40555, 0, ".extra");
    stub_header(&mut out, 2, 0o40555, 0, STUB_DIR);
    for (ino, (name, path)) in (3..).zip(named) {
        let io_err = |source| MeasureError::Io {
            path: path.clone(),
            source,
        };
        // Looked at before it is opened: a FIFO would block the open.
        let md = std::fs::metadata(path).map_err(io_err)?;
        let size = u32::try_from(md.len())
            .ok()
            .filter(|_| md.is_file())
            .ok_or_else(|| refused(path, "not a regular file under 4 GiB"))?;
        let mut file = File::open(path).map_err(io_err)?;
        let name = format!("{STUB_DIR}/{name}");
        stub_header(&mut out, ino, 0o100444, size, &name);
        let copied = io::copy(&mut (&mut file).take(size.into()), &mut out).map_err(io_err)?;
        if copied != u64::from(size) {
            return Err(refused(path, "shrank while it was read"));
        }
        out.update(&[0; 3][..(size.next_multiple_of(4) - size) as usize]);
    }
    out.update(STUB_TRAILER);
    Ok(Some(out.0.into_iter().map(Hasher::finish).collect()))
}

/// PCR 13 in each bank after systemd-stub's event for `stub_files` and boot mode's events for
/// `extensions`, in that order (give the extensions in the order boot mode merges them: the
/// initrd's sysexts, its confexts, then the root's).
pub fn predict(
    stub_files: &[PathBuf],
    extensions: &[(Class, PathBuf)],
    banks: &[Bank],
) -> Result<Vec<(Bank, Vec<u8>)>, MeasureError> {
    let mut pcrs: Vec<Vec<u8>> = banks.iter().map(|b| vec![0; b.size()]).collect();
    if let Some(digests) = stub_event(stub_files, banks)? {
        for ((pcr, bank), digest) in pcrs.iter_mut().zip(banks).zip(digests) {
            *pcr = bank.extend(pcr, &digest);
        }
    }
    for (class, path) in extensions {
        let event = extension_event(*class, path)?;
        for (pcr, bank) in pcrs.iter_mut().zip(banks) {
            *pcr = bank.extend(pcr, &bank.digest(event.as_bytes()));
        }
    }
    Ok(banks.iter().copied().zip(pcrs).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::signature::SignatureJson;
    use crate::format::uuid::Uuid;
    use crate::format::verity::Params;
    use crate::image::dissect::{FsType, Region};
    use sha2::{Digest, Sha256};

    /// An image with verity (root hash ab…) and, if `fingerprint`, a signature naming it.
    fn image(fingerprint: Option<Option<&str>>) -> Dissected {
        Dissected {
            path: PathBuf::from("x.raw"),
            table: None,
            designator: None,
            arch: None,
            data: Region { offset: 0, size: 0 },
            fs: FsType::Erofs,
            fs_size: None,
            hash: None,
            verity: Some(Params::sha256(1, [0; 32], Uuid([0; 16]))),
            signature: fingerprint.map(|fp| SignatureJson {
                root_hash: "ab".repeat(32),
                certificate_fingerprint: fp.map(str::to_owned),
                signature: Vec::new(),
            }),
            root_hash: Some(vec![0xab; 32]),
            uuid_root_hash: None,
            signature_deferred: false,
        }
    }

    #[test]
    fn the_event_names_what_was_checked() {
        let (rh, fp) = ("ab".repeat(32), "cd".repeat(32));
        let signed = image(Some(Some(&fp.to_uppercase())));
        assert_eq!(Protection::offered(&signed), Protection::Signed);
        let event = |d, c| event(Class::Sysext, "a:b", d, c);
        assert_eq!(
            event(Some(&signed), Protection::Signed),
            format!("sysext:a:b:{rh}:{fp}")
        );
        // A policy that took verity only: the signature was not checked, so not measured.
        assert_eq!(
            event(Some(&signed), Protection::Verity),
            format!("sysext:a:b:{rh}:-")
        );
        assert_eq!(
            event(Some(&signed), Protection::Unprotected),
            "sysext:a:b:-:-"
        );
        assert_eq!(event(None, Protection::Unprotected), "sysext:a:b:-:-");
        // A signature without a certificateFingerprint (a .roothash.p7s sidecar).
        let sidecar = image(Some(None));
        assert_eq!(
            event(Some(&sidecar), Protection::Signed),
            format!("sysext:a:b:{rh}:-")
        );
        let verity = image(None);
        assert_eq!(Protection::offered(&verity), Protection::Verity);
        let plain = Dissected {
            verity: None,
            ..image(None)
        };
        assert_eq!(Protection::offered(&plain), Protection::Unprotected);
    }

    /// One newc entry as systemd-stub's pack_cpio writes it, written out independently.
    fn newc(ino: u32, mode: u32, name: &str, data: &[u8]) -> Vec<u8> {
        let words = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0];
        let mut out = String::from("070701");
        for w in words.iter().chain(&[name.len() as u32 + 1, 0]) {
            out += &format!("{w:08x}");
        }
        let mut out = out.into_bytes();
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn sha256(parts: &[&[u8]]) -> Vec<u8> {
        let mut h = Sha256::new();
        parts.iter().for_each(|p| h.update(p));
        h.finalize().to_vec()
    }

    #[test]
    fn stub_event_is_the_digest_of_the_stubs_cpio() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("b.raw"), dir.path().join("A.RAW"));
        std::fs::write(&lower, b"xyz").unwrap();
        std::fs::write(&upper, b"hello").unwrap();
        let mut cpio = newc(1, 0o40555, ".extra", b"");
        cpio.extend(newc(2, 0o40555, ".extra/sysext", b""));
        // Sorted by name, uppercase first.
        cpio.extend(newc(3, 0o100444, ".extra/sysext/A.RAW", b"hello"));
        cpio.extend(newc(4, 0o100444, ".extra/sysext/b.raw", b"xyz"));
        let mut trailer = newc(0, 0, "TRAILER!!!", b"");
        trailer[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"0000000B");
        assert_eq!(&trailer, STUB_TRAILER);
        cpio.extend(trailer);
        let files = [lower.clone(), upper.clone()];
        let got = stub_event(&files, &[Bank::Sha256, Bank::Sha1]).unwrap();
        let sha1 = openssl::sha::sha1(&cpio).to_vec();
        assert_eq!(got, Some(vec![sha256(&[&cpio]), sha1]));
        assert_eq!(stub_event(&[], &[Bank::Sha256]).unwrap(), None);
    }

    #[test]
    fn the_stub_takes_only_what_it_would_find() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for f in ["x.img", ".hidden.raw", "x.raw", "sub/x.raw", "é.raw"] {
            std::fs::write(d.join(f), b"").unwrap();
        }
        let refused = |files: &[&str]| {
            let files: Vec<PathBuf> = files.iter().map(|f| d.join(f)).collect();
            match stub_event(&files, &[Bank::Sha256]) {
                Err(MeasureError::Refused { path, reason }) => (path, reason),
                other => panic!("{files:?}: {other:?}"),
            }
        };
        for f in ["x.img", ".hidden.raw", "é.raw"] {
            assert!(refused(&[f]).1.contains("only files named *.raw"), "{f}");
        }
        let (path, reason) = refused(&["x.raw", "sub/x.raw"]);
        assert_eq!(path, d.join("x.raw"));
        assert_eq!(reason, "a second file of that name");
    }

    #[test]
    fn predict_extends_stub_then_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (raw, tools) = (d.join("s.raw"), d.join("tools"));
        std::fs::write(&raw, b"image bytes").unwrap();
        std::fs::create_dir(&tools).unwrap();
        let stub = stub_event(std::slice::from_ref(&raw), &[Bank::Sha256])
            .unwrap()
            .unwrap()
            .remove(0);
        let after_stub = sha256(&[&[0; 32], &stub]);
        let event = sha256(&[b"sysext:tools:-:-"]);
        let conf = sha256(&[b"confext:tools:-:-"]);
        let expected = sha256(&[&sha256(&[&after_stub, &event]), &conf]);
        let both = [(Class::Sysext, tools.clone()), (Class::Confext, tools)];
        let got = predict(&[raw], &both, &[Bank::Sha256]).unwrap();
        assert_eq!(got, vec![(Bank::Sha256, expected)]);
        let none = predict(&[], &[], &[Bank::Sha1]).unwrap();
        assert_eq!(none, vec![(Bank::Sha1, vec![0; 20])]);
        let img = [(Class::Sysext, d.join("s.img"))];
        let err = predict(&[], &img, &[Bank::Sha1]).unwrap_err();
        assert!(err.to_string().contains("s.img: No such file"), "{err}");
        std::fs::write(d.join("s.img"), b"").unwrap();
        let err = predict(&[], &img, &[Bank::Sha1]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("neither a *.raw image nor a directory"),
            "{err}"
        );
    }
}
