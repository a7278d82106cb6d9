//! `inspect`: what an extension image holds — partitions, filesystem, verity parameters,
//! root hash, signature and extension-release file (read without mounting) — what an
//! initrd's cpio members hold, or a UKI's sections, as JSON (the CLI renders the text form).

use std::fs::File;
use std::path::Path;

use openssl::x509::X509;
use serde_json::{json, Value};

use crate::format::gpt::{self, Designator};
use crate::format::lookup::Filesystem;
use crate::format::release::{self, Class, Release};
use crate::format::{erofs, hex, kmod, pe, signature, squashfs};
use crate::image::dissect::{self, DissectError, Dissected, FsType, HashSource};
use crate::image::fs;

/// The image's description as JSON (the text form is rendered from it).
pub fn describe(path: &Path, certs: &[X509]) -> Result<Value, DissectError> {
    let d = dissect::dissect(path, None)?;
    let contents = read_contents(path, &d);
    let (extension_release, scope) = release_info(contents.release);
    Ok(json!({
        "path": path.display().to_string(),
        "kind": if d.table.is_some() { "ddi" } else { "naked" },
        "designator": d.designator.map(|x| x.name()),
        "architecture": d.arch.map(|a| a.name()),
        "filesystem": d.fs.name(),
        "data": { "offset": d.data.offset, "size": d.data.size },
        "partitions": partitions(&d),
        "verity": verity(&d),
        "root_hash": d.root_hash_hex(),
        "signature": signature_info(&d, certs),
        "extension_release": extension_release,
        "scope": scope,
        "modules": contents.modules,
    }))
}

fn partitions(d: &Dissected) -> Value {
    let Some(t) = &d.table else {
        return Value::Null;
    };
    t.partitions
        .iter()
        .map(|p| {
            let role = gpt::classify(p.type_uuid)
                .map(|(d, r, a)| gpt::default_label(d, r, a))
                .unwrap_or_else(|| "other".into());
            let mut flags = Vec::new();
            for (bit, name) in [
                (gpt::FLAG_READ_ONLY, "read-only"),
                (gpt::FLAG_GROW_FS, "grow-fs"),
                (gpt::FLAG_NO_AUTO, "no-auto"),
            ] {
                if p.flags & bit != 0 {
                    flags.push(name);
                }
            }
            json!({
                "number": p.number, "type": role, "type_uuid": p.type_uuid.to_string(),
                "uuid": p.uuid.to_string(), "label": p.label, "offset": p.offset, "size": p.size,
                "flags": flags,
            })
        })
        .collect()
}

fn verity(d: &Dissected) -> Value {
    let Some(p) = &d.verity else {
        return Value::Null;
    };
    let source = match &d.hash {
        Some(HashSource::Sidecar(path)) => path.display().to_string(),
        _ => "partition".into(),
    };
    json!({
        "hash_type": p.hash_type, "algorithm": p.algorithm, "data_block_size": p.data_block_size,
        "hash_block_size": p.hash_block_size, "data_blocks": p.data_blocks, "salt": p.salt_hex(),
        "uuid": p.uuid.to_string(), "source": source,
    })
}

fn signature_info(d: &Dissected, certs: &[X509]) -> Value {
    if d.signature_deferred {
        return json!({ "status": "deferred" });
    }
    let Some(sig) = &d.signature else {
        return json!({ "status": "absent" });
    };
    let signer = match signature::verify(&sig.signature, &sig.root_hash, certs) {
        Ok(cert) => json!({
            "subject": signature::subject(&cert),
            "fingerprint": signature::fingerprint(&cert).ok(),
        }),
        Err(_) => Value::Null,
    };
    json!({
        "status": if signer.is_null() { "present" } else { "verified" },
        "certificate_fingerprint": sig.certificate_fingerprint,
        "signer": signer,
        "pkcs7_bytes": sig.signature.len(),
    })
}

/// The extension-release file as JSON (its path in the image and its fields, or why it could
/// not be read) and the `SYSEXT_SCOPE` (a confext's `CONFEXT_SCOPE`) it declares.
fn release_info(release: Result<(String, Release), String>) -> (Value, Value) {
    match release {
        Ok((file, rel)) => {
            let fields: serde_json::Map<String, Value> = rel
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            let scope = [Class::Sysext, Class::Confext]
                .iter()
                .find_map(|c| rel.get(c.scope_key()))
                .unwrap_or("system portable");
            (json!({ "file": file, "fields": fields }), json!(scope))
        }
        Err(error) => (json!({ "error": error }), Value::Null),
    }
}

/// What inspect reads from the data filesystem.
struct Contents {
    /// The extension-release file systemd would match the image by, parsed.
    release: Result<(String, Release), String>,
    /// The kernel modules it carries, per kernel version.
    modules: Value,
}

/// Reads the data filesystem's [`Contents`].
fn read_contents(path: &Path, d: &Dissected) -> Contents {
    let failed = |e: String| Contents {
        release: Err(e),
        modules: Value::Null,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return failed(format!("{}: {e}", path.display())),
    };
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = release::image_name(file_name);
    let usr = match d.designator {
        Some(Designator::Usr) => "",
        _ => "usr/",
    };
    let at = d.data.offset;
    match d.fs {
        FsType::Erofs => match erofs::Reader::open(&file, at) {
            Ok(fs) => contents(&fs, usr, name),
            Err(e) => failed(e.to_string()),
        },
        FsType::Squashfs => match squashfs::Reader::open(&file, at) {
            Ok(fs) => contents(&fs, usr, name),
            Err(e) => failed(e.to_string()),
        },
        other => failed(format!("cannot read {} filesystems", other.name())),
    }
}

/// The [`Contents`] of `fs`, whose `/usr` is at `usr` (`usr/` or the root).
/// A root partition without `usr/lib/extension-release.d` may be a confext
/// (`etc/extension-release.d`).
fn contents<R: Filesystem>(fs: &R, usr: &str, name: &str) -> Contents {
    let sysext = find_release(fs, &format!("{usr}lib/extension-release.d"), name);
    let confext = || find_release(fs, Class::Confext.release_dir(), name);
    Contents {
        release: match sysext {
            Err(e) if !usr.is_empty() => confext().map_err(|_| e),
            r => r,
        },
        modules: modules(fs, &format!("{usr}lib/modules")),
    }
}

/// Most directory levels and module files [`modules`] looks through.
const MODULES_DEPTH: usize = 12;
const MAX_MODULES: usize = 100_000;

/// `[{"kver": K, "modules": [names, sorted]}]` for every `<dir>/<kver>/**/*.ko*`.
fn modules<R: Filesystem>(fs: &R, dir: &str) -> Value {
    let kvers = fs.list(dir).unwrap_or_default();
    let found = kvers
        .into_iter()
        .filter(|(_, is_dir)| *is_dir)
        .map(|(kver, _)| {
            let mut names = Vec::new();
            module_files(fs, &format!("{dir}/{kver}"), MODULES_DEPTH, &mut names);
            names.sort();
            json!({ "kver": kver, "modules": names })
        });
    Value::Array(found.collect())
}

/// Appends the module names of the `.ko*` files under `dir` to `names`.
fn module_files<R: Filesystem>(fs: &R, dir: &str, depth: usize, names: &mut Vec<String>) {
    let Ok(entries) = fs.list(dir) else { return };
    for (name, is_dir) in entries {
        if names.len() >= MAX_MODULES {
            return;
        }
        if is_dir && depth > 0 {
            module_files(fs, &format!("{dir}/{name}"), depth - 1, names);
        } else if !is_dir && name.contains(".ko") {
            names.push(kmod::normalize(&name));
        }
    }
}

/// The chosen extension-release file of `dir` in `fs`, parsed.
fn find_release<R: Filesystem>(fs: &R, dir: &str, name: &str) -> Result<(String, Release), String> {
    let (file, text) = fs::release_file(fs, dir, name).map_err(|e| e.to_string())?;
    let rel = Release::parse(&text).map_err(|e| format!("{file}: {e}"))?;
    Ok((file, rel))
}

/// Renders the JSON description as aligned text.
/// True if the file starts like a cpio archive, plain or zstd/gzip-compressed.
pub fn is_cpio(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 6];
    let n = std::fs::File::open(path)?.read(&mut head)?;
    let head = &head[..n];
    Ok(head.starts_with(b"07070")
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(&[0x1f, 0x8b]))
}

/// True if the file starts like a PE/COFF image (a UKI, a stub, an EFI-stub kernel).
pub fn is_pe(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 2];
    let n = std::fs::File::open(path)?.read(&mut head)?;
    Ok(n == 2 && &head == b"MZ")
}

/// Sections whose text `inspect` shows.
const TEXT_SECTIONS: [&str; 4] = [".osrel", ".cmdline", ".uname", ".sbat"];

/// A PE image's sections: name, virtual address and size, SHA-256 of the data (VirtualSize
/// bytes, as systemd-stub measures them), and the text of `.osrel`, `.cmdline`, `.uname`.
pub fn pe_sections(path: &Path) -> Result<Value, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let pe = pe::Pe::parse(&b).map_err(|e| format!("{}: {e}", path.display()))?;
    let sections: Vec<Value> = pe
        .sections
        .iter()
        .map(|s| {
            let data = pe.data(&b, s);
            let text = TEXT_SECTIONS.contains(&s.name.as_str());
            json!({
                "name": s.name, "virtual_address": s.virtual_address, "size": s.virtual_size,
                "offset": s.raw_offset, "sha256": hex::encode(&openssl::sha::sha256(data)),
                "text": text.then(|| String::from_utf8_lossy(data).trim_end_matches('\0').to_owned()),
            })
        })
        .collect();
    let uki = [".linux", ".osrel"].iter().all(|n| pe.find(n).is_some());
    Ok(json!({
        "path": path.display().to_string(),
        "kind": if uki { "uki" } else { "pe" },
        "size_of_image": pe.size_of_image,
        "section_alignment": pe.section_alignment,
        "file_alignment": pe.file_alignment,
        "sections": sections,
    }))
}

/// Most entries `inspect` lists (each costs its JSON object; real initrds hold thousands).
pub const MAX_CPIO_ENTRIES: usize = 200_000;

/// Every entry of every concatenated member, as JSON objects. The archive is streamed: file
/// contents are skipped, never held (a small initrd can decompress to gigabytes).
pub fn cpio_entries(path: &Path) -> Result<Value, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut out, mut too_many) = (Vec::new(), false);
    let limit = cpio_builder::DEFAULT_DECOMPRESSED_LIMIT;
    cpio_builder::list(file, limit, |e| {
        too_many = out.len() == MAX_CPIO_ENTRIES;
        if too_many {
            return false;
        }
        let h = &e.raw;
        let symlink = h.mode & cpio_builder::mode::S_IFMT == cpio_builder::mode::S_IFLNK;
        out.push(json!({
            "member": e.member, "name": String::from_utf8_lossy(&e.name), "mode": format!("{:o}", h.mode),
            "uid": h.uid, "gid": h.gid, "size": h.filesize, "nlink": h.nlink,
            "rdev": format!("{}:{}", h.rdev_major, h.rdev_minor),
            "target": symlink.then(|| String::from_utf8_lossy(&e.data).into_owned()),
        }));
        true
    })
    .map_err(|e| format!("{}: {e}", path.display()))?;
    if too_many {
        return Err(format!(
            "{}: more than {MAX_CPIO_ENTRIES} entries, more than inspect lists",
            path.display()
        ));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{erofs, squashfs};
    use crate::tree::{Content, Kind, Meta, Tree};

    const DIR: &str = "usr/lib/extension-release.d";

    fn release_tree() -> Tree {
        let dir_meta = Meta::generated(0o755, 0);
        let mut t = Tree::new(dir_meta.clone());
        let file = |text: &str| Kind::File {
            content: Content::Bytes(text.as_bytes().to_vec()),
            size: text.len() as u64,
        };
        let loose = Meta {
            xattrs: vec![(fs::STRICT_XATTR.as_bytes().to_vec(), b"0".to_vec())],
            ..Meta::generated(0o644, 0)
        };
        let strict = Meta::generated(0o644, 0);
        for (name, meta, text) in [
            ("extension-release.loose", loose, "ID=_any\n"),
            (
                "extension-release.tool",
                strict,
                "ID=debian\nSYSEXT_SCOPE=initrd\n",
            ),
        ] {
            let path = format!("{DIR}/{name}");
            t.insert(&path, meta, file(text), &dir_meta).unwrap();
        }
        t
    }

    fn check<R: Filesystem>(fs: &R) {
        let (file, rel) = find_release(fs, DIR, "tool_1.2").unwrap();
        assert_eq!(file, format!("{DIR}/extension-release.tool"));
        assert_eq!(rel.get("SYSEXT_SCOPE"), Some("initrd"));
        let (file, _) = find_release(fs, DIR, "other").unwrap();
        assert_eq!(file, format!("{DIR}/extension-release.loose"));
        let missing = find_release(fs, "lib/extension-release.d", "tool").unwrap_err();
        assert!(missing.contains("no such file"), "{missing}");
    }

    #[test]
    fn release_is_chosen_from_erofs_and_squashfs() {
        let tree = release_tree();
        let image = tempfile::tempfile().unwrap();
        let opts = erofs::Options {
            uuid: [0; 16],
            build_time: 0,
        };
        erofs::write(&tree, &image, 4096, &opts).unwrap();
        check(&erofs::Reader::open(&image, 4096).unwrap());
        let image = tempfile::tempfile().unwrap();
        squashfs::write(&tree, &image, 0, &squashfs::Options::default()).unwrap();
        check(&squashfs::Reader::open(&image, 0).unwrap());
    }
}
