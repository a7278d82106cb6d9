//! `check-kernel`: whether a kernel configuration has what boot mode needs.

use std::path::PathBuf;

use lexopt::prelude::*;
use lexopt::Parser;

use super::{failed, CliError};
use crate::boot::kconfig;

/// `check-kernel [CONFIG]`: per feature, the options a kernel config lacks; exit 1 if any.
pub fn check_kernel(p: &mut Parser) -> Result<(), CliError> {
    let mut config = None;
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if config.is_none() => config = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let path = match config {
        Some(c) => c,
        None => kconfig::default_path().map_err(failed)?,
    };
    let options = kconfig::parse(&kconfig::read(&path).map_err(failed)?);
    let report = kconfig::missing(&options);
    println!("{}:", path.display());
    for (feature, lacking) in &report {
        let word = if kconfig::optional(feature) {
            "lacks"
        } else {
            "MISSING"
        };
        match lacking.is_empty() {
            true => println!("  ok       {feature}"),
            false => println!(
                "  {word:<8} {feature}: CONFIG_{}",
                lacking.join(", CONFIG_")
            ),
        }
    }
    match report
        .iter()
        .all(|(f, l)| l.is_empty() || kconfig::optional(f))
    {
        true => Ok(()),
        false => Err(failed(
            "the kernel lacks options initrd-sysext needs (see above)",
        )),
    }
}
