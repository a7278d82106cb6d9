//! systemd's unit-file syntax, as mkosi.conf and repart.d use it: `[Section]` headers,
//! `Key=Value` lines, `#`/`;` comments and, in mkosi's dialect, indented continuation lines;
//! systemd's boolean words; and its C-style string escapes (`cescape`/`cunescape`, as in
//! sysext's `work_dir` meta file). Parsed into entries; what they mean is the caller's.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct SyntaxError {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

/// One `Key=Value` assignment (continuation lines joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// What differs between the users of the syntax.
pub struct Dialect {
    /// An indented line continues the previous value (mkosi); else it is a line of its own.
    pub continuations: bool,
    /// The sections allowed; empty: any.
    pub sections: &'static [&'static str],
}

/// mkosi.conf and mkosi.conf.d/*.conf.
pub const MKOSI: Dialect = Dialect {
    continuations: true,
    sections: &[],
};

/// systemd-repart's repart.d/*.conf.
pub const REPART: Dialect = Dialect {
    continuations: false,
    sections: &["Partition"],
};

/// Parses the text of `file` (named in errors).
pub fn parse(file: &Path, text: &str, dialect: &Dialect) -> Result<Vec<Entry>, SyntaxError> {
    let syntax = |line: usize, reason: String| SyntaxError {
        file: file.to_owned(),
        line,
        reason,
    };
    let header = match dialect.sections {
        [only] => format!("[{only}]"),
        _ => "[Section]".to_owned(),
    };
    let expected = || format!("expected {header} or, after it, Key=Value");
    let mut entries: Vec<Entry> = Vec::new();
    let mut section: Option<String> = None;
    let mut continuing = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        let indented = raw.starts_with([' ', '\t']);
        if indented && continuing && dialect.continuations {
            let last = entries.last_mut().expect("continuing follows an entry");
            if !last.value.is_empty() {
                last.value.push('\n');
            }
            last.value.push_str(trimmed);
            continue;
        }
        continuing = false;
        if let Some(name) = trimmed.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| syntax(line, "expected ]".into()))?;
            if name.is_empty() || name.contains(['[', ']']) {
                return Err(syntax(line, "bad section name".into()));
            }
            if !dialect.sections.is_empty() && !dialect.sections.contains(&name) {
                return Err(syntax(line, format!("section [{name}] is not supported")));
            }
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = trimmed
            .split_once('=')
            .ok_or_else(|| syntax(line, expected()))?;
        let section = section.clone().ok_or_else(|| syntax(line, expected()))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(syntax(line, format!("bad key {key:?}")));
        }
        entries.push(Entry {
            section,
            key: key.to_owned(),
            value: value.trim().to_owned(),
            line,
        });
        continuing = true;
    }
    Ok(entries)
}

/// A list value (`Packages=a b`, or one per continuation line); items split on whitespace.
pub fn list(value: &str) -> Vec<String> {
    value.split_whitespace().map(str::to_owned).collect()
}

/// systemd's boolean words (`parse_boolean()`, any case); mkosi takes the same.
pub fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// systemd's `cescape`: `\\`, quotes and `\a\b\f\n\r\t\v` as C escapes, other control
/// bytes and bytes from 0x7f up as three octal digits.
pub fn cescape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\\' | b'"' | b'\'' => {
                out.push('\\');
                out.push(b as char);
            }
            0x07 => out += "\\a",
            0x08 => out += "\\b",
            0x0c => out += "\\f",
            b'\n' => out += "\\n",
            b'\r' => out += "\\r",
            b'\t' => out += "\\t",
            0x0b => out += "\\v",
            b if !(b' '..0x7f).contains(&b) => out += &format!("\\{b:03o}"),
            b => out.push(b as char),
        }
    }
    out
}

/// systemd's `cunescape` of what [`cescape`] writes (and `\xHH`); None for a malformed escape.
pub fn cunescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let c = bytes.next()?;
        let simple = match c {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' | b'"' | b'\'' => Some(c),
            _ => None,
        };
        let value = match (simple, c) {
            (Some(v), _) => v,
            (None, b'x') => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            (None, b'0'..=b'3') => {
                let oct = [c, bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&oct).ok()?, 8).ok()?
            }
            _ => return None,
        };
        out.push(value);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_continuations_and_comments() {
        let text = "# comment\n[Output]\nFormat=directory\n\n[Content]\nPackages=systemd\n         udev\n; other\nBaseTrees=%O/base\nEmpty=\n";
        let e = parse(Path::new("a.conf"), text, &MKOSI).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(
            (e[0].section.as_str(), e[0].key.as_str()),
            ("Output", "Format")
        );
        assert_eq!(e[1].value, "systemd\nudev");
        assert_eq!(list(&e[1].value), ["systemd", "udev"]);
        assert_eq!((e[2].value.as_str(), e[2].line), ("%O/base", 9));
        assert_eq!(e[3].value, "");
    }

    #[test]
    fn repart_dialect_has_no_continuations_and_one_section() {
        let e = parse(
            Path::new("r.conf"),
            "[Partition]\nType=root\n  Format=erofs\n",
            &REPART,
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        let err = parse(
            Path::new("r.conf"),
            "[Partition]\nType=root\n[Foo]\n",
            &REPART,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "r.conf:3: section [Foo] is not supported");
        let err = parse(Path::new("r.conf"), "Type=root\n", &REPART).unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.conf:1: expected [Partition] or, after it, Key=Value"
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        for (text, line) in [
            ("Format=disk\n", 1),
            ("[Output]\nnot an assignment\n", 2),
            ("[Output\n", 1),
            ("[Output]\nBad Key=1\n", 2),
        ] {
            match parse(Path::new("a.conf"), text, &MKOSI) {
                Err(e) => assert_eq!(
                    (e.file.to_str(), e.line),
                    (Some("a.conf"), line),
                    "{text:?}"
                ),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn booleans_as_systemd_spells_them() {
        for (v, b) in [
            ("yes", true),
            ("Y", true),
            ("true", true),
            ("t", true),
            ("on", true),
            ("1", true),
        ] {
            assert_eq!(boolean(v), Some(b), "{v}");
        }
        for (v, b) in [
            ("no", false),
            ("N", false),
            ("FALSE", false),
            ("f", false),
            ("off", false),
            ("0", false),
        ] {
            assert_eq!(boolean(v), Some(b), "{v}");
        }
        assert_eq!(boolean("maybe"), None);
        assert_eq!(boolean(""), None);
    }

    #[test]
    fn cescape_round_trips_as_systemd_writes() {
        let raw = b"var/lib/a b\\c\"'\n\t\x01\x7f\xe9/w";
        let escaped = cescape(raw);
        assert_eq!(escaped, "var/lib/a b\\\\c\\\"\\'\\n\\t\\001\\177\\351/w");
        assert_eq!(cunescape(&escaped).as_deref(), Some(&raw[..]));
        assert_eq!(cunescape("a\\x41\\r").as_deref(), Some(&b"aA\r"[..]));
        for bad in ["\\", "\\q", "\\x4", "\\09", "\\4zz"] {
            assert_eq!(cunescape(bad), None, "{bad:?}");
        }
    }
}
