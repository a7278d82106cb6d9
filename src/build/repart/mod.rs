//! systemd-repart definitions (`repart.d/*.conf`) for `build sysext --definitions`: the subset the
//! reference walkthroughs use — one data partition with its verity hash and signature partitions.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::build::sysext::{FsKind, Hierarchies, Layout, Overrides, VerityMode};
use crate::format::gpt::{Arch, Designator, Role};

mod partition;
use partition::{CopyEntry, PartType, Partition};

/// Filesystem, partition, architecture and verity from the flags and, with `--definitions`,
/// the repart files (with which a given flag must agree); their hierarchies, labels and flags.
/// `signing`: a key is given (the default is then a signed image, else an unsigned verity one).
pub fn layout(
    flags: Flags,
    definitions: Option<&Path>,
    signing: bool,
) -> Result<Layout, RepartError> {
    let (flags, hierarchies, partitions) = match definitions {
        Some(dir) => {
            let defs = Definitions::load(dir)?;
            let flags = defs.merge(flags, signing)?;
            (flags, defs.hierarchies, defs.partitions)
        }
        None => (flags, Hierarchies::ALL, Overrides::default()),
    };
    Ok(Layout {
        fs: flags.fs.unwrap_or(FsKind::Erofs),
        designator: flags.partition.unwrap_or(Designator::Root),
        arch: flags.arch.unwrap_or_else(Arch::host),
        verity: flags.verity.unwrap_or(match signing {
            true => VerityMode::Signed,
            false => VerityMode::Hash,
        }),
        hierarchies,
        partitions,
    })
}

/// A line of a definitions file, shown as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepartError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {what} is not supported by --definitions")]
    Unsupported { at: Loc, what: String },
    #[error("{at}: {why}")]
    Line { at: Loc, why: String },
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{flag} contradicts {path}, which defines {defined}")]
    Conflict {
        flag: String,
        path: PathBuf,
        defined: String,
    },
}

/// The layout flags of `build sysext`; `None` where the command line gave none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub fs: Option<FsKind>,
    pub partition: Option<Designator>,
    pub arch: Option<Arch>,
    pub verity: Option<VerityMode>,
}

/// What a definitions directory says about the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definitions {
    pub hierarchies: Hierarchies,
    pub partitions: Overrides,
    designator: Designator,
    /// From a `Type=` with an architecture; without one, `--arch` or the host's.
    arch: Option<Arch>,
    fs: Option<FsKind>,
    verity: VerityMode,
    dir: PathBuf,
    data_file: PathBuf,
    signature_file: Option<PathBuf>,
}

impl Definitions {
    /// Reads `dir/*.conf` in the order of their names.
    pub fn load(dir: &Path) -> Result<Definitions, RepartError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RepartError::Io { path, source }
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".conf") && !name.starts_with('.') && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let files = paths
            .into_iter()
            .map(|p| std::fs::read_to_string(&p).map_err(io(&p)).map(|t| (p, t)))
            .collect::<Result<Vec<_>, _>>()?;
        Definitions::parse(dir, &files)
    }

    /// `files`: (path, text), sorted.
    fn parse(dir: &Path, files: &[(PathBuf, String)]) -> Result<Definitions, RepartError> {
        if files.is_empty() {
            return Err(file_error(dir, "no *.conf definitions".into()));
        }
        let parts = files
            .iter()
            .map(|(path, text)| Partition::parse(path, text))
            .collect::<Result<Vec<_>, _>>()?;
        group(dir, parts)
    }

    /// The command line's flags with the definitions filled in; a flag that says otherwise is
    /// an error, and so is a signature partition without a key (or a key without one).
    pub fn merge(&self, flags: Flags, signing: bool) -> Result<Flags, RepartError> {
        // `--verity defer` (mkosi's Verity=defer) keeps a Verity=signature partition, unsigned.
        let defer = flags.verity == Some(VerityMode::Defer) && self.verity == VerityMode::Signed;
        let flags = match defer {
            true => Flags {
                verity: None,
                ..flags
            },
            false => flags,
        };
        self.agree_with(flags)?;
        if !defer {
            self.check_signing(signing)?;
        }
        let fs = self.fs.or(flags.fs).ok_or_else(|| {
            let why = "no Format= (systemd-repart would pick ext4, which is not built here): \
                       set Format=erofs or Format=squashfs, or pass --fs";
            file_error(&self.data_file, why.into())
        })?;
        Ok(Flags {
            fs: Some(fs),
            partition: Some(self.designator),
            arch: self.arch.or(flags.arch),
            verity: Some(if defer {
                VerityMode::Defer
            } else {
                self.verity
            }),
        })
    }

    fn agree_with(&self, flags: Flags) -> Result<(), RepartError> {
        let ty = PartType::data(self.designator, self.arch).name();
        let conflict = |path: &Path, flag: String, defined: String| RepartError::Conflict {
            flag,
            path: path.to_owned(),
            defined,
        };
        let data = |flag, defined| conflict(&self.data_file, flag, defined);
        agree(flags.partition, Some(self.designator), |g| {
            data(format!("--partition {}", g.name()), format!("Type={ty}"))
        })?;
        agree(flags.arch, self.arch, |g| {
            data(format!("--arch {}", g.name()), format!("Type={ty}"))
        })?;
        agree(flags.fs, self.fs, |g| {
            let fs = self.fs.map_or("", FsKind::name);
            data(format!("--fs {}", g.name()), format!("Format={fs}"))
        })?;
        agree(flags.verity, Some(self.verity), |g| {
            let defined = format!("verity {}", self.verity.name());
            conflict(&self.dir, format!("--verity {}", g.name()), defined)
        })
    }

    fn check_signing(&self, signing: bool) -> Result<(), RepartError> {
        match (&self.signature_file, signing) {
            (Some(sig), false) => {
                let why = "Verity=signature needs --key and --cert".into();
                Err(file_error(sig, why))
            }
            (None, true) => Err(RepartError::Conflict {
                flag: "--key/--cert".into(),
                path: self.dir.clone(),
                defined: "no Verity=signature partition".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// Fails with `conflict(given)` when a given flag differs from the defined value.
fn agree<T: Copy + PartialEq>(
    given: Option<T>,
    defined: Option<T>,
    conflict: impl FnOnce(T) -> RepartError,
) -> Result<(), RepartError> {
    match (given, defined) {
        (Some(g), Some(d)) if g != d => Err(conflict(g)),
        _ => Ok(()),
    }
}

fn line_error(file: &Path, line: usize, why: String) -> RepartError {
    let file = file.to_owned();
    RepartError::Line {
        at: Loc { file, line },
        why,
    }
}

fn file_error(path: &Path, why: String) -> RepartError {
    RepartError::File {
        path: path.to_owned(),
        why,
    }
}

/// The one partition group: a data partition, optionally its verity and signature partitions.
fn group(dir: &Path, parts: Vec<Partition>) -> Result<Definitions, RepartError> {
    let (mut data, mut hash, mut sig) = (None, None, None);
    for p in parts {
        let slot: &mut Option<Partition> = match p.kind.role {
            Role::Data => &mut data,
            Role::Verity => &mut hash,
            Role::Signature => &mut sig,
        };
        if let Some(first) = slot {
            let why = format!(
                "a second Type={} partition (after {}): only one partition group is supported",
                p.kind.name(),
                first.path.display()
            );
            return Err(file_error(&p.path, why));
        }
        *slot = Some(p);
    }
    let data = data.ok_or_else(|| file_error(dir, "no Type=root or Type=usr partition".into()))?;
    let verity = verity_mode(&data, hash.as_ref(), sig.as_ref())?;
    for p in hash.iter().chain(&sig) {
        same_group(&data, p)?;
    }
    let gpt = |p: Option<Partition>| p.map(|p| p.gpt).unwrap_or_default();
    Ok(Definitions {
        designator: data.kind.designator,
        arch: data.kind.arch,
        fs: data.format,
        verity,
        hierarchies: copied(&data)?,
        dir: dir.to_owned(),
        signature_file: sig.as_ref().map(|p| p.path.clone()),
        partitions: Overrides {
            verity: gpt(hash),
            signature: gpt(sig),
            data: data.gpt,
        },
        data_file: data.path,
    })
}

/// Signed with all three partitions, hash-only without the signature, off with the data
/// partition alone (and its `Verity=` off).
fn verity_mode(
    data: &Partition,
    hash: Option<&Partition>,
    sig: Option<&Partition>,
) -> Result<VerityMode, RepartError> {
    match (data.verity, hash, sig) {
        (false, None, None) => Ok(VerityMode::Off),
        (true, Some(_), None) => Ok(VerityMode::Hash),
        (true, Some(_), Some(_)) => Ok(VerityMode::Signed),
        (true, None, _) => Err(file_error(
            &data.path,
            "Verity=data needs a Verity=hash partition".into(),
        )),
        (false, Some(p), _) | (false, None, Some(p)) => {
            let why = format!("{} has no Verity=data", data.path.display());
            Err(file_error(&p.path, why))
        }
    }
}

/// A verity or signature partition must name the data partition's type and match key.
fn same_group(data: &Partition, p: &Partition) -> Result<(), RepartError> {
    let want = PartType {
        role: p.kind.role,
        ..data.kind
    };
    if p.kind != want {
        let why = format!(
            "Type={} does not go with Type={} of {} (expected Type={})",
            p.kind.name(),
            data.kind.name(),
            data.path.display(),
            want.name()
        );
        return Err(file_error(&p.path, why));
    }
    if p.match_key != data.match_key {
        let key = |p: &Partition| p.match_key.clone().unwrap_or_default();
        let why = format!(
            "VerityMatchKey={} differs from VerityMatchKey={} of {}: only one partition group is supported",
            key(p),
            key(data),
            data.path.display()
        );
        return Err(file_error(&p.path, why));
    }
    Ok(())
}

/// The hierarchies the data partition's `CopyFiles=` takes from the tree.
fn copied(data: &Partition) -> Result<Hierarchies, RepartError> {
    if data.copy.is_empty() {
        let why = "no CopyFiles= (systemd-repart would leave the filesystem empty)".into();
        return Err(file_error(&data.path, why));
    }
    let usr_partition = data.kind.designator == Designator::Usr;
    let mut h = Hierarchies {
        usr: false,
        opt: false,
        etc: false,
    };
    for &(entry, line) in &data.copy {
        match (entry, usr_partition) {
            (CopyEntry::Usr, false) | (CopyEntry::UsrAsTop, true) => h.usr = true,
            (CopyEntry::Opt, false) => h.opt = true,
            (CopyEntry::UsrAsTop, false) => {
                let why = "a root partition takes CopyFiles=/usr/ (not /usr/:/)";
                return Err(line_error(&data.path, line, why.into()));
            }
            (_, true) => {
                let why = "a usr partition is /usr itself: write CopyFiles=/usr/:/";
                return Err(line_error(&data.path, line, why.into()));
            }
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::sysext::PartitionOverride;
    use crate::format::gpt;

    const ROOT: &str = "[Partition]\nType=root\nFormat=squashfs\nCopyFiles=/usr/\nVerity=data\n\
                        VerityMatchKey=root\nMinimize=best\n";
    const VERITY: &str =
        "[Partition]\nType=root-verity\nVerity=hash\nVerityMatchKey=root\nMinimize=best\n";
    const SIG: &str = "[Partition]\nType=root-verity-sig\nVerity=signature\nVerityMatchKey=root\n";

    fn parse(files: &[(&str, &str)]) -> Result<Definitions, RepartError> {
        let files: Vec<_> = files
            .iter()
            .map(|(name, text)| (Path::new("/d").join(name), text.to_string()))
            .collect();
        Definitions::parse(Path::new("/d"), &files)
    }

    fn walkthrough() -> Definitions {
        parse(&[
            ("10-root.conf", ROOT),
            ("20-root-verity.conf", VERITY),
            ("30-root-verity-sig.conf", SIG),
        ])
        .unwrap()
    }

    /// The error for a walkthrough whose 10-root.conf is `root`.
    fn root_error(root: &str) -> String {
        let files = [
            ("10-root.conf", root),
            ("20-root-verity.conf", VERITY),
            ("30-root-verity-sig.conf", SIG),
        ];
        parse(&files).unwrap_err().to_string()
    }

    fn assert_has(got: &str, want: &str) {
        assert!(got.contains(want), "{want:?} not in {got:?}");
    }

    #[test]
    fn walkthrough_files_give_a_signed_squashfs_root() {
        let d = walkthrough();
        assert_eq!(
            (d.designator, d.arch, d.fs, d.verity),
            (
                Designator::Root,
                None,
                Some(FsKind::Squashfs),
                VerityMode::Signed
            )
        );
        assert_eq!(
            d.hierarchies,
            Hierarchies {
                usr: true,
                opt: false,
                etc: false
            }
        );
        let flags = |o: &PartitionOverride| (o.label.clone(), o.flags);
        let p = &d.partitions;
        assert_eq!(
            flags(&p.data),
            (None, Some(gpt::FLAG_GROW_FS)),
            "as repart 252"
        );
        assert_eq!(flags(&p.verity), (None, Some(gpt::FLAG_READ_ONLY)));
        assert_eq!(flags(&p.signature), (None, Some(0)));
        assert_eq!(
            d.signature_file,
            Some(PathBuf::from("/d/30-root-verity-sig.conf"))
        );
    }

    #[test]
    fn suffixed_types_labels_flags_and_comments() {
        let data = "# the data\n\n[Partition]\n; comment\nType=usr-arm64\n  Format = erofs \n\
                    CopyFiles=/usr/:/\nVerity=data\nVerityMatchKey=k\nLabel=my-usr\n\
                    ReadOnly=yes\nGrowFileSystem=on\nSizeMinBytes=1G\nPriority=1\nWeight=2\n\
                    PaddingMinBytes=0\nSizeMaxBytes=2G\nMinimize=guess\n";
        // The usr-arm64-verity type UUID, ReadOnly= off.
        let hash = "[Partition]\nType=6e11a4e7-fbca-4ded-b9e9-e1a512bb664e\nVerity=hash\n\
                    VerityMatchKey=k\nReadOnly=false\nLabel=\n";
        let d = parse(&[("a.conf", data), ("b.conf", hash)]).unwrap();
        assert_eq!(
            (d.designator, d.arch, d.fs, d.verity),
            (
                Designator::Usr,
                Some(Arch::Arm64),
                Some(FsKind::Erofs),
                VerityMode::Hash
            )
        );
        assert_eq!(
            d.hierarchies,
            Hierarchies {
                usr: true,
                opt: false,
                etc: false
            }
        );
        let both = gpt::FLAG_READ_ONLY | gpt::FLAG_GROW_FS;
        assert_eq!(d.partitions.data.label.as_deref(), Some("my-usr"));
        assert_eq!(d.partitions.data.flags, Some(both));
        assert_eq!(
            d.partitions.verity,
            PartitionOverride {
                label: None,
                flags: Some(0)
            }
        );
        assert_eq!(d.partitions.signature, PartitionOverride::default());
    }

    #[test]
    fn data_partition_alone_is_verity_off() {
        let d = parse(&[(
            "r.conf",
            "[Partition]\nType=root-x86-64\nFormat=erofs\nCopyFiles=/usr /opt/\nReadOnly=1\n",
        )])
        .unwrap();
        assert_eq!(d.verity, VerityMode::Off);
        assert_eq!(d.hierarchies, Hierarchies::ALL);
        assert_eq!(d.partitions.data.flags, Some(gpt::FLAG_READ_ONLY));
    }

    #[test]
    fn line_errors_name_file_line_and_key() {
        // Appended to the walkthrough's 10-root.conf, as its line 8.
        let appended = [
            (
                "Encrypt=key-file",
                "10-root.conf:8: Encrypt= is not supported",
            ),
            (
                "Format=ext4",
                "10-root.conf:8: Format=ext4: expected erofs or squashfs",
            ),
            ("Type=esp", "10-root.conf:8: Type=esp: expected root"),
            (
                "Verity=maybe",
                "10-root.conf:8: Verity=maybe: expected data",
            ),
            (
                "ReadOnly=perhaps",
                "10-root.conf:8: ReadOnly=perhaps: expected a boolean",
            ),
            (
                "GrowFileSystem=2",
                "10-root.conf:8: GrowFileSystem=2: expected a boolean",
            ),
            (
                "Minimize=fast",
                "10-root.conf:8: Minimize=fast: expected best",
            ),
            ("Label=%t", "10-root.conf:8: Label=%t: specifiers"),
            (
                "Label=a-label-of-37-characters-is-too-long!",
                "10-root.conf:8: Label=a-label-of-37-characters-is-too-long!: a GPT label holds at most 36",
            ),
            (
                "CopyFiles=/etc/",
                "10-root.conf:8: CopyFiles=/etc/: only /usr/ and /opt/",
            ),
            (
                "CopyFiles=/usr/:/opt/",
                "10-root.conf:8: CopyFiles=/usr/:/opt/: only",
            ),
            ("CopyFiles=usr", "10-root.conf:8: CopyFiles=usr: only"),
            (
                "CopyFiles=/usr/:/",
                "10-root.conf:8: a root partition takes CopyFiles=/usr/",
            ),
            (
                "Verity=hash",
                "10-root.conf:8: Verity=hash on Type=root: expected Verity=data",
            ),
        ];
        for (extra, want) in appended {
            assert_has(&root_error(&format!("{ROOT}{extra}\n")), want);
        }
        let whole = [
            (
                "[Partition]\nType=root\n[Foo]\n",
                "10-root.conf:3: section [Foo] is not supported",
            ),
            ("Type=root\n", "10-root.conf:1: expected [Partition]"),
            (
                "[Partition]\nType root\n",
                "10-root.conf:2: expected [Partition]",
            ),
        ];
        for (text, want) in whole {
            assert_has(&root_error(text), want);
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let no_key = ROOT.replace("VerityMatchKey=root\n", "");
        let usr_copy = "[Partition]\nType=usr\nFormat=erofs\nCopyFiles=/usr/\n";
        let cases = [
            ("[Partition]\nFormat=erofs\n", "/d/10-root.conf: no Type="),
            (&no_key, "/d/10-root.conf: Verity= needs VerityMatchKey="),
            (
                &ROOT.replace("CopyFiles=/usr/\n", ""),
                "/d/10-root.conf: no CopyFiles=",
            ),
        ];
        for (root, want) in cases {
            assert_has(&root_error(root), want);
        }
        let hash_only = "[Partition]\nType=root-verity\nVerityMatchKey=root\n";
        let err = |files: &[(&str, &str)]| parse(files).unwrap_err().to_string();
        let r = ("10-root.conf", ROOT);
        assert_has(
            &err(&[r, ("20-root-verity.conf", hash_only)]),
            "/d/20-root-verity.conf: Type=root-verity needs Verity=hash",
        );
        assert_has(
            &err(&[r, ("20-v.conf", &format!("{VERITY}Format=erofs\n"))]),
            "/d/20-v.conf:6: Type=root-verity: only the data partition has Format=",
        );
        assert_has(
            &err(&[("10-usr.conf", usr_copy)]),
            "/d/10-usr.conf:4: a usr partition is /usr itself",
        );
    }

    #[test]
    fn group_errors_name_the_file() {
        let err = |files: &[(&str, &str)]| parse(files).unwrap_err().to_string();
        let (r, v, s) = (
            ("10-root.conf", ROOT),
            ("20-root-verity.conf", VERITY),
            ("30-root-verity-sig.conf", SIG),
        );
        let other_key = SIG.replace("=root\n", "=other\n");
        let usr_verity = VERITY.replace("Type=root-verity", "Type=usr-verity");
        let off = ROOT.replace("Verity=data", "Verity=off");
        let cases: [(&[(&str, &str)], &str); 8] = [
            (&[], "/d: no *.conf definitions"),
            (&[v], "/d: no Type=root or Type=usr partition"),
            (&[r], "/d/10-root.conf: Verity=data needs a Verity=hash partition"),
            (&[r, s], "/d/10-root.conf: Verity=data needs a Verity=hash partition"),
            (&[r, ("15-root.conf", ROOT), v], "/d/15-root.conf: a second Type=root partition (after /d/10-root.conf)"),
            (&[("10-root.conf", &off), v], "/d/20-root-verity.conf: /d/10-root.conf has no Verity=data"),
            (&[r, ("20-usr-verity.conf", &usr_verity)], "/d/20-usr-verity.conf: Type=usr-verity does not go with Type=root of /d/10-root.conf"),
            (&[r, v, ("30-sig.conf", &other_key)], "/d/30-sig.conf: VerityMatchKey=other differs from VerityMatchKey=root of /d/10-root.conf"),
        ];
        for (files, want) in cases {
            assert_has(&err(files), want);
        }
    }

    #[test]
    fn flags_must_agree_with_the_definitions() {
        let d = walkthrough();
        let merge = |flags: Flags, signing| d.merge(flags, signing).map_err(|e| e.to_string());
        let full = Flags {
            fs: Some(FsKind::Squashfs),
            partition: Some(Designator::Root),
            arch: None,
            verity: Some(VerityMode::Signed),
        };
        assert_eq!(merge(Flags::default(), true), Ok(full));
        assert_eq!(merge(full, true), Ok(full));
        let arm = Flags {
            arch: Some(Arch::Arm64),
            ..full
        };
        assert_eq!(merge(arm, true), Ok(arm), "Type=root takes --arch");
        // --verity defer keeps the signature partition and needs no key now.
        let defer = Flags {
            verity: Some(VerityMode::Defer),
            ..Flags::default()
        };
        let deferred = Flags {
            verity: Some(VerityMode::Defer),
            ..full
        };
        assert_eq!(merge(defer, false), Ok(deferred));
        let cases = [
            (
                Flags {
                    fs: Some(FsKind::Erofs),
                    ..full
                },
                true,
                "--fs erofs contradicts /d/10-root.conf, which defines Format=squashfs",
            ),
            (
                Flags {
                    partition: Some(Designator::Usr),
                    ..full
                },
                true,
                "--partition usr contradicts /d/10-root.conf, which defines Type=root",
            ),
            (
                Flags {
                    verity: Some(VerityMode::Hash),
                    ..full
                },
                true,
                "--verity hash contradicts /d, which defines verity signed",
            ),
            (
                full,
                false,
                "/d/30-root-verity-sig.conf: Verity=signature needs --key and --cert",
            ),
        ];
        for (flags, signing, want) in cases {
            assert_eq!(merge(flags, signing), Err(want.to_owned()));
        }
        let x86 = ROOT.replace("Type=root", "Type=root-x86-64");
        let d = parse(&[("r.conf", &x86.replace("Verity=data", "Verity=off"))]).unwrap();
        let err = d.merge(arm, false).unwrap_err().to_string();
        assert_eq!(
            err,
            "--arch arm64 contradicts /d/r.conf, which defines Type=root-x86-64"
        );
        let err = d.merge(Flags::default(), true).unwrap_err().to_string();
        assert_eq!(
            err,
            "--key/--cert contradicts /d, which defines no Verity=signature partition"
        );
    }

    #[test]
    fn without_format_the_flag_decides() {
        let text = "[Partition]\nType=usr\nCopyFiles=/usr/:/\n";
        let d = parse(&[("u.conf", text)]).unwrap();
        assert_has(
            &d.merge(Flags::default(), false).unwrap_err().to_string(),
            "/d/u.conf: no Format= (systemd-repart would pick ext4",
        );
        let erofs = Flags {
            fs: Some(FsKind::Erofs),
            ..Flags::default()
        };
        assert_eq!(d.merge(erofs, false).unwrap().fs, Some(FsKind::Erofs));
    }

    #[test]
    fn load_reads_conf_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("20-b.conf", ROOT);
        write("10-a.conf", ROOT);
        write("README", "not a definition");
        write(".hidden.conf", "not a definition");
        std::fs::create_dir(dir.path().join("sub.conf")).unwrap();
        let err = Definitions::load(dir.path()).unwrap_err().to_string();
        let first = dir.path().join("10-a.conf");
        assert_has(
            &err,
            &format!(
                "20-b.conf: a second Type=root partition (after {})",
                first.display()
            ),
        );
        std::fs::remove_file(dir.path().join("20-b.conf")).unwrap();
        write("20-v.conf", VERITY);
        assert_eq!(
            Definitions::load(dir.path()).unwrap().verity,
            VerityMode::Hash
        );
        let missing = dir.path().join("missing");
        assert_has(
            &Definitions::load(&missing).unwrap_err().to_string(),
            "missing: ",
        );
    }
}
