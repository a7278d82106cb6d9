//! The systemd-sysext verbs — merge, unmerge, refresh, status, list — on `--root`, with the
//! kernel command line's settings (`--kernel-cmdline`) and text (table) or JSON output.

use std::path::PathBuf;

use lexopt::prelude::*;
use lexopt::{Parser, ValueExt};
use serde_json::Value;

use super::{choose, failed, logging, path, string, usage, CliError};
use crate::boot::cmdline::Cmdline;
use crate::format::release::Scope;
use crate::format::unit;
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

/// The verbs, in systemd-sysext's order; the first is the default.
pub const VERBS: [&str; 5] = ["status", "merge", "unmerge", "refresh", "list"];

/// The long options of the verbs (so that the top level knows an option before the verb).
pub const OPTIONS: [&str; 13] = [
    "root",
    "json",
    "image-policy",
    "noexec",
    "force",
    "no-reload",
    "always-refresh",
    "no-legend",
    "no-pager",
    "userspace-verity",
    "kernel-cmdline",
    "help",
    "version",
];

/// A verb's command line, in systemd's grammar: options before or after the verb,
/// `--opt=value` or `--opt value`, booleans in every systemd spelling.
struct Args {
    verb: String,
    root: PathBuf,
    json: Json,
    policy: Option<Policy>,
    userspace: bool,
    cmdline: Option<Cmdline>,
    force: bool,
    noexec: bool,
    legend: bool,
}

impl Args {
    /// None for `--help` and `--version`, which are answered here.
    fn parse(p: &mut Parser) -> Result<Option<Args>, CliError> {
        let mut a = Args {
            verb: String::new(),
            root: PathBuf::from("/"),
            json: Json::Off,
            policy: None,
            userspace: false,
            cmdline: None,
            force: false,
            noexec: false,
            legend: true,
        };
        while let Some(arg) = p.next()? {
            match arg {
                Long("root") => a.root = path(p)?,
                Long("json") => {
                    let modes = [
                        ("off", Json::Off),
                        ("short", Json::Short),
                        ("pretty", Json::Pretty),
                    ];
                    a.json = choose(&string(p)?, "--json", &modes)?;
                }
                Long("image-policy") => {
                    let text = string(p)?;
                    let policy = text.parse::<Policy>();
                    a.policy = Some(policy.map_err(|e| usage(format!("--image-policy: {e}")))?);
                }
                Long("userspace-verity") => a.userspace = true,
                Long("force") => a.force = true,
                Long("noexec") => a.noexec = boolean(p, "--noexec")?,
                // Reloading a service manager is not done here; refresh always refreshes.
                Long("always-refresh") => _ = boolean(p, "--always-refresh")?,
                Long("no-reload") | Long("no-pager") => {}
                Long("no-legend") => a.legend = false,
                Long("kernel-cmdline") => {
                    logging::to_kmsg();
                    let line = std::fs::read_to_string("/proc/cmdline").map_err(failed)?;
                    a.cmdline = Some(Cmdline::parse(&line).0);
                }
                Short('v') | Long("verbose") => {}
                Short('h') | Long("help") => {
                    print!("{}", super::USAGE);
                    return Ok(None);
                }
                Long("version") => {
                    println!("initrd-sysext {}", env!("CARGO_PKG_VERSION"));
                    return Ok(None);
                }
                Value(v) if a.verb.is_empty() => {
                    a.verb = v.string()?;
                    if !VERBS.contains(&a.verb.as_str()) {
                        return Err(usage(format!("unknown verb {:?}", a.verb)));
                    }
                }
                other => return Err(other.unexpected().into()),
            }
        }
        if a.verb.is_empty() {
            a.verb = VERBS[0].to_owned();
        }
        Ok(Some(a))
    }
}

/// A boolean option: `--opt=BOOL` or `--opt BOOL` (a value is required, as in systemd).
fn boolean(p: &mut Parser, opt: &str) -> Result<bool, CliError> {
    let w = string(p)?;
    unit::boolean(&w).ok_or_else(|| usage(format!("{opt}={w}: expected a boolean")))
}

/// merge, unmerge, refresh, status, list — as systemd-sysext, on `--root` (default /).
pub fn run(p: &mut Parser) -> Result<(), CliError> {
    let Some(Args {
        verb,
        root,
        json,
        policy,
        userspace,
        cmdline,
        force,
        noexec,
        legend,
    }) = Args::parse(p)?
    else {
        return Ok(());
    };
    let verb = verb.as_str();
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
                table(&v, &["hierarchy", "extensions", "since"], legend)
            })
        }
        "list" => {
            let v = verbs::list(&root, ctx.scope == Scope::Initrd);
            print_value(&v, json, || {
                table(&v, &["name", "type", "path", "time"], legend)
            })
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

/// Renders a JSON array of objects as aligned columns with the given keys, under a header line
/// unless `legend` is off.
fn table(v: &Value, keys: &[&str], legend: bool) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            keys.iter()
                .map(|k| match &o[*k] {
                    Value::String(s) => s.clone(),
                    Value::Array(a) if a.is_empty() => "-".into(),
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
    let mut out = match legend {
        true => line(keys.iter().map(|k| k.to_uppercase()).collect()),
        false => String::new(),
    };
    for r in rows {
        out += &line(r);
    }
    out
}
