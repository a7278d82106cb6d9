//! The QEMU boot-test rig: builds what a boot needs with our own build mode (static binary,
//! test kernel, initrds, signed extensions, root disks holding busybox and a reporting init),
//! boots `qemu-system-x86_64 -accel tcg` (or, for an arm64 kernel, `qemu-system-aarch64 -M virt`)
//! with a hard timeout and returns the serial console.

use std::fs;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use test_support::Cli;

pub mod dracut;
pub mod scenario;

pub use test_support::{key, repo, run, s, write_tree};

/// Runs a command to success and returns its trimmed stdout's last line.
fn last_line(cmd: &mut Command) -> String {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap_or("").trim().to_owned()
}

/// A guest architecture: its QEMU, /init binary, test kernel and busybox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    /// The name `--arch` takes.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86-64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The other one.
    pub fn other(self) -> Arch {
        match self {
            Arch::X86_64 => Arch::Arm64,
            Arch::Arm64 => Arch::X86_64,
        }
    }

    /// The static binary built for this architecture.
    pub fn binary(self) -> &'static Path {
        static ARM64: OnceLock<PathBuf> = OnceLock::new();
        match self {
            Arch::X86_64 => binary(),
            Arch::Arm64 => ARM64.get_or_init(test_support::arm64_binary),
        }
    }

    /// The test kernel with `qemu-tests/keys/builtin.pem` trusted.
    pub fn test_kernel(self) -> &'static Path {
        match self {
            Arch::X86_64 => test_kernel(),
            Arch::Arm64 => arm64_test_kernel(),
        }
    }

    /// Debian's busybox-static for this architecture.
    pub fn busybox(self) -> Vec<u8> {
        match self {
            Arch::X86_64 => busybox(),
            Arch::Arm64 => {
                let path = last_line(&mut Command::new(
                    repo().join("scripts/fetch-arm64-busybox"),
                ));
                fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
            }
        }
    }

    /// The architecture of a kernel image: arm64's `Image` has "ARM\x64" at offset 0x38.
    fn of_kernel(kernel: &Path) -> Arch {
        let mut head = [0u8; 0x3c];
        let read = fs::File::open(kernel).and_then(|mut f| f.read_exact(&mut head));
        read.unwrap_or_else(|e| panic!("{}: {e}", kernel.display()));
        if &head[0x38..] == b"ARM\x64" {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    /// The QEMU program, its machine arguments and the serial console's name.
    fn qemu(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", &["-accel", "tcg"], "ttyS0"),
            Arch::Arm64 => (
                "qemu-system-aarch64",
                &["-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg"],
                "ttyAMA0",
            ),
        }
    }
}

/// The static release binary (built once per test process).
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        repo().join(last_line(
            Command::new(repo().join("scripts/build-static")).current_dir(repo()),
        ))
    })
}

/// The test kernel with `qemu-tests/keys/builtin.pem` trusted (built once per machine, cached).
pub fn test_kernel() -> &'static Path {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        let script = repo().join("kernel-config/build-test-kernel");
        PathBuf::from(last_line(Command::new(script).arg(key("builtin.pem"))))
    })
}

/// The arm64 test kernel (`build-test-kernel --arch arm64`: tinyconfig + sysext.config +
/// arm64.config), with `qemu-tests/keys/builtin.pem` trusted.
pub fn arm64_test_kernel() -> &'static Path {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        let script = repo().join("kernel-config/build-test-kernel");
        let mut cmd = Command::new(script);
        PathBuf::from(last_line(
            cmd.args(["--arch", "arm64"]).arg(key("builtin.pem")),
        ))
    })
}

/// The test kernel without DM_VERITY_VERIFY_ROOTHASH_SIG (kernel-config/no-roothash-sig.config).
pub fn test_kernel_without_signatures() -> &'static Path {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        let script = repo().join("kernel-config/build-test-kernel");
        let extra = repo().join("kernel-config/no-roothash-sig.config");
        PathBuf::from(last_line(
            Command::new(script).arg(key("builtin.pem")).arg(extra),
        ))
    })
}

/// The test kernel plus what systemd and udev need (kernel-config/systemd.config): for
/// dracut-built initrds. It is also the modular variant: see [`modular_kernel`].
pub fn dracut_test_kernel() -> &'static Path {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        let script = repo().join("kernel-config/build-test-kernel");
        let extra = repo().join("kernel-config/systemd.config");
        PathBuf::from(last_line(
            Command::new(script).arg(key("builtin.pem")).arg(extra),
        ))
    })
}

/// The modular test kernel (the dracut variant: loadable modules, btrfs one of them) and its
/// modules directory `<dir>/modules/lib/modules/<kver>`.
pub fn modular_kernel() -> (&'static Path, PathBuf) {
    let kernel = dracut_test_kernel();
    let dir = kernel.parent().unwrap().join("modules/lib/modules");
    let kver = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    (kernel, kver)
}

/// Debian's own kernel package, fetched once per machine: (vmlinuz, modules dir).
pub fn debian_kernel() -> (PathBuf, PathBuf) {
    let root = test_support::debian_kernel_root();
    let boot = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path());
    let vmlinuz = boot
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz")
        })
        .unwrap();
    let modules = std::fs::read_dir(root.join("lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    (vmlinuz, modules)
}

/// Our binary with arguments, to success; its stdout.
pub fn ours(args: &[&str]) -> String {
    let out = Cli::new(binary())
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .succeeds();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// busybox from Debian's busybox-static package.
pub fn busybox() -> Vec<u8> {
    fs::read("/usr/bin/busybox").expect("busybox-static is installed by .ci/install-deps")
}

/// A root filesystem: busybox with its applets, and `/sbin/init` running `script` after
/// printing `ROOT-INIT: start`, then rebooting (QEMU exits under -no-reboot).
pub fn root_tree(dir: &Path, script: &str) -> PathBuf {
    root_tree_for(Arch::X86_64, dir, script)
}

/// [`root_tree`] with `arch`'s busybox.
pub fn root_tree_for(arch: Arch, dir: &Path, script: &str) -> PathBuf {
    let root = dir.join("rootfs");
    let init = format!(
        "#!/bin/sh\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\necho ROOT-INIT: start\n\
         mount -t proc proc /proc 2>/dev/null\n{script}\necho ROOT-INIT: done\nreboot -f\n"
    );
    write_tree(
        &root,
        &[
            ("bin/busybox", &arch.busybox(), 0o755),
            ("sbin/init", init.as_bytes(), 0o755),
        ],
    );
    for applet in [
        "sh", "echo", "cat", "ls", "mount", "reboot", "grep", "test", "stat", "sleep", "dmesg",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "usr/bin",
        "etc",
        "var/lib/extensions",
        "tmp",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    root
}

/// A disk image with a GPT and one ext4 partition made from `tree` (label `rootfs`);
/// returns (image, partition UUID, filesystem UUID).
pub fn root_disk(dir: &Path, tree: &Path) -> (PathBuf, String, String) {
    let (part_uuid, fs_uuid) = (
        "6a1c8b1e-4a1f-4c1e-9a4b-2b5d2f0e9c01",
        "0c9b7d5e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
    );
    let fs_img = dir.join("rootfs.ext4");
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            "rootfs",
            "-U",
            fs_uuid,
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .args([s(tree), s(&fs_img), "64M"]));
    let disk = dir.join("disk.img");
    let fs_bytes = fs::read(&fs_img).unwrap();
    let start = 2048 * 512;
    let mut img = vec![0u8; start + fs_bytes.len() + 1024 * 1024];
    img[start..start + fs_bytes.len()].copy_from_slice(&fs_bytes);
    fs::write(&disk, img).unwrap();
    let table = format!(
        "label: gpt\nstart=2048, size={}, type=0fc63daf-8483-4772-8e79-3d69d8477de4, uuid={part_uuid}, name=root\n",
        fs_bytes.len() / 512
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", s(&disk)])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(sfdisk.stdin.as_mut().unwrap(), table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
    (disk, part_uuid.to_owned(), fs_uuid.to_owned())
}

/// A finished boot: the console text and how long it took.
pub struct Boot {
    pub console: String,
    /// When each console line arrived, from QEMU's start.
    pub arrivals: Vec<(Duration, String)>,
    pub wall: Duration,
    pub timed_out: bool,
}

impl Boot {
    /// Panics with the console if `needle` is not on it.
    pub fn expect(&self, needle: &str) -> &Self {
        assert!(
            self.console.contains(needle),
            "console lacks {needle:?}:\n{}",
            self.console
        );
        self
    }

    pub fn expect_not(&self, needle: &str) -> &Self {
        assert!(
            !self.console.contains(needle),
            "console has {needle:?}:\n{}",
            self.console
        );
        self
    }

    /// When the first console line containing `needle` arrived (wall clock, from QEMU's start).
    pub fn wall_of(&self, needle: &str) -> Option<Duration> {
        let found = self.arrivals.iter().find(|(_, l)| l.contains(needle));
        found.map(|(t, _)| *t)
    }

    /// Guest timestamps of /init's start, the first merge of extensions (into the initrd's
    /// /usr, or with `rd.sysext.sysroot=1` the root's) and the switch root, and the wall time:
    /// one line for a test's output.
    pub fn timeline(&self) -> String {
        let t = |needle: &str| {
            self.time_of(needle)
                .map_or("-".into(), |t| format!("{t:.3}"))
        };
        format!(
            "kernel -> /init {} s, merged {} s, switch root {} s (guest); wall {:.1} s",
            t("starting as PID 1"),
            t("extension(s) into"),
            t("switch root"),
            self.wall.as_secs_f64()
        )
    }

    /// The kernel timestamp (seconds) of the first console line containing `needle`.
    pub fn time_of(&self, needle: &str) -> Option<f64> {
        let line = self.console.lines().find(|l| l.contains(needle))?;
        let inner = line.split_once('[')?.1.split_once(']')?.0;
        inner.trim().parse().ok()
    }
}

/// What to boot; the kernel image decides the machine (x86-64 or arm64 `-M virt`).
pub struct Qemu<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub disks: Vec<PathBuf>,
    /// More QEMU arguments: other disk controllers (`-device nvme,…`), `-m`, `-smp`.
    pub extra: Vec<String>,
    pub append: String,
    pub timeout: Duration,
}

impl Qemu<'_> {
    /// Boots and asserts that the guest ended by itself (reboot under -no-reboot) in time.
    pub fn boot_to_end(&self) -> Boot {
        let boot = self.boot();
        assert!(
            !boot.timed_out,
            "QEMU did not end by itself:\n{}",
            boot.console
        );
        boot
    }

    /// Boots under TCG with the serial console on stdout; kills QEMU after the timeout.
    pub fn boot(&self) -> Boot {
        let (program, machine, console) = Arch::of_kernel(self.kernel).qemu();
        let mut cmd = qemu_command(program, machine);
        cmd.args(["-kernel", s(self.kernel), "-initrd", s(self.initrd)])
            .args([
                "-append",
                &format!(
                    "console={console} panic=-1 printk.devkmsg=on {}",
                    self.append
                ),
            ]);
        virtio_disks(&mut cmd, &self.disks);
        cmd.args(&self.extra);
        run_qemu(cmd, self.timeout)
    }
}

/// The kernel command line the `-kernel` boots get, for a UKI's `.cmdline`.
pub const CONSOLE_CMDLINE: &str = "console=ttyS0 panic=-1 printk.devkmsg=on";

/// What to boot through UEFI: OVMF (code read-only, a private copy of the variables) boots the
/// ESP's default path `\EFI\BOOT\BOOTX64.EFI`, here `uki`, with `esp` files (path on the
/// ESP, host file) beside it, as systemd-stub finds `BOOTX64.EFI.extra.d/*.raw`. The ESP is a
/// vfat image made with mkfs.vfat and mtools in `dir`, the first virtio disk; no NIC (OVMF
/// would try PXE first). With `tpm`, a fresh swtpm (TPM 2.0, state in `dir`) is the machine's
/// TPM (tpm-tis), started before QEMU and killed after.
pub struct Uefi<'a> {
    pub dir: &'a Path,
    pub uki: &'a Path,
    pub esp: Vec<(String, PathBuf)>,
    pub disks: Vec<PathBuf>,
    pub extra: Vec<String>,
    pub timeout: Duration,
    pub tpm: bool,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

impl Uefi<'_> {
    pub fn boot(&self) -> Boot {
        let vars = self.dir.join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars).expect("ovmf is installed by .ci/install-deps");
        let (program, machine, _) = Arch::X86_64.qemu();
        let mut cmd = qemu_command(program, machine);
        cmd.args(["-nic", "none"])
            .args([
                "-drive",
                &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            ])
            .args([
                "-drive",
                &format!("if=pflash,format=raw,file={}", vars.display()),
            ]);
        let mut disks = vec![self.esp_image()];
        disks.extend(self.disks.iter().cloned());
        virtio_disks(&mut cmd, &disks);
        cmd.args(&self.extra);
        let Some(mut swtpm) = self.tpm.then(|| swtpm(self.dir, &mut cmd)) else {
            return run_qemu(cmd, self.timeout);
        };
        let boot = run_qemu(cmd, self.timeout);
        let _ = swtpm.kill();
        let _ = swtpm.wait();
        boot
    }

    /// A vfat image holding the UKI as `EFI/BOOT/BOOTX64.EFI` and the `esp` files.
    fn esp_image(&self) -> PathBuf {
        let img = self.dir.join("esp.img");
        let _ = fs::remove_file(&img);
        let mut files = vec![("EFI/BOOT/BOOTX64.EFI".to_owned(), self.uki.to_owned())];
        files.extend(self.esp.iter().cloned());
        let bytes: u64 = files
            .iter()
            .map(|(_, f)| fs::metadata(f).unwrap().len())
            .sum();
        let kib = (bytes / 1024 + 16 * 1024).max(64 * 1024);
        run(Command::new("mkfs.vfat").args(["-C", s(&img), &kib.to_string()]));
        let mut dirs: Vec<String> = Vec::new();
        for (at, _) in &files {
            let mut parent = Path::new(at).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                dirs.push(p.display().to_string());
                parent = p.parent();
            }
        }
        dirs.sort();
        dirs.dedup();
        let mtools = |tool: &str, args: &[&str]| {
            run(Command::new(tool)
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-i", s(&img)])
                .args(args));
        };
        for d in &dirs {
            mtools("mmd", &[&format!("::{d}")]);
        }
        for (at, file) in &files {
            mtools("mcopy", &[s(file), &format!("::{at}")]);
        }
        img
    }
}

/// The root's init prints PCRs 11 and 13 of each bank from sysfs (Linux 6.1 has them there).
pub const PRINT_PCRS: &str = "mount -t sysfs sysfs /sys 2>/dev/null\n\
    for p in 11 13; do for b in sha1 sha256 sha384 sha512; do \
    echo \"PCR$p-$b=$(cat /sys/class/tpm/tpm0/pcr-$b/$p)\"; done; done";

/// (bank, lowercase hex) of PCR `pcr` from the root's PRINT_PCRS lines; banks without a value
/// (not active) are left out.
pub fn pcr_seen(boot: &Boot, pcr: u32) -> Vec<(String, String)> {
    let tag = format!("PCR{pcr}-");
    let lines = boot.console.lines().filter_map(|l| l.split_once(&tag));
    let values = lines.filter_map(|(_, kv)| kv.trim().split_once('='));
    let found = values.filter(|(_, v)| !v.is_empty() && !v.contains('$'));
    found
        .map(|(b, v)| (b.to_owned(), v.to_ascii_lowercase()))
        .collect()
}

/// `systemd-measure calculate` on `uki`'s sections (objcopy) for the phases
/// enter-initrd:leave-initrd: (bank, hex) for sha1 and sha256 (252 predicts no others).
pub fn pcr11_predicted(uki: &Path) -> Vec<(String, String)> {
    let mut cmd = Command::new("/lib/systemd/systemd-measure");
    cmd.arg("calculate");
    for section in ["linux", "osrel", "cmdline", "initrd"] {
        let out = uki.with_extension(section);
        run(Command::new("objcopy")
            .args(["-O", "binary", "--only-section", &format!(".{section}")])
            .args([s(uki), s(&out)]));
        cmd.arg(format!("--{section}={}", out.display()));
    }
    cmd.args([
        "--bank=sha1",
        "--bank=sha256",
        "--phase=enter-initrd:leave-initrd",
    ]);
    let text = String::from_utf8(run(&mut cmd).stdout).unwrap();
    let values = text
        .lines()
        .filter_map(|l| l.strip_prefix("11:")?.split_once('='));
    values.map(|(b, v)| (b.to_owned(), v.to_owned())).collect()
}

/// Starts swtpm (a TPM 2.0, state in `dir/tpm`, control socket `dir/swtpm.sock`) and adds
/// the QEMU arguments that make it the machine's TPM.
fn swtpm(dir: &Path, qemu: &mut Command) -> std::process::Child {
    let (state, sock) = (dir.join("tpm"), dir.join("swtpm.sock"));
    fs::create_dir_all(&state).unwrap();
    let _ = fs::remove_file(&sock);
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "startup-clear", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .spawn()
        .expect("swtpm is installed by .ci/install-deps");
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "swtpm did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    qemu.args([
        "-chardev",
        &format!("socket,id=chrtpm,path={}", sock.display()),
    ])
    .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
    .args(["-device", "tpm-tis,tpmdev=tpm0"]);
    child
}

/// QEMU under TCG with 512 MiB, the serial console on stdout, ending on reboot.
fn qemu_command(program: &str, machine: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(machine)
        .args(["-m", "512", "-nographic", "-no-reboot", "-monitor", "none"]);
    cmd
}

fn virtio_disks(cmd: &mut Command, disks: &[PathBuf]) {
    for d in disks {
        cmd.args([
            "-drive",
            &format!("file={},format=raw,if=virtio", d.display()),
        ]);
    }
}

/// Runs QEMU, noting when each console line arrives; kills it after `timeout`.
fn run_qemu(mut cmd: Command, timeout: Duration) -> Boot {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut arrivals = Vec::new();
        for line in std::io::BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            arrivals.push((start.elapsed(), text));
        }
        arrivals
    });
    let timed_out = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let arrivals = reader.join().unwrap();
    let console = arrivals.iter().map(|(_, l)| format!("{l}\n")).collect();
    Boot {
        console,
        arrivals,
        wall: start.elapsed(),
        timed_out,
    }
}
