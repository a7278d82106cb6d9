//! ELF reading, the one place for it: whether an executable is dynamically linked, the machine
//! it is built for (`e_machine`), and a kernel module's `.modinfo` (name, dependencies, aliases, soft dependencies, firmware) from the
//! module file as shipped (plain, zstd or gzip). Input bytes are untrusted: every offset is
//! checked, nothing panics, and decompression is capped.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::format::bytes::{le16, le32, le64};
use crate::format::gpt::Arch;

/// Most bytes a decompressed module may have (the largest real ones are a few MiB).
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{0}")]
    Malformed(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: Box<ElfError>,
    },
}

fn bad<T>(msg: String) -> Result<T, ElfError> {
    Err(ElfError::Malformed(msg))
}

/// What a kernel module says about itself in its `.modinfo` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    /// `depends=`, split on `,`, empty names dropped.
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
    /// Raw `softdep=` values, such as `pre: crc32c`.
    pub softdeps: Vec<String>,
    pub firmware: Vec<String>,
}

/// True for an ELF with a program interpreter (PT_INTERP), i.e. a dynamic executable.
pub fn is_dynamic_elf(b: &[u8]) -> bool {
    if b.len() < EHDR_SIZE || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false; // not a 64-bit ELF: leave it to the kernel
    }
    let phoff = le64(b, 32);
    let (phentsize, phnum) = (le16(b, 54) as u64, le16(b, 56) as u64);
    (0..phnum).any(|i| {
        let at = phoff.checked_add(i * phentsize).map(usize::try_from);
        let at = match at {
            Some(Ok(at)) => at,
            _ => return false,
        };
        at.checked_add(4).and_then(|end| b.get(at..end)) == Some(&3u32.to_le_bytes()[..])
    })
}

/// The machine a 64-bit ELF file is built for (`e_machine`); None when `b` is not one.
pub fn e_machine(b: &[u8]) -> Option<u16> {
    (b.len() >= EHDR_SIZE && &b[..4] == b"\x7fELF" && b[4] == 2).then(|| le16(b, 18))
}

/// The `e_machine` of an architecture's executables and modules.
pub fn machine_of(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => EM_X86_64,
        Arch::Arm64 => EM_AARCH64,
    }
}

/// An `e_machine` by its architecture's name (`x86-64`, `arm64`), else its number.
pub fn machine_name(machine: u16) -> String {
    Arch::ALL
        .into_iter()
        .find(|&a| machine_of(a) == machine)
        .map_or_else(|| format!("e_machine {machine}"), |a| a.name().to_owned())
}

/// A section: (offset, size) in the file, both checked against its length.
fn section(b: &[u8], shoff: u64, i: u64) -> Result<(u32, usize, usize), ElfError> {
    let at = shoff + i * SHDR_SIZE as u64; // shoff and i are checked: no overflow
    let at = at as usize;
    let (name, offset, size) = (le32(b, at), le64(b, at + 24), le64(b, at + 32));
    let end = offset.checked_add(size).filter(|&e| e <= b.len() as u64);
    if end.is_none() {
        return bad(format!(
            "section header {i} at offset {at:#x}: sh_offset+sh_size ({offset:#x}+{size:#x}) \
             beyond the file ({} bytes)",
            b.len()
        ));
    }
    Ok((name, offset as usize, size as usize))
}

/// The section header table: (offset, count, index of the section names), checked.
fn section_table(b: &[u8]) -> Result<(u64, u64, u64), ElfError> {
    if b.len() < EHDR_SIZE || &b[..4] != b"\x7fELF" {
        return bad(format!(
            "not an ELF file (starts with {:02x?})",
            &b[..b.len().min(4)]
        ));
    }
    if b[4] != 2 || b[5] != 1 {
        return bad(format!(
            "ELF class {} data {}: only 64-bit little-endian (class 2, data 1) is supported",
            b[4], b[5]
        ));
    }
    let machine = le16(b, 18);
    if machine != EM_X86_64 && machine != EM_AARCH64 {
        return bad(format!(
            "e_machine {machine}: only x86-64 ({EM_X86_64}) and arm64 ({EM_AARCH64}) are supported"
        ));
    }
    let (shoff, shentsize) = (le64(b, 0x28), le16(b, 0x3a) as usize);
    let (shnum, shstrndx) = (le16(b, 0x3c) as u64, le16(b, 0x3e) as u64);
    if shentsize != SHDR_SIZE {
        return bad(format!("e_shentsize {shentsize}: expected {SHDR_SIZE}"));
    }
    if shstrndx >= shnum {
        return bad(format!(
            "e_shstrndx {shstrndx}: beyond the {shnum} section headers (extended numbering is not supported)"
        ));
    }
    let end = shoff.checked_add(shnum * SHDR_SIZE as u64);
    if end.is_none_or(|e| e > b.len() as u64) {
        return bad(format!(
            "e_shoff {shoff:#x}: {shnum} section headers beyond the file ({} bytes)",
            b.len()
        ));
    }
    Ok((shoff, shnum, shstrndx))
}

/// The bytes of the section named `wanted`.
fn find_section<'a>(b: &'a [u8], wanted: &[u8]) -> Result<&'a [u8], ElfError> {
    let (shoff, shnum, shstrndx) = section_table(b)?;
    let (_, str_off, str_size) = section(b, shoff, shstrndx)?;
    let names = &b[str_off..str_off + str_size];
    for i in 0..shnum {
        let (name, off, size) = section(b, shoff, i)?;
        let name = names.get(name as usize..).unwrap_or_default();
        if name.split(|&c| c == 0).next() == Some(wanted) {
            return Ok(&b[off..off + size]);
        }
    }
    bad(format!(
        "no {} section among {shnum} sections",
        String::from_utf8_lossy(wanted)
    ))
}

/// A kernel module's `.modinfo`: its NUL-separated `key=value` records.
pub fn modinfo(bytes: &[u8]) -> Result<ModInfo, ElfError> {
    let section = find_section(bytes, b".modinfo")?;
    let mut info = ModInfo::default();
    for record in section.split(|&c| c == 0).filter(|r| !r.is_empty()) {
        let record = String::from_utf8_lossy(record);
        let Some((key, value)) = record.split_once('=') else {
            continue;
        };
        let value = value.to_owned();
        match key {
            "name" => info.name = value,
            "depends" => info.depends = split_list(&value),
            "alias" => info.aliases.push(value),
            "softdep" => info.softdeps.push(value),
            "firmware" => info.firmware.push(value),
            _ => {}
        }
    }
    if info.name.is_empty() {
        return bad("no name= record in the .modinfo section".into());
    }
    Ok(info)
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A module file's content `r` (from `path`) decompressed by its suffix (`.ko.zst`, `.ko.gz`).
fn module_reader<'a, R: Read + 'a>(path: &Path, r: R) -> Result<Box<dyn Read + 'a>, ElfError> {
    let name = path.to_string_lossy();
    if name.ends_with(".zst") {
        let d = zstd::stream::read::Decoder::new(r).map_err(io_err(path))?;
        Ok(Box::new(d))
    } else if name.ends_with(".gz") {
        Ok(Box::new(flate2::read::GzDecoder::new(r)))
    } else if name.ends_with(".xz") {
        Err(in_file(
            path,
            ElfError::Malformed(
                "xz-compressed modules are not supported (decompress them, or build the kernel \
                 with CONFIG_MODULE_COMPRESS_ZSTD)"
                    .into(),
            ),
        ))
    } else {
        Ok(Box::new(r))
    }
}

/// A module file's ELF bytes: `raw` as read from `path`, decompressed by its suffix to at most
/// [`MAX_MODULE_BYTES`].
pub fn module_bytes(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, ElfError> {
    let mut out = Vec::new();
    module_reader(path, &raw[..])?
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(io_err(path))?;
    if out.len() as u64 > MAX_MODULE_BYTES {
        let msg = format!("decompresses to more than {MAX_MODULE_BYTES} bytes");
        return Err(in_file(path, ElfError::Malformed(msg)));
    }
    Ok(out)
}

/// The `.modinfo` of the module file at `path` (plain or compressed).
pub fn read_modinfo(path: &Path) -> Result<ModInfo, ElfError> {
    let raw = std::fs::read(path).map_err(io_err(path))?;
    modinfo(&module_bytes(path, raw)?).map_err(|e| in_file(path, e))
}

/// The `e_machine` of the module file at `path` (plain or compressed), from its header alone.
pub fn read_module_machine(path: &Path) -> Result<u16, ElfError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut head = Vec::new();
    module_reader(path, file)?
        .take(EHDR_SIZE as u64)
        .read_to_end(&mut head)
        .map_err(io_err(path))?;
    e_machine(&head)
        .ok_or_else(|| in_file(path, ElfError::Malformed("not a 64-bit ELF file".into())))
}

fn in_file(path: &Path, e: ElfError) -> ElfError {
    ElfError::File {
        path: path.to_owned(),
        source: Box::new(e),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ElfError + '_ {
    move |source| ElfError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal ELF64 x86-64 relocatable with `.shstrtab` and a `.modinfo` holding `records`.
    fn module(records: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut b = vec![0u8; EHDR_SIZE];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        let str_off = b.len();
        b.extend_from_slice(shstrtab);
        let info_off = b.len();
        b.extend_from_slice(records);
        let shoff = b.len();
        b.extend_from_slice(&[0u8; SHDR_SIZE]); // section 0: null
        for (name, off, size) in [
            (1u32, str_off, shstrtab.len()),
            (11, info_off, records.len()),
        ] {
            let mut h = [0u8; SHDR_SIZE];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            b.extend_from_slice(&h);
        }
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        b
    }

    const RECORDS: &[u8] = b"license=GPL\0depends=xor,,raid6_pq\0softdep=pre: crc32c\0\
        alias=fs-btrfs\0alias=devname:btrfs-control\0firmware=a/b.bin\0name=btrfs\0\0\0";

    #[test]
    fn reads_modinfo_records() {
        let info = modinfo(&module(RECORDS)).unwrap();
        assert_eq!(info.name, "btrfs");
        assert_eq!(info.depends, ["xor", "raid6_pq"]);
        assert_eq!(info.aliases, ["fs-btrfs", "devname:btrfs-control"]);
        assert_eq!(info.softdeps, ["pre: crc32c"]);
        assert_eq!(info.firmware, ["a/b.bin"]);
    }

    #[test]
    fn refuses_malformed_headers_with_the_field() {
        let err = |b: &[u8]| modinfo(b).unwrap_err().to_string();
        let good = module(RECORDS);
        assert!(err(b"\x7fELF").contains("not an ELF file"));
        let mut b = good.clone();
        b[4] = 1;
        assert!(err(&b).contains("only 64-bit little-endian"), "{}", err(&b));
        let mut b = good.clone();
        b[18] = 40; // arm
        assert!(err(&b).contains("e_machine 40"), "{}", err(&b));
        let mut b = good.clone();
        let shoff = le64(&b, 0x28) as usize;
        b[shoff + 2 * 64 + 32..shoff + 2 * 64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = err(&b);
        assert!(
            e.starts_with(&format!("section header 2 at offset {:#x}", shoff + 128)),
            "{e}"
        );
        assert!(e.contains("beyond the file"), "{e}");
        let mut b = good.clone();
        b[0x28..0x30].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert!(err(&b).contains("e_shoff"), "{}", err(&b));
        assert!(err(&module(b"license=GPL\0")).contains("no name= record"));
    }

    #[test]
    fn decompresses_by_suffix_with_a_cap() {
        let elf = module(RECORDS);
        let zst = zstd::encode_all(&elf[..], 3).unwrap();
        assert_eq!(module_bytes(Path::new("m.ko.zst"), zst).unwrap(), elf);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(module_bytes(Path::new("m.ko.gz"), gz).unwrap(), elf);
        let e = module_bytes(Path::new("m.ko.xz"), Vec::new()).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("m.ko.xz: xz-compressed modules are not supported"));
        let huge = zstd::encode_all(&vec![0u8; MAX_MODULE_BYTES as usize + 1][..], 1).unwrap();
        let e = module_bytes(Path::new("h.ko.zst"), huge).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }

    #[test]
    fn machines_are_read_from_plain_and_compressed_headers() {
        let elf = module(RECORDS);
        assert_eq!(e_machine(&elf), Some(EM_X86_64));
        assert_eq!(e_machine(b"#!/bin/sh\n"), None);
        assert_eq!(e_machine(&elf[..EHDR_SIZE - 1]), None);
        let mut arm = elf.clone();
        arm[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let zst = dir.path().join("m.ko.zst");
        std::fs::write(&zst, zstd::encode_all(&arm[..], 3).unwrap()).unwrap();
        assert_eq!(read_module_machine(&zst).unwrap(), EM_AARCH64);
        let plain = dir.path().join("m.ko");
        std::fs::write(&plain, b"not elf").unwrap();
        let e = read_module_machine(&plain).unwrap_err().to_string();
        assert!(e.ends_with("m.ko: not a 64-bit ELF file"), "{e}");
        assert_eq!(machine_name(EM_AARCH64), "arm64");
        assert_eq!(machine_name(machine_of(Arch::X86_64)), "x86-64");
        assert_eq!(machine_name(243), "e_machine 243");
    }

    #[test]
    fn dynamic_executables_are_told_apart() {
        let mut b = vec![0u8; 128];
        b[..5].copy_from_slice(b"\x7fELF\x02");
        b[32] = 64; // phoff
        b[54] = 56; // phentsize
        b[56] = 1; // phnum
        assert!(!is_dynamic_elf(&b));
        b[64] = 3; // PT_INTERP
        assert!(is_dynamic_elf(&b));
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(!is_dynamic_elf(&b));
    }
}
