//! `check-kernel`: which kernel options (SPEC §7) a kernel config lacks, per feature. Reads a
//! .config (plain or gzip, as /proc/config.gz) — by default the running kernel's.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Features and the options each needs (built in `y` or as a module `m`).
pub const FEATURES: [(&str, &[&str]); 8] = [
    (
        "initrd",
        &["BLK_DEV_INITRD", "RD_ZSTD", "DEVTMPFS", "TMPFS"],
    ),
    ("loop devices", &["BLK_DEV_LOOP"]),
    (
        "dm-verity with kernel signature checks",
        &[
            "BLK_DEV_DM",
            "DM_VERITY",
            "DM_VERITY_VERIFY_ROOTHASH_SIG",
            "DM_VERITY_VERIFY_ROOTHASH_SIG_SECONDARY_KEYRING",
        ],
    ),
    ("overlay merge", &["OVERLAY_FS", "TMPFS_XATTR"]),
    (
        "extension filesystems",
        &["EROFS_FS", "SQUASHFS", "SQUASHFS_ZSTD", "SQUASHFS_XZ"],
    ),
    (
        "keys and signatures",
        &[
            "KEYS",
            "ASYMMETRIC_KEY_TYPE",
            "X509_CERTIFICATE_PARSER",
            "PKCS7_MESSAGE_PARSER",
            "SYSTEM_TRUSTED_KEYRING",
            "SECONDARY_TRUSTED_KEYRING",
        ],
    ),
    (
        "crypto for RSA signatures",
        &["CRYPTO_SHA256", "CRYPTO_RSA"],
    ),
    (
        "ECDSA signing keys (optional: RSA keys work without it)",
        &["CRYPTO_ECDSA"],
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no kernel config given and neither /proc/config.gz nor /boot/config-{0} exists")]
    NotFound(String),
}

/// `CONFIG_X=y|m|"…"` lines; `# CONFIG_X is not set` and others are absent.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("CONFIG_")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Reads a config file, gunzipping it when it starts with the gzip magic.
pub fn read(path: &Path) -> Result<String, KconfigError> {
    let io = |source| KconfigError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .map_err(io)?;
    Ok(text)
}

/// The running kernel's config: /proc/config.gz, else /boot/config-$(uname -r).
pub fn default_path() -> Result<PathBuf, KconfigError> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    [
        PathBuf::from("/proc/config.gz"),
        PathBuf::from(format!("/boot/config-{release}")),
    ]
    .into_iter()
    .find(|p| p.exists())
    .ok_or(KconfigError::NotFound(release))
}

/// True for features a kernel may lack without losing the product's core.
pub fn optional(feature: &str) -> bool {
    feature.contains("(optional")
}

/// Per feature: the options that are missing (not `y` or `m`).
pub fn missing(config: &BTreeMap<String, String>) -> Vec<(&'static str, Vec<&'static str>)> {
    FEATURES
        .iter()
        .map(|(feature, options)| {
            let lacking = options
                .iter()
                .copied()
                .filter(|o| !matches!(config.get(*o).map(String::as_str), Some("y" | "m")))
                .collect();
            (*feature, lacking)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_missing_options_per_feature() {
        let cfg = parse("CONFIG_BLK_DEV_LOOP=m\n# CONFIG_DM_VERITY is not set\nCONFIG_BLK_DEV_DM=y\nCONFIG_SYSTEM_TRUSTED_KEYS=\"x.pem\"\n");
        let report = missing(&cfg);
        let get = |f: &str| report.iter().find(|(n, _)| *n == f).unwrap().1.clone();
        assert!(get("loop devices").is_empty());
        assert_eq!(
            get("dm-verity with kernel signature checks"),
            [
                "DM_VERITY",
                "DM_VERITY_VERIFY_ROOTHASH_SIG",
                "DM_VERITY_VERIFY_ROOTHASH_SIG_SECONDARY_KEYRING"
            ]
        );
        assert_eq!(
            cfg.get("SYSTEM_TRUSTED_KEYS").map(String::as_str),
            Some("\"x.pem\"")
        );
    }

    #[test]
    fn the_fragment_satisfies_every_feature() {
        let fragment = include_str!("../../kernel-config/sysext.config");
        assert!(missing(&parse(fragment)).iter().all(|(_, m)| m.is_empty()));
    }
}
