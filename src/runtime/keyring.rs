//! Kernel keyrings through raw `add_key`/`keyctl` syscalls: the root-hash signature as a
//! `user` key for dm-verity, and enrolling certificates into `.secondary_trusted_keys`.

use std::ffi::{CStr, CString};

use rustix::io::Errno;

const KEYCTL_UNLINK: usize = 9;
const KEYCTL_INVALIDATE: usize = 21;

/// A keyring to add keys to: the special ones of the calling thread, or one by serial number.
/// PID 1 has no session keyring: use the thread or process keyring there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyring {
    Thread,
    Process,
    Session,
    User,
    Id(i32),
}

impl Keyring {
    fn serial(self) -> i32 {
        match self {
            Keyring::Thread => -1,
            Keyring::Process => -2,
            Keyring::Session => -3,
            Keyring::User => -4,
            Keyring::Id(id) => id,
        }
    }
}

/// A key's serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(pub i32);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("add_key({key_type}, {description:?}) into keyring {keyring}: {errno}")]
    Add {
        key_type: &'static str,
        description: String,
        keyring: i32,
        errno: Errno,
    },
    #[error("keyctl(KEYCTL_UNLINK) of key {key} from keyring {keyring}: {errno}")]
    Unlink {
        key: i32,
        keyring: i32,
        errno: Errno,
    },
    #[error("key description {0:?} contains NUL")]
    Description(String),
    #[error("/proc/keys: {0}")]
    ProcKeys(#[from] std::io::Error),
}

/// add_key("user", desc, payload, keyring): e.g. the PKCS#7 signature of a root hash, for
/// dm-verity's `root_hash_sig_key_desc`.
pub fn add_user_key(desc: &str, payload: &[u8], ring: Keyring) -> Result<Key, KeyError> {
    let c_desc = CString::new(desc).map_err(|_| KeyError::Description(desc.to_string()))?;
    add_key(c"user", &c_desc, payload, ring).map_err(|errno| KeyError::Add {
        key_type: "user",
        description: desc.to_string(),
        keyring: ring.serial(),
        errno,
    })
}

/// add_key("asymmetric", "", der, keyring): the kernel names the key from the certificate;
/// it accepts one into `.secondary_trusted_keys` only if a trusted key signed it.
pub fn add_certificate(der: &[u8], ring: Keyring) -> Result<Key, KeyError> {
    add_key(c"asymmetric", c"", der, ring).map_err(|errno| KeyError::Add {
        key_type: "asymmetric",
        description: String::new(),
        keyring: ring.serial(),
        errno,
    })
}

/// Invalidates `key` (Linux >= 3.5; the kernel then drops it from every keyring) and unlinks
/// it from `ring`.
pub fn remove(key: Key, ring: Keyring) -> Result<(), KeyError> {
    let invalidated = keyctl(KEYCTL_INVALIDATE, key.0 as usize, 0).is_ok();
    match keyctl(KEYCTL_UNLINK, key.0 as usize, ring.serial() as usize) {
        Ok(_) => Ok(()),
        // Invalidation raced us: the garbage collector already unlinked or freed it.
        Err(Errno::NOENT | Errno::NOKEY) if invalidated => Ok(()),
        Err(errno) => Err(KeyError::Unlink {
            key: key.0,
            keyring: ring.serial(),
            errno,
        }),
    }
}

/// A key in the thread keyring for as long as this lives (removed on drop).
pub struct Scoped(pub Key);

impl Drop for Scoped {
    fn drop(&mut self) {
        if let Err(e) = remove(self.0, Keyring::Thread) {
            log::debug!("{e}");
        }
    }
}

/// Finds a keyring visible to us by description (".secondary_trusted_keys",
/// ".builtin_trusted_keys") in /proc/keys.
pub fn find_keyring(description: &str) -> Result<Option<i32>, KeyError> {
    let keys = std::fs::read_to_string("/proc/keys")?;
    Ok(keyring_in(&keys, description))
}

/// /proc/keys lines: `id flags usage timeout perm uid gid type description[: summary]`; flags
/// `IRDQUNi`: instantiated, revoked, dead, … invalidated (listed until garbage-collected).
fn keyring_in(proc_keys: &str, description: &str) -> Option<i32> {
    proc_keys.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [id, flags, _, _, _, _, _, "keyring", desc, ..]
                if desc.strip_suffix(':').unwrap_or(desc) == description
                    && flags.starts_with('I')
                    && !flags.contains(['R', 'D', 'i']) =>
            {
                u32::from_str_radix(id, 16).ok().map(|id| id as i32)
            }
            _ => None,
        }
    })
}

fn add_key(key_type: &CStr, desc: &CStr, payload: &[u8], ring: Keyring) -> Result<Key, Errno> {
    // SAFETY: the strings are NUL-terminated and the payload pointer/length pair is valid
    // for the duration of the call; the kernel only reads them.
    let ret = unsafe {
        syscall5(
            SYS_ADD_KEY,
            [
                key_type.as_ptr() as usize,
                desc.as_ptr() as usize,
                payload.as_ptr() as usize,
                payload.len(),
                ring.serial() as usize,
            ],
        )
    };
    result(ret).map(Key)
}

/// keyctl with integer arguments only.
fn keyctl(operation: usize, arg2: usize, arg3: usize) -> Result<i32, Errno> {
    // SAFETY: no argument is a pointer.
    result(unsafe { syscall5(SYS_KEYCTL, [operation, arg2, arg3, 0, 0]) })
}

/// The kernel returns -4095..-1 for errors.
fn result(ret: isize) -> Result<i32, Errno> {
    if (-4095..0).contains(&ret) {
        Err(Errno::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as i32)
    }
}

// rustix has no add_key/keyctl wrappers nor a generic raw-syscall API, and the crate uses no
// libc bindings, so these two syscalls are issued with inline assembly.
#[cfg(target_arch = "x86_64")]
const SYS_ADD_KEY: usize = 248;
#[cfg(target_arch = "x86_64")]
const SYS_KEYCTL: usize = 250;
#[cfg(target_arch = "aarch64")]
const SYS_ADD_KEY: usize = 217;
#[cfg(target_arch = "aarch64")]
const SYS_KEYCTL: usize = 219;

/// # Safety
/// Pointer arguments must be valid for what syscall `nr` does with them.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall5(nr: usize, args: [usize; 5]) -> isize {
    let ret;
    std::arch::asm!(
        "syscall",
        inlateout("rax") nr as isize => ret,
        in("rdi") args[0],
        in("rsi") args[1],
        in("rdx") args[2],
        in("r10") args[3],
        in("r8") args[4],
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    ret
}

/// # Safety
/// Pointer arguments must be valid for what syscall `nr` does with them.
#[cfg(target_arch = "aarch64")]
unsafe fn syscall5(nr: usize, args: [usize; 5]) -> isize {
    let ret;
    std::arch::asm!(
        "svc 0",
        in("x8") nr,
        inlateout("x0") args[0] as isize => ret,
        in("x1") args[1],
        in("x2") args[2],
        in("x3") args[3],
        in("x4") args[4],
        options(nostack),
    );
    ret
}

// Other architectures: keyrings are unsupported (ENOSYS) rather than a build failure.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYS_ADD_KEY: usize = 0;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYS_KEYCTL: usize = 0;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn syscall5(_nr: usize, _args: [usize; 5]) -> isize {
    -(Errno::NOSYS.raw_os_error() as isize)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYCTL_READ: usize = 11;
    const KEYCTL_SEARCH: usize = 10;

    const PROC_KEYS: &str = "\
0c956830 I--Q---     2 perm 1f3f0000     0 65534 keyring   _uid.0: empty
103989c2 I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 1
1aa55a95 I------     1 perm 1f030000     0     0 keyring   .secondary_trusted_keys: empty
2e051567 I--Q---     1 perm 3f010000     0     0 user      .secondary_trusted_keys: 12
36eb2eda I------     1 perm 0f0b0000     0     0 keyring   .blacklist: empty
1d2c3b4a I-----i     1 perm 3f030000     0     0 keyring   gone: empty
1d2c3b4b I-D----     1 perm 3f030000     0     0 keyring   dead: empty
";

    #[test]
    fn parses_proc_keys() {
        assert_eq!(
            keyring_in(PROC_KEYS, ".builtin_trusted_keys"),
            Some(0x103989c2)
        );
        assert_eq!(
            keyring_in(PROC_KEYS, ".secondary_trusted_keys"),
            Some(0x1aa55a95)
        );
        assert_eq!(keyring_in(PROC_KEYS, ".platform"), None);
        assert_eq!(keyring_in(PROC_KEYS, ".builtin"), None);
        assert_eq!(keyring_in(PROC_KEYS, "gone"), None);
        assert_eq!(keyring_in(PROC_KEYS, "dead"), None);
        assert_eq!(
            keyring_in("ffffffff I 1 perm 1 0 0 keyring neg", "neg"),
            Some(-1)
        );
    }

    #[test]
    fn special_keyring_serials() {
        let serials = [
            Keyring::Thread,
            Keyring::Process,
            Keyring::Session,
            Keyring::User,
            Keyring::Id(7),
        ]
        .map(Keyring::serial);
        assert_eq!(serials, [-1, -2, -3, -4, 7]);
    }

    #[test]
    fn syscall_errors() {
        assert_eq!(result(-126), Err(Errno::NOKEY));
        assert_eq!(result(-1), Err(Errno::PERM));
        assert_eq!(result(0x1234), Ok(0x1234));
        assert!(matches!(
            add_user_key("a\0b", b"", Keyring::Thread),
            Err(KeyError::Description(_))
        ));
    }

    /// Whether keyrings can be used here; prints why not otherwise.
    fn keyrings_usable(err: &KeyError) -> bool {
        let blocked = matches!(
            err,
            KeyError::Add {
                errno: Errno::NOSYS | Errno::PERM | Errno::ACCESS,
                ..
            }
        );
        if blocked {
            eprintln!("skipped: keyrings unavailable in this environment: {err}");
        }
        !blocked
    }

    fn read(key: Key) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; 4096];
        // SAFETY: buf is writable for its length.
        let ret = unsafe {
            syscall5(
                SYS_KEYCTL,
                [
                    KEYCTL_READ,
                    key.0 as usize,
                    buf.as_mut_ptr() as usize,
                    buf.len(),
                    0,
                ],
            )
        };
        buf.truncate(result(ret)? as usize);
        Ok(buf)
    }

    fn search(ring: Keyring, key_type: &CStr, desc: &CStr) -> Result<i32, Errno> {
        let args = [
            KEYCTL_SEARCH,
            ring.serial() as usize,
            key_type.as_ptr() as usize,
            desc.as_ptr() as usize,
            0,
        ];
        // SAFETY: NUL-terminated strings, only read.
        result(unsafe { syscall5(SYS_KEYCTL, args) })
    }

    #[test]
    fn user_key_round_trip() {
        let desc = format!("initrd-sysext-test:{}", std::process::id());
        let payload: Vec<u8> = (0..=255).collect();
        let key = match add_user_key(&desc, &payload, Keyring::Thread) {
            Err(err) if !keyrings_usable(&err) => return,
            other => other.unwrap(),
        };
        assert!(key.0 > 0);
        assert_eq!(read(key).unwrap(), payload);
        let c_desc = CString::new(desc.clone()).unwrap();
        assert_eq!(search(Keyring::Thread, c"user", &c_desc), Ok(key.0));

        remove(key, Keyring::Thread).unwrap();
        assert_eq!(search(Keyring::Thread, c"user", &c_desc), Err(Errno::NOKEY));
        assert!(read(key).is_err());
    }

    #[test]
    fn finds_a_keyring_by_description() {
        let desc = format!("initrd-sysext-test-ring-{}", std::process::id());
        let c_desc = CString::new(desc.clone()).unwrap();
        let ring = match add_key(c"keyring", &c_desc, b"", Keyring::Thread) {
            Err(errno) if matches!(errno, Errno::NOSYS | Errno::PERM | Errno::ACCESS) => {
                eprintln!("skipped: keyrings unavailable in this environment: {errno}");
                return;
            }
            other => other.unwrap(),
        };
        assert_eq!(find_keyring(&desc).unwrap(), Some(ring.0));
        remove(ring, Keyring::Thread).unwrap();
        assert_eq!(find_keyring(&desc).unwrap(), None);
    }

    fn self_signed_der() -> Vec<u8> {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "initrd-sysext test")
            .unwrap();
        let name = name.build();
        let mut cert = x509::X509Builder::new().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        cert.build().to_der().unwrap()
    }

    #[test]
    fn certificates() {
        let rejected = add_certificate(b"not a certificate", Keyring::Thread).unwrap_err();
        if !keyrings_usable(&rejected) {
            return;
        }
        if let KeyError::Add {
            errno: Errno::NODEV,
            ..
        } = rejected
        {
            eprintln!("skipped: kernel without the asymmetric key type: {rejected}");
            return;
        }
        assert!(
            matches!(
                rejected,
                KeyError::Add {
                    errno: Errno::BADMSG,
                    ..
                }
            ),
            "{rejected}"
        );

        let key = add_certificate(&self_signed_der(), Keyring::Thread).unwrap();
        let listed = std::fs::read_to_string("/proc/keys").unwrap();
        let line = listed
            .lines()
            .find(|line| u32::from_str_radix(&line[..8], 16) == Ok(key.0 as u32))
            .unwrap();
        assert!(
            line.contains(" asymmetri ") && line.contains("initrd-sysext test"),
            "{line}"
        );
        remove(key, Keyring::Thread).unwrap();
        assert!(read(key).is_err());
    }
}
