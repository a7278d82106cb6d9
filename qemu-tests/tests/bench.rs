//! Boot benchmarks (run by scripts/bench-boot, not by the test suite): guest timestamps from
//! the console for kernel start -> /init -> extensions merged -> switch root, initrd sizes,
//! and the merge time of one signed ~100 MB extension.

use std::path::Path;
use std::time::Duration;

use qemu_tests::*;

fn report(label: &str, boot: &Boot, initrd: &Path) {
    let t = |needle: &str| {
        boot.time_of(needle)
            .map_or("-".into(), |t| format!("{t:.3}"))
    };
    let merged_line = boot
        .console
        .lines()
        .find(|l| l.contains("merged ["))
        .unwrap_or("-");
    println!(
        "{label}: /init {} s, initrd ready {} s, switch root {} s (guest); wall {:.1} s; initrd {} bytes\n  {}",
        t("starting as PID 1"),
        t("initrd ready"),
        t("switch root"),
        boot.wall.as_secs_f64(),
        std::fs::metadata(initrd).unwrap().len(),
        merged_line.trim()
    );
    if std::env::var_os("BENCH_TIMELINE").is_some() {
        let from = boot.console.find("starting as PID 1").unwrap_or(0);
        let to = boot
            .console
            .find("switch root")
            .map_or(boot.console.len(), |i| i + 40);
        println!("{}", &boot.console[from..to.min(boot.console.len())]);
    }
}

fn signed_extension(dir: &Path, name: &str, tree: &Path, fs: &str) -> std::path::PathBuf {
    let out = dir.join(format!("{name}.raw"));
    ours(&[
        "build",
        "sysext",
        "--tree",
        s(tree),
        "--name",
        name,
        "--id",
        "_any",
        "--fs",
        fs,
        "--key",
        s(&key("trusted.key")),
        "--cert",
        s(&key("trusted.crt")),
        "--output",
        s(&out),
    ]);
    out
}

fn boot(dir: &Path, kernel: &Path, initrd: &Path, append: &str) -> Boot {
    // Under `quiet` nothing reaches the serial console during the boot: the root prints the log.
    let root = root_tree(dir, "dmesg | grep -e initrd-sysext -e 'Run /init'");
    let (disk, part_uuid, _) = root_disk(dir, &root);
    Qemu {
        kernel,
        initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: format!(
            "root=PARTUUID={part_uuid} {append} {}",
            std::env::var("BENCH_APPEND").unwrap_or_default()
        ),
        timeout: Duration::from_secs(300),
    }
    .boot()
}

#[test]
#[ignore = "benchmark: scripts/bench-boot"]
fn boot_timings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let small = d.join("small");
    write_tree(&small, &[("usr/bin/busybox", &busybox(), 0o755)]);
    let img = signed_extension(d, "small", &small, "erofs");
    let base = d.join("base.cpio.zst");
    ours(&[
        "build",
        "initrd",
        "--init",
        s(binary()),
        "--output",
        s(&base),
    ]);
    let with_ext = d.join("ext.cpio.zst");
    ours(&[
        "build",
        "initrd",
        "--init",
        s(binary()),
        "--extension",
        s(&img),
        "--output",
        s(&with_ext),
    ]);
    report(
        "test kernel, no extension",
        &boot(&d.join("a"), test_kernel(), &base, ""),
        &base,
    );
    report(
        "test kernel, one signed erofs extension",
        &boot(&d.join("b"), test_kernel(), &with_ext, ""),
        &with_ext,
    );
    // ~100 MB of files from the host's /usr as one signed extension.
    let big = d.join("big");
    run(std::process::Command::new("sh").arg("-c").arg(format!(
        "mkdir -p {0}/usr && cd /usr && find lib/x86_64-linux-gnu share/locale share/doc share/perl5 -type f -size -300k | LC_ALL=C sort | head -n 5000 | tar -cf - -T - 2>/dev/null | tar -C {0}/usr -xf -",
        big.display()
    )));
    let big_img = signed_extension(d, "big", &big, "erofs");
    let big_initrd = d.join("big.cpio.zst");
    ours(&[
        "build",
        "initrd",
        "--init",
        s(binary()),
        "--extension",
        s(&big_img),
        "--compress",
        "none",
        "--output",
        s(&big_initrd),
    ]);
    let b = Qemu {
        kernel: test_kernel(),
        initrd: &big_initrd,
        disks: vec![root_disk(&d.join("c"), &root_tree(&d.join("c"), "")).0],
        extra: Vec::new(),
        append: "root=/dev/vda1".into(),
        timeout: Duration::from_secs(600),
    }
    .boot();
    println!(
        "signed DDI of {} bytes:",
        std::fs::metadata(&big_img).unwrap().len()
    );
    report("test kernel, one signed ~100 MB extension", &b, &big_initrd);
}

/// The same signed extension and root on the dracut test kernel: our own initrd (PID 1), dracut
/// + initrd-sysext (plain and systemd), dracut + systemd + its own systemd-sysext.
#[test]
#[ignore = "benchmark: scripts/bench-boot"]
fn dracut_comparison() {
    use qemu_tests::dracut::{dracut_base, extension, initrd as dracut_initrd, PLAIN, SYSTEMD};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = dracut_base(d);
    let extensions = d.join("extensions");
    std::fs::create_dir_all(&extensions).unwrap();
    let img = extension(d, "tool", "trusted");
    let ext = extensions.join("tool.raw");
    std::fs::rename(&img, &ext).unwrap();
    let ours_initrd = d.join("ours.cpio.zst");
    ours(&[
        "build",
        "initrd",
        "--init",
        s(binary()),
        "--extension",
        s(&ext),
        "--output",
        s(&ours_initrd),
    ]);
    let mut rows = vec![("our PID 1 initrd".to_owned(), ours_initrd)];
    let add_ours = || vec!["--add".to_owned(), "initrd-sysext".to_owned()];
    let flavours = [
        ("dracut + initrd-sysext", PLAIN.to_owned(), add_ours()),
        ("dracut + systemd + initrd-sysext", SYSTEMD.to_owned(), add_ours()),
        (
            "dracut + systemd + systemd-sysext",
            "bash systemd systemd-initrd dracut-systemd base rootfs-block systemd-sysext systemd-veritysetup dm".to_owned(),
            vec!["--include".to_owned(), s(&ext).to_owned(), "/etc/extensions/tool.raw".to_owned()],
        ),
    ];
    for (i, (label, modules, extra)) in flavours.into_iter().enumerate() {
        let out = d.join(format!("dracut{i}.img"));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let no_ext = d.join("none");
        let source = if extra[0] == "--add" {
            &extensions
        } else {
            &no_ext
        };
        dracut_initrd(d, &base, source, &modules, &extra, &out);
        rows.push((label.to_owned(), out));
    }
    println!(
        "| initrd | size | kernel -> /init | extension mounted | root's init runs | /init -> root's init |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, (label, initrd)) in rows.iter().enumerate() {
        let run_dir = d.join(format!("run{i}"));
        let root = root_tree(
            &run_dir,
            "echo ROOT-INIT-KMSG > /dev/kmsg\nls /usr/bin/busybox-sysext 2>&1",
        );
        let (disk, part_uuid, _) = root_disk(&run_dir, &root);
        let boot = Qemu {
            kernel: dracut_test_kernel(),
            initrd,
            disks: vec![disk],
            extra: Vec::new(),
            append: format!("root=PARTUUID={part_uuid}"),
            timeout: Duration::from_secs(300),
        }
        .boot();
        let t = |needle: &str| boot.time_of(needle);
        let show = |v: Option<f64>| v.map_or("-".into(), |t| format!("{t:.3} s"));
        let (init, done) = (t("Run /init as init process"), t("ROOT-INIT-KMSG"));
        println!(
            "| {label} | {} bytes | {} | {} | {} | {} |",
            std::fs::metadata(initrd).unwrap().len(),
            show(init),
            show(t("erofs: (device dm-0): mounted")),
            show(done),
            match (init, done) {
                (Some(a), Some(b)) => format!("{:.0} ms", (b - a) * 1000.0),
                _ => "-".into(),
            }
        );
        if std::env::var_os("BENCH_TIMELINE").is_some() {
            println!("{}", boot.console);
        }
    }
}
