//! Image verbs: `inspect` (an image, an initrd or a UKI, as text or JSON), `verify`, and
//! `pcr predict` (PCR 13 from the images boot mode will merge).

use std::path::PathBuf;

use lexopt::prelude::*;
use lexopt::Parser;
use openssl::x509::X509;
use serde_json::Value;

use super::{failed, path, required, string, usage, CliError};
use crate::format::hex;
use crate::format::release::Class;
use crate::format::tpm2::Bank;
use crate::image::{certs, inspect, measure, verify};

/// `inspect IMAGE|INITRD|UKI [--json] [--cert C]...`.
pub fn inspect(p: &mut Parser) -> Result<(), CliError> {
    let (mut image, mut json, mut cert_files) = (None, false, Vec::new());
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => json = true,
            Long("cert") => cert_files.push(path(p)?),
            Value(v) if image.is_none() => image = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let image = required(image, "IMAGE")?;
    let (v, text): (Value, fn(&Value) -> String) = if inspect::is_cpio(&image).map_err(failed)? {
        (inspect::cpio_entries(&image).map_err(failed)?, render_cpio)
    } else if inspect::is_pe(&image).map_err(failed)? {
        (inspect::pe_sections(&image).map_err(failed)?, render_pe)
    } else {
        let certs = certs(&cert_files, &[])?;
        (
            inspect::describe(&image, &certs).map_err(failed)?,
            render_text,
        )
    };
    match json {
        true => println!("{}", serde_json::to_string_pretty(&v).map_err(failed)?),
        false => print!("{}", text(&v)),
    }
    Ok(())
}

/// `verify IMAGE [--cert C]... [--verity-dir DIR]...`.
pub fn verify(p: &mut Parser) -> Result<(), CliError> {
    let (mut image, mut cert_files, mut dirs) = (None, Vec::new(), Vec::new());
    while let Some(arg) = p.next()? {
        match arg {
            Long("cert") => cert_files.push(path(p)?),
            Long("verity-dir") => dirs.push(path(p)?),
            Value(v) if image.is_none() => image = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let image = required(image, "IMAGE")?;
    let certs = certs(&cert_files, &dirs)?;
    if certs.is_empty() {
        return Err(failed(
            "no certificates to verify against (--cert or --verity-dir)",
        ));
    }
    let v = verify::verify(&image, &certs).map_err(failed)?;
    println!(
        "{}: OK: {} data blocks match root hash {}, signed by {} ({})",
        image.display(),
        v.data_blocks,
        v.root_hash,
        v.signer_subject,
        v.signer_fingerprint
    );
    Ok(())
}

/// `pcr predict [--bank B]... [--stub-extension FILE]... [EXTENSION | --confext C]...`: one
/// `13:<bank>=<hex>` line per bank, as systemd-measure prints them (default: its four banks).
pub fn pcr(p: &mut Parser) -> Result<(), CliError> {
    match p.next()? {
        Some(Value(v)) if v == "predict" => {}
        Some(other) => return Err(other.unexpected().into()),
        None => return Err(usage("pcr what? predict")),
    }
    let (mut banks, mut stub, mut extensions) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(arg) = p.next()? {
        match arg {
            Long("bank") => {
                let name = string(p)?;
                let bank = Bank::from_name(&name).ok_or_else(|| {
                    usage(format!(
                        "--bank {name:?}: expected sha1, sha256, sha384 or sha512"
                    ))
                })?;
                if !banks.contains(&bank) {
                    banks.push(bank);
                }
            }
            Long("stub-extension") => stub.push(path(p)?),
            Long("confext") => extensions.push((Class::Confext, path(p)?)),
            Value(v) => extensions.push((Class::Sysext, PathBuf::from(v))),
            other => return Err(other.unexpected().into()),
        }
    }
    if banks.is_empty() {
        banks = Bank::ALL.to_vec();
    }
    let values = measure::predict(&stub, &extensions, &banks).map_err(failed)?;
    for (bank, value) in values {
        println!("{}:{}={}", measure::PCR, bank.name(), hex::encode(&value));
    }
    Ok(())
}

/// `--cert` files and `--verity-dir` directories; the standard verity.d dirs when neither is given.
fn certs(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Vec<X509>, CliError> {
    let mut certs = Vec::new();
    for f in files {
        certs.extend(certs::load_certs(f).map_err(failed)?);
    }
    let default_dirs: Vec<PathBuf> = certs::VERITY_DIRS.iter().map(PathBuf::from).collect();
    let dirs = if files.is_empty() && dirs.is_empty() {
        &default_dirs
    } else {
        dirs
    };
    certs.extend(certs::certs_in_dirs(dirs).map_err(failed)?);
    Ok(certs)
}

/// An image's description as `key: value` lines.
fn render_text(v: &Value) -> String {
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
    out += &format!("\nscope:        {}\n", s("scope"));
    out += &render_modules(&v["modules"]);
    out + &render_release(&v["extension_release"])
}

/// `modules: <kver>: a, b, …` for each kernel version the image carries modules for.
fn render_modules(m: &Value) -> String {
    let kvers = m.as_array().into_iter().flatten();
    let lines = kvers.map(|k| {
        let names = k["modules"].as_array().into_iter().flatten();
        let names: Vec<&str> = names.filter_map(Value::as_str).collect();
        let kver = k["kver"].as_str().unwrap_or("-");
        format!("modules:      {kver}: {}\n", names.join(", "))
    });
    lines.collect()
}

/// The extension-release file's path, then one `KEY=VALUE` line per field; or the error.
fn render_release(r: &Value) -> String {
    if let Some(error) = r["error"].as_str() {
        return format!("release:      error: {error}\n");
    }
    let mut out = format!("release:      {}\n", r["file"].as_str().unwrap_or("-"));
    for (k, v) in r["fields"].as_object().into_iter().flatten() {
        out += &format!("  {k}={}\n", v.as_str().unwrap_or(""));
    }
    out
}

/// `ls -l`-like lines for the entries.
/// A UKI's sections, one line each, then the text sections indented.
fn render_pe(v: &Value) -> String {
    let mut out = format!(
        "{}: {}\n",
        v["path"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or("")
    );
    let sections = v["sections"].as_array().into_iter().flatten();
    for s in sections.clone() {
        out += &format!(
            "  {:<9} vaddr {:#010x} size {:>10} sha256 {}\n",
            s["name"].as_str().unwrap_or(""),
            s["virtual_address"].as_u64().unwrap_or(0),
            s["size"],
            s["sha256"].as_str().unwrap_or("")
        );
    }
    for s in sections {
        if let Some(text) = s["text"].as_str() {
            out += &format!("{}:\n", s["name"].as_str().unwrap_or(""));
            for line in text.lines() {
                out += &format!("    {line}\n");
            }
        }
    }
    out
}

fn render_cpio(entries: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_shows_scope_and_release_fields() {
        let mut v = json!({
            "signature": { "status": "absent" },
            "scope": "initrd",
            "extension_release": { "file": "x/extension-release.a", "fields": { "ID": "a" } },
        });
        let text = render_text(&v);
        assert!(text.contains("\nscope:        initrd\n"), "{text}");
        assert!(
            text.ends_with("release:      x/extension-release.a\n  ID=a\n"),
            "{text}"
        );
        v["extension_release"] = json!({ "error": "boom" });
        assert!(render_text(&v).ends_with("release:      error: boom\n"));
    }
}
