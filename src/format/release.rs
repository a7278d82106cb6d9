//! os-release and extension-release files: parsing (systemd's env-file syntax), choosing an
//! image's extension-release file, and the compatibility checks systemd-sysext applies.

use std::fmt;

use crate::format::gpt::Arch;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: &'static str },
}

/// Parsed `KEY=VALUE` pairs in file order (a later duplicate wins on lookup).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    pub fields: Vec<(String, String)>,
}

impl Release {
    pub fn parse(text: &str) -> Result<Release, ReleaseError> {
        let mut fields = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let err = |reason| ReleaseError::Syntax {
                line: i + 1,
                reason,
            };
            // As systemd's env-file parser: a line without `=` or with an invalid key name
            // is ignored, not fatal.
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim_end();
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                continue;
            }
            fields.push((key.to_owned(), unquote(value.trim_start()).map_err(err)?));
        }
        Ok(Release { fields })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Non-empty value of `key`.
    fn value(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// Sets `key`, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: &str) {
        self.fields.retain(|(k, _)| k != key);
        self.fields.push((key.to_owned(), value.to_owned()));
    }

    /// Renders the file, quoting values that need it.
    pub fn render(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| format!("{k}={}\n", quote(v)))
            .collect()
    }
}

/// Values are unquoted (inner whitespace kept, as systemd does), or in single or double quotes;
/// backslash escapes outside single quotes.
fn unquote(v: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut chars = v.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => out.push(chars.next().ok_or("dangling backslash")?),
            (_, c) => out.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote");
    }
    Ok(out)
}

fn quote(v: &str) -> String {
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:+/@,%".contains(c));
    if plain && !v.is_empty() {
        return v.to_owned();
    }
    let escaped: String = v
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' | '`' | '$' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// The two kinds of extension image (systemd's image classes): a system extension carries
/// `/usr` and `/opt`, a configuration extension `/etc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Class {
    #[default]
    Sysext,
    Confext,
}

impl Class {
    /// The tool's word: `sysext`, `confext`.
    pub fn name(self) -> &'static str {
        match self {
            Class::Sysext => "sysext",
            Class::Confext => "confext",
        }
    }

    /// The extension-release key naming the scopes.
    pub fn scope_key(self) -> &'static str {
        match self {
            Class::Sysext => "SYSEXT_SCOPE",
            Class::Confext => "CONFEXT_SCOPE",
        }
    }

    /// The extension-release and os-release key of the API level.
    pub fn level_key(self) -> &'static str {
        match self {
            Class::Sysext => "SYSEXT_LEVEL",
            Class::Confext => "CONFEXT_LEVEL",
        }
    }

    /// The directory of extension-release files inside the image.
    pub fn release_dir(self) -> &'static str {
        match self {
            Class::Sysext => "usr/lib/extension-release.d",
            Class::Confext => "etc/extension-release.d",
        }
    }

    /// The extension-release keys naming the extension and its version (`SYSEXT_ID`,
    /// `SYSEXT_VERSION_ID`; `CONFEXT_…`).
    pub fn id_keys(self) -> (&'static str, &'static str) {
        match self {
            Class::Sysext => ("SYSEXT_ID", "SYSEXT_VERSION_ID"),
            Class::Confext => ("CONFEXT_ID", "CONFEXT_VERSION_ID"),
        }
    }

    /// The meta file listing a merge's extensions (`.systemd-sysext/extensions`,
    /// `.systemd-confext/confexts`).
    pub fn plural(self) -> &'static str {
        match self {
            Class::Sysext => "extensions",
            Class::Confext => "confexts",
        }
    }
}

/// Where an extension is being merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Initrd,
    System,
    Portable,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Initrd => "initrd",
            Scope::System => "system",
            Scope::Portable => "portable",
        }
    }

    pub fn from_name(s: &str) -> Option<Scope> {
        [Scope::Initrd, Scope::System, Scope::Portable]
            .into_iter()
            .find(|x| x.name() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an extension does not fit the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    #[error("{key}={scopes:?} does not include the host scope '{host}'")]
    Scope {
        key: &'static str,
        scopes: String,
        host: Scope,
    },
    #[error("ARCHITECTURE={ext} does not match the host architecture {host}")]
    Architecture { ext: String, host: &'static str },
    #[error("extension-release has no ID=")]
    NoId,
    #[error("ID={ext} matches neither the host ID={host} nor ID_LIKE={like:?}")]
    Id {
        ext: String,
        host: String,
        like: String,
    },
    #[error("{key}={ext} differs from the host's {key}={host}")]
    Level {
        key: &'static str,
        ext: String,
        host: String,
    },
    #[error("VERSION_ID={ext:?} differs from the host's VERSION_ID={host}")]
    VersionId { ext: Option<String>, host: String },
}

/// The host side of the check.
#[derive(Debug, Clone)]
pub struct Host<'a> {
    pub class: Class,
    pub release: &'a Release,
    pub scope: Scope,
    pub arch: Arch,
}

/// systemd-sysext's compatibility rules (SPEC §3), in order; confext's keys for a confext.
pub fn check(ext: &Release, host: &Host) -> Result<(), Incompatible> {
    let key = host.class.scope_key();
    let scopes = ext.get(key).unwrap_or("system portable");
    if !scopes.split_whitespace().any(|s| s == host.scope.name()) {
        return Err(Incompatible::Scope {
            key,
            scopes: scopes.to_owned(),
            host: host.scope,
        });
    }
    if let Some(arch) = ext.value("ARCHITECTURE") {
        if arch != "_any" && arch != host.arch.name() {
            return Err(Incompatible::Architecture {
                ext: arch.to_owned(),
                host: host.arch.name(),
            });
        }
    }
    let id = ext.value("ID").ok_or(Incompatible::NoId)?;
    if id == "_any" {
        return Ok(());
    }
    let host_id = host.release.value("ID").unwrap_or("linux");
    let like = host.release.get("ID_LIKE").unwrap_or("");
    if id != host_id && !like.split_whitespace().any(|l| l == id) {
        return Err(Incompatible::Id {
            ext: id.to_owned(),
            host: host_id.to_owned(),
            like: like.to_owned(),
        });
    }
    let key = host.class.level_key();
    if let (Some(e), Some(h)) = (ext.value(key), host.release.value(key)) {
        return match e == h {
            true => Ok(()),
            false => Err(Incompatible::Level {
                key,
                ext: e.to_owned(),
                host: h.to_owned(),
            }),
        };
    }
    match host.release.value("VERSION_ID") {
        Some(h) if ext.value("VERSION_ID") != Some(h) => Err(Incompatible::VersionId {
            ext: ext.value("VERSION_ID").map(str::to_owned),
            host: h.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The image name from its file name: minus `.raw`, minus an optional `.sysext` or `.confext`.
pub fn image_name(file_name: &str) -> &str {
    let base = file_name.strip_suffix(".raw").unwrap_or(file_name);
    [".sysext", ".confext"]
        .iter()
        .find_map(|s| base.strip_suffix(s))
        .unwrap_or(base)
}

/// systemd's `filename_is_valid`: not empty, `.` or `..`, no `/`, at most NAME_MAX bytes.
fn filename_is_valid(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && s.len() <= 255
}

/// systemd's `image_name_is_valid`: a valid file name (UTF-8, as a `str` is) without control
/// characters (a newline would split the meta file's list), not a `.#` temporary file.
pub fn image_name_is_valid(s: &str) -> bool {
    filename_is_valid(s) && !s.starts_with(".#") && !s.bytes().any(|b| b < b' ' || b == 0x7f)
}

/// systemd's `version_is_valid`: a valid file name of ASCII letters, digits and `.,_-+`.
pub fn version_is_valid(s: &str) -> bool {
    filename_is_valid(s)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".,_-+".contains(&b))
}

/// A candidate file in `usr/lib/extension-release.d/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub file_name: String,
    /// `user.extension-release.strict` xattr is set to false.
    pub not_strict: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no extension-release file matches image name {0:?}")]
    None(String),
    #[error("several extension-release files could belong to {name:?}: {files:?}")]
    Ambiguous { name: String, files: Vec<String> },
}

/// Chooses the extension-release file for `name` (SPEC §3): the exact name; else one whose
/// suffix equals the name cut at the first `_` or `+`; else the single non-strict file.
pub fn select<'a>(candidates: &'a [Candidate], name: &str) -> Result<&'a Candidate, SelectError> {
    let suffix = |c: &Candidate| {
        c.file_name
            .strip_prefix("extension-release.")
            .map(str::to_owned)
    };
    if let Some(c) = candidates
        .iter()
        .find(|c| suffix(c).as_deref() == Some(name))
    {
        return Ok(c);
    }
    let cut = name.split(['_', '+']).next().unwrap_or(name);
    let one = |matches: Vec<&'a Candidate>| match matches.len() {
        0 => None,
        1 => Some(Ok(matches[0])),
        _ => Some(Err(SelectError::Ambiguous {
            name: name.to_owned(),
            files: matches.iter().map(|c| c.file_name.clone()).collect(),
        })),
    };
    let by_cut = candidates
        .iter()
        .filter(|c| suffix(c).as_deref() == Some(cut))
        .collect();
    if let Some(r) = one(by_cut) {
        return r;
    }
    let loose = candidates.iter().filter(|c| c.not_strict).collect();
    one(loose).unwrap_or_else(|| Err(SelectError::None(name.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Release {
        Release::parse(s).unwrap()
    }

    #[test]
    fn parse_quotes_and_comments() {
        let r = rel("# c\nID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nX='a b'\nY=a\\ b\nID_LIKE=\"\"\n");
        assert_eq!(r.get("ID"), Some("debian"));
        assert_eq!(r.get("PRETTY_NAME"), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(r.get("X"), Some("a b"));
        assert_eq!(r.get("Y"), Some("a b"));
        assert_eq!(r.get("ID_LIKE"), Some(""));
        assert_eq!(
            Release::parse("A=\"open\n"),
            Err(ReleaseError::Syntax {
                line: 1,
                reason: "unterminated quote"
            })
        );
        let lax = rel("no equals\n1A=x\nID=debian\n");
        assert_eq!((lax.get("1A"), lax.get("ID")), (None, Some("debian")));
    }

    #[test]
    fn render_round_trips() {
        let mut r = rel("ID=debian\n");
        r.set("NAME", "A \"quoted\" $name");
        r.set("ID", "fedora");
        assert_eq!(Release::parse(&r.render()).unwrap(), r);
        assert!(r.render().starts_with("NAME="));
    }

    fn host(release: &Release, scope: Scope) -> Host<'_> {
        Host {
            class: Class::Sysext,
            release,
            scope,
            arch: Arch::X86_64,
        }
    }

    #[test]
    fn compatibility_rules() {
        let deb = rel("ID=debian\nVERSION_ID=12\n");
        let ubuntu = rel("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=12\n");
        let leveled = rel("ID=debian\nVERSION_ID=13\nSYSEXT_LEVEL=1.0\n");
        let sys = host(&deb, Scope::System);
        let ini = host(&deb, Scope::Initrd);
        assert_eq!(check(&rel("ID=debian\nVERSION_ID=12"), &sys), Ok(()));
        assert!(matches!(
            check(&rel("ID=debian\nVERSION_ID=12"), &ini),
            Err(Incompatible::Scope { .. })
        ));
        assert_eq!(
            check(
                &rel("ID=debian\nVERSION_ID=12\nSYSEXT_SCOPE=initrd system"),
                &ini
            ),
            Ok(())
        );
        assert_eq!(check(&rel("ID=_any\nSYSEXT_SCOPE=initrd"), &ini), Ok(()));
        assert_eq!(
            check(
                &rel("ID=debian\nVERSION_ID=12"),
                &host(&ubuntu, Scope::System)
            ),
            Ok(())
        );
        assert!(matches!(
            check(&rel("ID=fedora"), &sys),
            Err(Incompatible::Id { .. })
        ));
        assert_eq!(check(&rel(""), &sys), Err(Incompatible::NoId));
        assert!(matches!(
            check(&rel("ID=debian\nVERSION_ID=11"), &sys),
            Err(Incompatible::VersionId { .. })
        ));
        assert!(matches!(
            check(&rel("ID=debian"), &sys),
            Err(Incompatible::VersionId { ext: None, .. })
        ));
        assert!(matches!(
            check(&rel("ID=debian\nVERSION_ID=12\nARCHITECTURE=arm64"), &sys),
            Err(Incompatible::Architecture { .. })
        ));
        assert_eq!(
            check(&rel("ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64"), &sys),
            Ok(())
        );
        // SYSEXT_LEVEL wins over VERSION_ID when both sides have it.
        let h = host(&leveled, Scope::System);
        assert_eq!(
            check(&rel("ID=debian\nSYSEXT_LEVEL=1.0\nVERSION_ID=1"), &h),
            Ok(())
        );
        assert!(matches!(
            check(&rel("ID=debian\nSYSEXT_LEVEL=2"), &h),
            Err(Incompatible::Level { .. })
        ));
        // A confext reads CONFEXT_SCOPE and CONFEXT_LEVEL, not the sysext keys.
        let conf = rel("ID=debian\nVERSION_ID=13\nCONFEXT_LEVEL=7\nSYSEXT_LEVEL=1.0\n");
        let c = Host {
            class: Class::Confext,
            ..host(&conf, Scope::Initrd)
        };
        assert_eq!(
            check(&rel("ID=debian\nCONFEXT_LEVEL=7\nCONFEXT_SCOPE=initrd"), &c),
            Ok(())
        );
        let e = check(&rel("ID=debian\nCONFEXT_LEVEL=7\nSYSEXT_SCOPE=initrd"), &c);
        assert!(e.unwrap_err().to_string().starts_with("CONFEXT_SCOPE="));
        let e = check(
            &rel("ID=debian\nSYSEXT_LEVEL=1.0\nCONFEXT_SCOPE=initrd"),
            &c,
        );
        assert!(matches!(e, Err(Incompatible::VersionId { .. })));
    }

    fn cand(name: &str, not_strict: bool) -> Candidate {
        Candidate {
            file_name: format!("extension-release.{name}"),
            not_strict,
        }
    }

    #[test]
    fn image_names_and_versions_follow_systemd() {
        for ok in ["btrfs", "kubectl-1.29.x86-64", "a b", "ü", "a.b", ".hidden"] {
            assert!(image_name_is_valid(ok), "{ok:?}");
        }
        let long = "x".repeat(256);
        for bad in [
            "", ".", "..", ".#tmp", "a/b", "a\nb", "a\tb", "a\x7fb", "a\0b", &long,
        ] {
            assert!(!image_name_is_valid(bad), "{bad:?}");
        }
        for ok in ["1", "1.2.3", "1.2_3+4,5-rc1", "v2"] {
            assert!(version_is_valid(ok), "{ok:?}");
        }
        for bad in ["", ".", "..", "1 2", "1\n2", "1/2", "1~2", "1:2", "\u{e9}"] {
            assert!(!version_is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn selection() {
        assert_eq!(image_name("btrfs.sysext.raw"), "btrfs");
        assert_eq!(image_name("etc.confext.raw"), "etc");
        assert_eq!(image_name("kubectl-1.29.x86-64.raw"), "kubectl-1.29.x86-64");
        let c = [cand("btrfs", false), cand("foo", false)];
        assert_eq!(
            select(&c, "btrfs").unwrap().file_name,
            "extension-release.btrfs"
        );
        assert_eq!(
            select(&c, "btrfs_1.2").unwrap().file_name,
            "extension-release.btrfs"
        );
        assert_eq!(
            select(&c, "foo+3").unwrap().file_name,
            "extension-release.foo"
        );
        assert!(matches!(select(&c, "bar"), Err(SelectError::None(_))));
        let loose = [cand("whatever", true)];
        assert_eq!(
            select(&loose, "bar").unwrap().file_name,
            "extension-release.whatever"
        );
        let two = [cand("a", true), cand("b", true)];
        assert!(matches!(
            select(&two, "bar"),
            Err(SelectError::Ambiguous { .. })
        ));
    }
}
