//! mkosi's configuration file syntax (systemd unit-file style): `[Section]` headers, `Key=Value`
//! lines, indented continuation lines, `#`/`;` comments. Parsed into entries; meaning is elsewhere.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
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

/// Parses one file's text.
pub fn parse(text: &str) -> Result<Vec<Entry>, ConfError> {
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
        if indented && continuing {
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
                .ok_or_else(|| syntax(line, "expected ]"))?;
            if name.is_empty() || name.contains(['[', ']']) {
                return Err(syntax(line, "bad section name"));
            }
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = trimmed
            .split_once('=')
            .ok_or_else(|| syntax(line, "expected Key=Value or [Section]"))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(syntax(line, &format!("bad key {key:?}")));
        }
        let section = section
            .clone()
            .ok_or_else(|| syntax(line, "Key=Value before any [Section]"))?;
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

fn syntax(line: usize, reason: &str) -> ConfError {
    ConfError::Syntax {
        line,
        reason: reason.to_owned(),
    }
}

/// A list value (`Packages=a b`, or one per continuation line); items split on whitespace.
pub fn list(value: &str) -> Vec<String> {
    value.split_whitespace().map(str::to_owned).collect()
}

/// mkosi's booleans.
pub fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" | "y" => Some(true),
        "0" | "no" | "false" | "off" | "n" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_continuations_and_comments() {
        let text = "# comment\n[Output]\nFormat=directory\n\n[Content]\nPackages=systemd\n         udev\n; other\nBaseTrees=%O/base\nEmpty=\n";
        let e = parse(text).unwrap();
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
    fn errors_name_the_line() {
        for (text, line) in [
            ("Format=disk\n", 1),
            ("[Output]\nnot an assignment\n", 2),
            ("[Output\n", 1),
            ("[Output]\nBad Key=1\n", 2),
        ] {
            match parse(text) {
                Err(ConfError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(boolean("Yes"), Some(true));
        assert_eq!(boolean("maybe"), None);
    }
}
