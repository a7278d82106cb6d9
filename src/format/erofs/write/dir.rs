//! Directory data for the writer: a directory's entries sorted by name, split into blocks.

use super::{Error, BLOCK};
use crate::format::erofs::layout::{
    encode_dir_block, Dirent, FT_BLKDEV, FT_CHRDEV, FT_DIR, FT_FIFO, FT_REG_FILE, FT_SOCK,
    FT_SYMLINK, NAME_MAX,
};
use crate::tree::{Kind, NodeId, Tree};

/// A directory's entries including `.` and `..`, sorted bytewise by name as lookups require.
pub(super) fn entries(
    tree: &Tree,
    dir: NodeId,
    nid: impl Fn(NodeId) -> u64,
) -> Result<Vec<Dirent<'_>>, Error> {
    let dot = |name, id| Dirent {
        name,
        nid: nid(id),
        file_type: FT_DIR,
    };
    let mut out = vec![dot(&b"."[..], dir), dot(b"..", tree.nodes[dir].parent)];
    for &child in tree.children(dir) {
        let node = &tree.nodes[child];
        if node.name.len() > NAME_MAX {
            return Err(Error::TooLong {
                path: tree.path(child),
                what: "file name",
            });
        }
        out.push(Dirent {
            name: &node.name,
            nid: nid(child),
            file_type: file_type(&node.kind),
        });
    }
    out.sort_unstable_by(|a, b| a.name.cmp(b.name));
    Ok(out)
}

fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::File { .. } => FT_REG_FILE,
        Kind::Dir { .. } => FT_DIR,
        Kind::CharDev(_) => FT_CHRDEV,
        Kind::BlockDev(_) => FT_BLKDEV,
        Kind::Fifo => FT_FIFO,
        Kind::Socket => FT_SOCK,
        Kind::Symlink(_) => FT_SYMLINK,
    }
}

/// Splits sorted entries into directory blocks, each holding as many entries as fit.
fn dir_blocks<'e, 'a>(ents: &'e [Dirent<'a>]) -> Vec<&'e [Dirent<'a>]> {
    let mut blocks = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, e) in ents.iter().enumerate() {
        let len = e.encoded_len();
        if used + len > BLOCK as usize {
            blocks.push(&ents[start..i]);
            (start, used) = (i, 0);
        }
        used += len;
    }
    blocks.push(&ents[start..]);
    blocks
}

/// Directory size: full blocks, then the used part of the last one.
pub(super) fn dir_size(ents: &[Dirent]) -> u64 {
    let blocks = dir_blocks(ents);
    let last: usize = blocks
        .last()
        .map_or(0, |b| b.iter().map(Dirent::encoded_len).sum());
    (blocks.len() as u64 - 1) * BLOCK + last as u64
}

/// Directory data: per block, the dirent array then the names; all but the last block padded.
pub(super) fn encode_dir(ents: &[Dirent]) -> Vec<u8> {
    let blocks = dir_blocks(ents);
    let mut b = Vec::with_capacity(blocks.len() * BLOCK as usize);
    for (i, block) in blocks.iter().enumerate() {
        let start = b.len();
        encode_dir_block(block, &mut b);
        if i + 1 < blocks.len() {
            b.resize(start + BLOCK as usize, 0);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file, meta};
    use super::*;
    use crate::format::bytes::le16;
    use crate::format::erofs::layout::decode_dir_block;

    /// Reads directory data back the way the kernel does.
    fn decode_dir(data: &[u8]) -> Vec<(Vec<u8>, u64, u8)> {
        let mut out = Vec::new();
        for block in data.chunks(BLOCK as usize) {
            decode_dir_block(block, &mut out).unwrap();
        }
        out.into_iter()
            .map(|e| (e.name.to_vec(), e.nid, e.file_type))
            .collect()
    }

    #[test]
    fn dirents_sorted_with_dots() {
        let mut t = Tree::new(meta());
        t.insert("a", meta(), file(b""), &meta()).unwrap();
        t.insert("-b", meta(), Kind::Fifo, &meta()).unwrap();
        t.insert("!c/x", meta(), Kind::Symlink(b"t".to_vec()), &meta())
            .unwrap();
        let nid = |id: NodeId| id as u64 * 10;
        let data = encode_dir(&entries(&t, 0, nid).unwrap());
        assert_eq!(le16(&data, 8), 5 * 12);
        assert_eq!(data.len(), 5 * 12 + 2 + 2 + 1 + 2 + 1);
        assert_eq!(dir_size(&entries(&t, 0, |_| 0).unwrap()), data.len() as u64);
        let got = decode_dir(&data);
        let want: Vec<(Vec<u8>, u64, u8)> = vec![
            (b"!c".to_vec(), nid(t.lookup("!c").unwrap()), FT_DIR),
            (b"-b".to_vec(), nid(t.lookup("-b").unwrap()), 5),
            (b".".to_vec(), 0, FT_DIR),
            (b"..".to_vec(), 0, FT_DIR),
            (b"a".to_vec(), nid(t.lookup("a").unwrap()), 1),
        ];
        assert_eq!(got, want);
        let sub = t.lookup("!c").unwrap();
        let names = decode_dir(&encode_dir(&entries(&t, sub, nid).unwrap()));
        assert_eq!(names[1], (b"..".to_vec(), 0, FT_DIR));
        assert_eq!(names[2].2, 7);
    }

    #[test]
    fn dirents_span_blocks() {
        let mut t = Tree::new(meta());
        for i in 0..300 {
            let name = format!("{i:03}{}", "n".repeat(37));
            t.insert(&name, meta(), file(b""), &meta()).unwrap();
        }
        let ents = entries(&t, 0, |id| id as u64).unwrap();
        let data = encode_dir(&ents);
        // Block 0: "." (13 bytes), ".." (14) and 78 entries of 52 bytes; then 78 per block.
        assert_eq!(data.len(), 3 * 4096 + (300 - 3 * 78) * 52);
        assert_eq!(dir_size(&ents), data.len() as u64);
        assert!(data[27 + 78 * 52..4096].iter().all(|&b| b == 0));
        let got: Vec<Vec<u8>> = decode_dir(&data).into_iter().map(|e| e.0).collect();
        let want: Vec<Vec<u8>> = ents.iter().map(|e| e.name.to_vec()).collect();
        assert_eq!(got, want);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }
}
