//! One repart.d definitions file on its own: `Type=`, `Format=`, `CopyFiles=`, `Verity=`,
//! `VerityMatchKey=`, `Label=`, `ReadOnly=`, `GrowFileSystem=` checked line by line.

use std::path::{Path, PathBuf};

use log::{debug, warn};

use super::{file_error, line_error, Loc, RepartError};
use crate::build::sysext::{FsKind, PartitionOverride};
use crate::format::gpt::{self, Arch, Designator, Role};
use crate::format::unit::{self, Entry};
use crate::format::uuid::Uuid;

/// `Type=`: designator, role and (if spelled out) architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartType {
    pub(super) designator: Designator,
    pub(super) role: Role,
    pub(super) arch: Option<Arch>,
}

impl PartType {
    pub(super) fn data(designator: Designator, arch: Option<Arch>) -> PartType {
        PartType {
            designator,
            role: Role::Data,
            arch,
        }
    }

    /// `root`, `usr-verity`, `root-arm64-verity-sig`, … or a partition type UUID.
    pub(super) fn parse(v: &str) -> Option<PartType> {
        if let Ok(uuid) = v.parse::<Uuid>() {
            let (designator, role, arch) = gpt::classify(uuid)?;
            let arch = Some(arch);
            return Some(PartType {
                designator,
                role,
                arch,
            });
        }
        let arches = [None, Some(Arch::X86_64), Some(Arch::Arm64)];
        let roles = [Role::Data, Role::Verity, Role::Signature];
        [Designator::Root, Designator::Usr]
            .into_iter()
            .flat_map(|designator| roles.map(|role| (designator, role)))
            .flat_map(|(designator, role)| {
                arches.map(|arch| PartType {
                    designator,
                    role,
                    arch,
                })
            })
            .find(|t| t.name() == v)
    }

    /// The name systemd-repart knows the type by.
    pub(super) fn name(self) -> String {
        let arch = self.arch.map(|a| format!("-{}", a.name()));
        let role = match self.role {
            Role::Data => "",
            Role::Verity => "-verity",
            Role::Signature => "-verity-sig",
        };
        format!(
            "{}{}{role}",
            self.designator.name(),
            arch.unwrap_or_default()
        )
    }
}

/// `Verity=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verity {
    Off,
    Data,
    Hash,
    Signature,
}

impl Verity {
    const ALL: [Verity; 4] = [Verity::Off, Verity::Data, Verity::Hash, Verity::Signature];

    pub(super) fn name(self) -> &'static str {
        match self {
            Verity::Off => "off",
            Verity::Data => "data",
            Verity::Hash => "hash",
            Verity::Signature => "signature",
        }
    }

    /// What a partition of `role` says (the data partition may also say `off`).
    pub(super) fn of(role: Role) -> Verity {
        match role {
            Role::Data => Verity::Data,
            Role::Verity => Verity::Hash,
            Role::Signature => Verity::Signature,
        }
    }
}

/// A supported `CopyFiles=` entry: `/usr/` or `/opt/` to the same place, or `/usr/:/` (the
/// way a usr partition, whose top is `/usr`, is filled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyEntry {
    Usr,
    Opt,
    UsrAsTop,
}

impl CopyEntry {
    pub(super) fn parse(word: &str) -> Option<CopyEntry> {
        let (source, target) = word.split_once(':').unwrap_or((word, word));
        let dir = |p: &str| p.trim_end_matches('/').to_owned();
        match (dir(source).as_str(), dir(target).as_str()) {
            ("/usr", "/usr") => Some(CopyEntry::Usr),
            ("/opt", "/opt") => Some(CopyEntry::Opt),
            ("/usr", "") => Some(CopyEntry::UsrAsTop),
            _ => None,
        }
    }
}

/// `Label=`: at most 36 UTF-16 units (a GPT entry's name); empty restores the default.
pub(super) fn parse_label(v: &str) -> Result<Option<String>, &'static str> {
    if v.contains('%') {
        return Err("specifiers (%) are not supported");
    }
    if v.encode_utf16().count() > 36 {
        return Err("a GPT label holds at most 36 characters");
    }
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

/// The `[Partition]` assignments of a file, each with its `file:line`.
pub(super) fn assignments(path: &Path, text: &str) -> Result<Vec<(Loc, Entry)>, RepartError> {
    let entries = unit::parse(path, text, &unit::REPART).map_err(|e| {
        let at = Loc {
            file: e.file,
            line: e.line,
        };
        RepartError::Line { at, why: e.reason }
    })?;
    let loc = |e: &Entry| Loc {
        file: path.to_owned(),
        line: e.line,
    };
    Ok(entries.into_iter().map(|e| (loc(&e), e)).collect())
}

/// A file's values as assigned; with the line where a later check needs it.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub(super) part_type: Option<PartType>,
    pub(super) format: Option<(FsKind, usize)>,
    pub(super) copy: Vec<(CopyEntry, usize)>,
    pub(super) verity: Option<(Verity, usize)>,
    pub(super) match_key: Option<String>,
    pub(super) label: Option<String>,
    pub(super) read_only: Option<bool>,
    pub(super) grow_fs: Option<bool>,
}

impl Fields {
    pub(super) fn assign(&mut self, at: Loc, a: Entry) -> Result<(), RepartError> {
        let (v, line) = (a.value.as_str(), a.line);
        let bad = |why: &str| RepartError::Line {
            at: at.clone(),
            why: format!("{}={v}: {why}", a.key),
        };
        let boolean = || unit::boolean(v).ok_or_else(|| bad("expected a boolean"));
        match a.key.as_str() {
            "Type" => {
                let why = "expected root, root-verity, root-verity-sig, usr, usr-verity or \
                           usr-verity-sig (with -x86-64 or -arm64 after root/usr), or a type UUID";
                self.part_type = Some(PartType::parse(v).ok_or_else(|| bad(why))?);
            }
            "Format" => {
                let fs = [FsKind::Erofs, FsKind::Squashfs]
                    .into_iter()
                    .find(|f| f.name() == v);
                self.format = Some((fs.ok_or_else(|| bad("expected erofs or squashfs"))?, line));
            }
            "CopyFiles" => self.copy_files(v, line).map_err(bad)?,
            "Verity" => {
                let verity = Verity::ALL.into_iter().find(|m| m.name() == v);
                let why = "expected data, hash, signature or off";
                self.verity = Some((verity.ok_or_else(|| bad(why))?, line));
            }
            "VerityMatchKey" => self.match_key = (!v.is_empty()).then(|| v.to_owned()),
            "Minimize" if ["best", "guess", "off"].contains(&v) || unit::boolean(v).is_some() => {}
            "Minimize" => return Err(bad("expected best, guess or off")),
            "Label" => self.label = parse_label(v).map_err(bad)?,
            "ReadOnly" => self.read_only = Some(boolean()?),
            "GrowFileSystem" => self.grow_fs = Some(boolean()?),
            "SizeMinBytes" | "SizeMaxBytes" | "Priority" | "Weight" | "PaddingMinBytes" => {
                debug!("{at}: {}= ignored: images are sized to fit", a.key);
            }
            key => {
                let what = format!("{key}=");
                return Err(RepartError::Unsupported { at, what });
            }
        }
        Ok(())
    }

    /// `CopyFiles=`: a space-separated list that adds up; empty resets it.
    pub(super) fn copy_files(&mut self, v: &str, line: usize) -> Result<(), &'static str> {
        if v.is_empty() {
            self.copy.clear();
        }
        for word in v.split_whitespace() {
            let entry = CopyEntry::parse(word).ok_or(
                "only /usr/ and /opt/, each copied to the same place (or /usr/:/ into a usr \
                 partition), are supported",
            )?;
            self.copy.push((entry, line));
        }
        Ok(())
    }
}

/// One definitions file, checked on its own.
#[derive(Debug)]
pub(super) struct Partition {
    pub(super) path: PathBuf,
    pub(super) kind: PartType,
    pub(super) format: Option<FsKind>,
    pub(super) copy: Vec<(CopyEntry, usize)>,
    /// `Verity=` other than off.
    pub(super) verity: bool,
    pub(super) match_key: Option<String>,
    pub(super) gpt: PartitionOverride,
}

impl Partition {
    pub(super) fn parse(path: &Path, text: &str) -> Result<Partition, RepartError> {
        let mut f = Fields::default();
        for (at, a) in assignments(path, text)? {
            f.assign(at, a)?;
        }
        let kind = f
            .part_type
            .ok_or_else(|| file_error(path, "no Type=".into()))?;
        let data_only = f.format.map(|(_, l)| l).or(f.copy.first().map(|&(_, l)| l));
        if let (Some(line), false) = (data_only, kind.role == Role::Data) {
            let why = format!(
                "Type={}: only the data partition has Format= and CopyFiles=",
                kind.name()
            );
            return Err(line_error(path, line, why));
        }
        let verity = checked_verity(path, kind, f.verity)? != Verity::Off;
        if verity && f.match_key.is_none() {
            return Err(file_error(path, "Verity= needs VerityMatchKey=".into()));
        }
        if f.grow_fs.is_some() && kind.role != Role::Data {
            warn!(
                "{}: GrowFileSystem= applies to data partitions only; ignored",
                path.display()
            );
        }
        let flags = Some(repart_flags(kind.role, f.read_only, f.grow_fs));
        Ok(Partition {
            path: path.to_owned(),
            kind,
            format: f.format.map(|(fs, _)| fs),
            copy: f.copy,
            verity,
            match_key: f.match_key,
            gpt: PartitionOverride {
                label: f.label,
                flags,
            },
        })
    }
}

/// `Verity=` as the type requires: `hash` on a verity partition, `signature` on a signature
/// partition, `data` or `off` (the default) on the data partition.
pub(super) fn checked_verity(
    path: &Path,
    kind: PartType,
    given: Option<(Verity, usize)>,
) -> Result<Verity, RepartError> {
    let want = Verity::of(kind.role);
    let data = kind.role == Role::Data;
    match given {
        Some((v, _)) if v == want || (data && v == Verity::Off) => Ok(v),
        None if data => Ok(Verity::Off),
        Some((v, line)) => {
            let (v, ty, want) = (v.name(), kind.name(), want.name());
            let why = format!("Verity={v} on Type={ty}: expected Verity={want}");
            Err(line_error(path, line, why))
        }
        None => {
            let why = format!("Type={} needs Verity={}", kind.name(), want.name());
            Err(file_error(path, why))
        }
    }
}

/// GPT flags as systemd-repart 252 sets them: `ReadOnly=` defaults to on for the verity hash
/// partition; `GrowFileSystem=` (data partitions only) defaults to on unless read-only. Unlike
/// 252, `ReadOnly=` counts on the signature partition too (as in later systemd versions).
pub(super) fn repart_flags(role: Role, read_only: Option<bool>, grow_fs: Option<bool>) -> u64 {
    let read_only = read_only.unwrap_or(role == Role::Verity);
    let grow_fs = role == Role::Data && grow_fs.unwrap_or(!read_only);
    let mut flags = 0;
    if read_only {
        flags |= gpt::FLAG_READ_ONLY;
    }
    if grow_fs {
        flags |= gpt::FLAG_GROW_FS;
    }
    flags
}
