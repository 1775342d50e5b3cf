//! Is an executable a Go program? Go's linker always writes a `.go.buildinfo` section (the
//! module and build information `go version -m` prints). A minimal ELF64 little-endian reader:
//! the section headers and their name table only, never the whole file.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::Path,
};

/// Section headers beyond this many are not looked at (real binaries have a few dozen).
const MAX_SECTIONS: usize = 4096;
/// Section-name tables beyond this size are not read.
const MAX_SHSTRTAB: u64 = 1 << 20;

/// `Ok(true)` when `path` is an ELF64 file with a `.go.buildinfo` section.
pub fn is_go_binary(path: &Path) -> std::io::Result<bool> {
    let mut f = File::open(path)?;
    let mut ehdr = [0u8; 64];
    if f.read_exact(&mut ehdr).is_err() {
        return Ok(false);
    }
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Ok(false);
    }
    let shoff = u64_at(&ehdr, 0x28);
    let shentsize = u16_at(&ehdr, 0x3a) as usize;
    let shnum = u16_at(&ehdr, 0x3c) as usize;
    let shstrndx = u16_at(&ehdr, 0x3e) as usize;
    if shoff == 0 || shentsize < 64 || shnum == 0 || shnum > MAX_SECTIONS || shstrndx >= shnum {
        return Ok(false);
    }
    let mut headers = vec![0u8; shnum * shentsize];
    f.seek(SeekFrom::Start(shoff))?;
    if f.read_exact(&mut headers).is_err() {
        return Ok(false);
    }
    let section = |i: usize| &headers[i * shentsize..i * shentsize + 64];
    let names = section(shstrndx);
    let (names_off, names_size) = (u64_at(names, 0x18), u64_at(names, 0x20));
    if names_size > MAX_SHSTRTAB {
        return Ok(false);
    }
    let mut table = vec![0u8; names_size as usize];
    f.seek(SeekFrom::Start(names_off))?;
    if f.read_exact(&mut table).is_err() {
        return Ok(false);
    }
    Ok((0..shnum).any(|i| {
        let start = u32_at(section(i), 0) as usize;
        table
            .get(start..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .is_some_and(|name| name == b".go.buildinfo")
    }))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_and_c_programs_are_not_go() {
        assert!(!is_go_binary(Path::new("/proc/self/exe")).unwrap());
        assert!(!is_go_binary(Path::new("/bin/sh")).unwrap());
    }

    #[test]
    fn non_elf_and_short_files_are_not_go() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert!(!is_go_binary(&p).unwrap());
        std::fs::write(&p, b"\x7fELF\x02\x01").unwrap();
        assert!(!is_go_binary(&p).unwrap());
        assert!(is_go_binary(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_go_binary_is_go() {
        // Debian's golang-go ships Go programs; skip where it is not installed.
        let gofmt = Path::new("/usr/lib/go/bin/gofmt");
        if gofmt.exists() {
            assert!(is_go_binary(gofmt).unwrap());
        }
    }
}
