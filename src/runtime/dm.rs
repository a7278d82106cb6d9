//! Device-mapper through its ioctls (no libdevmapper): creating, loading and resuming
//! dm-verity devices, and removing them.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{opcode, Direction, Opcode};

use super::loopdev::{ensure_node, raw_ioctl, sys_devnum};

/// `sizeof(struct dm_ioctl)` (include/uapi/linux/dm-ioctl.h, interface version 4).
const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const DM_TARGET_SPEC_SIZE: usize = 40;
const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;
const DM_MAX_TYPE_NAME: usize = 16;

/// Offsets of the `struct dm_ioctl` fields we use.
const OFFSET_DATA_SIZE: usize = 12;
const OFFSET_DATA_START: usize = 16;
const OFFSET_TARGET_COUNT: usize = 20;
const OFFSET_FLAGS: usize = 28;
const OFFSET_DEV: usize = 40;
const OFFSET_NAME: usize = 48;
const OFFSET_UUID: usize = OFFSET_NAME + DM_NAME_LEN;

/// The interface version we speak: the kernel accepts major 4 with any minor <= its own.
const DM_VERSION: [u32; 3] = [4, 0, 0];
const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_DEFERRED_REMOVE: u32 = 1 << 17;

const CONTROL: &str = "/dev/mapper/control";
const UUID_PREFIX: &str = "INITRD-SYSEXT-";

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("invalid device-mapper name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("{path}: {op} failed: {errno}")]
    Node {
        path: PathBuf,
        op: &'static str,
        errno: Errno,
    },
    #[error("dm device {name}: {ioctl} failed: {errno}{}", hint(*.ioctl, *.errno))]
    Ioctl {
        name: String,
        ioctl: DmIoctl,
        errno: Errno,
    },
}

/// The device-mapper commands used, i.e. the steps of an activation or removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmIoctl {
    Create,
    TableLoad,
    Resume,
    Remove,
    DeferredRemove,
}

impl DmIoctl {
    /// The ioctl number: `_IOWR(0xfd, nr, struct dm_ioctl)`.
    fn opcode(self) -> Opcode {
        let nr = match self {
            DmIoctl::Create => 3,
            DmIoctl::Remove | DmIoctl::DeferredRemove => 4,
            DmIoctl::Resume => 6,
            DmIoctl::TableLoad => 9,
        };
        opcode::from_components(Direction::ReadWrite, 0xfd, nr, DM_IOCTL_SIZE)
    }
}

impl std::fmt::Display for DmIoctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DmIoctl::Create => "DM_DEV_CREATE",
            DmIoctl::TableLoad => "DM_TABLE_LOAD",
            DmIoctl::Resume => "DM_DEV_SUSPEND (resume)",
            DmIoctl::Remove => "DM_DEV_REMOVE",
            DmIoctl::DeferredRemove => "DM_DEV_REMOVE (deferred)",
        })
    }
}

/// What the kernel means by the errors a verity table load can end with.
fn hint(ioctl: DmIoctl, errno: Errno) -> &'static str {
    match (ioctl, errno) {
        (DmIoctl::TableLoad, Errno::NOKEY) => {
            " (signer not trusted by the kernel's keyrings, signature key not found in the \
             caller's keyrings, or an unsigned table with dm_verity.require_signatures=1)"
        }
        (DmIoctl::TableLoad, Errno::KEYREJECTED) => " (the signature is over another root hash)",
        (DmIoctl::TableLoad, Errno::BADMSG) => " (malformed PKCS#7 signature)",
        (DmIoctl::TableLoad, Errno::INVAL) => {
            " (table refused, e.g. a kernel without DM_VERITY_VERIFY_ROOTHASH_SIG; \
             the kernel log names the reason)"
        }
        (DmIoctl::Create, Errno::BUSY) => " (a device with this name or uuid already exists)",
        _ => "",
    }
}

/// A dm-verity table (Documentation/admin-guide/device-mapper/verity.rst, format version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTable {
    pub data_dev: (u32, u32),
    pub hash_dev: (u32, u32),
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    /// In hash blocks, from the start of `hash_dev`.
    pub hash_start_block: u64,
    pub algorithm: String,
    /// Lowercase hex, exactly as signed.
    pub root_hash: String,
    /// Hex, "-" (or empty) for none.
    pub salt: String,
    /// Description of the `user` key holding the PKCS#7 signature of `root_hash`.
    pub sig_key_desc: Option<String>,
}

impl VerityTable {
    /// The target line, e.g. `1 7:0 7:1 4096 4096 2560 1 sha256 <roothash> <salt> 2
    /// root_hash_sig_key_desc <desc>`.
    pub fn params(&self) -> String {
        let salt = if self.salt.is_empty() {
            "-"
        } else {
            &self.salt
        };
        let mut params = format!(
            "1 {}:{} {}:{} {} {} {} {} {} {} {salt}",
            self.data_dev.0,
            self.data_dev.1,
            self.hash_dev.0,
            self.hash_dev.1,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block,
            self.algorithm,
            self.root_hash,
        );
        if let Some(desc) = &self.sig_key_desc {
            params.push_str(" 2 root_hash_sig_key_desc ");
            params.push_str(desc);
        }
        params
    }

    /// Length of the device in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size) / 512
    }
}

/// An active device-mapper device.
#[derive(Debug)]
pub struct DmDevice {
    name: String,
    uuid: String,
    devnum: (u32, u32),
}

impl DmDevice {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    pub fn devnum(&self) -> (u32, u32) {
        self.devnum
    }

    pub fn path(&self) -> PathBuf {
        mapper_path(&self.name)
    }
}

/// A device goes when its handle does: removed at once, or by the kernel at its last close
/// while a mount still uses it (deferred removal).
impl Drop for DmDevice {
    fn drop(&mut self) {
        if let Err(e) = remove(&self.name) {
            log::debug!("removing dm device {}: {e}", self.name);
        }
    }
}

/// Creates `name` (uuid `INITRD-SYSEXT-<name>`), loads one read-only `verity` target and
/// resumes it; on failure after the create, the device is removed again. Dropping the returned
/// handle removes the device (deferred while in use). The error keeps the
/// kernel's errno: ENOKEY (signer not trusted), EKEYREJECTED (signature over another hash)…
pub fn create_verity(name: &str, table: &VerityTable) -> Result<DmDevice, DmError> {
    check_name(name)?;
    let control = open_control()?;
    let mut uuid = format!("{UUID_PREFIX}{name}");
    while uuid.len() >= DM_UUID_LEN {
        uuid.pop();
    }
    let mut create = Request::new(name, &uuid, 0);
    call(&control, name, DmIoctl::Create, &mut create)?;
    let device = DmDevice {
        name: name.to_string(),
        uuid,
        devnum: create.dev(),
    };
    // On failure the device is dropped, which removes it again.
    activate(&control, &device, table)?;
    Ok(device)
}

fn activate(control: &OwnedFd, device: &DmDevice, table: &VerityTable) -> Result<(), DmError> {
    let mut load = Request::new(&device.name, "", DM_READONLY_FLAG).with_target(
        table.sectors(),
        "verity",
        &table.params(),
    );
    call(control, &device.name, DmIoctl::TableLoad, &mut load)?;
    call(
        control,
        &device.name,
        DmIoctl::Resume,
        &mut Request::new(&device.name, "", 0),
    )?;
    mapper_node(&device.name, device.devnum)
}

/// Removes the device `name`; if it is busy, schedules a deferred removal (done by the
/// kernel at its last close).
fn remove(name: &str) -> Result<(), DmError> {
    check_name(name)?;
    remove_with(&open_control()?, name)
}

fn remove_with(control: &OwnedFd, name: &str) -> Result<(), DmError> {
    match call(
        control,
        name,
        DmIoctl::Remove,
        &mut Request::new(name, "", 0),
    ) {
        Err(DmError::Ioctl {
            errno: Errno::BUSY, ..
        }) => {
            log::debug!("dm device {name} is busy: deferring its removal to its last close");
            let mut deferred = Request::new(name, "", DM_DEFERRED_REMOVE);
            call(control, name, DmIoctl::DeferredRemove, &mut deferred)?;
        }
        result => result?,
    }
    remove_mapper_node(name);
    Ok(())
}

fn check_name(name: &str) -> Result<(), DmError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() >= DM_NAME_LEN {
        "longer than 127 bytes"
    } else if name.contains(['/', '\0']) {
        "contains '/' or NUL"
    } else if matches!(name, "." | ".." | "control") {
        "reserved in /dev/mapper"
    } else {
        return Ok(());
    };
    Err(DmError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

fn mapper_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

fn node_error(path: &Path, op: &'static str, errno: Errno) -> DmError {
    DmError::Node {
        path: path.to_path_buf(),
        op,
        errno,
    }
}

/// Opens /dev/mapper/control, creating the directory and the node if missing.
fn open_control() -> Result<OwnedFd, DmError> {
    let path = Path::new(CONTROL);
    mapper_dir()?;
    let devnum = sys_devnum(Path::new("/sys/class/misc/device-mapper/dev")).unwrap_or((10, 236));
    ensure_node(path, FileType::CharacterDevice, devnum)
        .map_err(|errno| node_error(path, "mknod", errno))?;
    rfs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|errno| node_error(path, "open", errno))
}

fn mapper_dir() -> Result<(), DmError> {
    match rfs::mkdir("/dev/mapper", Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(errno) => Err(node_error(Path::new("/dev/mapper"), "mkdir", errno)),
    }
}

/// /dev/mapper/<name> for a system without udev; a block node left by an earlier device of
/// the same name is replaced, udev's symlinks are left alone.
fn mapper_node(name: &str, devnum: (u32, u32)) -> Result<(), DmError> {
    let path = mapper_path(name);
    if let Ok(stat) = rfs::lstat(&path) {
        let rdev = (rfs::major(stat.st_rdev), rfs::minor(stat.st_rdev));
        if FileType::from_raw_mode(stat.st_mode) == FileType::BlockDevice && rdev != devnum {
            rfs::unlink(&path).map_err(|errno| node_error(&path, "unlink", errno))?;
        }
    }
    ensure_node(&path, FileType::BlockDevice, devnum)
        .map_err(|errno| node_error(&path, "mknod", errno))
}

/// Removes a /dev/mapper/<name> block node (ours; udev removes its own symlinks).
fn remove_mapper_node(name: &str) {
    let path = mapper_path(name);
    let is_node = rfs::lstat(&path)
        .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::BlockDevice);
    if is_node {
        if let Err(errno) = rfs::unlink(&path) {
            log::warn!("{}: unlink failed: {errno}", path.display());
        }
    }
}

fn call(
    control: &OwnedFd,
    name: &str,
    ioctl: DmIoctl,
    request: &mut Request,
) -> Result<(), DmError> {
    let arg = request.buf.as_mut_ptr().cast();
    // SAFETY: every dm ioctl takes a `struct dm_ioctl` followed by `data_size - 312` bytes of
    // data, which `buf` is (Request keeps data_size equal to its length); the kernel writes
    // back at most data_size bytes.
    unsafe { raw_ioctl(control, ioctl.opcode(), arg) }
        .map(drop)
        .map_err(|errno| DmError::Ioctl {
            name: name.to_string(),
            ioctl,
            errno,
        })
}

/// A dm ioctl buffer: `struct dm_ioctl`, then the command's data (here: target specs).
struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// A header for `name` (and `uuid`, if not empty; both checked to fit beforehand).
    fn new(name: &str, uuid: &str, flags: u32) -> Request {
        let mut request = Request {
            buf: vec![0; DM_IOCTL_SIZE],
        };
        for (i, part) in DM_VERSION.iter().enumerate() {
            request.put_u32(4 * i, *part);
        }
        request.put_u32(OFFSET_DATA_SIZE, DM_IOCTL_SIZE as u32);
        request.put_u32(OFFSET_DATA_START, DM_IOCTL_SIZE as u32);
        request.put_u32(OFFSET_FLAGS, flags);
        request.put_str(OFFSET_NAME, name, DM_NAME_LEN);
        request.put_str(OFFSET_UUID, uuid, DM_UUID_LEN);
        request
    }

    /// Appends one target starting at sector 0: `struct dm_target_spec`, then the
    /// NUL-terminated parameters padded to 8 bytes (`next` points past them).
    fn with_target(mut self, sectors: u64, target_type: &str, params: &str) -> Request {
        let spec = self.buf.len();
        let next = (DM_TARGET_SPEC_SIZE + params.len() + 1).next_multiple_of(8);
        self.buf.resize(spec + next, 0);
        self.put_u64(spec + 8, sectors);
        self.put_u32(spec + 20, next as u32);
        self.put_str(spec + 24, target_type, DM_MAX_TYPE_NAME);
        self.put_str(spec + DM_TARGET_SPEC_SIZE, params, params.len() + 1);
        let count = self.u32_at(OFFSET_TARGET_COUNT) + 1;
        self.put_u32(OFFSET_TARGET_COUNT, count);
        let size = self.buf.len() as u32;
        self.put_u32(OFFSET_DATA_SIZE, size);
        self
    }

    /// The device number the kernel reported (`huge_encode_dev` format).
    fn dev(&self) -> (u32, u32) {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self.buf[OFFSET_DEV..OFFSET_DEV + 8]);
        decode_dev(u64::from_ne_bytes(bytes))
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(&self.buf[offset..offset + 4]);
        u32::from_ne_bytes(bytes)
    }

    fn put_u32(&mut self, offset: usize, value: u32) {
        self.buf[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn put_u64(&mut self, offset: usize, value: u64) {
        self.buf[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }

    /// Copies `text` into a zeroed field of `field_len` bytes, keeping a terminating NUL.
    fn put_str(&mut self, offset: usize, text: &str, field_len: usize) {
        let len = text.len().min(field_len - 1);
        self.buf[offset..offset + len].copy_from_slice(&text.as_bytes()[..len]);
    }
}

/// `new_decode_dev`: minor bits 0-7 and 20-31, major bits 8-19.
fn decode_dev(dev: u64) -> (u32, u32) {
    let major = (dev >> 8) & 0xfff;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(sig: Option<&str>) -> VerityTable {
        VerityTable {
            data_dev: (7, 0),
            hash_dev: (7, 1),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 2560,
            hash_start_block: 1,
            algorithm: "sha256".into(),
            root_hash: "ab".repeat(32),
            salt: "0123".into(),
            sig_key_desc: sig.map(String::from),
        }
    }

    #[test]
    fn verity_params() {
        let hash = "ab".repeat(32);
        assert_eq!(
            table(Some("initrd-sysext:foo")).params(),
            format!("1 7:0 7:1 4096 4096 2560 1 sha256 {hash} 0123 2 root_hash_sig_key_desc initrd-sysext:foo")
        );
        assert_eq!(
            table(None).params(),
            format!("1 7:0 7:1 4096 4096 2560 1 sha256 {hash} 0123")
        );
        let unsalted = VerityTable {
            salt: String::new(),
            data_dev: (259, 1048575),
            ..table(None)
        };
        assert_eq!(
            unsalted.params(),
            format!("1 259:1048575 7:1 4096 4096 2560 1 sha256 {hash} -")
        );
    }

    #[test]
    fn sectors() {
        assert_eq!(table(None).sectors(), 2560 * 8);
        let small = VerityTable {
            data_block_size: 1024,
            data_blocks: 3,
            ..table(None)
        };
        assert_eq!(small.sectors(), 6);
    }

    /// Values as strace prints them for libdevmapper (x86_64 and aarch64 share the encoding).
    #[test]
    fn ioctl_numbers() {
        assert_eq!(DmIoctl::Create.opcode() as u64, 0xc138_fd03);
        assert_eq!(DmIoctl::Remove.opcode() as u64, 0xc138_fd04);
        assert_eq!(DmIoctl::DeferredRemove.opcode() as u64, 0xc138_fd04);
        assert_eq!(DmIoctl::Resume.opcode() as u64, 0xc138_fd06);
        assert_eq!(DmIoctl::TableLoad.opcode() as u64, 0xc138_fd09);
    }

    fn u32_at(buf: &[u8], offset: usize) -> u32 {
        u32::from_ne_bytes(buf[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(buf: &[u8], offset: usize) -> u64 {
        u64::from_ne_bytes(buf[offset..offset + 8].try_into().unwrap())
    }

    fn c_str(buf: &[u8], offset: usize) -> &str {
        let len = buf[offset..].iter().position(|&b| b == 0).unwrap();
        std::str::from_utf8(&buf[offset..offset + len]).unwrap()
    }

    #[test]
    fn header_layout() {
        let uuid = format!("{UUID_PREFIX}{}", "cd".repeat(32));
        let buf = Request::new("foo", &uuid, DM_READONLY_FLAG).buf;
        assert_eq!(buf.len(), 312);
        assert_eq!(
            [u32_at(&buf, 0), u32_at(&buf, 4), u32_at(&buf, 8)],
            [4, 0, 0]
        );
        assert_eq!(u32_at(&buf, 12), 312, "data_size");
        assert_eq!(u32_at(&buf, 16), 312, "data_start");
        assert_eq!(u32_at(&buf, 20), 0, "target_count");
        assert_eq!(u32_at(&buf, 24), 0, "open_count");
        assert_eq!(u32_at(&buf, 28), 1, "flags");
        assert_eq!(u64_at(&buf, 40), 0, "dev");
        assert_eq!(c_str(&buf, 48), "foo");
        assert_eq!(c_str(&buf, 48 + 128), uuid);
        assert!(buf[305..].iter().all(|&b| b == 0), "data[7]");
    }

    #[test]
    fn long_strings_stay_terminated() {
        let buf = Request::new(&"n".repeat(200), &"u".repeat(200), 0).buf;
        assert_eq!(c_str(&buf, 48).len(), 127);
        assert_eq!(c_str(&buf, 176).len(), 128);
        assert_eq!(buf[304], 0);
    }

    #[test]
    fn target_layout() {
        let params = table(Some("key")).params();
        let buf = Request::new("foo", "", DM_READONLY_FLAG)
            .with_target(table(None).sectors(), "verity", &params)
            .buf;
        assert_eq!(u32_at(&buf, 12) as usize, buf.len(), "data_size");
        assert_eq!(u32_at(&buf, 20), 1, "target_count");
        assert_eq!(buf.len() % 8, 0);
        // The kernel: spec = param + data_start; params follow the 40-byte spec.
        let spec = u32_at(&buf, 16) as usize;
        assert_eq!(spec, 312);
        assert_eq!(u64_at(&buf, spec), 0, "sector_start");
        assert_eq!(u64_at(&buf, spec + 8), 20480, "length");
        assert_eq!(u32_at(&buf, spec + 16), 0, "status");
        let next = u32_at(&buf, spec + 20) as usize;
        assert_eq!(next, (40 + params.len() + 1).next_multiple_of(8));
        assert_eq!(spec + next, buf.len());
        assert_eq!(c_str(&buf, spec + 24), "verity");
        assert!(buf[spec + 24 + 6..spec + 40].iter().all(|&b| b == 0));
        assert_eq!(c_str(&buf, spec + 40), params);
        assert_eq!(buf.len(), 312 + next);
    }

    #[test]
    fn decodes_huge_encoded_dev() {
        let encode =
            |major: u64, minor: u64| (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        assert_eq!(decode_dev(encode(253, 0)), (253, 0));
        assert_eq!(decode_dev(encode(253, 300)), (253, 300));
        assert_eq!(decode_dev(encode(4095, 1_048_575)), (4095, 1_048_575));
        let request = {
            let mut r = Request::new("x", "", 0);
            r.put_u64(OFFSET_DEV, encode(254, 17));
            r
        };
        assert_eq!(request.dev(), (254, 17));
    }

    #[test]
    fn names() {
        assert!(check_name("foo-1.raw_verity").is_ok());
        assert!(check_name(&"n".repeat(127)).is_ok());
        for bad in ["", "a/b", "nul\0", "control", ".", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"n".repeat(128)).is_err());
        assert!(matches!(remove("a/b"), Err(DmError::InvalidName { .. })));
    }

    #[test]
    fn errors_explain_the_kernel() {
        let err = DmError::Ioctl {
            name: "foo".into(),
            ioctl: DmIoctl::TableLoad,
            errno: Errno::KEYREJECTED,
        };
        let text = err.to_string();
        assert!(
            text.starts_with("dm device foo: DM_TABLE_LOAD failed: "),
            "{text}"
        );
        assert!(
            text.ends_with("(the signature is over another root hash)"),
            "{text}"
        );
        let err = DmError::Ioctl {
            name: "foo".into(),
            ioctl: DmIoctl::Resume,
            errno: Errno::NOKEY,
        };
        assert!(!err.to_string().contains("signer"));
    }
}
