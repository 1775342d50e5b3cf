//! TCP retransmits (`tcp_retransmit_skb`, `tcp_retransmit_synack`), counted in the kernel per
//! owning process and sent as sparse ring-buffer events.
//!
//! Counting does not depend on the ring buffer: a full buffer loses events (counted in
//! `EVENTS_LOST`), never counts. The counted unit is the one of the kernel's own
//! `TcpRetransSegs`: segments the kernel counted as retransmitted, plus SYN-ACKs. Failed
//! calls are also counted apart.
//!
//! Segments. The kernel adds a retransmit's segments to `TcpRetransSegs` and to the socket's
//! own `tcp_sock.total_retrans` at the same place, so the probe counts the growth of
//! `total_retrans` since it last read it (remembered in the socket's `TCP_OWNERS` entry):
//! exact whatever the call's error, for attempts the tracepoint does not fire for (failed
//! ones before 6.17) and for runs the kernel skipped (a program is not run again on a CPU
//! where it is already running). Only a socket's first retransmit before the probe knows its
//! value is counted from the skb (`tcp_skb_pcount`, and [`counted_by_kernel`] for failed
//! calls); the value is known from the connection's `ESTABLISHED` on.
//!
//! Owners. Retransmits mostly run from timers and softirqs, where `current` is whatever task
//! the CPU interrupted, so the owner of a socket is remembered in `TCP_OWNERS` (LRU, keyed by
//! the sock pointer) whenever `current` is known to be a user of the socket:
//! - a state change or retransmit while the socket lock is owned (`sk_lock.owned != 0`): only
//!   a task holding the lock (process context: `connect`, `listen`, `release_sock` running
//!   deferred work) can own it, and softirqs and timers defer their work while it is owned;
//! - a connection created by a listener (`SYN_RECV`, in softirq) inherits the listener's owner
//!   through `TCP_LISTENERS`, keyed by (network namespace, local port);
//! - the entry is deleted when the socket reaches `TCP_CLOSE`.
//!
//! Sockets whose owner was never seen (created before the agent started and never touched in
//! process context since) are counted under tgid 0: service `unknown`.
//!
//! The same `inet_sock_set_state` program follows connections for `probes.connections`
//! (`connections.rs`), with the same owners.
//!
//! Struct fields are read with `bpf_probe_read_kernel` at offsets userspace computes from the
//! kernel's BTF (`TCP_OFFSETS`), since aya-ebpf has no CO-RE relocations.

use agent_common::{
    loss::LOSS_TCP_EVENTS,
    tcp::{
        ListenKey, TcpCounts, TcpEvent, TcpOffsets, TcpOwner, RETRANS_UNSEEN, TCP_CLOSE,
        TCP_ESTABLISHED, TCP_LISTEN, TCP_RETRANS_DATA, TCP_RETRANS_SYNACK, TCP_SYN_RECV,
        TCP_SYN_SENT,
    },
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, LruPerCpuHashMap, RingBuf},
    programs::BtfTracePointContext,
};

use crate::loss::{count_lost, submit_flags_at};

/// Field offsets from the kernel's BTF, written by userspace at load time.
#[unsafe(no_mangle)]
static TCP_OFFSETS: TcpOffsets = TcpOffsets {
    sock_common: 0,
    req_common: 0,
    lock_owned: 0,
    skb_gso_segs: 0,
    family: 0,
    state: 0,
    dport: 0,
    num: 0,
    daddr: 0,
    rcv_saddr: 0,
    v6_daddr: 0,
    v6_rcv_saddr: 0,
    net: 0,
    retransmit_has_err: 0,
    sk_err: 0,
    total_retrans: 0,
};

/// Below this many unread bytes in `TCP_EVENTS` a submit does not wake the reader (it drains
/// on its collection tick anyway); at or above, it does. Written by userspace.
#[unsafe(no_mangle)]
static TCP_WAKEUP_MIN_BYTES: u64 = 0;

/// Sized by userspace from `probes.tcp.ring_buffer_bytes`.
#[map]
static TCP_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Sock pointer -> owner. Sized by userspace from `probes.tcp.max_sockets`.
#[map]
static TCP_OWNERS: LruHashMap<u64, TcpOwner> = LruHashMap::with_max_entries(65536, 0);

/// (netns, port) of a listening socket -> its owner, inherited by the connections it accepts.
#[map]
static TCP_LISTENERS: LruHashMap<ListenKey, TcpOwner> = LruHashMap::with_max_entries(4096, 0);

/// Owner tgid -> per-CPU retransmit counts. Userspace deletes the keys of exited processes.
#[map]
static TCP_COUNTS: LruPerCpuHashMap<u32, TcpCounts> = LruPerCpuHashMap::with_max_entries(8192, 0);

const AF_INET6: u16 = 10;

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)` (6.17+:
/// fires for every attempt, `err` says whether it went out; before, without `err`, it fires
/// for successful ones only).
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    let _ = try_retransmit_skb(&ctx);
    0
}

/// `tcp_retransmit_synack(const struct sock *sk, const struct request_sock *req)`: `sk` is
/// the listener.
#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: BtfTracePointContext) -> i32 {
    let _ = try_retransmit_synack(&ctx);
    0
}

/// `inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let _ = try_set_state(&ctx);
    0
}

#[inline(always)]
fn offsets() -> TcpOffsets {
    crate::config::load(&TCP_OFFSETS)
}

/// Reads a `T` at `base + off` in kernel memory; zero if the read faults.
#[inline(always)]
pub(crate) fn read<T: Copy + Default>(base: *const u8, off: u32) -> T {
    // SAFETY: bpf_probe_read_kernel copies through the fault-handling helper; any address is
    // allowed and a bad one yields an error, mapped to the default.
    unsafe {
        bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()).unwrap_or_default()
    }
}

#[inline(always)]
fn current_owner() -> TcpOwner {
    TcpOwner {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        retrans_seen: RETRANS_UNSEEN,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[inline(always)]
fn lock_owned(sk: *const u8, o: &TcpOffsets) -> bool {
    read::<i32>(sk, o.lock_owned) != 0
}

/// Records `current` as the owner of the socket at `key`, keeping what its entry knows of
/// the socket's retransmits, or recording `seen` as its `total_retrans` when given.
#[inline(always)]
fn remember_current(key: u64, seen: Option<u32>) -> TcpOwner {
    let mut owner = current_owner();
    match TCP_OWNERS.get_ptr_mut(key) {
        Some(entry) => {
            // SAFETY: a live map value; a concurrent update can at worst mix the fields of
            // two owners of the same socket.
            unsafe {
                (*entry).tgid = owner.tgid;
                (*entry).comm = owner.comm;
                if let Some(seen) = seen {
                    (*entry).retrans_seen = seen;
                }
            }
        }
        None => {
            if let Some(seen) = seen {
                owner.retrans_seen = seen;
            }
            let _ = TCP_OWNERS.insert(key, owner, 0);
        }
    }
    owner
}

/// The owner of the socket `sk` for a retransmit seen now (`current` if it holds the socket
/// lock, else the remembered one, else unknown), and the socket's `total_retrans` when the
/// probe last read it ([`RETRANS_UNSEEN`] if never); the entry then remembers `total`.
#[inline(always)]
fn owner_at_retransmit(sk: *const u8, total: u32, o: &TcpOffsets) -> (TcpOwner, u32) {
    let key = sk as u64;
    let current = lock_owned(sk, o).then(current_owner);
    match TCP_OWNERS.get_ptr_mut(key) {
        Some(entry) => {
            // SAFETY: as in `remember_current`.
            unsafe {
                if let Some(c) = current {
                    (*entry).tgid = c.tgid;
                    (*entry).comm = c.comm;
                }
                let seen = (*entry).retrans_seen;
                (*entry).retrans_seen = total;
                (*entry, seen)
            }
        }
        None => {
            // Unknown: tgid 0 (`UNKNOWN_OWNER`), remembered too, for its `total_retrans`.
            let mut owner = current.unwrap_or_default();
            owner.retrans_seen = total;
            let _ = TCP_OWNERS.insert(key, owner, 0);
            (owner, RETRANS_UNSEEN)
        }
    }
}

#[inline(always)]
fn add_counts(tgid: u32, data_segs: u64, synack: u64, failed: u64) -> Result<(), i64> {
    let counts = match TCP_COUNTS.get_ptr_mut(tgid) {
        Some(c) => c,
        None => {
            // The owner's first retransmit on this CPU: one insert of the counts themselves.
            // Another CPU cannot insert this CPU's value, but an earlier run here may have
            // (NOEXIST fails then): add to it.
            let first = TcpCounts {
                data_segs,
                synack,
                failed,
            };
            if TCP_COUNTS.insert(tgid, first, BPF_NOEXIST as u64).is_ok() {
                return Ok(());
            }
            TCP_COUNTS.get_ptr_mut(tgid).ok_or(0i64)?
        }
    };
    // SAFETY: per-CPU value: no other writer on this CPU while the program runs.
    unsafe {
        (*counts).data_segs += data_segs;
        (*counts).synack += synack;
        (*counts).failed += failed;
    }
    Ok(())
}

#[inline(always)]
fn try_retransmit_skb(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let o = offsets();
    // Before 6.17 there is no third argument, and the verifier rejects reading it; the
    // constant from rodata lets it prune this read on those kernels.
    let err: i32 = if o.retransmit_has_err != 0 {
        ctx.arg(2)
    } else {
        0
    };
    let total = read::<u32>(sk, o.total_retrans);
    let (owner, seen) = owner_at_retransmit(sk, total, &o);
    let segs = if seen != RETRANS_UNSEEN && total >= seen {
        // The kernel adds a retransmit's segments to the socket's `total_retrans` where it
        // adds them to `TcpRetransSegs`: the difference is exactly what it counted since the
        // probe last looked, whatever `err` says, including attempts this tracepoint does
        // not fire for (failed ones before 6.17) or runs the kernel skipped.
        total - seen
    } else if counted_by_kernel(err) {
        // First retransmit seen on this socket: tcp_skb_pcount(), the segments of the skb,
        // each counted by the kernel's TcpRetransSegs.
        let segs = read::<u16>(skb, o.skb_gso_segs) as u32;
        if segs == 0 {
            1
        } else {
            segs
        }
    } else {
        0
    };
    add_counts(owner.tgid, segs as u64, 0, (err != 0) as u64)?;
    emit(
        TCP_RETRANS_DATA,
        sk.wrapping_add(o.sock_common as usize),
        &owner,
        err,
        segs,
        &o,
    );
    Ok(())
}

/// Whether `__tcp_retransmit_skb` had added the skb's segments to `TcpRetransSegs` when it
/// returned `err`. It counts them right before handing the skb to `tcp_transmit_skb`; the
/// errors it returns *before* that point are these five (6.17+ source: the original still in
/// a host queue, trimming or fragmenting failed, routing failed, no send window). Any other
/// error (a positive `NET_XMIT_DROP` from the device, `-ENOBUFS`, `-EPERM` from a netfilter
/// drop) comes from the transmit itself, after the segments were counted: the retransmit was
/// attempted and dropped on this host.
#[inline(always)]
fn counted_by_kernel(err: i32) -> bool {
    const EINVAL: i32 = 22;
    const ENOMEM: i32 = 12;
    const EAGAIN: i32 = 11;
    const EBUSY: i32 = 16;
    const EHOSTUNREACH: i32 = 113;
    !matches!(-err, EBUSY | EINVAL | ENOMEM | EHOSTUNREACH | EAGAIN)
}

#[inline(always)]
fn try_retransmit_synack(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let sk: *const u8 = ctx.arg(0);
    let req: *const u8 = ctx.arg(1);
    let o = offsets();
    // A passive Fast Open child (the `sk` here) adds its SYN-ACK retransmits to its own
    // `total_retrans`: remembering the value keeps them out of its next data retransmit.
    let (owner, _) = owner_at_retransmit(sk, read::<u32>(sk, o.total_retrans), &o);
    add_counts(owner.tgid, 0, 1, 0)?;
    emit(
        TCP_RETRANS_SYNACK,
        req.wrapping_add(o.req_common as usize),
        &owner,
        0,
        1,
        &o,
    );
    Ok(())
}

#[inline(always)]
fn try_set_state(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let sk: *const u8 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    let o = offsets();
    let common = sk.wrapping_add(o.sock_common as usize);
    let key = sk as u64;
    let (old, new) = (old as u32, new as u32);
    if crate::connections::enabled() {
        crate::connections::on_set_state(sk, common, new, &o);
    }
    if new == TCP_CLOSE {
        let _ = TCP_OWNERS.remove(key);
        if old == TCP_LISTEN {
            let _ = TCP_LISTENERS.remove(listen_key(common, &o));
        }
        return Ok(());
    }
    if new == TCP_SYN_RECV {
        // A connection created by a listener, in softirq: `current` is unrelated. Its
        // `total_retrans` is still the listener's copy here (the request's SYN-ACK
        // retransmits are added after): unseen until established.
        if let Some(mut owner) = listener_owner(common, &o) {
            owner.retrans_seen = RETRANS_UNSEEN;
            let _ = TCP_OWNERS.insert(key, owner, 0);
        }
        return Ok(());
    }
    let owned = lock_owned(sk, &o);
    if new == TCP_SYN_SENT && owned {
        // connect(), holding the lock: a new connection, whatever an entry left behind at
        // this address (an evicted close) said.
        let _ = TCP_OWNERS.insert(key, current_owner(), 0);
        return Ok(());
    }
    // The handshake's retransmits are counted (SYNs as retransmits, SYN-ACKs apart): from
    // `ESTABLISHED` on, differences of `total_retrans` count the data's exactly.
    let seen = (new == TCP_ESTABLISHED).then(|| read::<u32>(sk, o.total_retrans));
    if owned {
        // listen() (LISTEN), close() and shutdown() hold the lock, and a handshake that
        // finishes from the backlog.
        let owner = remember_current(key, seen);
        if new == TCP_LISTEN {
            let _ = TCP_LISTENERS.insert(listen_key(common, &o), owner, 0);
        }
    } else if let Some(seen) = seen {
        if let Some(entry) = TCP_OWNERS.get_ptr_mut(key) {
            // SAFETY: as in `remember_current`.
            unsafe { (*entry).retrans_seen = seen };
        }
    }
    Ok(())
}

/// The owner of the listener on the local port of `common`'s socket, if known.
#[inline(always)]
pub(crate) fn listener_owner(common: *const u8, o: &TcpOffsets) -> Option<TcpOwner> {
    // SAFETY: the value is copied out at once.
    unsafe { TCP_LISTENERS.get(listen_key(common, o)) }.copied()
}

#[inline(always)]
fn listen_key(common: *const u8, o: &TcpOffsets) -> ListenKey {
    ListenKey {
        net: read::<u64>(common, o.net),
        port: read::<u16>(common, o.num) as u32,
        _pad: 0,
    }
}

/// Sends one event; a failed reservation is counted as lost. `common` is the
/// `struct sock_common` of the socket (or request socket).
#[inline(always)]
fn emit(kind: u32, common: *const u8, owner: &TcpOwner, err: i32, segs: u32, o: &TcpOffsets) {
    let Some(mut entry) = TCP_EVENTS.reserve::<TcpEvent>(0) else {
        count_lost(LOSS_TCP_EVENTS);
        return;
    };
    let family = read::<u16>(common, o.family);
    let (saddr, daddr) = if family == AF_INET6 {
        (
            read::<[u8; 16]>(common, o.v6_rcv_saddr),
            read::<[u8; 16]>(common, o.v6_daddr),
        )
    } else {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[..4].copy_from_slice(&read::<[u8; 4]>(common, o.rcv_saddr));
        d[..4].copy_from_slice(&read::<[u8; 4]>(common, o.daddr));
        (s, d)
    };
    entry.write(TcpEvent {
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        kind,
        tgid: owner.tgid,
        err,
        segs,
        family,
        state: read::<u8>(common, o.state) as u16,
        sport: read::<u16>(common, o.num),
        dport: u16::from_be(read::<u16>(common, o.dport)),
        saddr,
        daddr,
        comm: owner.comm,
    });
    let min = crate::config::load(&TCP_WAKEUP_MIN_BYTES);
    entry.submit(submit_flags_at::<TcpEvent>(
        &TCP_EVENTS,
        LOSS_TCP_EVENTS,
        min,
    ));
}
