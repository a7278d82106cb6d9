//! `inspect`: what an extension image holds — partitions, filesystem, verity parameters,
//! root hash and signature — or what an initrd's cpio members hold, as text or JSON.

use std::path::Path;

use openssl::x509::X509;
use serde_json::{json, Value};

use crate::format::gpt;
use crate::format::signature;
use crate::runtime::dissect::{self, DissectError, Dissected, HashSource};

/// The image's description as JSON (the text form is rendered from it).
pub fn describe(path: &Path, certs: &[X509]) -> Result<Value, DissectError> {
    let d = dissect::dissect(path, None)?;
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

/// Renders the JSON description as aligned text.
pub fn render_text(v: &Value) -> String {
    let mut out = String::new();
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    for k in [
        "path",
        "kind",
        "designator",
        "architecture",
        "filesystem",
        "root_hash",
    ] {
        out += &format!("{:<14}{}\n", format!("{k}:"), s(k));
    }
    if let Value::Array(parts) = &v["partitions"] {
        out += "partitions:\n";
        for p in parts {
            out += &format!(
                "  {:>2} {:<24} {} offset {} size {} {}\n",
                p["number"],
                p["type"].as_str().unwrap_or(""),
                p["uuid"].as_str().unwrap_or(""),
                p["offset"],
                p["size"],
                p["flags"]
            );
        }
    }
    if let Value::Object(ver) = &v["verity"] {
        out += &format!(
            "verity:       {} {} blocks of {} (hash blocks {}), salt {}\n",
            ver["algorithm"].as_str().unwrap_or(""),
            ver["data_blocks"],
            ver["data_block_size"],
            ver["hash_block_size"],
            ver["salt"].as_str().unwrap_or("")
        );
    }
    let sig = &v["signature"];
    out += &format!("signature:    {}", sig["status"].as_str().unwrap_or("-"));
    if let Some(fp) = sig["certificate_fingerprint"].as_str() {
        out += &format!(", certificate {fp}");
    }
    if let Some(subject) = sig["signer"]["subject"].as_str() {
        out += &format!(", signer {subject}");
    }
    out + "\n"
}

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

/// Every entry of every concatenated member, as JSON objects.
pub fn cpio_entries(path: &Path) -> Result<Value, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader =
        cpio_builder::Reader::from_read(file).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for entry in reader {
        let e = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        let h = &e.raw;
        let symlink = h.mode & cpio_builder::mode::S_IFMT == cpio_builder::mode::S_IFLNK;
        out.push(json!({
            "member": e.member, "name": String::from_utf8_lossy(&e.name), "mode": format!("{:o}", h.mode),
            "uid": h.uid, "gid": h.gid, "size": h.filesize, "nlink": h.nlink,
            "rdev": format!("{}:{}", h.rdev_major, h.rdev_minor),
            "target": symlink.then(|| String::from_utf8_lossy(&e.data).into_owned()),
        }));
    }
    Ok(Value::Array(out))
}

/// `ls -l`-like lines for the entries.
pub fn render_cpio(entries: &Value) -> String {
    let mut out = String::new();
    for e in entries.as_array().into_iter().flatten() {
        let target = e["target"]
            .as_str()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        out += &format!(
            "{} {:>7} {}/{} {:>10} {}{}\n",
            e["member"],
            e["mode"].as_str().unwrap_or(""),
            e["uid"],
            e["gid"],
            e["size"],
            e["name"].as_str().unwrap_or(""),
            target
        );
    }
    out
}
