//! Enrolling certificates into the kernel's `.secondary_trusted_keys`: the kernel accepts only
//! certificates signed by a key it already trusts, so signing keys can rotate without a new kernel.

use std::path::{Path, PathBuf};

use log::{info, warn};

use crate::image::certs;
use crate::runtime::keyring::{self, Keyring};

/// Where certificates to enroll are found (relative to the root).
pub const DIR: &str = "etc/verity.d/secondary";

/// Outcome per certificate file: Ok(key serial) or the kernel's refusal.
pub fn enroll(root: &Path) -> Vec<(PathBuf, Result<i32, String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(DIR))
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    if files.is_empty() {
        return Vec::new();
    }
    files.sort();
    let ring = match keyring::find_keyring(".secondary_trusted_keys") {
        Ok(Some(id)) => id,
        Ok(None) => {
            warn!("no .secondary_trusted_keys keyring (CONFIG_SECONDARY_TRUSTED_KEYRING): not enrolling");
            return Vec::new();
        }
        Err(e) => {
            warn!("finding .secondary_trusted_keys: {e}");
            return Vec::new();
        }
    };
    files
        .into_iter()
        .map(|p| {
            let result = enroll_one(&p, ring);
            match &result {
                Ok(serial) => info!(
                    "enrolled {} into .secondary_trusted_keys (key {serial})",
                    p.display()
                ),
                Err(e) => warn!("refused to enroll {}: {e}", p.display()),
            }
            (p, result)
        })
        .collect()
}

fn enroll_one(path: &Path, ring: i32) -> Result<i32, String> {
    let cert = certs::load_cert(path).map_err(|e| e.to_string())?;
    let der = cert.to_der().map_err(|e| e.to_string())?;
    keyring::add_certificate(&der, Keyring::Id(ring))
        .map(|k| k.0)
        .map_err(|e| e.to_string())
}
