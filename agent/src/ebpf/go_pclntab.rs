//! Finds Go functions without a symbol table, through the Go runtime's own function table
//! (`.gopclntab`, which every Go binary keeps, stripped or not: the runtime needs it for stack
//! traces and garbage collection).
//!
//! Supported: ELF64 little-endian binaries of Go 1.18 and later (the table's magic is
//! `0xfffffff0` for 1.18 and 1.19, `0xfffffff1` from 1.20 on; the header and the function
//! records the lookup reads are the same in both). Older or unknown tables are refused with an
//! error, never guessed at.
//!
//! Where the table is:
//! - a `.gopclntab` section (internally and externally linked executables),
//! - a `.data.rel.ro.gopclntab` section (position-independent executables, internal linking),
//! - inside `.data.rel.ro` with no section of its own (position-independent, externally linked,
//!   that is cgo with `-buildmode=pie`): found by its header, which is checked field by field.
//!
//! A function's address is `textStart` (the header's `runtime.text`, which is not the start of
//! `.text` in an externally linked binary) plus its entry offset. In a position-independent
//! binary the header's `textStart` may be zero in the file and filled in by a dynamic
//! relocation: then it is read from that relocation's addend. The address is turned into the
//! file offset a uprobe needs through the executable `PT_LOAD` segment that contains it.
//!
//! Reads are bounded: the headers, then one section (at most [`MAX_TABLE`] bytes).

use std::{fs::File, os::unix::fs::FileExt, path::Path};

/// Sections larger than this are not read (the biggest Go binaries have tables of tens of MiB).
const MAX_TABLE: u64 = 256 << 20;
const MAX_SECTIONS: usize = 4096;
const MAX_SEGMENTS: usize = 256;
const MAX_SHSTRTAB: u64 = 1 << 20;
/// Relocation tables larger than this are not read.
const MAX_RELA: u64 = 64 << 20;

const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const SHT_SYMTAB: u32 = 2;
/// Bytes of `runtime.forEachGRace` searched for its loads of `allglen` and `allgptr`.
const ALLG_CODE: usize = 128;
const R_X86_64_RELATIVE: u32 = 8;
const R_AARCH64_RELATIVE: u32 = 1027;

#[derive(Debug, thiserror::Error)]
pub enum PclntabError {
    #[error("reading the executable: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an ELF64 little-endian executable")]
    NotElf,
    #[error("no Go function table (.gopclntab) found")]
    NoTable,
    #[error(
        "Go function table of an unsupported Go version (magic {0:#x}; Go 1.18 and later are supported)"
    )]
    UnsupportedVersion(u32),
    #[error("malformed Go function table: {0}")]
    Malformed(&'static str),
    #[error("function {0} is not in the Go function table")]
    NotFound(String),
    #[error("function {name} at {address:#x} is in no executable segment")]
    NotMapped { name: String, address: u64 },
}

#[derive(Debug, Clone)]
struct Section {
    name: Vec<u8>,
    kind: u32,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

struct Elf {
    file: File,
    sections: Vec<Section>,
    segments: Vec<Segment>,
    entry: u64,
}

impl Elf {
    fn open(path: &Path) -> Result<Self, PclntabError> {
        let file = File::open(path)?;
        let mut ehdr = [0u8; 64];
        file.read_exact_at(&mut ehdr, 0)
            .map_err(|_| PclntabError::NotElf)?;
        if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
            return Err(PclntabError::NotElf);
        }
        let phoff = u64_at(&ehdr, 0x20);
        let shoff = u64_at(&ehdr, 0x28);
        let phentsize = u16_at(&ehdr, 0x36) as usize;
        let phnum = u16_at(&ehdr, 0x38) as usize;
        let shentsize = u16_at(&ehdr, 0x3a) as usize;
        let shnum = u16_at(&ehdr, 0x3c) as usize;
        let shstrndx = u16_at(&ehdr, 0x3e) as usize;
        if phentsize < 56 || phnum > MAX_SEGMENTS || shentsize < 64 || shnum > MAX_SECTIONS {
            return Err(PclntabError::NotElf);
        }
        let mut ph = vec![0u8; phnum * phentsize];
        file.read_exact_at(&mut ph, phoff)?;
        let segments = ph
            .chunks_exact(phentsize)
            .map(|p| Segment {
                kind: u32_at(p, 0),
                flags: u32_at(p, 4),
                offset: u64_at(p, 8),
                vaddr: u64_at(p, 0x10),
                filesz: u64_at(p, 0x20),
                memsz: u64_at(p, 0x28),
            })
            .collect();
        let mut sections = Vec::new();
        if shoff != 0 && shnum > 0 && shstrndx < shnum {
            let mut sh = vec![0u8; shnum * shentsize];
            file.read_exact_at(&mut sh, shoff)?;
            let raw: Vec<&[u8]> = sh.chunks_exact(shentsize).collect();
            let names = raw[shstrndx];
            let names_size = u64_at(names, 0x20);
            if names_size > MAX_SHSTRTAB {
                return Err(PclntabError::NotElf);
            }
            let mut table = vec![0u8; names_size as usize];
            file.read_exact_at(&mut table, u64_at(names, 0x18))?;
            for s in raw {
                let name = table
                    .get(u32_at(s, 0) as usize..)
                    .and_then(|rest| rest.split(|&b| b == 0).next())
                    .unwrap_or_default()
                    .to_vec();
                sections.push(Section {
                    name,
                    kind: u32_at(s, 4),
                    addr: u64_at(s, 0x10),
                    offset: u64_at(s, 0x18),
                    size: u64_at(s, 0x20),
                    link: u32_at(s, 0x28),
                });
            }
        }
        Ok(Self {
            file,
            sections,
            segments,
            entry: u64_at(&ehdr, 0x18),
        })
    }

    fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name.as_bytes())
    }

    /// A section's bytes (NOBITS sections have none).
    fn read(&self, s: &Section, max: u64) -> Result<Vec<u8>, PclntabError> {
        if s.size > max {
            return Err(PclntabError::Malformed("section too large to read"));
        }
        let mut buf = vec![0u8; s.size as usize];
        self.file.read_exact_at(&mut buf, s.offset)?;
        Ok(buf)
    }

    /// The file offset of a virtual address in an executable segment.
    fn file_offset(&self, address: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|p| p.kind == PT_LOAD && p.flags & PF_X != 0)
            .find(|p| address >= p.vaddr && address - p.vaddr < p.filesz)
            .map(|p| address - p.vaddr + p.offset)
    }

    /// Is `[address, address + len)` inside a writable loaded segment (data or bss)?
    fn writable(&self, address: u64, len: u64) -> bool {
        self.segments.iter().any(|p| {
            p.kind == PT_LOAD
                && p.flags & PF_W != 0
                && address >= p.vaddr
                && address - p.vaddr + len <= p.memsz
        })
    }

    /// Values of symbols by name from the symbol table (None where there is no table, as
    /// in stripped binaries; a name not in it is None too).
    fn symbols(&self, names: &[&str]) -> Result<Option<Vec<Option<u64>>>, PclntabError> {
        let Some(symtab) = self.sections.iter().find(|s| s.kind == SHT_SYMTAB) else {
            return Ok(None);
        };
        let Some(strtab) = self.sections.get(symtab.link as usize) else {
            return Err(PclntabError::Malformed("symbol table without string table"));
        };
        let syms = self.read(symtab, MAX_TABLE)?;
        let strs = self.read(strtab, MAX_TABLE)?;
        let mut out = vec![None; names.len()];
        for sym in syms.chunks_exact(24) {
            let name = strs
                .get(u32_at(sym, 0) as usize..)
                .and_then(|rest| rest.split(|&b| b == 0).next())
                .unwrap_or_default();
            if let Some(i) = names.iter().position(|n| n.as_bytes() == name) {
                out[i] = Some(u64_at(sym, 8));
            }
        }
        Ok(Some(out))
    }

    /// The addend of a RELATIVE relocation of the word at `address` (in `.rela.dyn`).
    fn relative_addend(&self, address: u64) -> Result<Option<u64>, PclntabError> {
        let Some(rela) = self.section(".rela.dyn") else {
            return Ok(None);
        };
        let data = self.read(rela, MAX_RELA)?;
        Ok(data.chunks_exact(24).find_map(|r| {
            let kind = u64_at(r, 8) as u32;
            (u64_at(r, 0) == address && (kind == R_X86_64_RELATIVE || kind == R_AARCH64_RELATIVE))
                .then(|| u64_at(r, 16))
        }))
    }
}

/// The table and the virtual address of its first byte.
struct Table {
    data: Vec<u8>,
    /// Where the table starts in `data`.
    start: usize,
    address: u64,
}

fn find_table(elf: &Elf) -> Result<Table, PclntabError> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = elf.section(name) {
            let data = elf.read(s, MAX_TABLE)?;
            return Ok(Table {
                data,
                start: 0,
                address: s.addr,
            });
        }
    }
    // Externally linked PIE: the table is somewhere in .data.rel.ro, aligned to 32 bytes
    // within it (8 is enough to look at), and recognised by a header that checks out.
    let s = elf.section(".data.rel.ro").ok_or(PclntabError::NoTable)?;
    if s.kind == 8 {
        return Err(PclntabError::NoTable); // NOBITS
    }
    let data = elf.read(s, MAX_TABLE)?;
    let start = (0..data.len().saturating_sub(64))
        .step_by(8)
        .find(|&at| {
            let magic = u32_at(&data, at);
            (magic == MAGIC_GO118 || magic == MAGIC_GO120) && Header::parse(&data[at..]).is_ok()
        })
        .ok_or(PclntabError::NoTable)?;
    Ok(Table {
        data,
        start,
        address: s.addr,
    })
}

/// The fields of the table's header the lookup needs (64-bit pointers).
#[derive(Debug)]
struct Header {
    nfunc: usize,
    text_start: u64,
    funcname: usize,
    cu: usize,
    pcln: usize,
}

impl Header {
    fn parse(t: &[u8]) -> Result<Self, PclntabError> {
        if t.len() < 72 {
            return Err(PclntabError::Malformed("shorter than its header"));
        }
        let magic = u32_at(t, 0);
        if magic != MAGIC_GO118 && magic != MAGIC_GO120 {
            return Err(PclntabError::UnsupportedVersion(magic));
        }
        // Two zero bytes, the instruction size quantum (1 on x86, 4 on arm64), pointer size.
        if t[4] != 0 || t[5] != 0 || !matches!(t[6], 1 | 2 | 4) {
            return Err(PclntabError::Malformed("header padding or quantum"));
        }
        if t[7] != 8 {
            return Err(PclntabError::Malformed("not a 64-bit table"));
        }
        let field = |i: usize| u64_at(t, 8 + 8 * i);
        let len = t.len() as u64;
        let (nfunc, funcname, cu, filetab, pctab, pcln) =
            (field(0), field(3), field(4), field(5), field(6), field(7));
        // Layout: header, function names, compilation units, files, pc tables, functions.
        let ordered = 72 <= funcname
            && funcname <= cu
            && cu <= filetab
            && filetab <= pctab
            && pctab <= pcln
            && pcln < len;
        if !ordered || nfunc == 0 || nfunc > (len - pcln) / 8 {
            return Err(PclntabError::Malformed("header offsets"));
        }
        Ok(Self {
            nfunc: nfunc as usize,
            text_start: field(2),
            funcname: funcname as usize,
            cu: cu as usize,
            pcln: pcln as usize,
        })
    }
}

/// The virtual addresses of Go functions, by their full names (`runtime.newproc1`), in the
/// order asked.
pub fn function_addresses(path: &Path, names: &[&str]) -> Result<Vec<u64>, PclntabError> {
    let elf = Elf::open(path)?;
    addresses(&elf, names)
}

fn addresses(elf: &Elf, names: &[&str]) -> Result<Vec<u64>, PclntabError> {
    let table = find_table(elf)?;
    let t = &table.data[table.start..];
    let h = Header::parse(t)?;
    let mut text_start = h.text_start;
    if text_start == 0 {
        let field = table.address + table.start as u64 + 24;
        text_start = elf.relative_addend(field)?.ok_or(PclntabError::Malformed(
            "textStart is zero and not relocated",
        ))?;
    }
    let funcnames = &t[h.funcname..h.cu];
    let functab = &t[h.pcln..];
    names
        .iter()
        .map(|&name| {
            let name_off =
                name_offset(funcnames, name).ok_or_else(|| PclntabError::NotFound(name.into()))?;
            for i in 0..h.nfunc {
                let entry_off = u32_at(functab, i * 8);
                let func_off = u32_at(functab, i * 8 + 4) as usize;
                let record = functab
                    .get(func_off..func_off + 8)
                    .ok_or(PclntabError::Malformed("function record out of bounds"))?;
                if u32_at(record, 4) as usize == name_off {
                    // The record repeats its entry offset: a table read with the wrong layout
                    // would not.
                    if u32_at(record, 0) != entry_off {
                        return Err(PclntabError::Malformed("entry offsets disagree"));
                    }
                    return Ok(text_start + u64::from(entry_off));
                }
            }
            Err(PclntabError::NotFound(name.into()))
        })
        .collect()
}

/// Where `name` starts in the table of NUL-terminated function names.
fn name_offset(table: &[u8], name: &str) -> Option<usize> {
    let mut at = 0;
    for s in table.split(|&b| b == 0) {
        if s == name.as_bytes() {
            return Some(at);
        }
        at += s.len() + 1;
    }
    None
}

/// The file offsets (for a uprobe) of Go functions, in the order asked.
pub fn function_offsets(path: &Path, names: &[&str]) -> Result<Vec<u64>, PclntabError> {
    let elf = Elf::open(path)?;
    let addrs = addresses(&elf, names)?;
    names
        .iter()
        .zip(addrs)
        .map(|(name, address)| {
            elf.file_offset(address)
                .ok_or_else(|| PclntabError::NotMapped {
                    name: (*name).into(),
                    address,
                })
        })
        .collect()
}

/// Where the Go runtime lists every goroutine it ever made (`runtime/proc.go`: `allglen
/// uintptr` and `allgptr **g`, which `allgadd` keeps equal to `len(allgs)` and `&allgs[0]`), as
/// link-time virtual addresses, with the executable's entry point (a running PIE is relocated
/// by the difference between its `AT_ENTRY` and this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllG {
    pub allglen: u64,
    pub allgptr: u64,
    pub entry: u64,
    /// Found in the symbol table (else in the code of `runtime.forEachGRace`).
    pub from_symbols: bool,
}

/// The addresses of `runtime.allglen` and `runtime.allgptr`: from the symbol table when the
/// binary has one, else from the code (see [`runtime_allg_from_code`]). Both are checked to
/// lie in a writable segment.
pub fn runtime_allg(path: &Path) -> Result<AllG, PclntabError> {
    let elf = Elf::open(path)?;
    let syms = elf.symbols(&["runtime.allglen", "runtime.allgptr"])?;
    let (allglen, allgptr, from_symbols) = match syms.as_deref() {
        Some([Some(len), Some(ptr)]) => (*len, *ptr, true),
        _ => {
            let (len, ptr) = allg_from_code(&elf)?;
            (len, ptr, false)
        }
    };
    checked_allg(&elf, allglen, allgptr, from_symbols)
}

/// The same addresses found only from code, as for a stripped binary: Go 1.19 to 1.24 compile
/// `runtime.forEachGRace` (which `atomicAllG` is inlined into, and which the GC's
/// `gcResetMarkState` calls, so every binary has it) to load `allglen` and then `allgptr`
/// with RIP-relative `MOVQ`s, the first two of the function (checked against the symbol table
/// of every installed Go in this module's tests).
pub fn runtime_allg_from_code(path: &Path) -> Result<AllG, PclntabError> {
    let elf = Elf::open(path)?;
    let (len, ptr) = allg_from_code(&elf)?;
    checked_allg(&elf, len, ptr, false)
}

fn checked_allg(
    elf: &Elf,
    allglen: u64,
    allgptr: u64,
    from_symbols: bool,
) -> Result<AllG, PclntabError> {
    if allglen == allgptr
        || !allglen.is_multiple_of(8)
        || !allgptr.is_multiple_of(8)
        || !elf.writable(allglen, 8)
        || !elf.writable(allgptr, 8)
    {
        return Err(PclntabError::Malformed(
            "allglen and allgptr are not two words of writable data",
        ));
    }
    Ok(AllG {
        allglen,
        allgptr,
        entry: elf.entry,
        from_symbols,
    })
}

fn allg_from_code(elf: &Elf) -> Result<(u64, u64), PclntabError> {
    let name = "runtime.forEachGRace";
    let address = addresses(elf, &[name])?[0];
    let offset = elf
        .file_offset(address)
        .ok_or_else(|| PclntabError::NotMapped {
            name: name.into(),
            address,
        })?;
    let mut code = vec![0u8; ALLG_CODE];
    let n = elf.file.read_at(&mut code, offset)?;
    code.truncate(n);
    match rip_relative_loads(&code, address)[..] {
        [len, ptr, ..] => Ok((len, ptr)),
        _ => Err(PclntabError::Malformed(
            "runtime.forEachGRace does not start by loading allglen and allgptr",
        )),
    }
}

/// Targets of the x86-64 `MOVQ disp32(RIP), r64` instructions (`REX.W` 48 or 4c, opcode 8b,
/// ModRM mod 00 r/m 101) in `code`, which starts at virtual address `address`, in order.
pub fn rip_relative_loads(code: &[u8], address: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 7 <= code.len() {
        let c = &code[i..];
        if matches!(c[0], 0x48 | 0x4c) && c[1] == 0x8b && c[2] & 0xc7 == 0x05 {
            let disp = i32::from_le_bytes([c[3], c[4], c[5], c[6]]);
            out.push(
                address
                    .wrapping_add(i as u64 + 7)
                    .wrapping_add(disp as i64 as u64),
            );
            i += 7;
        } else {
            i += 1;
        }
    }
    out
}

/// The Go version that built an executable (`go1.22.6`), from its build information
/// (`.go.buildinfo`: a 32-byte header, then, from Go 1.18 on, the version as a
/// varint-length-prefixed string).
pub fn go_version(path: &Path) -> Result<String, PclntabError> {
    let elf = Elf::open(path)?;
    let s = elf
        .section(".go.buildinfo")
        .ok_or(PclntabError::Malformed("no .go.buildinfo section"))?;
    let mut b = vec![0u8; s.size.min(4096) as usize];
    elf.file.read_exact_at(&mut b, s.offset)?;
    if !b.starts_with(b"\xff Go buildinf:") || b.len() < 33 {
        return Err(PclntabError::Malformed("build information header"));
    }
    if b[15] & 2 == 0 {
        return Err(PclntabError::Malformed(
            "build information of a Go older than 1.18 (version not inline)",
        ));
    }
    let (mut len, mut shift, mut at) = (0usize, 0, 32);
    loop {
        let byte = *b
            .get(at)
            .ok_or(PclntabError::Malformed("build information"))?;
        len |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 || shift > 21 {
            break;
        }
        shift += 7;
    }
    b.get(at..at + len)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
        .ok_or(PclntabError::Malformed("build information version"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// The Go build cache the unit tests share with the integration tests (`tests/support`'s
    /// `go_cache`): `<target>/tmp/go-cache`, found from this test binary's path
    /// (`<target>/debug/deps/`), kept between runs; `fallback` where it cannot be written
    /// (a read-only target directory, as in a VM guest). Go keys its cache by toolchain, flags
    /// and sources, so a program built from it is the one an empty cache gives.
    pub(crate) fn go_cache(fallback: &Path) -> std::path::PathBuf {
        let shared = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("tmp/go-cache")));
        match shared {
            Some(s) if std::fs::create_dir_all(&s).is_ok() && tempfile::tempfile_in(&s).is_ok() => {
                s
            }
            _ => fallback.to_path_buf(),
        }
    }

    const FUNCS: [&str; 2] = ["runtime.newproc1", "runtime.goexit0"];

    const CGO: &str = "package main\n\n// int add(int a, int b) { return a + b; }\nimport \"C\"\n\
                       import \"fmt\"\n\nfunc main() { fmt.Println(C.add(1, 2)) }\n";
    const PURE: &str = "package main\n\nimport \"fmt\"\n\nfunc main() { go fmt.Println(1) }\n";

    /// Every Go toolchain installed (Debian's, and the backports' of scripts/setup --test).
    fn toolchains() -> Vec<std::path::PathBuf> {
        let mut out: Vec<_> = ["/usr/lib/go/bin/go"]
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
        for v in 21..=30 {
            out.push(format!("/usr/lib/go-1.{v}/bin/go").into());
        }
        out.retain(|p| p.exists());
        out
    }

    /// Builds `src` with `go`; None where the build is impossible here (no C compiler).
    fn build(go: &Path, dir: &Path, name: &str, src: &str, flags: &[&str]) -> Option<PathBuf> {
        let file = dir.join(format!("{name}.go"));
        std::fs::write(&file, src).unwrap();
        let out = dir.join(name);
        let home = dir.join("home");
        let st = Command::new(go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&file)
            .env("HOME", &home)
            .env("GOCACHE", go_cache(&home.join("cache")))
            .env("GOPATH", home.join("path"))
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", if src == CGO { "1" } else { "0" })
            .output()
            .unwrap();
        if !st.status.success() {
            assert!(
                src == CGO,
                "go build {flags:?}: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            return None;
        }
        Some(out)
    }
    use std::path::PathBuf;

    /// Symbol addresses by `nm` (binutils), the ground truth for unstripped binaries.
    fn nm(bin: &Path, name: &str) -> u64 {
        let out = Command::new("nm").arg(bin).output().expect("nm (binutils)");
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("{name} not in nm {}", bin.display()));
        u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
    }

    /// For every installed Go: pure Go and cgo, internally and externally linked, PIE or not,
    /// the table gives the address `nm` reads from the symbol table; and the stripped build
    /// (same code, so the same layout) gives the same address and a file offset that holds the
    /// same bytes as the unstripped one's.
    #[test]
    fn functions_are_found_in_every_layout_and_go_version() {
        let gos = toolchains();
        assert!(!gos.is_empty(), "no Go toolchain (scripts/setup --test)");
        let dir = tempfile::tempdir().unwrap();
        let variants: [(&str, &str, &[&str]); 5] = [
            ("exe", PURE, &[]),
            ("pie", PURE, &["-buildmode=pie"]),
            ("cgo", CGO, &["-ldflags=-linkmode=external"]),
            (
                "cgopie",
                CGO,
                &["-buildmode=pie", "-ldflags=-linkmode=external"],
            ),
            ("cgoint", CGO, &["-ldflags=-linkmode=internal"]),
        ];
        let mut checked = 0;
        for (gi, go) in gos.iter().enumerate() {
            for (vname, src, flags) in variants {
                let name = format!("{vname}{gi}");
                let Some(full) = build(go, dir.path(), &name, src, flags) else {
                    continue;
                };
                let mut sflags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
                match sflags.iter_mut().find(|f| f.starts_with("-ldflags=")) {
                    Some(f) => f.push_str(" -s -w"),
                    None => sflags.push("-ldflags=-s -w".into()),
                }
                let sflags: Vec<&str> = sflags.iter().map(String::as_str).collect();
                let stripped = build(go, dir.path(), &format!("{name}s"), src, &sflags).unwrap();
                let want: Vec<u64> = FUNCS.iter().map(|f| nm(&full, f)).collect();
                let got = function_addresses(&full, &FUNCS)
                    .unwrap_or_else(|e| panic!("{} {vname}: {e}", go.display()));
                assert_eq!(got, want, "{} {vname}", go.display());
                let got_s = function_addresses(&stripped, &FUNCS).unwrap();
                let offs = function_offsets(&full, &FUNCS).unwrap();
                let offs_s = function_offsets(&stripped, &FUNCS).unwrap();
                let code = |bin: &Path, off: u64| {
                    let mut b = [0u8; 32];
                    File::open(bin).unwrap().read_exact_at(&mut b, off).unwrap();
                    b
                };
                for i in 0..FUNCS.len() {
                    assert_eq!(
                        code(&full, offs[i]),
                        code(&stripped, offs_s[i]),
                        "{} {vname} {}: stripped at {:#x} (address {:#x})",
                        go.display(),
                        FUNCS[i],
                        offs_s[i],
                        got_s[i]
                    );
                }
                checked += 1;
            }
        }
        eprintln!("{checked} builds checked over {} Go toolchains", gos.len());
        assert!(checked >= gos.len() * 2);
    }

    /// For every installed Go, pure Go and cgo, PIE or not: the runtime's goroutine list
    /// (`allglen`, `allgptr`) found from the code of `runtime.forEachGRace` alone is where
    /// `nm` says; the stripped build's is found too (from code), and its build information
    /// names the toolchain's version.
    #[test]
    fn the_goroutine_list_is_found_from_code_in_every_go_version() {
        let gos = toolchains();
        assert!(!gos.is_empty(), "no Go toolchain (scripts/setup --test)");
        let dir = tempfile::tempdir().unwrap();
        let variants: [(&str, &str, &[&str]); 3] = [
            ("exe", PURE, &[]),
            ("pie", PURE, &["-buildmode=pie"]),
            ("cgo", CGO, &["-ldflags=-linkmode=external"]),
        ];
        let mut checked = 0;
        for (gi, go) in gos.iter().enumerate() {
            let out = Command::new(go).arg("version").output().unwrap();
            let version = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(2)
                .unwrap()
                .to_string();
            for (vname, src, flags) in variants {
                let name = format!("allg{vname}{gi}");
                let Some(full) = build(go, dir.path(), &name, src, flags) else {
                    continue;
                };
                let want = (nm(&full, "runtime.allglen"), nm(&full, "runtime.allgptr"));
                let by_sym = runtime_allg(&full).unwrap();
                assert!(by_sym.from_symbols);
                assert_eq!((by_sym.allglen, by_sym.allgptr), want, "{version} {vname}");
                let by_code = runtime_allg_from_code(&full)
                    .unwrap_or_else(|e| panic!("{version} {vname}: {e}"));
                assert_eq!(
                    (by_code.allglen, by_code.allgptr),
                    want,
                    "{version} {vname}"
                );
                assert_eq!(go_version(&full).unwrap(), version);
                let mut sflags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
                match sflags.iter_mut().find(|f| f.starts_with("-ldflags=")) {
                    Some(f) => f.push_str(" -s -w"),
                    None => sflags.push("-ldflags=-s -w".into()),
                }
                let sflags: Vec<&str> = sflags.iter().map(String::as_str).collect();
                let stripped = build(go, dir.path(), &format!("{name}s"), src, &sflags).unwrap();
                let s = runtime_allg(&stripped)
                    .unwrap_or_else(|e| panic!("{version} {vname} stripped: {e}"));
                assert!(!s.from_symbols);
                assert_eq!(go_version(&stripped).unwrap(), version);
                checked += 1;
            }
        }
        eprintln!("{checked} builds checked over {} Go toolchains", gos.len());
        assert!(checked >= gos.len() * 2);
    }

    #[test]
    fn rip_relative_loads_are_decoded() {
        // runtime.forEachGRace, Go 1.24, at 0x43a4a0 (objdump): MOVQ allglen(SB), CX at
        // +0x14 and MOVQ allgptr(SB), BX at +0x20, after a prologue with no such load.
        let code = [
            0x49, 0x3b, 0x66, 0x10, 0x76, 0x65, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x20,
            0x48, 0x89, 0x44, 0x24, 0x30, 0x90, 0x48, 0x8b, 0x0d, 0x75, 0xdd, 0x14, 0x00, 0x48,
            0x89, 0x4c, 0x24, 0x10, 0x48, 0x8b, 0x1d, 0xd9, 0xdb, 0x12, 0x00,
        ];
        assert_eq!(
            rip_relative_loads(&code, 0x43a4a0),
            [0x43a4bb + 0x14dd75, 0x43a4c7 + 0x12dbd9]
        );
        assert!(rip_relative_loads(&code[..20], 0).is_empty());
    }

    #[test]
    fn not_go_and_unknown_tables_are_refused() {
        assert!(matches!(
            function_offsets(Path::new("/bin/sh"), &FUNCS),
            Err(PclntabError::NoTable)
        ));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert!(matches!(
            function_offsets(&p, &FUNCS),
            Err(PclntabError::NotElf)
        ));
        // A Go 1.16 table's magic, a future one, and a truncated header.
        let mut t = vec![0u8; 128];
        t[..4].copy_from_slice(&0xffff_fffa_u32.to_le_bytes());
        assert!(matches!(
            Header::parse(&t),
            Err(PclntabError::UnsupportedVersion(0xffff_fffa))
        ));
        t[..4].copy_from_slice(&0xffff_fff2_u32.to_le_bytes());
        assert!(matches!(
            Header::parse(&t),
            Err(PclntabError::UnsupportedVersion(_))
        ));
        t[..4].copy_from_slice(&MAGIC_GO120.to_le_bytes());
        assert!(matches!(
            Header::parse(&t[..40]),
            Err(PclntabError::Malformed(_))
        ));
        // Right magic, nonsense offsets.
        t[6] = 1;
        t[7] = 8;
        assert!(matches!(Header::parse(&t), Err(PclntabError::Malformed(_))));
    }

    #[test]
    fn names_are_matched_whole() {
        let tab = b"runtime.newproc\0runtime.newproc1\0x\0";
        assert_eq!(name_offset(tab, "runtime.newproc1"), Some(16));
        assert_eq!(name_offset(tab, "runtime.newproc"), Some(0));
        assert_eq!(name_offset(tab, "newproc1"), None);
    }
}
