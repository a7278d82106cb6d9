//! The kernel command line: tokens (double quotes group), and the options boot mode reads.

use std::time::Duration;

use crate::format::unit;

/// What to do when the root cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    Reboot,
    Halt,
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `rd.sysext=0` / `rd.systemd.sysext=0` turn merging off.
    pub sysext: bool,
    pub image_policy: Option<String>,
    pub required: Vec<String>,
    pub userspace_verity: bool,
    pub sysroot: bool,
    pub debug: bool,
    pub root: Option<String>,
    pub rootfstype: Option<String>,
    pub rootflags: Option<String>,
    pub read_only: bool,
    pub root_timeout: Duration,
    pub init: String,
    pub on_failure: OnFailure,
    pub require_signatures: bool,
    /// `module_blacklist=`, `modprobe.blacklist=`, `rd.driver.blacklist=`: never loaded.
    pub blacklist: Vec<String>,
    /// `rd.driver.pre=`: loaded before anything else.
    pub driver_pre: Vec<String>,
    /// `rd.sysext.measure=0`: nothing is measured (PCR 11 phases, PCR 13 extensions).
    pub measure: bool,
}

impl Default for Cmdline {
    fn default() -> Cmdline {
        Cmdline {
            sysext: true,
            image_policy: None,
            required: Vec::new(),
            userspace_verity: false,
            sysroot: false,
            debug: false,
            root: None,
            rootfstype: None,
            rootflags: None,
            read_only: true,
            root_timeout: Duration::from_secs(30),
            init: "/sbin/init".into(),
            on_failure: OnFailure::Reboot,
            require_signatures: false,
            blacklist: Vec::new(),
            driver_pre: Vec::new(),
            measure: true,
        }
    }
}

/// Splits the command line into words; `"` groups (and is removed), as the kernel does.
pub fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut quoted, mut any) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// A comma-separated list, empty items dropped.
fn list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',').filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A flag's value: systemd's boolean words; a bare flag is true.
fn boolean(v: Option<&str>) -> Option<bool> {
    v.map_or(Some(true), unit::boolean)
}

impl Cmdline {
    /// Parses the options we know; the rest belongs to others. Bad values keep the default
    /// and are reported in the returned warnings.
    pub fn parse(line: &str) -> (Cmdline, Vec<String>) {
        let mut c = Cmdline::default();
        let mut warnings = Vec::new();
        for tok in tokens(line) {
            let (key, value) = match tok.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (tok.clone(), None),
            };
            if let Err(w) = c.apply(&key, value.as_deref()) {
                warnings.push(format!("ignoring {tok:?}: {w}"));
            }
        }
        (c, warnings)
    }

    fn apply(&mut self, key: &str, v: Option<&str>) -> Result<(), &'static str> {
        let flag = || boolean(v).ok_or("expected a boolean");
        let value = || {
            v.filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or("expected a value")
        };
        match key {
            "rd.sysext" | "rd.systemd.sysext" => self.sysext = flag()?,
            "rd.sysext.image_policy" | "rd.systemd.image_policy" => {
                self.image_policy = Some(value()?)
            }
            "rd.sysext.required" => self.required.extend(value()?.split(',').map(str::to_owned)),
            "rd.sysext.userspace_verity" => self.userspace_verity = flag()?,
            "rd.sysext.sysroot" => self.sysroot = flag()?,
            "rd.sysext.debug" => self.debug = flag()?,
            "rd.sysext.measure" => self.measure = flag()?,
            "rd.sysext.root_timeout" => {
                let secs: f64 = value()?.parse().map_err(|_| "expected seconds")?;
                self.root_timeout =
                    Duration::try_from_secs_f64(secs).map_err(|_| "expected seconds")?;
            }
            "rd.sysext.on_failure" => {
                self.on_failure = match value()?.as_str() {
                    "reboot" => OnFailure::Reboot,
                    "halt" => OnFailure::Halt,
                    s => OnFailure::Shell(
                        s.strip_prefix("shell:")
                            .ok_or("reboot, halt or shell:PATH")?
                            .to_owned(),
                    ),
                }
            }
            "dm_verity.require_signatures" => self.require_signatures = flag()?,
            "module_blacklist" | "modprobe.blacklist" | "rd.driver.blacklist" => {
                self.blacklist.extend(list(&value()?))
            }
            "rd.driver.pre" => self.driver_pre.extend(list(&value()?)),
            "root" => self.root = Some(value()?),
            "rootfstype" => self.rootfstype = Some(value()?),
            "rootflags" => self.rootflags = Some(value()?),
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "init" => self.init = value()?,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_kernel_quoting() {
        assert_eq!(tokens("  a b=\"c d\" \"e f\"=g  "), ["a", "b=c d", "e f=g"]);
        assert_eq!(tokens("x=\"\""), ["x="]);
        assert!(tokens("   ").is_empty());
    }

    #[test]
    fn parses_options() {
        let (c, w) = Cmdline::parse(
            "console=ttyS0 root=PARTUUID=abcd rw rd.sysext.required=a,b rd.sysext.required=c \
             rd.systemd.sysext=0 rd.sysext.root_timeout=2.5 rd.sysext.on_failure=shell:/bin/sh \
             rd.sysext.debug init=/bin/custom rd.sysext.sysroot=yes dm_verity.require_signatures=1 \
             module_blacklist=nvme,ahci modprobe.blacklist=uas rd.driver.blacklist=a-b,, \
             rd.driver.pre=virtio_pci rd.driver.pre=crc32c,dm-mod rd.sysext.measure=0",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.root.as_deref(), Some("PARTUUID=abcd"));
        assert!(!c.read_only && !c.sysext && c.debug && c.sysroot && c.require_signatures);
        assert!(!c.measure);
        assert_eq!(c.required, ["a", "b", "c"]);
        assert_eq!(c.root_timeout, Duration::from_millis(2500));
        assert_eq!(c.on_failure, OnFailure::Shell("/bin/sh".into()));
        assert_eq!(c.init, "/bin/custom");
        assert_eq!(c.blacklist, ["nvme", "ahci", "uas", "a-b"]);
        assert_eq!(c.driver_pre, ["virtio_pci", "crc32c", "dm-mod"]);
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let (c, w) = Cmdline::parse(
            "rd.sysext=maybe rd.sysext.root_timeout=-1 rd.sysext.on_failure=explode root=",
        );
        assert_eq!(w.len(), 4, "{w:?}");
        assert_eq!(c, Cmdline::default());
    }
}
