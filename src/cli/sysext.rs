//! The systemd-sysext and systemd-confext verbs — merge, unmerge, refresh, status, list — on
//! `--root`, with the kernel command line's settings (`--kernel-cmdline`) and text (table) or
//! JSON output.

use std::path::PathBuf;

use lexopt::prelude::*;
use lexopt::{Parser, ValueExt};
use serde_json::Value;

use super::{choose, failed, logging, path, string, usage, CliError};
use crate::boot::cmdline::Cmdline;
use crate::format::release::{Class, Scope};
use crate::format::unit;
use crate::runtime::activate::Context;
use crate::runtime::mutable::Mutable;
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
pub const OPTIONS: [&str; 14] = [
    "root",
    "mutable",
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
    noexec: Option<bool>,
    mutable: Option<Mutable>,
    always_refresh: bool,
    no_reload: bool,
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
            noexec: None,
            mutable: None,
            always_refresh: false,
            no_reload: false,
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
                Long("noexec") => a.noexec = Some(boolean(p, "--noexec")?),
                Long("mutable") => {
                    let mode = string(p)?;
                    a.mutable = Some(Mutable::from_name(&mode).ok_or_else(|| {
                        usage(format!(
                            "--mutable={mode}: expected a boolean, auto, import, ephemeral or \
                             ephemeral-import"
                        ))
                    })?);
                }
                Long("always-refresh") => a.always_refresh = boolean(p, "--always-refresh")?,
                Long("no-reload") => a.no_reload = true,
                Long("no-pager") => {}
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

/// merge, unmerge, refresh, status, list — as systemd-sysext or systemd-confext, on `--root`
/// (default /).
pub fn run(p: &mut Parser, class: Class) -> Result<(), CliError> {
    let Some(a) = Args::parse(p)? else {
        return Ok(());
    };
    let verb = a.verb.as_str();
    let mut ctx = verbs::context(&a.root, class, a.policy.clone(), a.userspace);
    let mutable = a.mutable.unwrap_or_else(|| Mutable::default_for(class));
    (ctx.force, ctx.noexec, ctx.mutable) = (a.force, a.noexec, mutable);
    let (root, json, legend, cmdline) = (&a.root, a.json, a.legend, &a.cmdline);
    // A reload after merge/unmerge/refresh when an extension asks for one (not with --root).
    let reload = !a.no_reload && root == std::path::Path::new("/");
    if let Some(c) = &cmdline {
        apply_cmdline(&mut ctx, c)?;
        if !c.sysext && matches!(verb, "merge" | "refresh") {
            println!("rd.sysext=0: not merging");
            return Ok(());
        }
    }
    match verb {
        "status" => {
            let v = verbs::status(root, class);
            print_value(&v, json, || {
                table(&v, &["hierarchy", "extensions", "since"], legend)
            })
        }
        "list" => {
            let v = verbs::list(root, class, ctx.scope == Scope::Initrd);
            print_value(&v, json, || {
                table(&v, &["name", "type", "path", "time"], legend)
            })
        }
        "unmerge" => {
            let wanted = reload && verbs::reload_wanted(root, class);
            let done = merge::unmerge(root, class).map_err(failed)?;
            if wanted {
                eprintln!("{}", verbs::reload_manager());
            }
            let v = serde_json::json!({ "unmerged": done });
            print_value(&v, json, || {
                done.iter().map(|h| format!("Unmerged {h}.\n")).collect()
            })
        }
        _ => {
            // A refresh reloads for what it unmerges as well as for what it merges.
            let wanted_before = verb == "refresh" && reload && verbs::reload_wanted(root, class);
            let report = match verb {
                "refresh" => verbs::refresh(&ctx, a.always_refresh),
                _ => verbs::merge(&ctx, &mut |_| ()).map(Some),
            }
            .map_err(failed)?;
            let Some(report) = report else {
                // On stderr, as systemd logs it: `--json` output stays JSON.
                eprintln!(
                    "Skipping extension refresh because no change was found, use \
                     --always-refresh=yes to always do a refresh."
                );
                return Ok(());
            };
            if wanted_before || (reload && verbs::reload_wanted(root, class)) {
                eprintln!("{}", verbs::reload_manager());
            }
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
        ctx.policy = Some(Policy::boot_default(ctx.class));
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
