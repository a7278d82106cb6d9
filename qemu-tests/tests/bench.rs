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
