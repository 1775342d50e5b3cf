//! HTTP/1.x from syscall events: the sockets a process connected or accepted are tracked in
//! `HTTP_SOCKS` (LRU, key: tgid and fd), and every successful read or write on one of them goes
//! to userspace as an event with its first bytes, where the per-connection state machine finds
//! request and status lines.
//!
//! No `syscalls:*` tracepoint is attached: attaching any of them registers the kernel's
//! per-syscall perf dispatcher, which every syscall on the host then pays (40-77 ns, see
//! docs/benchmarks.md). The syscall programs of `syscall_latency.rs` (raw `sys_enter` and
//! `sys_exit`, one program each for every syscall) call [`sys_enter_http`] and
//! [`sys_exit_http`] for the few syscall numbers this file watches ([`wants`]); every other
//! syscall pays a compare.
//!
//! Bytes: on kernels with `sock:sock_recv_length`/`sock_send_length` (6.3+) two BTF
//! tracepoints that fire for socket reads and writes only; the syscall (and so the layout of
//! its buffer), the fd and the buffer come from the task's saved user registers. On older
//! kernels ([`HTTP_SYSCALL_IO`]), `read`, `readv`, `recvfrom`, `recvmsg` and their write twins
//! by number in the raw syscall programs (the enter remembers the buffer, the exit sends the
//! event).
//!
//! Connections: `socket`, `connect`, `accept`, `accept4` and `close`, by number.
//!
//! Which fds are TCP: `socket(AF_INET|AF_INET6, SOCK_STREAM)` makes the fd a candidate
//! (role 0, no events); `connect` on a candidate makes it a client connection; `accept` makes
//! the new fd a server connection when the peer address is IPv4/IPv6 (or, when the caller
//! passed no address buffer, when the listener is a candidate). `close` forgets it.

use agent_common::{
    http::{
        HttpEvent, HttpIoSlot, HTTP_BUF_IOVEC, HTTP_BUF_MSGHDR, HTTP_BUF_PLAIN, HTTP_CAPTURE,
        HTTP_CAPTURE_ROOM, HTTP_EV_ACCEPT, HTTP_EV_CLOSE, HTTP_EV_CONNECT, HTTP_EV_READ,
        HTTP_EV_WRITE, HTTP_ROLE_CLIENT, HTTP_ROLE_SERVER,
    },
    loss::LOSS_HTTP_EVENTS,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, RingBuf},
    programs::BtfTracePointContext,
};

use crate::loss::{count_lost, submit_flags_at};

/// A socket() call in flight (internal to this file, never sent).
const KIND_SOCKET: u32 = 6;
/// Role of a TCP socket that is neither connected nor accepted yet: no events.
const ROLE_CANDIDATE: u32 = 0;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u64 = 1;
const EINPROGRESS: i64 = 115;

/// x86_64 syscall numbers.
const NR_READ: u32 = 0;
const NR_WRITE: u32 = 1;
const NR_CLOSE: u32 = 3;
const NR_READV: u32 = 19;
const NR_WRITEV: u32 = 20;
const NR_SOCKET: u32 = 41;
const NR_CONNECT: u32 = 42;
const NR_ACCEPT: u32 = 43;
const NR_SENDTO: u32 = 44;
const NR_RECVFROM: u32 = 45;
const NR_SENDMSG: u32 = 46;
const NR_RECVMSG: u32 = 47;
const NR_ACCEPT4: u32 = 288;

/// Bit `nr` set for the connection syscalls below 64 (`accept4` is checked apart).
const LIFECYCLE_MASK: u64 = 1 << NR_CLOSE | 1 << NR_SOCKET | 1 << NR_CONNECT | 1 << NR_ACCEPT;
/// Bit `nr` set for the reads and writes watched by number ([`HTTP_SYSCALL_IO`]).
const IO_MASK: u64 = 1 << NR_READ
    | 1 << NR_WRITE
    | 1 << NR_READV
    | 1 << NR_WRITEV
    | 1 << NR_SENDTO
    | 1 << NR_RECVFROM
    | 1 << NR_SENDMSG
    | 1 << NR_RECVMSG;

/// 1 when `probes.http.enabled`: the raw syscall programs run the HTTP part. Load-time
/// constant (`.rodata`), so with 0 the verifier drops the HTTP part.
#[unsafe(no_mangle)]
static HTTP_PROBE_ON: u32 = 0;

/// 1 on kernels without `sock_recv_length`/`sock_send_length`: reads and writes are watched
/// by number in the raw syscall programs. Load-time constant.
#[unsafe(no_mangle)]
static HTTP_SYSCALL_IO: u32 = 0;

/// Below this many unread bytes in `HTTP_EVENTS` a submit does not wake the reader (it
/// drains on its collection tick anyway). Written by userspace.
#[unsafe(no_mangle)]
static HTTP_WAKEUP_MIN_BYTES: u64 = 0;

/// (tgid << 32 | fd) -> role. Sized by userspace from `probes.http.max_connections`.
#[map]
static HTTP_SOCKS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// Thread id -> the tracked syscall it is in, written in place (one insert per thread).
#[map]
static HTTP_IO: LruHashMap<u32, HttpIoSlot> = LruHashMap::with_max_entries(16384, 0);

/// Sized by userspace from `probes.http.ring_buffer_bytes`.
#[map]
static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

#[inline(always)]
fn flag(v: &'static u32) -> bool {
    crate::config::load(v) != 0
}

/// Whether syscall `nr` is one the HTTP probe watches (always false with the probe off).
#[inline(always)]
pub fn wants(nr: u32) -> bool {
    if !flag(&HTTP_PROBE_ON) {
        return false;
    }
    if nr < 64 {
        let mask = if flag(&HTTP_SYSCALL_IO) {
            LIFECYCLE_MASK | IO_MASK
        } else {
            LIFECYCLE_MASK
        };
        (mask >> nr) & 1 != 0
    } else {
        nr == NR_ACCEPT4
    }
}

#[inline(always)]
fn key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// Remembers the syscall this thread is in until its exit.
#[inline(always)]
fn arm(tid: u32, slot: HttpIoSlot) -> Result<(), i64> {
    match HTTP_IO.get_ptr_mut(tid) {
        Some(p) => {
            // SAFETY: the slot belongs to this thread; only this thread writes it.
            unsafe { *p = slot };
            Ok(())
        }
        None => HTTP_IO.insert(tid, slot, 0).map_err(i64::from),
    }
}

/// Takes (and clears) the syscall this thread armed at enter.
#[inline(always)]
fn disarm(tid: u32) -> Option<HttpIoSlot> {
    let p = HTTP_IO.get_ptr_mut(tid)?;
    // SAFETY: as above.
    unsafe {
        let s = *p;
        if s.kind == 0 {
            return None;
        }
        (*p).kind = 0;
        Some(s)
    }
}

/// The enter of a watched syscall (`nr` passed [`wants`]): `a0`, `a1` are its first two
/// arguments. A BPF-to-BPF call, so the syscall programs stay small for the verifier.
#[inline(never)]
pub fn sys_enter_http(pid_tgid: u64, nr: u32, a0: u64, a1: u64) -> i32 {
    let r = match nr {
        NR_SOCKET => socket_enter(pid_tgid, a0, a1),
        NR_CONNECT => connect_enter(pid_tgid, a0, a1),
        NR_ACCEPT | NR_ACCEPT4 => accept_enter(pid_tgid, a0, a1),
        NR_CLOSE => close(pid_tgid, a0),
        NR_READ | NR_RECVFROM => io_enter(pid_tgid, a0, a1, HTTP_EV_READ, HTTP_BUF_PLAIN),
        NR_READV => io_enter(pid_tgid, a0, a1, HTTP_EV_READ, HTTP_BUF_IOVEC),
        NR_RECVMSG => io_enter(pid_tgid, a0, a1, HTTP_EV_READ, HTTP_BUF_MSGHDR),
        NR_WRITE | NR_SENDTO => io_enter(pid_tgid, a0, a1, HTTP_EV_WRITE, HTTP_BUF_PLAIN),
        NR_WRITEV => io_enter(pid_tgid, a0, a1, HTTP_EV_WRITE, HTTP_BUF_IOVEC),
        NR_SENDMSG => io_enter(pid_tgid, a0, a1, HTTP_EV_WRITE, HTTP_BUF_MSGHDR),
        _ => Ok(()),
    };
    r.is_err() as i32
}

/// The exit of a watched syscall with its return value.
#[inline(never)]
pub fn sys_exit_http(pid_tgid: u64, ret: i64) -> i32 {
    try_exit(pid_tgid, ret).is_err() as i32
}

/// `sock_recv_length(struct sock *sk, int ret, int flags)` (6.3+): fires for socket reads
/// only, so on kernels that have it the per-syscall read programs are not attached and reads
/// of files and pipes pay nothing.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn http_sock_recv(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sock_io(&ctx, HTTP_EV_READ);
    0
}

/// `sock_send_length(struct sock *sk, int ret, int flags)` (6.3+), the same for writes.
#[btf_tracepoint(function = "sock_send_length")]
pub fn http_sock_send(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sock_io(&ctx, HTTP_EV_WRITE);
    0
}

/// Offset of `skc_family` in `struct sock` (its first member, `struct sock_common`: after
/// the two addresses, the hash and the two ports; the same from 4.x to 6.18).
const SKC_FAMILY: usize = 16;

/// x86_64 `struct pt_regs` offsets of the saved syscall number and first two arguments.
const REGS_ORIG_AX: usize = 120;
const REGS_DI: usize = 112;
const REGS_SI: usize = 104;

/// Bytes moved on a socket, from inside the syscall that moved them: which syscall, its fd
/// and its buffer come from the task's saved user registers, read directly (the registers are
/// a BTF pointer here, no helper call). The event is built in its ring-buffer entry.
#[inline(always)]
fn try_sock_io(ctx: &BtfTracePointContext, kind: u32) -> Result<(), i64> {
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return Ok(());
    }
    // Unix, netlink and every other non-IP socket returns here, before the registers and the
    // lookup (about 100 ns a call on the test machine, docs/benchmarks.md).
    let sk: *const u8 = ctx.arg(0);
    // SAFETY: `sk` is the tracepoint's `struct sock *` (a BTF pointer): a 2-byte load of
    // `__sk_common.skc_family`, checked by the verifier against the kernel's BTF.
    let family = unsafe { core::ptr::read_volatile(sk.wrapping_add(SKC_FAMILY).cast::<u16>()) };
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    // SAFETY: helpers without preconditions. `bpf_task_pt_regs` returns a BTF pointer to
    // `struct pt_regs`: the verifier checks each load against the kernel's BTF and turns it
    // into a fault-handling load.
    let regs =
        unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) } as *const u8;
    // SAFETY: as above; 8-byte loads of `orig_ax`, `di` and `si`.
    let reg = |off: usize| -> u64 {
        unsafe { core::ptr::read_volatile(regs.wrapping_add(off).cast::<u64>()) }
    };
    // x86_64 syscall numbers.
    let layout = match (kind, reg(REGS_ORIG_AX)) {
        (HTTP_EV_READ, 0 | 45) | (HTTP_EV_WRITE, 1 | 44) => HTTP_BUF_PLAIN,
        (HTTP_EV_READ, 19) | (HTTP_EV_WRITE, 20) => HTTP_BUF_IOVEC,
        (HTTP_EV_READ, 47) | (HTTP_EV_WRITE, 46) => HTTP_BUF_MSGHDR,
        // sendfile, splice, io_uring, kernel users of sockets: not watched.
        _ => return Ok(()),
    };
    let fd = reg(REGS_DI) as u32;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once.
    let role = match unsafe { HTTP_SOCKS.get(key(tgid, fd)) } {
        Some(&r) if r != ROLE_CANDIDATE => r,
        _ => return Ok(()),
    };
    let slot = HttpIoSlot {
        ptr: reg(REGS_SI),
        fd,
        kind,
        layout,
        role,
    };
    let ts = now();
    let Some(mut entry) = HTTP_EVENTS.reserve::<HttpEvent>(0) else {
        count_lost(LOSS_HTTP_EVENTS);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved entry, `size_of::<HttpEvent>()` bytes this program owns
    // until it submits them. Every field is written before `capture` takes a reference.
    unsafe {
        (*ev).timestamp_ns = ts;
        (*ev).tgid = tgid;
        (*ev).fd = fd;
        (*ev).kind = kind;
        (*ev).role = role;
        (*ev).len = ret as u32;
        (*ev).captured = 0;
        (*ev).family = 0;
        (*ev).port = 0;
        (*ev)._pad = 0;
        (*ev).addr = [0; 16];
        (*ev).data = [0; HTTP_CAPTURE_ROOM];
        capture(&mut *ev, &slot, ret as u64);
    }
    entry.submit(submit_flags());
    Ok(())
}

#[inline(always)]
fn io_enter(id: u64, fd: u64, ptr: u64, kind: u32, layout: u32) -> Result<(), i64> {
    let tgid = (id >> 32) as u32;
    let fd = fd as u32;
    // SAFETY: the value is copied out at once.
    let role = match unsafe { HTTP_SOCKS.get(key(tgid, fd)) } {
        Some(&r) if r != ROLE_CANDIDATE => r,
        _ => return Ok(()),
    };
    arm(
        id as u32,
        HttpIoSlot {
            ptr,
            fd,
            kind,
            layout,
            role,
        },
    )
}

/// `socket(family, type, protocol)`
#[inline(always)]
fn socket_enter(id: u64, family: u64, ty: u64) -> Result<(), i64> {
    let family = family as u16;
    let ty = ty & 0xf;
    if (family != AF_INET && family != AF_INET6) || ty != SOCK_STREAM {
        return Ok(());
    }
    arm(
        id as u32,
        HttpIoSlot {
            kind: KIND_SOCKET,
            ..HttpIoSlot::default()
        },
    )
}

/// `connect(fd, uservaddr, addrlen)`
#[inline(always)]
fn connect_enter(id: u64, fd: u64, addr: u64) -> Result<(), i64> {
    let fd = fd as u32;
    // SAFETY: as above.
    match unsafe { HTTP_SOCKS.get(key((id >> 32) as u32, fd)) } {
        Some(&ROLE_CANDIDATE) => {}
        _ => return Ok(()),
    }
    arm(
        id as u32,
        HttpIoSlot {
            ptr: addr,
            fd,
            kind: HTTP_EV_CONNECT,
            layout: 0,
            role: HTTP_ROLE_CLIENT,
        },
    )
}

/// `accept(fd, upeer_sockaddr, upeer_addrlen)` and `accept4(..., flags)`
#[inline(always)]
fn accept_enter(id: u64, listener: u64, addr: u64) -> Result<(), i64> {
    let tgid = (id >> 32) as u32;
    let listener = listener as u32;
    // SAFETY: as above.
    let candidate = unsafe { HTTP_SOCKS.get(key(tgid, listener)) }.is_some();
    arm(
        id as u32,
        HttpIoSlot {
            ptr: addr,
            fd: listener,
            kind: HTTP_EV_ACCEPT,
            // Whether the listener is known to be TCP (for callers that pass no address).
            layout: candidate as u32,
            role: HTTP_ROLE_SERVER,
        },
    )
}

/// `close(fd)`
#[inline(always)]
fn close(id: u64, fd: u64) -> Result<(), i64> {
    let tgid = (id >> 32) as u32;
    let fd = fd as u32;
    let k = key(tgid, fd);
    // SAFETY: as above.
    let role = match unsafe { HTTP_SOCKS.get(k) } {
        Some(&r) => r,
        None => return Ok(()),
    };
    let _ = HTTP_SOCKS.remove(k);
    if role != ROLE_CANDIDATE {
        let mut ev = event(tgid, fd, HTTP_EV_CLOSE, role);
        ev.timestamp_ns = now();
        send(&ev);
    }
    Ok(())
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn event(tgid: u32, fd: u32, kind: u32, role: u32) -> HttpEvent {
    HttpEvent {
        tgid,
        fd,
        kind,
        role,
        ..HttpEvent::default()
    }
}

#[inline(always)]
fn send(ev: &HttpEvent) {
    let Some(mut entry) = HTTP_EVENTS.reserve::<HttpEvent>(0) else {
        count_lost(LOSS_HTTP_EVENTS);
        return;
    };
    entry.write(*ev);
    entry.submit(submit_flags());
}

/// Submit flags for a record just reserved: the rule every ring follows (`loss`: the fill
/// sampled once per 4 KiB it grows, one wakeup per drain at or above `HTTP_WAKEUP_MIN_BYTES`).
#[inline(always)]
fn submit_flags() -> u64 {
    let min = crate::config::load(&HTTP_WAKEUP_MIN_BYTES);
    submit_flags_at::<HttpEvent>(&HTTP_EVENTS, LOSS_HTTP_EVENTS, min)
}

#[inline(always)]
fn try_exit(id: u64, ret: i64) -> Result<(), i64> {
    let ts = now();
    let Some(slot) = disarm(id as u32) else {
        return Ok(());
    };
    let tgid = (id >> 32) as u32;
    match slot.kind {
        HTTP_EV_READ | HTTP_EV_WRITE => {
            if ret <= 0 {
                return Ok(());
            }
            let mut ev = event(tgid, slot.fd, slot.kind, slot.role);
            ev.timestamp_ns = ts;
            ev.len = if ret > u32::MAX as i64 {
                u32::MAX
            } else {
                ret as u32
            };
            capture(&mut ev, &slot, ret as u64);
            send(&ev);
        }
        KIND_SOCKET => {
            if ret >= 0 {
                let _ = HTTP_SOCKS.insert(key(tgid, ret as u32), ROLE_CANDIDATE, 0);
            }
        }
        HTTP_EV_CONNECT => {
            if ret != 0 && ret != -EINPROGRESS {
                return Ok(());
            }
            let mut ev = event(tgid, slot.fd, HTTP_EV_CONNECT, HTTP_ROLE_CLIENT);
            if !peer(&mut ev, slot.ptr) {
                return Ok(());
            }
            ev.timestamp_ns = ts;
            let _ = HTTP_SOCKS.insert(key(tgid, slot.fd), HTTP_ROLE_CLIENT, 0);
            send(&ev);
        }
        HTTP_EV_ACCEPT => {
            if ret < 0 {
                return Ok(());
            }
            let fd = ret as u32;
            let mut ev = event(tgid, fd, HTTP_EV_ACCEPT, HTTP_ROLE_SERVER);
            let tcp = if slot.ptr == 0 {
                slot.layout != 0
            } else {
                peer(&mut ev, slot.ptr)
            };
            if !tcp {
                return Ok(());
            }
            ev.timestamp_ns = ts;
            let _ = HTTP_SOCKS.insert(key(tgid, fd), HTTP_ROLE_SERVER, 0);
            send(&ev);
        }
        _ => {}
    }
    Ok(())
}

/// Reads an IPv4 or IPv6 `sockaddr` at `ptr` into the event; false for any other family
/// (a Unix socket) or an unreadable address.
#[inline(always)]
fn peer(ev: &mut HttpEvent, ptr: u64) -> bool {
    let base = ptr as *const u8;
    // SAFETY: bpf_probe_read_user copies through the fault-handling helper; a bad address
    // is an error.
    let Ok(head) = (unsafe { bpf_probe_read_user(base.cast::<[u8; 8]>()) }) else {
        return false;
    };
    let family = u16::from_ne_bytes([head[0], head[1]]);
    ev.family = family;
    ev.port = u16::from_be_bytes([head[2], head[3]]);
    match family {
        AF_INET => {
            ev.addr[..4].copy_from_slice(&head[4..8]);
            true
        }
        AF_INET6 => {
            // SAFETY: as above; sockaddr_in6.sin6_addr is at offset 8.
            match unsafe { bpf_probe_read_user(base.wrapping_add(8).cast::<[u8; 16]>()) } {
                Ok(a) => {
                    ev.addr = a;
                    true
                }
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// Copies the first bytes transferred into the event (at most [`HTTP_CAPTURE`], at most
/// `len`, at most the first iovec's length).
///
/// Transfers longer than [`HTTP_CAPTURE`] are read with `bpf_probe_read_user_str`, which
/// copies a word at a time: `bpf_probe_read_user` copies byte by byte on some kernels (about
/// 8 ns a byte on the test machine's 6.18; at 32 bytes the string read costs 50-80 ns less
/// per event, docs/benchmarks.md). A string read of [`HTTP_CAPTURE`] + 1 bytes stays inside the
/// transfer and stops at a NUL byte: then the capture ends with that NUL, which tells userspace
/// (like a shorter capture) that the line is not all there. Shorter transfers are copied
/// exactly, so a line written a byte at a time is still seen whole.
#[inline(always)]
fn capture(ev: &mut HttpEvent, slot: &HttpIoSlot, len: u64) {
    let (base, avail) = match slot.layout {
        HTTP_BUF_PLAIN => (slot.ptr, len),
        HTTP_BUF_IOVEC => match first_iov(slot.ptr) {
            Some(v) => v,
            None => return,
        },
        HTTP_BUF_MSGHDR => {
            // struct user_msghdr: msg_iov at offset 16.
            // SAFETY: as in `peer`.
            let iov = unsafe {
                bpf_probe_read_user((slot.ptr as *const u8).wrapping_add(16).cast::<u64>())
            };
            match iov.ok().and_then(first_iov) {
                Some(v) => v,
                None => return,
            }
        }
        _ => return,
    };
    let mut n = len;
    if avail < n {
        n = avail;
    }
    let src = base as *const core::ffi::c_void;
    let dst = ev.data.as_mut_ptr().cast();
    if n > HTTP_CAPTURE as u64 {
        // SAFETY: HTTP_CAPTURE + 1 <= HTTP_CAPTURE_ROOM bytes into the event's own buffer,
        // from a user address through the fault-handling helper.
        let r = unsafe { generated::bpf_probe_read_user_str(dst, HTTP_CAPTURE as u32 + 1, src) };
        if r > 0 {
            ev.captured = (r as u32).min(HTTP_CAPTURE as u32);
        }
        return;
    }
    let n = (n as u32) & (2 * HTTP_CAPTURE as u32 - 1);
    if n == 0 || n > HTTP_CAPTURE as u32 {
        return;
    }
    // SAFETY: `n` <= HTTP_CAPTURE bytes into the event's own buffer, from a user address
    // through the fault-handling helper.
    let r = unsafe { generated::bpf_probe_read_user(dst, n, src) };
    if r == 0 {
        ev.captured = n;
    }
}

/// (base, length) of the first `struct iovec` at `ptr`.
#[inline(always)]
fn first_iov(ptr: u64) -> Option<(u64, u64)> {
    // SAFETY: as in `peer`.
    let v = unsafe { bpf_probe_read_user(ptr as *const [u64; 2]) }.ok()?;
    Some((v[0], v[1]))
}
