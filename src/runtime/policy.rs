//! Image policies in systemd's syntax (`root=signed+absent:usr=…`), parsed and evaluated.
//!
//! The language is systemd's (`systemd.image-policy(7)`, v254+): `:`-separated `PARTITION=FLAGS`
//! rules, an empty partition name for the default rule, `+`-separated flags, and the whole-policy
//! shorthands `*` (everything open), `-` or the empty string (everything ignored: `=unused+absent`)
//! and `~` (everything absent). Evaluation follows systemd's: a rule that names no use flag allows
//! them all (likewise for each read-only/growfs pair), verity and signature partitions without a
//! rule inherit from their data partition, and protection flags that make no sense for a
//! partition are masked off.
//!
//! Where we differ from systemd (all on the refusing side):
//! - the filesystem-type flags of newer systemd (`erofs`, `squashfs`, …) are rejected when parsing;
//! - backslash escapes are not interpreted (systemd's word splitter would unescape them);
//! - a rule that pins a GPT flag (`read-only-on`, `growfs-off`, …) for a partition makes
//!   [`Policy::decide`] refuse it, as the flags are not checked here;
//! - encrypted partitions are not supported, so `encrypted` alone never admits a partition.

use std::fmt;
use std::str::FromStr;

use crate::format::release::Class;
use crate::image::dissect::Protection;

/// Partition designators in systemd's `PartitionDesignator` order, which is also the output order.
const DESIGNATORS: [&str; 13] = [
    "root",
    "usr",
    "home",
    "srv",
    "esp",
    "xbootldr",
    "swap",
    "root-verity",
    "usr-verity",
    "root-verity-sig",
    "usr-verity-sig",
    "tmp",
    "var",
];
const ROOT: usize = 0;
const USR: usize = 1;

const VERITY: u16 = 1 << 0;
const SIGNED: u16 = 1 << 1;
const ENCRYPTED: u16 = 1 << 2;
const UNPROTECTED: u16 = 1 << 3;
const UNUSED: u16 = 1 << 4;
const ABSENT: u16 = 1 << 5;
const OPEN: u16 = VERITY | SIGNED | ENCRYPTED | UNPROTECTED | UNUSED | ABSENT;
const IGNORE: u16 = UNUSED | ABSENT;
const USE_MASK: u16 = OPEN;
const READ_ONLY_OFF: u16 = 1 << 6;
const READ_ONLY_ON: u16 = 1 << 7;
const READ_ONLY_MASK: u16 = READ_ONLY_OFF | READ_ONLY_ON;
const GROWFS_OFF: u16 = 1 << 8;
const GROWFS_ON: u16 = 1 << 9;
const GROWFS_MASK: u16 = GROWFS_OFF | GROWFS_ON;
const PFLAGS_MASK: u16 = READ_ONLY_MASK | GROWFS_MASK;

/// Flag names as parsed; the single-bit ones also in the order they are printed.
const FLAG_NAMES: [(&str, u16); 12] = [
    ("verity", VERITY),
    ("signed", SIGNED),
    ("encrypted", ENCRYPTED),
    ("unprotected", UNPROTECTED),
    ("unused", UNUSED),
    ("absent", ABSENT),
    ("read-only-on", READ_ONLY_ON),
    ("read-only-off", READ_ONLY_OFF),
    ("growfs-off", GROWFS_OFF),
    ("growfs-on", GROWFS_ON),
    ("open", OPEN),
    ("ignore", IGNORE),
];
/// Filesystem-type flags of newer systemd, which we do not enforce.
const FSTYPE_FLAGS: [&str; 7] = ["btrfs", "erofs", "ext4", "f2fs", "squashfs", "vfat", "xfs"];
/// Whole-policy shorthands: the default rule they stand for.
const SHORTHANDS: [(&str, u16); 3] = [("*", OPEN), ("-", IGNORE), ("~", ABSENT)];
/// Whitespace systemd strips around names and flags.
const WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// An image policy: per-partition rules plus a default rule.
///
/// Rules are kept as written, with unspecified flag groups filled in (so `root=` equals
/// `root=open`); equality means "defined the same way", not "decides the same way".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    entries: [Option<u16>; DESIGNATORS.len()],
    default: u16,
}

/// Why a policy string does not parse; positions are byte offsets into the string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("expected PARTITION=FLAGS at byte {pos} of the image policy, got {entry:?}")]
    MissingEquals { entry: String, pos: usize },
    #[error("unknown partition {name:?} at byte {pos} of the image policy")]
    UnknownPartition { name: String, pos: usize },
    #[error("partition {name:?} listed twice in the image policy (again at byte {pos})")]
    DuplicatePartition { name: String, pos: usize },
    #[error("default rule (=FLAGS) given twice in the image policy (again at byte {pos})")]
    DuplicateDefault { pos: usize },
    #[error("unknown image policy flag {flag:?} at byte {pos}")]
    UnknownFlag { flag: String, pos: usize },
    #[error("image policy flag {flag:?} at byte {pos}: filesystem-type flags are not supported")]
    UnsupportedFlag { flag: String, pos: usize },
    #[error("empty image policy flag at byte {pos}")]
    EmptyFlag { pos: usize },
}

/// A policy's refusal to use a partition, as a readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    message: String,
}

impl Protection {
    const STRONGEST_FIRST: [Protection; 3] = [
        Protection::Signed,
        Protection::Verity,
        Protection::Unprotected,
    ];

    fn flag(self) -> u16 {
        match self {
            Protection::Unprotected => UNPROTECTED,
            Protection::Verity => VERITY,
            Protection::Signed => SIGNED,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Protection::Unprotected => "unprotected",
            Protection::Verity => "only verity-protected",
            Protection::Signed => "signed",
        }
    }
}

impl Policy {
    /// systemd's `image_policy_sysext`: root and usr may be verity, signed, encrypted,
    /// unprotected or absent; everything else is ignored.
    pub fn sysext() -> Policy {
        Policy::root_usr(VERITY | SIGNED | ENCRYPTED | UNPROTECTED | ABSENT)
    }

    /// systemd's `image_policy_sysext_strict`: root and usr must be signed or absent.
    pub fn sysext_strict() -> Policy {
        Policy::root_usr(SIGNED | ABSENT)
    }

    /// systemd's `image_policy_confext`: only the root partition counts (/etc is all a confext
    /// carries); verity, signed, encrypted, unprotected or absent.
    pub fn confext() -> Policy {
        let mut policy = Policy::with_default(IGNORE);
        policy.entries[ROOT] = Some(extend(VERITY | SIGNED | ENCRYPTED | UNPROTECTED | ABSENT));
        policy
    }

    /// systemd's `image_policy_confext_strict`: the root partition signed or absent.
    pub fn confext_strict() -> Policy {
        let mut policy = Policy::with_default(IGNORE);
        policy.entries[ROOT] = Some(extend(SIGNED | ABSENT));
        policy
    }

    /// The class's default: systemd's, or its strict one (for /.extra, which systemd-stub
    /// fills from the untrusted ESP).
    pub fn default_for(class: Class, strict: bool) -> Policy {
        match (class, strict) {
            (Class::Sysext, false) => Policy::sysext(),
            (Class::Sysext, true) => Policy::sysext_strict(),
            (Class::Confext, false) => Policy::confext(),
            (Class::Confext, true) => Policy::confext_strict(),
        }
    }

    /// Ours in boot mode: the strict policy of the class (`root=signed+absent:usr=signed+absent`
    /// for a sysext) with the default `=ignore`, exactly systemd's strict policies.
    pub fn boot_default(class: Class) -> Policy {
        Policy::default_for(class, true)
    }

    /// May a `designator` ("root"/"usr") partition offering `available` be used, and how?
    ///
    /// Returns the protection to activate with: the strongest the policy allows among those
    /// the image offers. This only says what is allowed: a caller told `Signed` whose signature
    /// check then fails must refuse the image, never retry with a weaker protection.
    pub fn decide(&self, designator: &str, available: Protection) -> Result<Protection, Refusal> {
        let d = designator_index(designator).ok_or_else(|| Refusal {
            message: format!("unknown partition designator {designator:?}"),
        })?;
        let flags = self.flags_for(d);
        let Some(chosen) = Protection::STRONGEST_FIRST
            .into_iter()
            .find(|p| *p <= available && flags & p.flag() != 0)
        else {
            return Err(unusable(d, flags, available));
        };
        if flags & READ_ONLY_MASK != READ_ONLY_MASK || flags & GROWFS_MASK != GROWFS_MASK {
            return Err(requires(
                d,
                flags,
                "initrd-sysext does not check GPT partition flags (read-only, growfs)",
            ));
        }
        Ok(chosen)
    }

    /// Whether the designator may be absent (used to check that an image without a usr
    /// partition is OK etc.). Unknown designators may not.
    pub fn allows_absent(&self, designator: &str) -> bool {
        designator_index(designator).is_some_and(|d| self.flags_for(d) & ABSENT != 0)
    }

    fn root_usr(flags: u16) -> Policy {
        let mut policy = Policy::with_default(IGNORE);
        policy.entries[ROOT] = Some(extend(flags));
        policy.entries[USR] = Some(extend(flags));
        policy
    }

    fn with_default(default: u16) -> Policy {
        Policy {
            entries: [None; DESIGNATORS.len()],
            default: extend(default),
        }
    }

    /// systemd's `image_policy_get_exhaustively`: the effective flags for a designator.
    fn flags_for(&self, d: usize) -> u16 {
        self.rule_for(d)
            .unwrap_or_else(|| normalized(d, self.default))
    }

    /// systemd's `image_policy_get`: the designator's own rule, or one derived from its data
    /// partition's rule for verity and signature partitions.
    fn rule_for(&self, d: usize) -> Option<u16> {
        if let Some(flags) = self.entries[d] {
            return Some(normalized(d, flags));
        }
        let (data, needed) = protected_data(d)?;
        let data_flags = self.rule_for(data)?;
        (data_flags & needed != 0).then(|| {
            normalized(
                d,
                UNPROTECTED | data_flags & (UNUSED | ABSENT | PFLAGS_MASK),
            )
        })
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Policy, PolicyError> {
        if s.is_empty() {
            return Ok(Policy::with_default(IGNORE));
        }
        if let Some((_, flags)) = SHORTHANDS.iter().find(|(name, _)| *name == s) {
            return Ok(Policy::with_default(*flags));
        }
        let mut rules = Rules::default();
        for entry in Token::whole(s).pieces(':') {
            let (name, flags) = entry.split_rule()?;
            *rules.slot(name)? = Some(extend(parse_flags(flags)?));
        }
        Ok(Policy {
            entries: rules.entries,
            default: rules.default.unwrap_or(extend(IGNORE)),
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.iter().all(Option::is_none) {
            if let Some((name, _)) = SHORTHANDS.iter().find(|(_, v)| extend(*v) == self.default) {
                return f.write_str(name);
            }
        }
        let mut rules: Vec<String> = DESIGNATORS
            .iter()
            .zip(&self.entries)
            .filter_map(|(name, flags)| flags.map(|v| format!("{name}={}", flags_to_string(v))))
            .collect();
        if self.default != extend(IGNORE) {
            rules.push(format!("={}", flags_to_string(self.default)));
        }
        f.write_str(&rules.join(":"))
    }
}

/// Rules collected while parsing, to catch duplicates.
#[derive(Default)]
struct Rules {
    entries: [Option<u16>; DESIGNATORS.len()],
    default: Option<u16>,
}

impl Rules {
    /// Where the rule for `name` goes (the default rule for an empty name); free or an error.
    fn slot(&mut self, name: Token) -> Result<&mut Option<u16>, PolicyError> {
        let slot = if name.text.is_empty() {
            &mut self.default
        } else {
            let d = designator_index(name.text).ok_or_else(|| PolicyError::UnknownPartition {
                name: name.text.to_string(),
                pos: name.pos,
            })?;
            &mut self.entries[d]
        };
        if slot.is_some() {
            return Err(match name.text {
                "" => PolicyError::DuplicateDefault { pos: name.pos },
                _ => PolicyError::DuplicatePartition {
                    name: name.text.to_string(),
                    pos: name.pos,
                },
            });
        }
        Ok(slot)
    }
}

/// A piece of the policy string and its byte offset.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Token<'a> {
    fn whole(text: &'a str) -> Token<'a> {
        Token { text, pos: 0 }
    }

    /// The pieces between separators, empty ones included.
    fn pieces(self, sep: char) -> impl Iterator<Item = Token<'a>> {
        self.text.split(sep).scan(self.pos, move |pos, text| {
            let piece = Token { text, pos: *pos };
            *pos += text.len() + sep.len_utf8();
            Some(piece)
        })
    }

    fn trimmed(self) -> Token<'a> {
        let start = self.text.trim_start_matches(WHITESPACE);
        Token {
            text: start.trim_end_matches(WHITESPACE),
            pos: self.pos + self.text.len() - start.len(),
        }
    }

    /// `NAME=FLAGS` → (NAME, FLAGS), both trimmed.
    fn split_rule(self) -> Result<(Token<'a>, Token<'a>), PolicyError> {
        let (name, flags) =
            self.text
                .split_once('=')
                .ok_or_else(|| PolicyError::MissingEquals {
                    entry: self.text.to_string(),
                    pos: self.pos,
                })?;
        let name = Token {
            text: name,
            pos: self.pos,
        };
        let flags = Token {
            text: flags,
            pos: self.pos + name.text.len() + 1,
        };
        Ok((name.trimmed(), flags.trimmed()))
    }
}

fn designator_index(name: &str) -> Option<usize> {
    DESIGNATORS.iter().position(|d| *d == name)
}

/// For a verity or signature partition: its data partition and the data flags it derives from.
fn protected_data(d: usize) -> Option<(usize, u16)> {
    match DESIGNATORS[d] {
        "root-verity" => Some((ROOT, VERITY | SIGNED)),
        "usr-verity" => Some((USR, VERITY | SIGNED)),
        "root-verity-sig" => Some((ROOT, SIGNED)),
        "usr-verity-sig" => Some((USR, SIGNED)),
        _ => None,
    }
}

/// An unspecified flag group allows every option of the group.
fn extend(mut flags: u16) -> u16 {
    for mask in [USE_MASK, READ_ONLY_MASK, GROWFS_MASK] {
        if flags & mask == 0 {
            flags |= mask;
        }
    }
    flags
}

/// systemd's `partition_policy_normalized_flags`: extended, then masked to what makes sense
/// for the designator.
fn normalized(d: usize, flags: u16) -> u16 {
    let mut flags = extend(flags);
    if protected_data(d).is_some() {
        flags &= !(VERITY | SIGNED | ENCRYPTED);
    }
    if d != ROOT && d != USR {
        flags &= !(VERITY | SIGNED);
    }
    if flags & USE_MASK == ABSENT {
        flags &= !PFLAGS_MASK;
    }
    flags
}

fn parse_flags(flags: Token) -> Result<u16, PolicyError> {
    if flags.text.is_empty() || flags.text == "-" {
        return Ok(0);
    }
    flags
        .pieces('+')
        .try_fold(0, |all, flag| Ok(all | parse_flag(flag.trimmed())?))
}

fn parse_flag(flag: Token) -> Result<u16, PolicyError> {
    if flag.text.is_empty() {
        return Err(PolicyError::EmptyFlag { pos: flag.pos });
    }
    if let Some((_, value)) = FLAG_NAMES.iter().find(|(name, _)| *name == flag.text) {
        return Ok(*value);
    }
    let (flag, pos) = (flag.text.to_string(), flag.pos);
    Err(match FSTYPE_FLAGS.contains(&flag.as_str()) {
        true => PolicyError::UnsupportedFlag { flag, pos },
        false => PolicyError::UnknownFlag { flag, pos },
    })
}

/// systemd's simplified spelling: `open`/`ignore` shortcuts, GPT flag pairs only when pinned.
fn flags_to_string(flags: u16) -> String {
    let shortcut = [("open", OPEN), ("ignore", IGNORE)]
        .into_iter()
        .find(|(_, v)| flags & USE_MASK == *v);
    let mut names: Vec<&str> = match shortcut {
        Some((name, _)) => vec![name],
        None => single_flags(flags & USE_MASK).collect(),
    };
    for mask in [READ_ONLY_MASK, GROWFS_MASK] {
        if flags & mask != mask {
            names.extend(single_flags(flags & mask));
        }
    }
    names.join("+")
}

fn single_flags(flags: u16) -> impl Iterator<Item = &'static str> {
    FLAG_NAMES
        .into_iter()
        .filter(move |(_, v)| v.count_ones() == 1 && flags & v != 0)
        .map(|(name, _)| name)
}

/// The refusal when no protection the policy allows is on offer.
fn unusable(d: usize, flags: u16, available: Protection) -> Refusal {
    if flags & (SIGNED | VERITY | UNPROTECTED) != 0 {
        requires(d, flags, &format!("the image is {}", available.describe()))
    } else if flags & ENCRYPTED != 0 {
        requires(
            d,
            flags,
            "initrd-sysext does not support encrypted partitions",
        )
    } else {
        Refusal {
            message: format!(
                "image policy does not allow using a {} partition",
                DESIGNATORS[d]
            ),
        }
    }
}

fn requires(d: usize, flags: u16, problem: &str) -> Refusal {
    Refusal {
        message: format!(
            "policy requires {}={} but {problem}",
            DESIGNATORS[d],
            flags_to_string(flags)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::Rng;
    use Protection::{Signed, Unprotected, Verity};

    fn parse(s: &str) -> Policy {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> PolicyError {
        s.parse::<Policy>()
            .expect_err(&format!("{s:?} should not parse"))
    }

    fn error_pos(e: &PolicyError) -> usize {
        match e {
            PolicyError::MissingEquals { pos, .. }
            | PolicyError::UnknownPartition { pos, .. }
            | PolicyError::DuplicatePartition { pos, .. }
            | PolicyError::DuplicateDefault { pos }
            | PolicyError::UnknownFlag { pos, .. }
            | PolicyError::UnsupportedFlag { pos, .. }
            | PolicyError::EmptyFlag { pos } => *pos,
        }
    }

    /// `decide` for an image offering Unprotected, Verity and Signed, in that order.
    fn decisions(p: &Policy, designator: &str) -> Vec<Result<Protection, Refusal>> {
        [Unprotected, Verity, Signed]
            .into_iter()
            .map(|a| p.decide(designator, a))
            .collect()
    }

    #[test]
    fn shorthands_mean_what_systemd_says() {
        assert_eq!(
            parse("*"),
            parse("=verity+signed+encrypted+unprotected+unused+absent")
        );
        assert_eq!(parse("-"), parse("=unused+absent"));
        assert_eq!(parse(""), parse("=unused+absent"));
        assert_eq!(parse("~"), parse("=absent"));
        for d in DESIGNATORS {
            assert!(parse("*").allows_absent(d));
            assert!(parse("-").allows_absent(d));
            assert!(parse("~").allows_absent(d));
        }
        assert_eq!(parse("*").decide("root", Signed), Ok(Signed));
        assert_eq!(parse("*").decide("usr", Unprotected), Ok(Unprotected));
        for shorthand in ["-", "", "~"] {
            let refusal = parse(shorthand).decide("root", Signed).unwrap_err();
            assert_eq!(
                refusal.to_string(),
                "image policy does not allow using a root partition"
            );
        }
    }

    #[test]
    fn shorthands_print_as_shorthands() {
        for (input, shown) in [
            ("*", "*"),
            ("=open", "*"),
            ("-", "-"),
            ("", "-"),
            ("=ignore", "-"),
            ("=absent+unused", "-"),
            ("~", "~"),
            ("=absent", "~"),
        ] {
            assert_eq!(parse(input).to_string(), shown, "{input:?}");
        }
    }

    #[test]
    fn default_rule_applies_to_unlisted_partitions() {
        let p = parse("root=signed:=verity+absent");
        assert_eq!(p.decide("usr", Signed), Ok(Verity));
        assert_eq!(
            p.decide("usr", Unprotected).unwrap_err().to_string(),
            "policy requires usr=verity+absent but the image is unprotected"
        );
        assert!(p.allows_absent("usr"));
        assert!(!p.allows_absent("root"));
        // Without a default rule, unlisted partitions are ignored.
        let p = parse("root=signed");
        assert!(p.allows_absent("usr"));
        assert!(p.decide("usr", Signed).is_err());
    }

    #[test]
    fn per_partition_flags_and_combinations() {
        let p = parse("root=unprotected:usr=verity+signed+absent");
        assert_eq!(
            decisions(&p, "root"),
            [Ok(Unprotected), Ok(Unprotected), Ok(Unprotected)]
        );
        assert_eq!(decisions(&p, "usr")[1..], [Ok(Verity), Ok(Signed)]);
        assert!(decisions(&p, "usr")[0].is_err());
        assert!(!p.allows_absent("root"));
        assert!(p.allows_absent("usr"));
        // "open" and "ignore" are the combinations they abbreviate.
        assert_eq!(
            parse("root=open"),
            parse("root=verity+signed+encrypted+unprotected+unused+absent")
        );
        assert_eq!(parse("usr=ignore"), parse("usr=absent+unused"));
        // No use flag at all means every use flag; "-" spells nothing.
        assert_eq!(parse("root="), parse("root=open"));
        assert_eq!(parse("root=-"), parse("root=open"));
        assert_eq!(parse("root=read-only-on"), parse("root=open+read-only-on"));
        // systemd strips whitespace around names and flags.
        assert_eq!(
            parse(" root = signed + absent :usr=verity"),
            parse("root=signed+absent:usr=verity")
        );
    }

    #[test]
    fn protection_flags_are_masked_per_partition() {
        // home has no verity concept, so only unprotected remains of "open".
        assert_eq!(
            decisions(&parse("*"), "home"),
            [Ok(Unprotected), Ok(Unprotected), Ok(Unprotected)]
        );
        // ... and a home rule of only "verity" allows nothing.
        assert!(parse("home=verity").decide("home", Signed).is_err());
        assert!(!parse("home=verity").allows_absent("home"));
        // Verity partitions are the protection: they are used as they are.
        assert_eq!(parse("*").decide("root-verity", Signed), Ok(Unprotected));
    }

    #[test]
    fn verity_partitions_inherit_from_their_data_partition() {
        let p = parse("root=signed:usr=verity+absent");
        assert!(!p.allows_absent("root-verity"));
        assert!(!p.allows_absent("root-verity-sig"));
        assert!(p.allows_absent("usr-verity"));
        assert_eq!(p.decide("root-verity-sig", Unprotected), Ok(Unprotected));
        // usr does not allow signed, so usr-verity-sig falls back to the default (ignore).
        assert!(p.decide("usr-verity-sig", Unprotected).is_err());
        // An explicit rule wins over the derived one.
        let p = parse("root=signed:root-verity=absent");
        assert!(p.allows_absent("root-verity"));
        assert!(p.decide("root-verity", Unprotected).is_err());
    }

    #[test]
    fn gpt_flag_rules_are_refused_not_ignored() {
        let p = parse("usr=verity+read-only-on:root=verity+read-only-on+read-only-off");
        assert_eq!(
            p.decide("usr", Verity).unwrap_err().to_string(),
            "policy requires usr=verity+read-only-on but initrd-sysext does not check GPT \
             partition flags (read-only, growfs)"
        );
        assert!(parse("usr=growfs-off").decide("usr", Signed).is_err());
        // Both flags of a pair set means the flag does not matter.
        assert_eq!(p.decide("root", Verity), Ok(Verity));
        // A partition that must be absent is refused for being there, not for its GPT flags.
        assert_eq!(
            parse("usr=absent+read-only-on").decide("usr", Signed),
            parse("usr=absent").decide("usr", Signed)
        );
        assert!(parse("usr=absent").decide("usr", Signed).is_err());
    }

    #[test]
    fn encrypted_only_is_refused() {
        let refusal = parse("root=encrypted").decide("root", Signed).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "policy requires root=encrypted but initrd-sysext does not support encrypted partitions"
        );
    }

    #[test]
    fn unknown_designators_are_refused() {
        assert!(parse("*").decide("opt", Signed).is_err());
        assert!(!parse("*").allows_absent("opt"));
    }

    #[test]
    fn defaults_match_systemd() {
        assert_eq!(
            Policy::sysext().to_string(),
            "root=verity+signed+encrypted+unprotected+absent:usr=verity+signed+encrypted+unprotected+absent"
        );
        assert_eq!(
            Policy::sysext_strict().to_string(),
            "root=signed+absent:usr=signed+absent"
        );
        assert_eq!(
            Policy::boot_default(Class::Sysext),
            parse("root=signed+absent:usr=signed+absent:=unused+absent")
        );
        assert_eq!(
            Policy::confext().to_string(),
            "root=verity+signed+encrypted+unprotected+absent"
        );
        assert_eq!(
            Policy::boot_default(Class::Confext).to_string(),
            "root=signed+absent"
        );
        // A confext's usr partition is ignored: nothing in it counts.
        assert!(Policy::confext().decide("usr", Signed).is_err());
    }

    #[test]
    fn decide_for_the_defaults() {
        for d in ["root", "usr"] {
            assert_eq!(
                decisions(&Policy::sysext(), d),
                [Ok(Unprotected), Ok(Verity), Ok(Signed)]
            );
            for strict in [Policy::sysext_strict(), Policy::boot_default(Class::Sysext)] {
                let got = decisions(&strict, d);
                assert_eq!(
                    got[0].as_ref().unwrap_err().to_string(),
                    format!("policy requires {d}=signed+absent but the image is unprotected")
                );
                assert_eq!(
                    got[1].as_ref().unwrap_err().to_string(),
                    format!(
                        "policy requires {d}=signed+absent but the image is only verity-protected"
                    )
                );
                assert_eq!(got[2], Ok(Signed));
                assert!(strict.allows_absent(d));
            }
            assert!(Policy::sysext().allows_absent(d));
        }
        for p in [Policy::sysext(), Policy::sysext_strict()] {
            assert!(p.decide("home", Unprotected).is_err());
            assert!(p.allows_absent("home"));
        }
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (input, canonical) in [
            (
                "usr=signed+verity:root=absent",
                "root=absent:usr=verity+signed",
            ),
            ("root=unused+absent:=open", "root=ignore:=open"),
            ("root=", "root=open"),
            ("root=read-only-off+verity", "root=verity+read-only-off"),
            ("root=verity+read-only-on+read-only-off", "root=verity"),
            ("var=growfs-on+growfs-off+encrypted", "var=encrypted"),
            ("=absent+growfs-on", "=absent+growfs-on"),
            ("tmp=open+growfs-on:=verity", "tmp=open+growfs-on:=verity"),
            (
                "root-verity-sig=absent:esp=unprotected",
                "esp=unprotected:root-verity-sig=absent",
            ),
        ] {
            let p = parse(input);
            assert_eq!(p.to_string(), canonical, "{input:?}");
            assert_eq!(parse(canonical), p, "{canonical:?}");
        }
    }

    #[test]
    fn parse_errors_name_token_and_position() {
        let cases = [
            (
                "root=signed:hom=verity",
                PolicyError::UnknownPartition {
                    name: "hom".into(),
                    pos: 12,
                },
            ),
            (
                "root=signed+sgned",
                PolicyError::UnknownFlag {
                    flag: "sgned".into(),
                    pos: 12,
                },
            ),
            (
                "root= signed + sgned",
                PolicyError::UnknownFlag {
                    flag: "sgned".into(),
                    pos: 15,
                },
            ),
            (
                "usr=signed+erofs",
                PolicyError::UnsupportedFlag {
                    flag: "erofs".into(),
                    pos: 11,
                },
            ),
            (
                "root=signed:usr=verity: root=absent",
                PolicyError::DuplicatePartition {
                    name: "root".into(),
                    pos: 24,
                },
            ),
            ("=ignore:=open", PolicyError::DuplicateDefault { pos: 8 }),
            ("root=signed++absent", PolicyError::EmptyFlag { pos: 12 }),
            ("root=signed+", PolicyError::EmptyFlag { pos: 12 }),
            ("root=+signed", PolicyError::EmptyFlag { pos: 5 }),
            (
                "root=signed+-",
                PolicyError::UnknownFlag {
                    flag: "-".into(),
                    pos: 12,
                },
            ),
            (
                "root",
                PolicyError::MissingEquals {
                    entry: "root".into(),
                    pos: 0,
                },
            ),
            (
                "root=signed:",
                PolicyError::MissingEquals {
                    entry: "".into(),
                    pos: 12,
                },
            ),
            (
                "root=signed::usr=verity",
                PolicyError::MissingEquals {
                    entry: "".into(),
                    pos: 12,
                },
            ),
            (
                "**",
                PolicyError::MissingEquals {
                    entry: "**".into(),
                    pos: 0,
                },
            ),
            (
                "root=signed=absent",
                PolicyError::UnknownFlag {
                    flag: "signed=absent".into(),
                    pos: 5,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(err(input), expected, "{input:?}");
        }
        assert_eq!(
            err("root=signed:hom=verity").to_string(),
            "unknown partition \"hom\" at byte 12 of the image policy"
        );
    }

    /// One random edit: a byte removed, replaced or inserted, or (mostly) a whole rule or flag
    /// inserted before a separator, which tends to keep the input valid.
    fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
        const BYTES: &[u8] = b":=+-*~ \tabcdefgilnorstuvy\\\xff\xc3";
        const WORDS: [&str; 8] = [
            ":usr=verity",
            "+absent",
            "+read-only-on",
            ":=open",
            ":home=ignore",
            "+growfs-off",
            ":root-verity-sig=",
            "+unused",
        ];
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if at < input.len() => {
                input.remove(at);
            }
            1 if at < input.len() => input[at] = BYTES[rng.below(BYTES.len())],
            2 => input.insert(at, BYTES[rng.below(BYTES.len())]),
            _ => {
                let boundary = input[at..]
                    .iter()
                    .position(|b| b":+".contains(b))
                    .map_or(input.len(), |i| at + i);
                let word = WORDS[rng.below(WORDS.len())].bytes();
                input.splice(boundary..boundary, word);
            }
        }
    }

    /// What must hold for any input: no panic, errors inside the input, and a parsed policy
    /// prints to a string that parses back to it. Returns whether the input parsed.
    fn check(input: &str) -> bool {
        match input.parse::<Policy>() {
            Ok(p) => {
                assert_eq!(p.to_string().parse(), Ok(p.clone()), "{input:?}");
                for d in ["root", "usr", "root-verity-sig"] {
                    let _ = decisions(&p, d);
                    let _ = p.allows_absent(d);
                }
                true
            }
            Err(e) => {
                assert!(error_pos(&e) <= input.len(), "{input:?}: {e}");
                false
            }
        }
    }

    #[test]
    fn mutation_fuzz() {
        let seeds = [
            "root=signed+absent:usr=signed+absent",
            "root=verity+signed+encrypted+unprotected+absent:=ignore",
            "usr=verity+read-only-on:root=encrypted:swap=encrypted",
            "root-verity=absent:home=unused:=open",
            "*",
        ];
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let (mut parsed, mut refused) = (0, 0);
        for i in 0..20_000 {
            let mut input = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..=rng.below(3) {
                mutate(&mut rng, &mut input);
            }
            match check(&String::from_utf8_lossy(&input)) {
                true => parsed += 1,
                false => refused += 1,
            }
        }
        // The loop must exercise both paths to mean anything.
        assert!(
            parsed > 1_000 && refused > 1_000,
            "{parsed} parsed, {refused} refused"
        );
    }
}
