//! GPT partition tables as the Discoverable Partitions Specification uses them: partition
//! type UUIDs per designator and architecture, attribute flags, a strict reader and a writer.

use std::fs::File;
use std::io;

use crate::format::blob::Blob;
use crate::format::bytes::{le32, le64};
use crate::format::uuid::Uuid;

pub const FLAG_NO_AUTO: u64 = 1 << 63;
pub const FLAG_READ_ONLY: u64 = 1 << 60;
pub const FLAG_GROW_FS: u64 = 1 << 59;

/// Largest partition-entry array the reader accepts (the usual is 16 KiB).
const MAX_ENTRY_ARRAY: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// The architecture this binary runs on.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    /// The name used in `ARCHITECTURE=` and partition labels.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86-64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn from_name(s: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// Which hierarchy a partition carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Designator {
    Root,
    Usr,
}

impl Designator {
    pub fn name(self) -> &'static str {
        match self {
            Designator::Root => "root",
            Designator::Usr => "usr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Data,
    Verity,
    Signature,
}

/// (designator, role, arch, type UUID) per SPEC §2.
const TYPES: [(Designator, Role, Arch, &str); 12] = [
    (
        Designator::Root,
        Role::Data,
        Arch::X86_64,
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
    ),
    (
        Designator::Root,
        Role::Verity,
        Arch::X86_64,
        "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
    ),
    (
        Designator::Root,
        Role::Signature,
        Arch::X86_64,
        "41092b05-9fc8-4523-994f-2def0408b176",
    ),
    (
        Designator::Usr,
        Role::Data,
        Arch::X86_64,
        "8484680c-9521-48c6-9c11-b0720656f69e",
    ),
    (
        Designator::Usr,
        Role::Verity,
        Arch::X86_64,
        "77ff5f63-e7b6-4633-acf4-1565b864c0e6",
    ),
    (
        Designator::Usr,
        Role::Signature,
        Arch::X86_64,
        "e7bb33fb-06cf-4e81-8273-e543b413e2e2",
    ),
    (
        Designator::Root,
        Role::Data,
        Arch::Arm64,
        "b921b045-1df0-41c3-af44-4c6f280d3fae",
    ),
    (
        Designator::Root,
        Role::Verity,
        Arch::Arm64,
        "df3300ce-d69f-4c92-978c-9bfb0f38d820",
    ),
    (
        Designator::Root,
        Role::Signature,
        Arch::Arm64,
        "6db69de6-29f4-4758-a7a5-962190f00ce3",
    ),
    (
        Designator::Usr,
        Role::Data,
        Arch::Arm64,
        "b0e01050-ee5f-4390-949a-9101b17104e9",
    ),
    (
        Designator::Usr,
        Role::Verity,
        Arch::Arm64,
        "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e",
    ),
    (
        Designator::Usr,
        Role::Signature,
        Arch::Arm64,
        "c23ce4ff-44bd-4b00-b2d4-b41b3419e02a",
    ),
];

/// The DPS partition type UUID.
pub fn type_uuid(d: Designator, r: Role, a: Arch) -> Uuid {
    let (.., s) = TYPES
        .iter()
        .find(|(td, tr, ta, _)| (*td, *tr, *ta) == (d, r, a))
        .expect("every combination is in the table");
    s.parse().expect("valid table UUID")
}

/// What a partition type UUID means, if it is one of ours.
pub fn classify(t: Uuid) -> Option<(Designator, Role, Arch)> {
    TYPES
        .iter()
        .find(|(.., s)| s.parse::<Uuid>().ok() == Some(t))
        .map(|&(d, r, a, _)| (d, r, a))
}

/// The label systemd-repart gives a partition: `root-x86-64`, `root-x86-64-verity`, `…-verity-sig`.
pub fn default_label(d: Designator, r: Role, a: Arch) -> String {
    let suffix = match r {
        Role::Data => "",
        Role::Verity => "-verity",
        Role::Signature => "-verity-sig",
    };
    format!("{}-{}{}", d.name(), a.name(), suffix)
}

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("no GPT header (\"EFI PART\" at byte 512 or 4096)")]
    NoHeader,
    #[error("GPT header at byte {offset}: {field} {reason}")]
    Field {
        offset: u64,
        field: &'static str,
        reason: String,
    },
    #[error("GPT header at byte {offset}: CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrc {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("GPT partition entries at byte {offset}: CRC32 mismatch")]
    EntriesCrc { offset: u64 },
    #[error("GPT partition {index} (entry at byte {offset}): {reason}")]
    Entry {
        index: u32,
        offset: u64,
        reason: String,
    },
    #[error("reading the partition table: {0}")]
    Io(#[from] io::Error),
    #[error("writing the partition table: {0}")]
    Write(#[from] gptman::Error),
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based entry number (as in `/dev/sdaN`).
    pub number: u32,
    pub type_uuid: Uuid,
    pub uuid: Uuid,
    pub offset: u64,
    pub size: u64,
    pub flags: u64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_uuid: Uuid,
    pub sector_size: u64,
    pub partitions: Vec<Partition>,
}

fn crc32(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(data)
}

/// Reads and checks the primary GPT (512- or 4096-byte sectors).
pub fn read(blob: &(impl Blob + ?Sized)) -> Result<Table, GptError> {
    for sector in [512u64, 4096] {
        let mut hdr = vec![0u8; sector as usize];
        if blob.read_exact_at(&mut hdr, sector).is_err() || &hdr[..8] != b"EFI PART" {
            continue;
        }
        return read_with_header(blob, sector, &hdr);
    }
    Err(GptError::NoHeader)
}

fn read_with_header(
    blob: &(impl Blob + ?Sized),
    sector: u64,
    hdr: &[u8],
) -> Result<Table, GptError> {
    let field = |field, reason: String| GptError::Field {
        offset: sector,
        field,
        reason,
    };
    let size = le32(hdr, 12) as u64;
    if !(92..=sector).contains(&size) {
        return Err(field(
            "header size",
            format!("{size} is not in 92..={sector}"),
        ));
    }
    let mut h = hdr[..size as usize].to_vec();
    let stored = le32(&h, 16);
    h[16..20].fill(0);
    let computed = crc32(&h);
    if stored != computed {
        return Err(GptError::HeaderCrc {
            offset: sector,
            stored,
            computed,
        });
    }
    if le64(hdr, 24) != 1 {
        return Err(field("my LBA", format!("{} is not 1", le64(hdr, 24))));
    }
    let (entries_lba, count, entry_size) =
        (le64(hdr, 72), le32(hdr, 80) as u64, le32(hdr, 84) as u64);
    if entry_size < 128 || !entry_size.is_multiple_of(8) || entry_size > 4096 {
        return Err(field(
            "entry size",
            format!("{entry_size} is not a multiple of 8 in 128..=4096"),
        ));
    }
    if count * entry_size > MAX_ENTRY_ARRAY {
        return Err(field(
            "entry count",
            format!("{count} entries exceed 1 MiB"),
        ));
    }
    let array_offset = entries_lba
        .checked_mul(sector)
        .ok_or_else(|| field("entries LBA", format!("{entries_lba} overflows")))?;
    let array = blob.read_vec_at(array_offset, count * entry_size)?;
    if crc32(&array) != le32(hdr, 88) {
        return Err(GptError::EntriesCrc {
            offset: array_offset,
        });
    }
    let disk_size = blob.size()?;
    let mut partitions = Vec::new();
    for (i, e) in array.chunks_exact(entry_size as usize).enumerate() {
        let offset = array_offset + i as u64 * entry_size;
        if let Some(p) = parse_entry(e, i as u32 + 1, offset, sector, disk_size)? {
            partitions.push(p);
        }
    }
    Ok(Table {
        disk_uuid: Uuid::from_gpt_bytes(hdr[56..72].try_into().expect("16 bytes")),
        sector_size: sector,
        partitions,
    })
}

fn parse_entry(
    e: &[u8],
    number: u32,
    offset: u64,
    sector: u64,
    disk_size: u64,
) -> Result<Option<Partition>, GptError> {
    let type_uuid = Uuid::from_gpt_bytes(e[0..16].try_into().expect("16 bytes"));
    if type_uuid.is_nil() {
        return Ok(None);
    }
    let err = |reason: String| GptError::Entry {
        index: number,
        offset,
        reason,
    };
    let (first, last) = (le64(e, 32), le64(e, 40));
    let (start, end) = first
        .checked_mul(sector)
        .zip(last.checked_add(1).and_then(|l| l.checked_mul(sector)))
        .ok_or_else(|| err(format!("LBA range {first}..={last} overflows")))?;
    if last < first || end > disk_size {
        return Err(err(format!(
            "LBA range {first}..={last} is empty or past the end of the {disk_size}-byte disk"
        )));
    }
    let name: Vec<u16> = e[56..128]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&c| c != 0)
        .collect();
    Ok(Some(Partition {
        number,
        type_uuid,
        uuid: Uuid::from_gpt_bytes(e[16..32].try_into().expect("16 bytes")),
        offset: start,
        size: end - start,
        flags: le64(e, 48),
        label: String::from_utf16_lossy(&name),
    }))
}

/// A partition to write; offsets and sizes in bytes, multiples of 4096.
#[derive(Debug, Clone)]
pub struct NewPartition {
    pub type_uuid: Uuid,
    pub uuid: Uuid,
    pub offset: u64,
    pub size: u64,
    pub flags: u64,
    pub label: String,
}

/// Sector size of the images we write.
pub const SECTOR: u64 = 512;
/// First byte a partition may use: after MBR, header and a 16 KiB entry array, aligned to 4 KiB.
pub const FIRST_OFFSET: u64 = 40 * SECTOR;
/// Bytes the backup table needs after the last partition.
pub const BACKUP_BYTES: u64 = 33 * SECTOR;

/// Writes protective MBR, primary and backup GPT into `file`, which already has its final size.
pub fn write(file: &mut File, disk: Uuid, parts: &[NewPartition]) -> Result<(), GptError> {
    let mut gpt = gptman::GPT::new_from(file, SECTOR, disk.to_gpt_bytes())?;
    gpt.align = 4096 / SECTOR;
    for (i, p) in parts.iter().enumerate() {
        gpt[i as u32 + 1] = gptman::GPTPartitionEntry {
            partition_type_guid: p.type_uuid.to_gpt_bytes(),
            unique_partition_guid: p.uuid.to_gpt_bytes(),
            starting_lba: p.offset / SECTOR,
            ending_lba: (p.offset + p.size) / SECTOR - 1,
            attribute_bits: p.flags,
            partition_name: p.label.as_str().into(),
        };
    }
    gpt.write_into(file)?;
    gptman::GPT::write_protective_mbr_into(file, SECTOR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_classify_back() {
        for (d, r, a, _) in TYPES {
            assert_eq!(classify(type_uuid(d, r, a)), Some((d, r, a)));
        }
        assert_eq!(
            default_label(Designator::Root, Role::Signature, Arch::X86_64),
            "root-x86-64-verity-sig"
        );
    }

    fn sample() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(1 << 20).unwrap();
        let part = NewPartition {
            type_uuid: type_uuid(Designator::Root, Role::Data, Arch::X86_64),
            uuid: "01020304-0506-0708-090a-0b0c0d0e0f10".parse().unwrap(),
            offset: FIRST_OFFSET,
            size: 8192,
            flags: FLAG_READ_ONLY,
            label: "root-x86-64".into(),
        };
        write(&mut f, Uuid([7; 16]), &[part]).unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn write_then_read() {
        let img = sample();
        let t = read(&img[..]).unwrap();
        assert_eq!(t.disk_uuid, Uuid([7; 16]));
        assert_eq!(t.partitions.len(), 1);
        let p = &t.partitions[0];
        assert_eq!(
            (p.number, p.offset, p.size, p.flags),
            (1, FIRST_OFFSET, 8192, FLAG_READ_ONLY)
        );
        assert_eq!(p.uuid.to_string(), "01020304-0506-0708-090a-0b0c0d0e0f10");
        assert_eq!(p.label, "root-x86-64");
    }

    #[test]
    fn corruption_is_reported() {
        let mut img = sample();
        img[512 + 60] ^= 1; // disk GUID byte: header CRC
        assert!(matches!(
            read(&img[..]),
            Err(GptError::HeaderCrc { offset: 512, .. })
        ));
        let mut img = sample();
        img[1024 + 40] ^= 1; // first entry: array CRC
        assert!(matches!(
            read(&img[..]),
            Err(GptError::EntriesCrc { offset: 1024 })
        ));
        assert!(matches!(read(&img[..4096]), Err(GptError::Io(_))));
        assert!(matches!(read(&[0u8; 8192][..]), Err(GptError::NoHeader)));
    }
}
