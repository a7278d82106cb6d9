//! PE/COFF (EFI images), the one place for it: reading an image's headers and section table,
//! appending sections as systemd's `ukify` does when it turns systemd-stub into a Unified
//! Kernel Image, and the kernel version string of an x86 bzImage (a PE image too), found
//! through its boot-protocol setup header. Input bytes are untrusted: every offset is checked.

use crate::format::bytes::{le16, le32};

const SECTION_HEADER: usize = 40;
const PE32: u16 = 0x10b;
const PE32_PLUS: u16 = 0x20b;
/// COFF characteristics: local symbols stripped.
const LOCAL_SYMS_STRIPPED: u16 = 0x0008;
const CNT_CODE: u32 = 0x20;
const CNT_INITIALIZED_DATA: u32 = 0x40;
const MEM_READ: u32 = 0x4000_0000;
/// Data directory index of the Authenticode signature (certificate table).
const SECURITY_DIRECTORY: usize = 4;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PeError(String);

impl From<String> for PeError {
    fn from(msg: String) -> PeError {
        PeError(msg)
    }
}

fn bad<T>(msg: String) -> Result<T, PeError> {
    Err(PeError(msg))
}

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub raw_size: u32,
    pub raw_offset: u32,
    pub characteristics: u32,
}

/// A parsed image: header fields and the section table, all checked against the file.
#[derive(Debug)]
pub struct Pe {
    /// Offset of the COFF file header (after `PE\0\0`).
    coff: usize,
    /// Offset of the optional header.
    opt: usize,
    /// Offset of the first data directory entry.
    dirs: usize,
    dir_count: usize,
    /// Offset of the section table.
    table: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_headers: u32,
    pub size_of_image: u32,
    pub sections: Vec<Section>,
}

fn field(b: &[u8], at: usize, len: usize, what: &str) -> Result<usize, PeError> {
    match at.checked_add(len) {
        Some(end) if end <= b.len() => Ok(at),
        _ => bad(format!(
            "{what} at offset {at:#x}: beyond the file ({} bytes)",
            b.len()
        )),
    }
}

impl Pe {
    pub fn parse(b: &[u8]) -> Result<Pe, PeError> {
        if b.len() < 0x40 || &b[..2] != b"MZ" {
            return bad("not a PE/COFF image: no MZ header at offset 0".into());
        }
        let pe = le32(b, 0x3c) as usize;
        field(b, pe, 24, "PE signature (e_lfanew)")?;
        if &b[pe..pe + 4] != b"PE\0\0" {
            return bad(format!(
                "not a PE/COFF image: no PE signature at offset {pe:#x} (e_lfanew)"
            ));
        }
        let coff = pe + 4;
        let count = le16(b, coff + 2) as usize;
        let opt = coff + 20;
        let opt_size = le16(b, coff + 16) as usize;
        field(b, opt, 2, "optional header")?;
        let dirs = match le16(b, opt) {
            PE32 => opt + 96,
            PE32_PLUS => opt + 112,
            m => return bad(format!("optional header at {opt:#x}: unknown magic {m:#x}")),
        };
        if opt + opt_size < dirs {
            return bad(format!(
                "SizeOfOptionalHeader {opt_size:#x} (at {:#x}) too small",
                coff + 16
            ));
        }
        field(b, opt, opt_size, "optional header")?;
        let dir_count = (le32(b, dirs - 4) as usize).min(opt_size.saturating_sub(dirs - opt) / 8);
        let table = opt + opt_size;
        field(b, table, count * SECTION_HEADER, "section table")?;
        let sections = (0..count)
            .map(|i| section(b, table + i * SECTION_HEADER))
            .collect::<Result<_, _>>()?;
        let p = Pe {
            coff,
            opt,
            dirs,
            dir_count,
            table,
            section_alignment: le32(b, opt + 32),
            file_alignment: le32(b, opt + 36),
            size_of_headers: le32(b, opt + 60),
            size_of_image: le32(b, opt + 56),
            sections,
        };
        if !p.file_alignment.is_power_of_two() || !p.section_alignment.is_power_of_two() {
            return bad(format!(
                "optional header at {opt:#x}: FileAlignment {:#x} / SectionAlignment {:#x} not powers of two",
                p.file_alignment, p.section_alignment
            ));
        }
        Ok(p)
    }

    /// The bytes of a section as its VirtualSize says (what systemd-stub and ukify read).
    pub fn data<'a>(&self, b: &'a [u8], s: &Section) -> &'a [u8] {
        let at = s.raw_offset as usize;
        &b[at..at + s.virtual_size.min(s.raw_size) as usize]
    }

    pub fn find(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    fn table_end(&self) -> usize {
        self.table + self.sections.len() * SECTION_HEADER
    }
}

fn section(b: &[u8], at: usize) -> Result<Section, PeError> {
    let raw = &b[at..at + 8];
    let name = String::from_utf8_lossy(raw.split(|&c| c == 0).next().unwrap_or(raw)).into_owned();
    let s = Section {
        name,
        virtual_size: le32(b, at + 8),
        virtual_address: le32(b, at + 12),
        raw_size: le32(b, at + 16),
        raw_offset: le32(b, at + 20),
        characteristics: le32(b, at + 36),
    };
    let end = s.raw_offset as u64 + s.raw_size as u64;
    if end > b.len() as u64 {
        return bad(format!(
            "section {} (header at {at:#x}): PointerToRawData+SizeOfRawData ({:#x}+{:#x}) beyond the file ({} bytes)",
            s.name, s.raw_offset, s.raw_size, b.len()
        ));
    }
    Ok(s)
}

fn round_up(x: u64, align: u32) -> u64 {
    x.div_ceil(align as u64) * align as u64
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn u32_of(v: u64, what: &str) -> Result<u32, PeError> {
    u32::try_from(v).map_err(|_| PeError(format!("{what} {v:#x} does not fit PE's 32 bits")))
}

/// `stub` with `new` sections appended, as ukify lays them out: a symbol table at the end of
/// the file dropped, each section's header after the last one (within SizeOfHeaders), its
/// data at the next FileAlignment boundary, its address after the last section's rounded to
/// SectionAlignment, VirtualSize the data's length; `.linux` marked code, the others
/// initialized data; SizeOfImage recomputed, CheckSum zeroed. Empty sections are left out.
pub fn append_sections(stub: &[u8], new: &[(&str, &[u8])]) -> Result<Vec<u8>, PeError> {
    let mut pe = Pe::parse(stub)?;
    check_stub(stub, &pe, new)?;
    let mut out = strip_symbols(stub, &pe);
    let opt = pe.opt;
    put32(
        &mut out,
        opt + 60,
        round_up(pe.size_of_headers as u64, pe.file_alignment) as u32,
    );
    pe.size_of_headers = le32(&out, opt + 60);
    let mut initialized = le32(&out, opt + 8) as u64;
    for &(name, data) in new.iter().filter(|(_, d)| !d.is_empty()) {
        let header = pe.table_end();
        if header + SECTION_HEADER > pe.size_of_headers as usize {
            return bad(format!(
                "no room for section header {name} at offset {header:#x}: SizeOfHeaders is {:#x}",
                pe.size_of_headers
            ));
        }
        let last = pe.sections.last().expect("checked: the stub has sections");
        let s = Section {
            name: name.to_owned(),
            virtual_size: u32_of(data.len() as u64, "section size")?,
            virtual_address: u32_of(
                round_up(
                    last.virtual_address as u64 + last.virtual_size as u64,
                    pe.section_alignment,
                ),
                "VirtualAddress",
            )?,
            raw_size: u32_of(
                round_up(data.len() as u64, pe.file_alignment),
                "SizeOfRawData",
            )?,
            raw_offset: u32_of(
                round_up(out.len() as u64, pe.file_alignment),
                "PointerToRawData",
            )?,
            characteristics: MEM_READ
                | if name == ".linux" {
                    CNT_CODE
                } else {
                    CNT_INITIALIZED_DATA
                },
        };
        write_header(&mut out, header, &s);
        out.resize(s.raw_offset as usize, 0);
        out.extend_from_slice(data);
        out.resize(s.raw_offset as usize + s.raw_size as usize, 0);
        initialized += data.len() as u64;
        pe.sections.push(s);
    }
    let last = pe.sections.last().expect("the stub has sections");
    let image = round_up(
        last.virtual_address as u64 + last.virtual_size as u64,
        pe.section_alignment,
    );
    put32(&mut out, opt + 8, initialized.min(u32::MAX as u64) as u32); // informational
    put32(&mut out, opt + 56, u32_of(image, "SizeOfImage")?);
    put32(&mut out, opt + 64, 0); // CheckSum
    let count = pe.sections.len() as u16;
    out[pe.coff + 2..pe.coff + 4].copy_from_slice(&count.to_le_bytes());
    Ok(out)
}

/// Refuses what ukify refuses (a signed stub) and what we do not patch (unaligned sections,
/// a section by a name being added).
fn check_stub(b: &[u8], pe: &Pe, new: &[(&str, &[u8])]) -> Result<(), PeError> {
    if pe.sections.is_empty() {
        return bad("the stub has no sections".into());
    }
    if pe.dir_count > SECURITY_DIRECTORY && le32(b, pe.dirs + SECURITY_DIRECTORY * 8) != 0 {
        return bad("the stub is signed (security directory set): sign the UKI instead".into());
    }
    for s in &pe.sections {
        if s.raw_offset % pe.file_alignment != 0 || s.raw_size % pe.file_alignment != 0 {
            return bad(format!(
                "section {}: PointerToRawData {:#x} / SizeOfRawData {:#x} not aligned to FileAlignment {:#x}",
                s.name, s.raw_offset, s.raw_size, pe.file_alignment
            ));
        }
        if new.iter().any(|(n, _)| *n == s.name) {
            return bad(format!(
                "the stub already has a {} section (is it a UKI already?)",
                s.name
            ));
        }
    }
    Ok(())
}

/// The image without a COFF symbol table that ends the file (old stubs keep one).
fn strip_symbols(b: &[u8], pe: &Pe) -> Vec<u8> {
    let (ptr, count) = (
        le32(b, pe.coff + 8) as usize,
        le32(b, pe.coff + 12) as usize,
    );
    let strings = ptr + 18 * count;
    let whole =
        ptr != 0 && strings + 4 <= b.len() && strings + le32(b, strings) as usize == b.len();
    if !whole {
        return b.to_vec();
    }
    let mut out = b[..ptr].to_vec();
    put32(&mut out, pe.coff + 8, 0);
    put32(&mut out, pe.coff + 12, 0);
    let flags = le16(&out, pe.coff + 18) | LOCAL_SYMS_STRIPPED;
    out[pe.coff + 18..pe.coff + 20].copy_from_slice(&flags.to_le_bytes());
    out
}

fn write_header(out: &mut [u8], at: usize, s: &Section) {
    let h = &mut out[at..at + SECTION_HEADER];
    h.fill(0);
    h[..s.name.len()].copy_from_slice(s.name.as_bytes());
    let fields = [
        (8, s.virtual_size),
        (12, s.virtual_address),
        (16, s.raw_size),
        (20, s.raw_offset),
        (36, s.characteristics),
    ];
    for (off, v) in fields {
        put32(h, off, v);
    }
}

/// The `uname -r` of an x86 bzImage: the first word of the string the setup header's
/// `kernel_version` field (offset 0x20e, relative to 0x200) points to.
pub fn linux_version(b: &[u8]) -> Result<String, PeError> {
    if b.len() < 0x210 || &b[0x202..0x206] != b"HdrS" {
        return bad("no x86 boot protocol header (HdrS at offset 0x202): not a bzImage".into());
    }
    let ptr = le16(b, 0x20e) as usize;
    let at = 0x200 + ptr;
    if ptr == 0 || at >= b.len() {
        return bad(format!(
            "setup header kernel_version {ptr:#x}: no version string"
        ));
    }
    let text = &b[at..b.len().min(at + 256)];
    let word = text
        .split(|&c| c == 0 || c == b' ')
        .next()
        .unwrap_or_default();
    let ok = |c: &u8| c.is_ascii_alphanumeric() || b"._+-~".contains(c);
    if word.is_empty() || !word.iter().all(ok) {
        return bad(format!(
            "version string at offset {at:#x} is not a kernel release"
        ));
    }
    Ok(String::from_utf8_lossy(word).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_from_the_setup_header() {
        let mut b = vec![0u8; 0x400];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        b[0x300..0x31f].copy_from_slice(b"6.1.0-57-amd64 (debian@x) #1 SM");
        assert_eq!(linux_version(&b).unwrap(), "6.1.0-57-amd64");
        b[0x300] = b'(';
        assert!(linux_version(&b).unwrap_err().0.contains("offset 0x300"));
        b[0x20e] = 0;
        b[0x20f] = 0;
        assert!(linux_version(&b)
            .unwrap_err()
            .0
            .contains("no version string"));
    }

    #[test]
    fn truncated_and_foreign_images_are_named() {
        assert!(Pe::parse(b"ELF").unwrap_err().0.contains("no MZ header"));
        let mut b = vec![0u8; 0x80];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x70u32.to_le_bytes());
        let e = Pe::parse(&b).unwrap_err().0;
        assert!(
            e.contains("PE signature (e_lfanew) at offset 0x70: beyond the file"),
            "{e}"
        );
    }
}
