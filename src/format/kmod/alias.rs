//! kmod's alias matching: `alias_normalize`, glibc's `fnmatch(pattern, alias, 0)` (C locale,
//! without exponential backtracking) and an index of alias patterns by their literal prefix.

use std::borrow::Cow;
use std::collections::HashMap;

/// Appends `alias` as kmod's `alias_normalize` stores and looks it up: `-` becomes `_` outside
/// bracket expressions. False (and nothing appended) for an unmatched `[` or `]`, which
/// depmod skips and modprobe rejects.
fn push_normalized(alias: &str, out: &mut String) -> bool {
    let start = out.len();
    let (mut in_bracket, mut copied) = (false, 0);
    for (i, b) in alias.bytes().enumerate() {
        match b {
            b'[' => in_bracket = true,
            b']' if in_bracket => in_bracket = false,
            b']' => {
                out.truncate(start);
                return false;
            }
            b'-' if !in_bracket => {
                out.push_str(&alias[copied..i]);
                out.push('_');
                copied = i + 1;
            }
            _ => {}
        }
    }
    out.push_str(&alias[copied..]);
    if in_bracket {
        out.truncate(start);
    }
    !in_bracket
}

/// Where the literal text of a normalized pattern ends: at its first `*`, `?` or `[` (as
/// kmod's index walk; a backslash before that is literal there).
fn literal_len(pattern: &str) -> usize {
    let wild = pattern
        .bytes()
        .position(|b| matches!(b, b'*' | b'?' | b'['));
    wild.unwrap_or(pattern.len())
}

/// glibc's `fnmatch(pattern, text, 0)` in the C locale: `*` any bytes (`/` too), `?` one
/// byte, `[...]` a set with ranges, `!`/`^` negation and a leading literal `]`, `\` quoting
/// the next byte (a trailing one never matches), an unclosed `[` literal. A mismatch retries
/// from the last `*` only (at the next copy of the literal byte after it), so the work is at
/// most pattern length × text length.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last star: the pattern after it and where in the text that part is tried.
    let mut star: Option<(usize, usize)> = None;
    loop {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                if p == pattern.len() {
                    return true;
                }
                star = Some((p, t));
                continue;
            }
            Some(_) if t < text.len() => {
                if let Some(next) = atom(pattern, p, text[t]) {
                    (p, t) = (next, t + 1);
                    continue;
                }
            }
            None if t == text.len() => return true,
            _ => {}
        }
        let Some((sp, st)) = star else { return false };
        let Some(rest) = text.get(st + 1..) else {
            return false;
        };
        let skip = match pattern[sp] {
            b'?' | b'[' | b'\\' => Some(0),
            lit => rest.iter().position(|&c| c == lit),
        };
        let Some(skip) = skip else { return false };
        (p, t) = (sp, st + 1 + skip);
        star = Some((p, t));
    }
}

/// Whether the single-byte atom at `pattern[p]` (not `*`) matches `c`; the index after it if so.
fn atom(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'[' => match bracket(pattern, p + 1, c) {
            Some((hit, next)) => hit.then_some(next),
            None => (c == b'[').then_some(p + 1),
        },
        b'\\' => (pattern.get(p + 1) == Some(&c)).then_some(p + 2),
        lit => (lit == c).then_some(p + 1),
    }
}

/// The bracket expression whose body starts at `pattern[i]` against `c`: whether it matches
/// and the index after its `]`; None when no `]` closes it.
fn bracket(pattern: &[u8], mut i: usize, c: u8) -> Option<(bool, usize)> {
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    i += usize::from(negate);
    let start = i;
    let mut hit = false;
    loop {
        let (lo, next) = bracket_char(pattern, i)?;
        if lo == b']' && i > start && pattern[i] == b']' {
            return Some((hit != negate, i + 1));
        }
        i = next;
        let mut hi = lo;
        if pattern.get(i) == Some(&b'-') && pattern.get(i + 1).is_some_and(|&b| b != b']') {
            (hi, i) = bracket_char(pattern, i + 1)?;
        }
        hit |= (lo..=hi).contains(&c);
    }
}

/// The (possibly `\`-quoted) byte at `pattern[i]` inside brackets and the index after it.
fn bracket_char(pattern: &[u8], i: usize) -> Option<(u8, usize)> {
    match *pattern.get(i)? {
        b'\\' => Some((*pattern.get(i + 1)?, i + 2)),
        b => Some((b, i + 1)),
    }
}

/// One pattern: its place in the index's `text`, its literal prefix length, its module.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    len: u32,
    literal: u32,
    module: u32,
}

/// Alias patterns (wildcard-free ones too) → module names, sorted by literal prefix so a
/// lookup walks down the prefixes of the alias and fnmatches only the patterns found there.
/// Modules are numbered in the order first seen, which is depmod's (kmod's result order).
#[derive(Debug, Clone, Default)]
pub struct AliasIndex {
    text: String,
    entries: Vec<Entry>,
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl AliasIndex {
    /// Adds a pattern of `module` (call [`AliasIndex::sort`] before looking up); false when
    /// kmod would reject it (an unmatched bracket).
    pub fn insert(&mut self, alias: &str, module: &str) -> bool {
        let start = self.text.len();
        if !push_normalized(alias, &mut self.text) {
            return false;
        }
        let module = self.id(module);
        self.entries.push(Entry {
            start: start as u32,
            len: (self.text.len() - start) as u32,
            literal: literal_len(&self.text[start..]) as u32,
            module,
        });
        true
    }

    fn id(&mut self, module: &str) -> u32 {
        if let Some(last) = self
            .entries
            .last()
            .filter(|e| self.names[e.module as usize] == module)
        {
            return last.module;
        }
        let plain = !module.bytes().any(|b| matches!(b, b'-' | b'/' | b'.'));
        let name: Cow<str> = match plain {
            true => module.into(),
            false => super::normalize(module).into(),
        };
        if let Some(&id) = self.ids.get(name.as_ref()) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.clone().into_owned());
        self.ids.insert(name.into_owned(), id);
        id
    }

    fn pattern(&self, e: &Entry) -> &str {
        &self.text[e.start as usize..(e.start + e.len) as usize]
    }

    fn literal(&self, e: &Entry) -> &[u8] {
        &self.text.as_bytes()[e.start as usize..(e.start + e.literal) as usize]
    }

    /// Orders the patterns by literal prefix (stable and cheap when a few were appended).
    pub fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| self.literal(a).cmp(self.literal(b)));
        self.entries = entries;
    }

    /// The modules with a pattern matching `alias` (normalized as kmod does), each once, in
    /// the order first seen.
    pub fn lookup(&self, alias: &str) -> Vec<&str> {
        let mut key = String::with_capacity(alias.len());
        if !push_normalized(alias, &mut key) {
            return Vec::new();
        }
        let mut ids = self.matching(key.as_bytes());
        ids.sort_unstable();
        ids.dedup();
        ids.iter()
            .map(|&id| self.names[id as usize].as_str())
            .collect()
    }

    /// Walks the sorted entries down the prefixes of `key`: at depth `n` the range holds the
    /// patterns whose literal prefix starts with `key[..n]`, those exactly `key[..n]` first.
    fn matching(&self, key: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        let (mut lo, mut hi) = (0, self.entries.len());
        for n in 0..=key.len() {
            while lo < hi && self.entries[lo].literal as usize == n {
                let e = &self.entries[lo];
                if fnmatch(&self.pattern(e).as_bytes()[n..], &key[n..]) {
                    out.push(e.module);
                }
                lo += 1;
            }
            let Some(&c) = key.get(n) else { break };
            let range = &self.entries[lo..hi];
            let first = range.partition_point(|e| self.literal(e)[n] < c);
            let end = range.partition_point(|e| self.literal(e)[n] <= c);
            (lo, hi) = (lo + first, lo + end);
        }
        out
    }

    /// How many patterns the index holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        fnmatch(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn glob_stars_and_questions() {
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("*", ""));
        assert!(m("*", "a/b"));
        assert!(m("a*c", "abbbc"));
        assert!(m("a*c", "ac"));
        assert!(!m("a*c", "acb"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("**a**", "xax"));
        assert!(m(
            "pci:v*d*sv*sd*bc01sc08i02*",
            "pci:v1Bd10sv00sd11bc01sc08i02"
        ));
        assert!(!m(
            "pci:v*d*sv*sd*bc01sc08i02*",
            "pci:v1Bd10sv00sd11bc01sc08i03"
        ));
    }

    #[test]
    fn glob_brackets_and_escapes() {
        assert!(m("d0[0-2]*", "d01x"));
        assert!(!m("d0[0-2]*", "d03x"));
        assert!(m("[!0-2]", "3") && m("[^0-2]", "3") && !m("[!0-2]", "1"));
        assert!(m("[]a]", "]") && m("[]a]", "a") && !m("[]a]", "b"));
        assert!(m("[!]a]", "b") && !m("[!]a]", "]"));
        assert!(m("[a-]", "-") && m("[a-]", "a"));
        assert!(m("[ab", "[ab") && !m("[ab", "a"));
        assert!(m("[\\]]", "]") && m("[a\\-z]", "-") && !m("[a\\-z]", "b"));
        assert!(m("\\*", "*") && !m("\\*", "a"));
        assert!(!m("a\\", "a") && !m("a\\", "a\\"));
        assert!(!m("[z-a]", "m"));
    }

    #[test]
    fn glob_pathological_is_fast() {
        let text = "a".repeat(20_000);
        let started = std::time::Instant::now();
        assert!(!m("*a*a*a*a*a*a*a*a*b", &text));
        assert!(!m(&format!("{}b", "*[a]".repeat(60)), &text));
        assert!(!m(&format!("{}b", "*?".repeat(60)), &text));
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn normalizes_as_kmod() {
        let n = |s: &str| {
            let mut out = String::new();
            push_normalized(s, &mut out).then_some(out)
        };
        assert_eq!(n("fs-ext4").as_deref(), Some("fs_ext4"));
        assert_eq!(n("a-[0-9]-b").as_deref(), Some("a_[0-9]_b"));
        assert_eq!(n("a]"), None);
        assert_eq!(n("a[b"), None);
        assert_eq!(n("[]a]"), None);
    }

    #[test]
    fn index_walks_prefixes() {
        let mut idx = AliasIndex::default();
        for (a, module) in [
            ("usb:v13FDp3940d0[0-2]*dc*", "uas"),
            ("usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*", "usb-storage"),
            ("usb:v13FDp3940d0[0-2]*dc*", "usb_storage"),
            ("fs-ext4", "ext4"),
            ("fs-ext", "ext2"),
            ("bad]", "x"),
        ] {
            idx.insert(a, module);
        }
        idx.sort();
        assert_eq!(idx.len(), 5);
        let key = "usb:v13FDp3940d0100dc00dsc00dp00ic08isc06ip50in00";
        assert_eq!(idx.lookup(key), ["uas", "usb_storage"]);
        assert_eq!(idx.lookup("fs_ext4"), ["ext4"]);
        assert_eq!(idx.lookup("fs-ext"), ["ext2"]);
        assert!(idx.lookup("fs-ext3").is_empty());
        assert!(idx.lookup("usb:v1]").is_empty());
    }
}
