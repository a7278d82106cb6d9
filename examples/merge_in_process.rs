//! Benchmark helper for scripts/bench-merge: merge + unmerge timed inside one process, as boot
//! mode does it (PID 1 calls the library; no process is started per merge).
//! Usage: merge_in_process ROOT RUNS [sysext|confext] [MUTABLE-MODE] — prints "merge
//! min/median ms, unmerge min/median ms".

use std::path::PathBuf;
use std::time::Instant;

use initrd_sysext::format::release::Class;
use initrd_sysext::runtime::mutable::Mutable;
use initrd_sysext::runtime::{merge, verbs};

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.3} / {:.3}", v[0], v[v.len() / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().expect("usage: merge_in_process ROOT RUNS"));
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(15);
    let class = match args.next().as_deref() {
        Some("confext") => Class::Confext,
        _ => Class::Sysext,
    };
    let mode = args.next().as_deref().and_then(Mutable::from_name);
    let (mut merges, mut unmerges) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let mut ctx = verbs::context(&root, class, None, false);
        ctx.mutable = mode.unwrap_or_default();
        let report = verbs::merge(&ctx, &mut |_| ()).expect("merge");
        merges.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
        let t = Instant::now();
        merge::unmerge(&root, class).expect("unmerge");
        unmerges.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("{}   {}", stats(merges), stats(unmerges));
}
