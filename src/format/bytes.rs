//! Little-endian field access and relative-path splitting, shared by the on-disk format
//! readers (callers check bounds before reading a field).

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The names along a `/`-separated path relative to a filesystem root; empty and `.` parts
/// are skipped; None if a part is `..`.
pub fn components(path: &str) -> Option<Vec<&str>> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(|c| (c != "..").then_some(c))
        .collect()
}

/// Appends `name` to a relative path.
pub fn push(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('/');
    }
    path.push_str(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_paths() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le16(&b, 1), 0x0302);
        assert_eq!(le32(&b, 0), 0x0403_0201);
        assert_eq!(le64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(components("/usr//./lib/"), Some(vec!["usr", "lib"]));
        assert_eq!(components("usr/../etc"), None);
        let mut p = String::new();
        push(&mut p, "usr");
        push(&mut p, "lib");
        assert_eq!(p, "usr/lib");
    }
}
