//! Struct member offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya-ebpf has no CO-RE relocations, so probes that read kernel structs get the byte offsets
//! of the fields they read from userspace, which computes them here at load time and writes
//! them into the programs' read-only data. This is a small parser of the BTF format (header,
//! type section, string section): it keeps every type, knows how much trailing data each kind
//! carries, and walks STRUCT/UNION members (through anonymous members, typedefs and
//! qualifiers) to a member's bit offset. Later probes extend [`KernelOffsets`] with their own
//! structs (e.g. `task_struct`).

use agent_common::tcp::TcpOffsets;

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;
const TYPE_HEADER: usize = 12;

// BTF kinds (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("not BTF (magic {0:#06x}; only little-endian BTF is supported)")]
    BadMagic(u16),
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("BTF has no struct or union named `{0}`")]
    NoStruct(String),
    #[error("`{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
    #[error("`{strukt}.{member}` is not a struct or union, cannot look inside it")]
    NotComposite { strukt: String, member: String },
    #[error("`{strukt}.{member}` is a bitfield or not byte-aligned")]
    NotByteAligned { strukt: String, member: String },
    #[error("BTF has no function prototype behind the typedef `{0}`")]
    NoFuncProto(String),
}

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the containing struct or union.
    bit_offset: u32,
    /// Bitfield width (0 for a plain member).
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// `size` or `type`, by kind.
    size_or_type: u32,
    /// Number of members, parameters, enumerators... by kind.
    vlen: u32,
    /// For STRUCT/UNION: range in `Btf::members`.
    members: std::ops::Range<usize>,
}

/// A parsed BTF blob: every type (index = type id; 0 is `void`) and the string section.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    members: Vec<Member>,
    strings: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn malformed(what: impl Into<String>) -> BtfError {
    BtfError::Malformed(what.into())
}

impl Btf {
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|e| BtfError::Read {
            path: path.into(),
            message: e.to_string(),
        })?;
        Self::parse(&bytes)
    }

    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        let magic = u16_at(b, 0).ok_or_else(|| malformed("shorter than its header"))?;
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let field = |at| u32_at(b, at).ok_or_else(|| malformed("shorter than its header"));
        let hdr_len = field(4)? as usize;
        if hdr_len < HEADER_MIN {
            return Err(malformed(format!("header length {hdr_len}")));
        }
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let section = |off: usize, len: usize, name: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|s| Some(s..s.checked_add(len)?))
                .and_then(|r| b.get(r))
                .ok_or_else(|| malformed(format!("{name} section out of bounds")))
        };
        let type_sec = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            size_or_type: 0,
            vlen: 0,
            members: 0..0,
        }];
        // Upper bounds (every type and member takes at least 12 bytes of the section), so
        // that the vectors never grow by copying: capacity never written to is never resident,
        // and each copy of a growing vector would be (this parse is part of the agent's
        // start-up peak of memory).
        types.reserve_exact(type_sec.len() / TYPE_HEADER);
        let mut members = Vec::with_capacity(type_sec.len() / 12);
        let mut at = 0;
        while at < type_sec.len() {
            let id = types.len();
            let trunc = || malformed(format!("type {id} truncated"));
            let name_off = u32_at(type_sec, at).ok_or_else(trunc)?;
            let info = u32_at(type_sec, at + 4).ok_or_else(trunc)?;
            let size_or_type = u32_at(type_sec, at + 8).ok_or_else(trunc)?;
            at += TYPE_HEADER;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let first_member = members.len();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let name_off = u32_at(type_sec, m).ok_or_else(trunc)?;
                        let type_id = u32_at(type_sec, m + 4).ok_or_else(trunc)?;
                        let offset = u32_at(type_sec, m + 8).ok_or_else(trunc)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name_off,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    12 * vlen
                }
                other => return Err(malformed(format!("type {id} has unknown kind {other}"))),
            };
            if at + extra > type_sec.len() {
                return Err(trunc());
            }
            at += extra;
            types.push(Type {
                name_off,
                kind,
                size_or_type,
                vlen: vlen as u32,
                members: first_member..members.len(),
            });
        }
        Ok(Self {
            types,
            members,
            strings,
        })
    }

    /// The id of the typedef called `name`.
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off) == name)
            .map(|i| i as u32)
    }

    /// A BTF blob in which the typedef `btf_trace_<tp>` of each of `tracepoints` this BTF has
    /// sits at the same id as here, every other id up to the last of them being a `void *`.
    /// It is all that aya needs to load a BTF tracepoint program (the typedef's id, which the
    /// kernel resolves in its own BTF), and aya's parse of it takes a few MiB where its parse
    /// of the whole kernel BTF took about 15 MiB at the agent's start (its peak of memory).
    pub fn tracepoint_blob(&self, tracepoints: &[&str]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut named: Vec<(u32, u32)> = Vec::new();
        for tp in tracepoints {
            let name = format!("btf_trace_{tp}");
            if let Some(id) = self.typedef_id(&name) {
                named.push((id, strings.len() as u32));
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
            }
        }
        named.sort_unstable();
        let last = named.last().map_or(0, |&(id, _)| id);
        let mut types = Vec::with_capacity(last as usize * TYPE_HEADER);
        let mut next = named.iter().peekable();
        for id in 1..=last {
            let (name_off, kind) = match next.peek() {
                Some(&&(at, name_off)) if at == id => {
                    next.next();
                    (name_off, KIND_TYPEDEF)
                }
                _ => (0, KIND_PTR),
            };
            for w in [name_off, kind << 24, 0] {
                types.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut out = Vec::with_capacity(HEADER_MIN + types.len() + strings.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        let tl = types.len() as u32;
        for w in [HEADER_MIN as u32, 0, tl, tl, strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    /// Number of types, `void` (id 0) included.
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The id of the struct or union called `name` that has a body (not a forward
    /// declaration).
    fn composite(&self, name: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .position(|t| {
                (t.kind == KIND_STRUCT || t.kind == KIND_UNION) && self.name(t.name_off) == name
            })
            .map(|i| i as u32)
            .ok_or_else(|| BtfError::NoStruct(name.into()))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    fn is_composite(&self, id: u32) -> bool {
        self.types
            .get(id as usize)
            .is_some_and(|t| t.kind == KIND_STRUCT || t.kind == KIND_UNION)
    }

    /// Bit offset and member of `name` in composite type `id`, looking through anonymous
    /// struct and union members (whose offsets add up).
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, Member)> {
        if depth > 16 {
            return None;
        }
        let t = self.types.get(id as usize)?;
        let members = self.members.get(t.members.clone())?;
        if let Some(m) = members.iter().find(|m| self.name(m.name_off) == name) {
            return Some((m.bit_offset, *m));
        }
        members.iter().filter(|m| m.name_off == 0).find_map(|m| {
            let inner = self.resolve(m.type_id);
            if !self.is_composite(inner) {
                return None;
            }
            self.find_member(inner, name, depth + 1)
                .map(|(off, found)| (m.bit_offset + off, found))
        })
    }

    /// Number of parameters of the function prototype behind the typedef `name` (through
    /// pointers, as in `typedef void (*btf_trace_<tracepoint>)(void *, ...)`).
    pub fn func_proto_params(&self, name: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::NoFuncProto(name.into());
        let mut id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off) == name)
            .ok_or_else(missing)? as u32;
        for _ in 0..8 {
            let t = self.types.get(id as usize).ok_or_else(missing)?;
            match t.kind {
                KIND_FUNC_PROTO => return Ok(t.vlen),
                KIND_TYPEDEF | KIND_PTR | KIND_CONST | KIND_VOLATILE | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        Err(missing())
    }

    /// Byte offset of `path` (members separated by dots, e.g. `__sk_common.skc_daddr`) from
    /// the start of struct or union `strukt`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = self.composite(strukt)?;
        let mut bits = 0u32;
        let mut walked = String::new();
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let here = if walked.is_empty() {
                strukt.to_string()
            } else {
                format!("{strukt}.{walked}")
            };
            let (off, member) =
                self.find_member(id, part, 0)
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: here.clone(),
                        member: part.into(),
                    })?;
            if member.bitfield_size != 0 || off % 8 != 0 {
                return Err(BtfError::NotByteAligned {
                    strukt: here,
                    member: part.into(),
                });
            }
            bits += off;
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(part);
            if parts.peek().is_some() {
                id = self.resolve(member.type_id);
                if !self.is_composite(id) {
                    return Err(BtfError::NotComposite {
                        strukt: strukt.into(),
                        member: walked,
                    });
                }
            }
        }
        Ok(bits / 8)
    }
}

/// The kernel's struct layouts, as the probes need them.
pub struct KernelOffsets {
    btf: Btf,
}

impl KernelOffsets {
    pub const SYS_FS_PATH: &'static str = "/sys/kernel/btf/vmlinux";

    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Ok(Self::new(Btf::from_file(Self::SYS_FS_PATH)?))
    }

    pub fn new(btf: Btf) -> Self {
        Self { btf }
    }

    pub fn btf(&self) -> &Btf {
        &self.btf
    }

    /// What the TCP retransmit probe reads from `struct sock`, `struct request_sock` and
    /// `struct sk_buff`.
    pub fn tcp(&self) -> Result<TcpOffsets, BtfError> {
        let b = &self.btf;
        let common = |field: &str| b.offset_of("sock_common", field);
        Ok(TcpOffsets {
            sock_common: b.offset_of("sock", "__sk_common")?,
            req_common: b.offset_of("request_sock", "__req_common")?,
            lock_owned: b.offset_of("sock", "sk_lock.owned")?,
            skb_gso_segs: b.offset_of("sk_buff", "cb")?
                + b.offset_of("tcp_skb_cb", "tcp_gso_segs")?,
            family: common("skc_family")?,
            state: common("skc_state")?,
            dport: common("skc_dport")?,
            num: common("skc_num")?,
            daddr: common("skc_daddr")?,
            rcv_saddr: common("skc_rcv_saddr")?,
            v6_daddr: common("skc_v6_daddr")?,
            v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
            net: common("skc_net")?,
            // The tracepoint's first parameter is the `void *__data` of every BTF tracepoint.
            retransmit_has_err: u32::from(
                b.func_proto_params("btf_trace_tcp_retransmit_skb")? >= 4,
            ),
            sk_err: b.offset_of("sock", "sk_err")?,
            total_retrans: b.offset_of("tcp_sock", "total_retrans")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob type by type, the way the kernel lays it out.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn ty(&mut self, name: &str, kind: u32, kind_flag: bool, vlen: u32, st: u32) -> u32 {
            let name = self.str(name);
            let info = (kind << 24) | vlen | if kind_flag { 1 << 31 } else { 0 };
            for w in [name, info, st] {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.ty(name, KIND_INT, false, 0, size);
            self.words(&[size * 8]);
            id
        }

        /// `members`: (name, type id, bit offset, bitfield size).
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let id = self.ty(name, kind, kind_flag, members.len() as u32, size);
            for &(n, t, off, bits) in members {
                let n = self.str(n);
                let off = if kind_flag { off | (bits << 24) } else { off };
                self.words(&[n, t, off]);
            }
            id
        }

        fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1);
            out.push(0);
            let tl = self.types.len() as u32;
            for w in [24u32, 0, tl, tl, self.strings.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A blob with every kind before the structs (so their trailing data must be skipped
    /// right), anonymous unions and structs, typedefs and qualifiers, and bitfields.
    fn synthetic() -> Vec<u8> {
        let mut b = Builder::new();
        let u32_t = b.int("unsigned int", 4);
        let u16_t = b.int("unsigned short", 2);
        let u8_t = b.int("unsigned char", 1);
        let ptr = b.ty("", KIND_PTR, false, 0, u32_t);
        let arr = b.ty("", KIND_ARRAY, false, 0, 0);
        b.words(&[u8_t, u32_t, 16]);
        let e = b.ty("colour", KIND_ENUM, false, 2, 4);
        let (red, green) = (b.str("RED"), b.str("GREEN"));
        b.words(&[red, 0, green, 1]);
        b.ty("sock_common", KIND_FWD, false, 0, 0);
        let proto = b.ty("", KIND_FUNC_PROTO, false, 2, u32_t);
        b.words(&[0, u32_t, 0, ptr]);
        let proto_ptr = b.ty("", KIND_PTR, false, 0, proto);
        b.ty("btf_trace_x", KIND_TYPEDEF, false, 0, proto_ptr);
        b.ty("f", KIND_FUNC, false, 0, proto);
        let var = b.ty("v", KIND_VAR, false, 0, u32_t);
        b.words(&[1]);
        b.ty(".data", KIND_DATASEC, false, 1, 4);
        b.words(&[var, 0, 4]);
        b.ty("double", KIND_FLOAT, false, 0, 8);
        b.ty("tag", KIND_DECL_TAG, false, 0, var);
        b.words(&[u32::MAX]);
        b.ty("user", KIND_TYPE_TAG, false, 0, ptr);
        b.ty("big", KIND_ENUM64, false, 1, 8);
        let one = b.str("ONE");
        b.words(&[one, 1, 0]);
        let be16 = b.ty("__be16", KIND_TYPEDEF, false, 0, u16_t);
        let vol_u8 = b.ty("", KIND_VOLATILE, false, 0, u8_t);
        // struct { __be16 dport; u16 num; }
        let ports = b.composite(
            KIND_STRUCT,
            "",
            4,
            &[("skc_dport", be16, 0, 0), ("skc_num", u16_t, 16, 0)],
        );
        // union { u32 portpair; struct { ... }; }
        let portpair = b.composite(
            KIND_UNION,
            "",
            4,
            &[("skc_portpair", u32_t, 0, 0), ("", ports, 0, 0)],
        );
        let anon_typedef = b.ty("portpair_t", KIND_TYPEDEF, false, 0, portpair);
        let common = b.composite(
            KIND_STRUCT,
            "sock_common",
            40,
            &[
                ("skc_daddr", u32_t, 0, 0),
                ("", anon_typedef, 32, 0),
                ("skc_state", vol_u8, 64, 0),
                ("skc_v6_daddr", arr, 128, 0),
                ("skc_flag", u8_t, 72, 1),
                ("skc_colour", e, 96, 0),
            ],
        );
        b.composite(
            KIND_STRUCT,
            "sock",
            64,
            &[
                ("sk_pad", u32_t, 0, 0),
                ("__sk_common", common, 64, 0),
                ("sk_ptr", ptr, 384, 0),
            ],
        );
        b.finish()
    }

    #[test]
    fn tracepoint_blob_keeps_the_typedef_ids() {
        let btf = Btf::parse(&synthetic()).unwrap();
        let id = btf
            .typedef_id("btf_trace_x")
            .expect("the synthetic blob's typedef");
        assert_eq!(btf.typedef_id("btf_trace_y"), None);
        let blob = btf.tracepoint_blob(&["y", "x"]);
        // Ours and aya's parsers both find it at the same id, and nothing else is named.
        let ours = Btf::parse(&blob).unwrap();
        assert_eq!(ours.type_count(), id as usize + 1);
        assert_eq!(ours.typedef_id("btf_trace_x"), Some(id));
        let aya = aya::Btf::parse(&blob, Default::default()).unwrap();
        assert_eq!(
            aya.id_by_type_name_kind("btf_trace_x", aya_obj::btf::BtfKind::Typedef)
                .unwrap(),
            id
        );
        assert!(aya
            .id_by_type_name_kind("btf_trace_y", aya_obj::btf::BtfKind::Typedef)
            .is_err());
        assert_eq!(
            Btf::parse(&btf.tracepoint_blob(&[])).unwrap().type_count(),
            1
        );
    }

    #[test]
    fn synthetic_offsets_through_anonymous_members() {
        let btf = Btf::parse(&synthetic()).unwrap();
        assert_eq!(btf.type_count(), 25, "void and 24 types");
        assert_eq!(btf.offset_of("sock_common", "skc_daddr"), Ok(0));
        assert_eq!(btf.offset_of("sock_common", "skc_portpair"), Ok(4));
        assert_eq!(btf.offset_of("sock_common", "skc_dport"), Ok(4));
        assert_eq!(btf.offset_of("sock_common", "skc_num"), Ok(6));
        assert_eq!(btf.offset_of("sock_common", "skc_state"), Ok(8));
        assert_eq!(btf.offset_of("sock_common", "skc_v6_daddr"), Ok(16));
        assert_eq!(btf.offset_of("sock", "__sk_common"), Ok(8));
        assert_eq!(btf.offset_of("sock", "__sk_common.skc_num"), Ok(14));
        assert_eq!(btf.offset_of("sock", "sk_ptr"), Ok(48));
        assert_eq!(btf.func_proto_params("btf_trace_x"), Ok(2));
        assert_eq!(
            btf.func_proto_params("__be16"),
            Err(BtfError::NoFuncProto("__be16".into()))
        );
        assert_eq!(
            btf.func_proto_params("nope"),
            Err(BtfError::NoFuncProto("nope".into()))
        );
    }

    #[test]
    fn synthetic_errors_name_what_is_missing() {
        let btf = Btf::parse(&synthetic()).unwrap();
        assert_eq!(
            btf.offset_of("task_struct", "pid"),
            Err(BtfError::NoStruct("task_struct".into()))
        );
        assert_eq!(
            btf.offset_of("sock", "__sk_common.skc_nope"),
            Err(BtfError::NoMember {
                strukt: "sock.__sk_common".into(),
                member: "skc_nope".into()
            })
        );
        assert_eq!(
            btf.offset_of("sock", "sk_ptr.x"),
            Err(BtfError::NotComposite {
                strukt: "sock".into(),
                member: "sk_ptr".into()
            })
        );
        assert_eq!(
            btf.offset_of("sock_common", "skc_flag"),
            Err(BtfError::NotByteAligned {
                strukt: "sock_common".into(),
                member: "skc_flag".into()
            })
        );
        let msg = btf.offset_of("sock", "nope").unwrap_err().to_string();
        assert_eq!(msg, "`sock` has no member `nope`");
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        let blob = synthetic();
        assert_eq!(
            Btf::parse(&[]).unwrap_err(),
            malformed("shorter than its header")
        );
        assert_eq!(
            Btf::parse(&[0x9f, 0xeb, 1, 0]).unwrap_err(),
            malformed("shorter than its header")
        );
        assert!(matches!(
            Btf::parse(&[0xeb, 0x9f, 1, 0]),
            Err(BtfError::BadMagic(0x9feb))
        ));
        // Every truncation is rejected: the string section comes last, so it runs past the end.
        for len in 0..blob.len() {
            assert!(Btf::parse(&blob[..len]).is_err(), "length {len}");
        }
        // An unknown kind is reported with its type id.
        let mut bad = blob.clone();
        bad[24 + 4 + 3] = 30; // kind byte of type 1's info
        assert_eq!(
            Btf::parse(&bad).unwrap_err(),
            malformed("type 1 has unknown kind 30")
        );
    }

    /// The real kernel's BTF: the offsets the TCP probe needs exist and are plausible.
    #[test]
    fn real_vmlinux_tcp_offsets() {
        if !std::path::Path::new(KernelOffsets::SYS_FS_PATH).exists() {
            eprintln!("skipped: no {}", KernelOffsets::SYS_FS_PATH);
            return;
        }
        let k = KernelOffsets::from_sys_fs().unwrap();
        assert!(k.btf().type_count() > 10_000);
        let o = k.tcp().unwrap();
        // struct sock starts with its sock_common; request_sock too.
        assert_eq!(o.sock_common, 0);
        assert_eq!(o.req_common, 0);
        // Stable for a decade of kernels: the addresses lead sock_common, the port pair and
        // family follow.
        assert_eq!(o.daddr, 0);
        assert_eq!(o.rcv_saddr, 4);
        assert_eq!(o.dport, 12);
        assert_eq!(o.num, 14);
        assert_eq!(o.family, 16);
        assert_eq!(o.state, 18);
        assert!(o.v6_daddr >= 24 && o.v6_rcv_saddr > o.v6_daddr);
        assert!(o.lock_owned > 0);
        assert!(o.sk_err > o.sock_common && o.sk_err != o.lock_owned);
        // struct tcp_sock begins with struct sock (through inet_connection_sock).
        assert!(o.total_retrans > k.btf().offset_of("sock", "sk_err").unwrap());
        // 6.17+ passes the retransmit's error (this machine runs 6.18).
        assert_eq!(o.retransmit_has_err, 1);
        assert_eq!(
            k.btf().func_proto_params("btf_trace_tcp_retransmit_synack"),
            Ok(3)
        );
        // TCP_SKB_CB(skb) is skb->cb; tcp_gso_segs sits after seq and end_seq.
        assert_eq!(
            o.skb_gso_segs - k.btf().offset_of("sk_buff", "cb").unwrap(),
            8
        );
        assert!(matches!(
            k.btf().offset_of("sock", "sk_no_such_field"),
            Err(BtfError::NoMember { .. })
        ));
        // Later probes: task_struct is there too.
        assert!(k.btf().offset_of("task_struct", "tgid").unwrap() > 0);
    }
}
