//! UEFI and measured-boot benchmark (run by scripts/bench-uefi, not by the test suite): OVMF
//! and swtpm under TCG boot two UKIs of the same kernel (the UEFI variant of the test kernel,
//! kernel-config/systemd.config) onto the same root, alternating, `BENCH_BOOTS` times each
//! (default 3): ours (boot mode measures `enter-initrd`/`leave-initrd` and merges a signed
//! extension from the ESP) and dracut 059's systemd initrd with its `systemd-pcrphase` module
//! (`systemd-pcrphase-initrd.service` measures the same two phases) and systemd-sysext merging
//! the same extension. Medians of firmware → kernel → /init → root's init and of the time each
//! initrd spends measuring; the host-side round trip of one TPM2_PCR_Extend on swtpm. In every
//! boot PCR 11 seen in the root must equal `systemd-measure calculate`'s prediction for that
//! UKI, so both initrds did measure. `BENCH_TIMELINE=1` prints every console.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_tests::dracut::{dracut_base, extension, initrd as dracut_initrd, SYSTEMD};
use qemu_tests::*;

/// The root's init: a kmsg stamp as soon as it runs, then PCRs 11 and 13 (PRINT_PCRS).
fn root_script() -> String {
    format!("echo ROOT-INIT-KMSG > /dev/kmsg\n{PRINT_PCRS}")
}

/// systemd-pcrphase-initrd.service's description, as PID 1 logs its jobs.
const PCRPHASE: &str = "TPM2 PCR Barrier (initrd)";

/// One boot's numbers in seconds (None when the console lacks the line).
struct Run {
    /// QEMU start → OVMF starts the UKI (wall: "BdsDxe: starting").
    firmware: Option<f64>,
    /// → the kernel starts (wall: /init's arrival less its guest stamp): systemd-stub loading,
    /// measuring and handing over the sections, the EFI stub.
    stub: Option<f64>,
    /// Guest stamps: kernel → /init, /init → root's init.
    to_init: Option<f64>,
    to_root: Option<f64>,
    /// QEMU start → root's init (wall).
    wall_root: Option<f64>,
    /// Measuring the two phases: ours from boot mode's own lines, dracut's from PID 1's job
    /// lines for systemd-pcrphase-initrd.service (start → finished, stopping → stopped).
    enter: Option<f64>,
    leave: Option<f64>,
    /// Ours: the extension's PCR 13 event (none for dracut: systemd measures no extension).
    extension: Option<f64>,
}

fn measure(boot: &Boot, ours: bool) -> Run {
    let init = boot.time_of("Run /init as init process");
    let wall = |n: &str| boot.wall_of(n).map(|d| d.as_secs_f64());
    let (enter, leave) = if ours {
        (
            ours_measure(boot, "PCR 11 extended with enter-initrd ("),
            ours_measure(boot, "PCR 11 extended with leave-initrd ("),
        )
    } else {
        (
            pcrphase_span(boot, "Starting", "Finished"),
            pcrphase_span(boot, "Stopping", "Stopped"),
        )
    };
    let firmware = wall("BdsDxe: starting");
    let kernel = wall("Run /init as init process")
        .zip(init)
        .map(|(w, g)| w - g);
    Run {
        firmware,
        stub: kernel.zip(firmware).map(|(k, f)| k - f),
        to_init: init,
        to_root: boot.time_of("ROOT-INIT-KMSG").zip(init).map(|(r, i)| r - i),
        wall_root: wall("ROOT-INIT-KMSG"),
        enter,
        leave,
        extension: ours
            .then(|| ours_measure(boot, "PCR 13 extended with sysext:"))
            .flatten(),
    }
}

/// Boot mode's "PCR N extended with EVENT (…) in X ms" line starting with `needle`, in seconds.
fn ours_measure(boot: &Boot, needle: &str) -> Option<f64> {
    let line = boot.console.lines().find(|l| l.contains(needle))?;
    let ms = line.rsplit_once(" in ")?.1.trim().strip_suffix(" ms")?;
    ms.parse::<f64>().ok().map(|ms| ms / 1000.0)
}

/// Guest seconds from PID 1's `from` line to its `to` line about systemd-pcrphase-initrd.
fn pcrphase_span(boot: &Boot, from: &str, to: &str) -> Option<f64> {
    let at = |verb: &str| {
        let lines = boot.console.lines();
        let line = lines
            .filter(|l| l.contains(PCRPHASE) && l.contains("systemd[1]"))
            .find(|l| l.contains(verb))?;
        boot.time_of(line)
    };
    Some(at(to)? - at(from)?)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// The median of `field` over `runs` in ms (`ms`) or s; "*" when some boots lack it.
fn med(runs: &[Run], field: fn(&Run) -> Option<f64>, ms: bool) -> (Option<f64>, String) {
    let values: Vec<f64> = runs.iter().filter_map(field).collect();
    let mark = if values.len() == runs.len() { "" } else { "*" };
    let m = median(values);
    let text = m.map_or("-".into(), |m| {
        if ms {
            format!("{:.1} ms{mark}", m * 1000.0)
        } else {
            format!("{m:.2} s{mark}")
        }
    });
    (m, text)
}

/// A UKI of the UEFI test kernel: `initrd` given, or ours built in the same call.
fn uki(dir: &Path, name: &str, initrd: Option<&Path>, cmdline: &str) -> PathBuf {
    let (osrel, out) = (dir.join("os-release"), dir.join(format!("{name}.efi")));
    std::fs::write(&osrel, "ID=debian\nVERSION_ID=12\n").unwrap();
    let mut args = vec!["build", "uki", "--kernel", s(dracut_test_kernel())];
    match initrd {
        Some(i) => args.extend(["--initrd", s(i)]),
        None => args.extend(["--init", s(binary())]),
    }
    args.extend(["--cmdline", cmdline, "--os-release", s(&osrel)]);
    args.extend(["--output", s(&out)]);
    ours(&args);
    out
}

/// dracut's systemd initrd with systemd-pcrphase, and systemd-sysext with `ext` in
/// /etc/extensions (systemd 252 does not read the stub's /.extra/sysext).
fn dracut_systemd_pcrphase(d: &Path, ext: &Path) -> (PathBuf, Duration) {
    let base = dracut_base(d);
    let out = d.join("dracut.img");
    let modules = format!("{SYSTEMD} systemd-pcrphase systemd-sysext systemd-veritysetup dm");
    let include = ["--include", s(ext), "/etc/extensions/tool.raw"];
    let start = Instant::now();
    dracut_initrd(d, &base, &d.join("none"), &modules, &include, &out);
    (out, start.elapsed())
}

/// One boot of `uki` from a fresh ESP (with `ext` in its drop-in directory), a fresh swtpm and
/// a copy of `disk`.
fn boot(dir: &Path, uki: &Path, disk: &Path, ext: &Path) -> Boot {
    std::fs::create_dir_all(dir).unwrap();
    let own_disk = dir.join("disk.img");
    std::fs::copy(disk, &own_disk).unwrap();
    let name = ext.file_name().unwrap().to_string_lossy();
    Uefi {
        dir,
        uki,
        esp: vec![(
            format!("EFI/BOOT/BOOTX64.EFI.extra.d/{name}"),
            ext.to_owned(),
        )],
        disks: vec![own_disk],
        extra: Vec::new(),
        timeout: Duration::from_secs(300),
        tpm: true,
    }
    .boot()
}

/// Median host round trip of one TPM2_PCR_Extend (PCR 16, all four banks, as boot mode sends
/// for each measurement) on a fresh swtpm over its socket, from `n` in a row.
fn swtpm_extend_round_trip(dir: &Path, n: usize) -> f64 {
    let (server, ctrl) = (dir.join("srv.sock"), dir.join("ctrl.sock"));
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "startup-clear", "--tpmstate"])
        .arg(format!("dir={}", dir.join("state").display()))
        .arg("--server")
        .arg(format!("type=unixio,path={}", server.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", ctrl.display()))
        .spawn()
        .expect("swtpm is installed by .ci/install-deps");
    let start = Instant::now();
    while !server.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "swtpm did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sock = std::os::unix::net::UnixStream::connect(&server).unwrap();
    let command = pcr_extend_all_banks(16);
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        sock.write_all(&command).unwrap();
        let mut header = [0u8; 10];
        sock.read_exact(&mut header).unwrap();
        let size = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; size - 10];
        sock.read_exact(&mut rest).unwrap();
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(&header[6..10], &[0, 0, 0, 0], "TPM2_PCR_Extend failed");
    }
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    median(times).unwrap()
}

/// TPM2_PCR_Extend of `pcr` with zero digests in sha1, sha256, sha384 and sha512, an empty
/// password session (TPM 2.0 Part 3 §22.2; the bytes boot mode sends, digests aside).
fn pcr_extend_all_banks(pcr: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(pcr.to_be_bytes());
    body.extend(9u32.to_be_bytes()); // authorization area: TPM_RS_PW, no nonce/attrs/hmac
    body.extend([0x40, 0, 0, 0x09, 0, 0, 0, 0, 0]);
    let banks: [(u16, usize); 4] = [(0x0004, 20), (0x000b, 32), (0x000c, 48), (0x000d, 64)];
    body.extend((banks.len() as u32).to_be_bytes());
    for (alg, len) in banks {
        body.extend(alg.to_be_bytes());
        body.extend(vec![0u8; len]);
    }
    let mut command = vec![0x80, 0x02]; // TPM_ST_SESSIONS
    command.extend(((10 + body.len()) as u32).to_be_bytes());
    command.extend(0x0000_0182u32.to_be_bytes()); // TPM_CC_PCR_Extend
    command.extend(body);
    command
}

#[test]
#[ignore = "benchmark: scripts/bench-uefi"]
fn uefi_measured_boot_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let boots: usize = std::env::var("BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let ext = extension(d, "tool", "trusted");
    let (disk, part_uuid, _) = root_disk(d, &root_tree(d, &root_script()));
    let cmdline = format!("{CONSOLE_CMDLINE} root=PARTUUID={part_uuid}");
    let start = Instant::now();
    let ours_uki = uki(d, "ours", None, &cmdline);
    let ours_build = start.elapsed();
    let (dracut_img, dracut_build) = dracut_systemd_pcrphase(d, &ext);
    // PID 1 logs its jobs to kmsg, stamped when they happen; no shell, reboot on failure.
    let dracut_cmdline =
        format!("{cmdline} systemd.log_target=kmsg rd.shell=0 rd.emergency=reboot");
    let dracut_uki = uki(d, "dracut", Some(&dracut_img), &dracut_cmdline);
    let contenders = [
        ("ours", &ours_uki, ours_build, true),
        (
            "dracut 059 + systemd 252 + systemd-pcrphase",
            &dracut_uki,
            dracut_build,
            false,
        ),
    ];
    let predicted: Vec<_> = contenders.iter().map(|c| pcr11_predicted(c.1)).collect();
    let mut runs: Vec<Vec<Run>> = contenders.iter().map(|_| Vec::new()).collect();
    for i in 0..boots {
        for (c, (label, uki, _, is_ours)) in contenders.iter().enumerate() {
            let b = boot(&d.join(format!("run-{c}-{i}")), uki, &disk, &ext);
            if std::env::var_os("BENCH_TIMELINE").is_some() {
                println!("--- {label}, boot {}\n{}", i + 1, b.console);
            }
            assert!(!b.timed_out, "{label}: boot did not end:\n{}", b.console);
            b.expect("ROOT-INIT: done");
            if *is_ours {
                b.expect("merged 1 extension(s) into /usr: tool");
            } else {
                b.expect("erofs: (device dm-");
            }
            let seen = pcr_seen(&b, 11);
            for (bank, value) in &predicted[c] {
                let s = seen.iter().find(|(sb, _)| sb == bank).map(|(_, v)| v);
                assert_eq!(
                    s,
                    Some(value),
                    "{label}: PCR 11 {bank} vs systemd-measure:\n{}",
                    b.console
                );
            }
            runs[c].push(measure(&b, *is_ours));
        }
    }
    println!(
        "UEFI test kernel under TCG, OVMF + swtpm, {boots} boots each (medians; * = some boots lack the line)\n"
    );
    println!(
        "| initrd | build | UKI size | firmware (QEMU start → UKI starts) | → kernel starts (systemd-stub) | kernel → /init | /init → root's init | QEMU start → root's init | enter-initrd | leave-initrd |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut measuring = Vec::new();
    for ((label, uki, build, _), runs) in contenders.iter().zip(&runs) {
        let (enter, enter_t) = med(runs, |r| r.enter, true);
        let (leave, leave_t) = med(runs, |r| r.leave, true);
        measuring.push((enter, leave, med(runs, |r| r.extension, true).0));
        println!(
            "| {label} | {:.2} s | {} bytes | {} | {} | {} | {} | {} | {enter_t} | {leave_t} |",
            build.as_secs_f64(),
            std::fs::metadata(uki).unwrap().len(),
            med(runs, |r| r.firmware, false).1,
            med(runs, |r| r.stub, false).1,
            med(runs, |r| r.to_init, false).1,
            med(runs, |r| r.to_root, true).1,
            med(runs, |r| r.wall_root, false).1,
        );
    }
    let round_trip = swtpm_extend_round_trip(&d.join("swtpm"), 200);
    let ms = |v: Option<f64>| v.map_or(f64::NAN, |v| v * 1000.0);
    let (ours_enter, ours_leave) = (ms(measuring[0].0), ms(measuring[0].1));
    let ours_ext = ms(measuring[0].2);
    let ours_total = ours_enter + ours_leave + ours_ext;
    let theirs = ms(measuring[1].0) + ms(measuring[1].1);
    println!(
        "\nmeasuring: ours {ours_total:.1} ms (enter-initrd {ours_enter:.1} + leave-initrd \
         {ours_leave:.1} + the extension's PCR 13 event {ours_ext:.1}) vs systemd-pcrphase's \
         two initrd phases {theirs:.1} ms: {:.0}x less",
        theirs / ours_total
    );
    println!(
        "floor: one TPM2_PCR_Extend (4 banks) on swtpm from the host, median of 200: {:.3} ms",
        round_trip * 1000.0
    );
}
