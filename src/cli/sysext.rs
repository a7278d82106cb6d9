//! The systemd-sysext verbs — merge, unmerge, refresh, status, list — on `--root`, with the
//! kernel command line's settings (`--kernel-cmdline`) and text (table) or JSON output.

use std::path::PathBuf;

use lexopt::prelude::*;
use lexopt::Parser;
use serde_json::Value;

use super::{choose, failed, logging, path, string, usage, CliError};
use crate::boot::cmdline::Cmdline;
use crate::format::release::Scope;
use crate::runtime::activate::Context;
use crate::runtime::policy::Policy;
use crate::runtime::{merge, verbs};

/// Output format of the systemd-sysext verbs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Json {
    Off,
    Short,
    Pretty,
}

fn print_value(v: &Value, json: Json, text: impl FnOnce() -> String) -> Result<(), CliError> {
    match json {
        Json::Off => print!("{}", text()),
        Json::Short => println!("{v}"),
        Json::Pretty => println!("{}", serde_json::to_string_pretty(v).map_err(failed)?),
    }
    Ok(())
}

/// merge, unmerge, refresh, status, list — as systemd-sysext, on `--root` (default /).
pub fn verb(verb: &str, p: &mut Parser) -> Result<(), CliError> {
    let (mut root, mut json, mut policy, mut userspace) =
        (PathBuf::from("/"), Json::Off, None, false);
    let mut cmdline = None;
    let (mut force, mut noexec) = (false, false);
    while let Some(arg) = p.next()? {
        match arg {
            Long("root") => root = path(p)?,
            Long("json") => {
                let modes = [
                    ("off", Json::Off),
                    ("short", Json::Short),
                    ("pretty", Json::Pretty),
                ];
                json = choose(&string(p)?, "--json", &modes)?;
            }
            Long("image-policy") => {
                let text = string(p)?;
                policy = Some(
                    text.parse::<Policy>()
                        .map_err(|e| usage(format!("--image-policy: {e}")))?,
                );
            }
            Long("userspace-verity") => userspace = true,
            Long("force") => force = true,
            Long("noexec") => noexec = true,
            Long("kernel-cmdline") => {
                logging::to_kmsg();
                let line = std::fs::read_to_string("/proc/cmdline").map_err(failed)?;
                cmdline = Some(Cmdline::parse(&line).0);
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let mut ctx = verbs::context(&root, policy, userspace);
    (ctx.force, ctx.noexec) = (force, noexec);
    if let Some(c) = &cmdline {
        apply_cmdline(&mut ctx, c)?;
        if !c.sysext && matches!(verb, "merge" | "refresh") {
            println!("rd.sysext=0: not merging");
            return Ok(());
        }
    }
    match verb {
        "status" => {
            let v = verbs::status(&root);
            print_value(&v, json, || {
                table(&v, &["hierarchy", "extensions", "since"])
            })
        }
        "list" => {
            let v = verbs::list(&root, ctx.scope == Scope::Initrd);
            print_value(&v, json, || table(&v, &["name", "type", "path", "time"]))
        }
        "unmerge" => {
            let done = merge::unmerge(&root).map_err(failed)?;
            let v = serde_json::json!({ "unmerged": done });
            print_value(&v, json, || {
                done.iter().map(|h| format!("Unmerged {h}.\n")).collect()
            })
        }
        _ => {
            let report = match verb {
                "refresh" => verbs::refresh(&ctx),
                _ => verbs::merge(&ctx),
            }
            .map_err(failed)?;
            if let Some(c) = &cmdline {
                report.check_required(&c.required, false).map_err(failed)?;
            }
            let v = verbs::report_json(&report);
            print_value(&v, json, || {
                let mut out: String = report
                    .hierarchies
                    .iter()
                    .map(|h| format!("Merged extensions into {h}.\n"))
                    .collect();
                for (name, why) in &report.refused {
                    out += &format!("Refused {name}: {why}\n");
                }
                out
            })
        }
    }
}

/// `--kernel-cmdline`: rd.sysext.image_policy (else, in the initrd, signed only) and
/// rd.sysext.userspace_verity, as boot mode reads them.
fn apply_cmdline(ctx: &mut Context, c: &Cmdline) -> Result<(), CliError> {
    if let Some(text) = &c.image_policy {
        let p = text
            .parse::<Policy>()
            .map_err(|e| failed(format!("rd.sysext.image_policy: {e}")))?;
        ctx.policy = Some(p);
    } else if ctx.policy.is_none() && ctx.scope == Scope::Initrd {
        ctx.policy = Some(Policy::boot_default());
    }
    ctx.userspace_verity |= c.userspace_verity;
    Ok(())
}

/// Renders a JSON array of objects as aligned columns with the given keys.
fn table(v: &Value, keys: &[&str]) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            keys.iter()
                .map(|k| match &o[*k] {
                    Value::String(s) => s.clone(),
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    Value::Null => "-".into(),
                    x => x.to_string(),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..keys.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([keys[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join(" ").trim_end().to_owned() + "\n"
    };
    let mut out = line(keys.iter().map(|k| k.to_uppercase()).collect());
    for r in rows {
        out += &line(r);
    }
    out
}
