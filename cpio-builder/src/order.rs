//! Helpers for reproducible archives: the entry order callers sort paths into, and
//! SOURCE_DATE_EPOCH clamping of modification times.

use std::cmp::Ordering;

/// Orders archive paths depth-first: component by component, each component compared
/// bytewise. A directory therefore comes before everything beneath it, and its whole subtree
/// comes before its next sibling: `a`, `a/b`, `a/b/c`, `a-b`, `a.b`.
///
/// Plain bytewise order (`LC_ALL=C find | sort`) differs: it sorts `a-b` and `a.b` between
/// `a` and `a/b`, because `-` and `.` sort before `/`. Both keep parents before children (the
/// kernel needs that: it does not create missing directories); this one also keeps each
/// directory's entries together, matching a sorted recursive walk.
pub fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// The modification time to store: `mtime`, but no later than `source_date_epoch` when set.
pub fn clamp_mtime(mtime: u64, source_date_epoch: Option<u64>) -> u64 {
    source_date_epoch.map_or(mtime, |limit| mtime.min(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_depth_first_with_parents_first() {
        let mut paths: Vec<&[u8]> = vec![
            b"a.b", b"a/b/c", b"b", b"a-b", b"a", b"a/b", b"a/c", b"a/b.x", b"\xff", b"A",
        ];
        paths.sort_by(|a, b| path_order(a, b));
        let expected: Vec<&[u8]> = vec![
            b"A", b"a", b"a/b", b"a/b/c", b"a/b.x", b"a/c", b"a-b", b"a.b", b"b", b"\xff",
        ];
        assert_eq!(paths, expected);
    }

    #[test]
    fn differs_from_plain_bytewise_order() {
        assert_eq!(b"a-b".as_slice().cmp(b"a/b"), Ordering::Less);
        assert_eq!(path_order(b"a-b", b"a/b"), Ordering::Greater);
        assert_eq!(path_order(b"a", b"a"), Ordering::Equal);
    }

    #[test]
    fn clamps_only_later_times() {
        assert_eq!(clamp_mtime(5, None), 5);
        assert_eq!(clamp_mtime(5, Some(10)), 5);
        assert_eq!(clamp_mtime(15, Some(10)), 10);
    }
}
