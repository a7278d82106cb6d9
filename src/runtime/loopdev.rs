//! Loop devices: attaching an image range read-only (LOOP_CONFIGURE, or LOOP_SET_FD +
//! LOOP_SET_STATUS64 on older kernels), autoclear, and the device node.

use std::ffi::c_void;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::ioctl::{self, Ioctl, IoctlOutput, Opcode};

const LOOP_SET_FD: Opcode = 0x4C00;
const LOOP_CLR_FD: Opcode = 0x4C01;
const LOOP_SET_STATUS64: Opcode = 0x4C04;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// LOOP_CTL_GET_FREE hands the same free device to racing callers; the losers get EBUSY.
const MAX_ATTEMPTS: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("{path}: {op} failed: {errno}")]
    Node {
        path: PathBuf,
        op: &'static str,
        errno: Errno,
    },
    #[error("{device}: {ioctl} failed: {errno}")]
    Ioctl {
        device: PathBuf,
        ioctl: &'static str,
        errno: Errno,
    },
    #[error("no loop device could be bound after {attempts} attempts: each was taken concurrently (EBUSY)")]
    Busy { attempts: u32 },
}

/// `struct loop_info64` of include/uapi/linux/loop.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of include/uapi/linux/loop.h (LOOP_CONFIGURE, Linux >= 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

impl LoopInfo64 {
    fn new(offset: u64, sizelimit: u64) -> Self {
        LoopInfo64 {
            device: 0,
            inode: 0,
            rdevice: 0,
            offset,
            sizelimit,
            number: 0,
            encrypt_type: 0,
            encrypt_key_size: 0,
            flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            file_name: [0; 64],
            crypt_name: [0; 64],
            encrypt_key: [0; 32],
            init: [0; 2],
        }
    }
}

/// A bound loop device; the open fd keeps it alive, autoclear frees it once nobody uses it.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    number: u32,
    devnum: (u32, u32),
    fd: OwnedFd,
}

/// Attaches `file` (already open, read-only) bytes [offset, offset+size) as a read-only
/// loop device with LO_FLAGS_AUTOCLEAR. `size` 0 means "up to the end of the file" (the
/// kernel's convention). Creates /dev/loop-control and /dev/loopN if they are missing.
pub fn attach(file: &File, offset: u64, size: u64) -> Result<LoopDevice, LoopError> {
    attach_in(Path::new("/dev"), file, offset, size)
}

fn attach_in(dev: &Path, file: &File, offset: u64, size: u64) -> Result<LoopDevice, LoopError> {
    let control_path = dev.join("loop-control");
    let control_num =
        sys_devnum(Path::new("/sys/class/misc/loop-control/dev")).unwrap_or((10, 237));
    let control = open_node(
        &control_path,
        FileType::CharacterDevice,
        control_num,
        OFlags::RDWR,
    )?;
    let info = LoopInfo64::new(offset, size);
    for _ in 0..MAX_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { raw_ioctl(&control, LOOP_CTL_GET_FREE, std::ptr::null_mut()) }
            .map_err(|errno| ioctl_error(&control_path, "LOOP_CTL_GET_FREE", errno))?;
        let device = open_loop(dev, number.unsigned_abs())?;
        match device.bind(file, info) {
            Err(LoopError::Ioctl {
                errno: Errno::BUSY, ..
            }) => continue,
            bound => return bound.map(|()| device),
        }
    }
    Err(LoopError::Busy {
        attempts: MAX_ATTEMPTS,
    })
}

fn open_loop(dev: &Path, number: u32) -> Result<LoopDevice, LoopError> {
    let path = dev.join(format!("loop{number}"));
    let sys = PathBuf::from(format!("/sys/block/loop{number}/dev"));
    let devnum = sys_devnum(&sys).unwrap_or((7, number));
    let fd = open_node(&path, FileType::BlockDevice, devnum, OFlags::RDONLY)?;
    let stat = rfs::fstat(&fd).map_err(|errno| node_error(&path, "fstat", errno))?;
    let devnum = (rfs::major(stat.st_rdev), rfs::minor(stat.st_rdev));
    Ok(LoopDevice {
        path,
        number,
        devnum,
        fd,
    })
}

impl LoopDevice {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn devnum(&self) -> (u32, u32) {
        self.devnum
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    /// Explicit detach (LOOP_CLR_FD); dropping only closes the fd (autoclear then frees the
    /// device once unused).
    pub fn detach(self) -> Result<(), LoopError> {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { raw_ioctl(&self.fd, LOOP_CLR_FD, std::ptr::null_mut()) }
            .map(drop)
            .map_err(|errno| ioctl_error(&self.path, "LOOP_CLR_FD", errno))
    }

    fn bind(&self, file: &File, info: LoopInfo64) -> Result<(), LoopError> {
        let mut config = LoopConfig {
            fd: file.as_raw_fd().unsigned_abs(),
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        let arg = (&mut config as *mut LoopConfig).cast();
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config` is.
        match unsafe { raw_ioctl(&self.fd, LOOP_CONFIGURE, arg) } {
            Ok(_) => Ok(()),
            Err(Errno::INVAL | Errno::NOTTY) => self.bind_legacy(file, info),
            Err(errno) => Err(ioctl_error(&self.path, "LOOP_CONFIGURE", errno)),
        }
    }

    /// Kernels before 5.8: LOOP_SET_FD, then LOOP_SET_STATUS64 (read-only follows from the
    /// read-only file and device opens).
    fn bind_legacy(&self, file: &File, mut info: LoopInfo64) -> Result<(), LoopError> {
        let fd = file.as_raw_fd().unsigned_abs() as usize as *mut c_void;
        // SAFETY: LOOP_SET_FD takes the backing file descriptor as an integer argument.
        unsafe { raw_ioctl(&self.fd, LOOP_SET_FD, fd) }
            .map_err(|errno| ioctl_error(&self.path, "LOOP_SET_FD", errno))?;
        let arg = (&mut info as *mut LoopInfo64).cast();
        // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`, which `info` is.
        if let Err(errno) = unsafe { raw_ioctl(&self.fd, LOOP_SET_STATUS64, arg) } {
            // SAFETY: LOOP_CLR_FD takes no argument.
            let _ = unsafe { raw_ioctl(&self.fd, LOOP_CLR_FD, std::ptr::null_mut()) };
            return Err(ioctl_error(&self.path, "LOOP_SET_STATUS64", errno));
        }
        Ok(())
    }
}

/// The file backing a loop block device, if `devnum` is a bound loop device (for unmerge).
pub fn backing_file(devnum: (u32, u32)) -> Option<PathBuf> {
    let sys = format!("/sys/dev/block/{}:{}/loop/backing_file", devnum.0, devnum.1);
    let text = std::fs::read_to_string(sys).ok()?;
    let name = text.trim_end_matches('\n');
    (!name.is_empty()).then(|| PathBuf::from(name))
}

/// Parses a sysfs `dev` attribute ("MAJ:MIN\n").
pub(crate) fn sys_devnum(path: &Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (major, minor) = text.trim_end().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Creates the device node `path` (mode 0600) unless something already exists there; for an
/// initrd without udev or a mounted devtmpfs.
pub(crate) fn ensure_node(path: &Path, kind: FileType, devnum: (u32, u32)) -> Result<(), Errno> {
    match rfs::lstat(path) {
        Ok(_) => Ok(()),
        Err(Errno::NOENT) => {
            let dev = rfs::makedev(devnum.0, devnum.1);
            match rfs::mknodat(CWD, path, kind, Mode::from_raw_mode(0o600), dev) {
                Ok(()) | Err(Errno::EXIST) => Ok(()),
                Err(errno) => Err(errno),
            }
        }
        Err(errno) => Err(errno),
    }
}

fn open_node(
    path: &Path,
    kind: FileType,
    devnum: (u32, u32),
    access: OFlags,
) -> Result<OwnedFd, LoopError> {
    ensure_node(path, kind, devnum).map_err(|errno| node_error(path, "mknod", errno))?;
    rfs::open(path, access | OFlags::CLOEXEC, Mode::empty())
        .map_err(|errno| node_error(path, "open", errno))
}

fn node_error(path: &Path, op: &'static str, errno: Errno) -> LoopError {
    LoopError::Node {
        path: path.to_path_buf(),
        op,
        errno,
    }
}

fn ioctl_error(device: &Path, ioctl: &'static str, errno: Errno) -> LoopError {
    LoopError::Ioctl {
        device: device.to_path_buf(),
        ioctl,
        errno,
    }
}

/// An ioctl whose argument is an integer or a pointer and whose result is the return value.
struct RawIoctl {
    opcode: Opcode,
    arg: *mut c_void,
}

// SAFETY: `raw_ioctl`'s callers guarantee that `arg` is what `opcode` expects; the ioctl
// may write through it, hence IS_MUTATING.
unsafe impl Ioctl for RawIoctl {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// Issues `ioctl(fd, opcode, arg)` and returns its (non-negative) result.
///
/// # Safety
/// `arg` must be the argument `opcode` expects: an integer, or a pointer to a live value of
/// the type the kernel reads and writes for it.
pub(crate) unsafe fn raw_ioctl(
    fd: impl AsFd,
    opcode: Opcode,
    arg: *mut c_void,
) -> Result<IoctlOutput, Errno> {
    ioctl::ioctl(fd, RawIoctl { opcode, arg })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn uapi_struct_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::offset_of!(LoopInfo64, flags), 52);
        assert_eq!(std::mem::offset_of!(LoopInfo64, file_name), 56);
        assert_eq!(std::mem::offset_of!(LoopInfo64, init), 216);
        assert_eq!(std::mem::offset_of!(LoopConfig, info), 8);
        assert_eq!(std::mem::offset_of!(LoopConfig, reserved), 240);
    }

    #[test]
    fn info_is_read_only_autoclear() {
        let info = LoopInfo64::new(4096, 8192);
        assert_eq!((info.offset, info.sizelimit), (4096, 8192));
        assert_eq!(info.flags, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR);
    }

    #[test]
    fn parses_sysfs_dev() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev");
        std::fs::write(&path, "7:12\n").unwrap();
        assert_eq!(sys_devnum(&path), Some((7, 12)));
        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(sys_devnum(&path), None);
        assert_eq!(sys_devnum(&dir.path().join("missing")), None);
    }

    /// Loop tests need root (the host kernel has loop built in).
    fn privileged() -> bool {
        let root = rustix::process::geteuid().is_root();
        if !root {
            eprintln!("skipped: loop device tests need root");
        }
        root
    }

    /// A 1 MiB file whose every 4 KiB block starts with its index.
    fn image() -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for block in 0u32..256 {
            let mut data = vec![block as u8 ^ 0x5a; 4096];
            data[..4].copy_from_slice(&block.to_le_bytes());
            file.write_all(&data).unwrap();
        }
        file.flush().unwrap();
        file
    }

    fn sysfs(number: u32, attribute: &str) -> String {
        let path = format!("/sys/block/loop{number}/{attribute}");
        std::fs::read_to_string(path).unwrap().trim().to_string()
    }

    fn expected(image: &Path, offset: u64, size: u64) -> Vec<u8> {
        let mut file = File::open(image).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        let mut data = vec![0; size as usize];
        file.read_exact(&mut data).unwrap();
        data
    }

    fn read_device(path: &Path) -> Vec<u8> {
        let mut data = Vec::new();
        File::open(path).unwrap().read_to_end(&mut data).unwrap();
        data
    }

    /// No loop device is bound to `image` any more (the number may be reused by other tests).
    fn assert_released(devnum: (u32, u32), image: &Path) {
        for _ in 0..200 {
            if backing_file(devnum).as_deref() != Some(image) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{devnum:?} still backed by {}", image.display());
    }

    #[test]
    fn attaches_a_region_read_only() {
        if !privileged() {
            return;
        }
        let image = image();
        let file = File::open(image.path()).unwrap();
        let (offset, size) = (3 * 4096, 10 * 4096);
        let device = attach(&file, offset, size).unwrap();
        let n = device.number();
        assert_eq!(device.path(), Path::new(&format!("/dev/loop{n}")));
        assert_eq!(
            sysfs(n, "dev"),
            format!("{}:{}", device.devnum().0, device.devnum().1)
        );
        assert_eq!(sysfs(n, "loop/offset"), offset.to_string());
        assert_eq!(sysfs(n, "loop/sizelimit"), size.to_string());
        assert_eq!(sysfs(n, "loop/autoclear"), "1");
        assert_eq!(sysfs(n, "ro"), "1");
        assert_eq!(backing_file(device.devnum()).as_deref(), Some(image.path()));
        assert_eq!(
            read_device(device.path()),
            expected(image.path(), offset, size)
        );

        let write = std::fs::OpenOptions::new()
            .write(true)
            .open(device.path())
            .and_then(|mut dev| dev.write_all(&[0; 512]).and_then(|()| dev.sync_all()));
        let errno = write
            .expect_err("wrote to a read-only loop device")
            .raw_os_error();
        assert!(
            [Errno::ROFS, Errno::PERM, Errno::ACCESS]
                .contains(&Errno::from_raw_os_error(errno.unwrap())),
            "unexpected error {errno:?}"
        );
        assert_eq!(
            expected(image.path(), offset, 512),
            read_device(device.path())[..512]
        );

        let devnum = device.devnum();
        device.detach().unwrap();
        assert_released(devnum, image.path());
    }

    #[test]
    fn drop_autoclears() {
        if !privileged() {
            return;
        }
        let image = image();
        let file = File::open(image.path()).unwrap();
        let device = attach(&file, 0, 4096).unwrap();
        let devnum = device.devnum();
        assert_eq!(backing_file(devnum).as_deref(), Some(image.path()));
        drop(device);
        assert_released(devnum, image.path());
    }

    #[test]
    fn concurrent_attaches_get_distinct_devices() {
        if !privileged() {
            return;
        }
        let image = image();
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                let path = image.path().to_path_buf();
                std::thread::spawn(move || {
                    let file = File::open(&path).unwrap();
                    let device = attach(&file, i * 4096, 8192).unwrap();
                    assert_eq!(read_device(device.path()), expected(&path, i * 4096, 8192));
                    device
                })
            })
            .collect();
        let devices: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let mut numbers: Vec<_> = devices.iter().map(LoopDevice::number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), devices.len());
        for device in devices {
            device.detach().unwrap();
        }
    }

    /// Without /dev nodes (no devtmpfs, no udev), attach creates loop-control and loopN.
    #[test]
    fn creates_missing_nodes() {
        if !privileged() {
            return;
        }
        let dev = tempfile::tempdir().unwrap();
        let image = image();
        let file = File::open(image.path()).unwrap();
        let device = attach_in(dev.path(), &file, 4096, 4096).unwrap();
        let control = rfs::stat(dev.path().join("loop-control")).unwrap();
        assert_eq!(
            FileType::from_raw_mode(control.st_mode),
            FileType::CharacterDevice
        );
        assert_eq!(
            device.path(),
            dev.path().join(format!("loop{}", device.number()))
        );
        let node = rfs::stat(device.path()).unwrap();
        assert_eq!(FileType::from_raw_mode(node.st_mode), FileType::BlockDevice);
        assert_eq!(
            (rfs::major(node.st_rdev), rfs::minor(node.st_rdev)),
            device.devnum()
        );
        assert_eq!(
            read_device(device.path()),
            expected(image.path(), 4096, 4096)
        );
        device.detach().unwrap();
    }

    /// The pre-5.8 path (LOOP_SET_FD + LOOP_SET_STATUS64), forced.
    #[test]
    fn legacy_binding() {
        if !privileged() {
            return;
        }
        let image = image();
        let file = File::open(image.path()).unwrap();
        let control = rfs::open("/dev/loop-control", OFlags::RDWR, Mode::empty()).unwrap();
        let device = (0..MAX_ATTEMPTS)
            .find_map(|_| {
                // SAFETY: LOOP_CTL_GET_FREE takes no argument.
                let n = unsafe { raw_ioctl(&control, LOOP_CTL_GET_FREE, std::ptr::null_mut()) };
                let device = open_loop(Path::new("/dev"), n.unwrap().unsigned_abs()).unwrap();
                match device.bind_legacy(&file, LoopInfo64::new(8192, 4096)) {
                    Err(LoopError::Ioctl {
                        errno: Errno::BUSY, ..
                    }) => None,
                    bound => Some(bound.map(|()| device)),
                }
            })
            .unwrap()
            .unwrap();
        let n = device.number();
        assert_eq!(sysfs(n, "loop/offset"), "8192");
        assert_eq!(sysfs(n, "loop/sizelimit"), "4096");
        assert_eq!(sysfs(n, "loop/autoclear"), "1");
        assert_eq!(sysfs(n, "ro"), "1");
        assert_eq!(
            read_device(device.path()),
            expected(image.path(), 8192, 4096)
        );
        let devnum = device.devnum();
        drop(device);
        assert_released(devnum, image.path());
    }

    #[test]
    fn no_backing_file_for_other_devices() {
        assert_eq!(backing_file((1, 3)), None);
        assert_eq!(backing_file((4095, 1_048_575)), None);
    }
}
