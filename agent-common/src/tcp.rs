//! TCP retransmits: kernel-side counters per owning process, the owner of each socket, the
//! ring-buffer event, and the struct field offsets userspace computes from the kernel's BTF.

use crate::process::COMM_LEN;

/// A data segment (or SYN, FIN, loss probe) retransmitted by `tcp_retransmit_skb`.
pub const TCP_RETRANS_DATA: u32 = 1;
/// A SYN-ACK retransmitted for a pending connection (`tcp_retransmit_synack`).
pub const TCP_RETRANS_SYNACK: u32 = 2;

/// TCP states used by the probes (`include/net/tcp_states.h`).
pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_SYN_SENT: u32 = 2;
pub const TCP_SYN_RECV: u32 = 3;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_LISTEN: u32 = 10;

/// Owner tgid reported when no owner of the socket is known (service `unknown`).
pub const UNKNOWN_OWNER: u32 = 0;

/// Byte offsets of the kernel fields the probes read with `bpf_probe_read_kernel`, computed
/// by userspace from `/sys/kernel/btf/vmlinux` and written into the programs' read-only data
/// (`TCP_OFFSETS`) at load time: aya-ebpf has no CO-RE relocations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOffsets {
    /// `struct sock.__sk_common`.
    pub sock_common: u32,
    /// `struct request_sock.__req_common`.
    pub req_common: u32,
    /// `struct sock.sk_lock.owned` (non-zero while a task holds the socket lock).
    pub lock_owned: u32,
    /// `struct sk_buff.cb` + `struct tcp_skb_cb.tcp_gso_segs` (the segment count).
    pub skb_gso_segs: u32,
    // The rest are offsets inside `struct sock_common`.
    pub family: u32,
    pub state: u32,
    pub dport: u32,
    pub num: u32,
    pub daddr: u32,
    pub rcv_saddr: u32,
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    pub net: u32,
    /// 1 if the `tcp_retransmit_skb` tracepoint has the `int err` argument (6.17+), which
    /// makes it fire for failed attempts too; before, it fired only for successful ones.
    pub retransmit_has_err: u32,
    /// `struct sock.sk_err` (the error a connection ended with: refused, reset, timed out).
    pub sk_err: u32,
    /// `struct tcp_sock.total_retrans`: the segments the socket retransmitted, added by the
    /// kernel where it adds them to `TcpRetransSegs`.
    pub total_retrans: u32,
}
const _: () = assert!(core::mem::size_of::<TcpOffsets>() == 64);

/// Who owns a socket: the process that connected or listened on it, or that held the socket
/// lock during a state change or retransmit. Value of the `TCP_OWNERS` LRU map (key: sock
/// pointer) and of `TCP_LISTENERS` (key: [`ListenKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOwner {
    pub tgid: u32,
    /// The socket's `total_retrans` when the probe last looked (a retransmit, or the
    /// connection established), or [`RETRANS_UNSEEN`]. Only `TCP_OWNERS` keeps it.
    pub retrans_seen: u32,
    pub comm: [u8; COMM_LEN],
}

/// [`TcpOwner::retrans_seen`] of a socket whose `total_retrans` the probe has not read yet.
pub const RETRANS_UNSEEN: u32 = u32::MAX;
const _: () = assert!(core::mem::size_of::<TcpOwner>() == 24);

/// A listening socket by network namespace and local port, so a connection a listener accepts
/// inherits the listener's owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenKey {
    /// `struct net *` of the namespace, as an opaque number.
    pub net: u64,
    pub port: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ListenKey>() == 16);

/// One CPU's retransmit counts for one owner (key: tgid, [`UNKNOWN_OWNER`] when unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounts {
    /// Segments retransmitted by `tcp_retransmit_skb`, counted as `TcpRetransSegs` counts
    /// them (the growth of the socket's `total_retrans`): successful calls, and calls that
    /// failed in the transmit itself (dropped by a local device or netfilter after the kernel
    /// counted them).
    pub data_segs: u64,
    /// SYN-ACKs retransmitted.
    pub synack: u64,
    /// `tcp_retransmit_skb` calls that failed (`err != 0`), whether counted in `data_segs`
    /// (transmit errors) or not (e.g. the original still in a host queue).
    pub failed: u64,
}
const _: () = assert!(core::mem::size_of::<TcpCounts>() == 24);

/// One retransmit, sent through the `TCP_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the retransmit.
    pub timestamp_ns: u64,
    /// [`TCP_RETRANS_DATA`] or [`TCP_RETRANS_SYNACK`].
    pub kind: u32,
    /// Owner's thread group id, [`UNKNOWN_OWNER`] if unknown.
    pub tgid: u32,
    /// The retransmit's result (0 = sent); always 0 for SYN-ACKs.
    pub err: i32,
    /// Segments counted for this retransmit (0 when it failed before being counted).
    pub segs: u32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// TCP state of the socket (`TCP_NEW_SYN_RECV` = 12 for SYN-ACKs).
    pub state: u16,
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// Local address: IPv4 in the first 4 bytes (network order), or IPv6.
    pub saddr: [u8; 16],
    /// Remote address, same encoding.
    pub daddr: [u8; 16],
    /// Owner's comm, empty if unknown.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<TcpEvent>() == 80);

impl TcpEvent {
    /// The owner's comm up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.comm[..end]
    }
}

// Connections (`probes.connections`): one event per established connection and one per end.

/// [`ConnEvent::direction`]: the process called `connect()`.
pub const CONN_OUTBOUND: u16 = 1;
/// [`ConnEvent::direction`]: a listener of the process accepted it (in the kernel; whether
/// the application ever called `accept()` is not seen).
pub const CONN_INBOUND: u16 = 2;

/// [`ConnEvent::outcome`]: the handshake completed.
pub const CONN_ESTABLISHED: u16 = 1;
/// An outbound connect ended before it was established with `ECONNREFUSED` (a RST, or an ICMP
/// port unreachable, answered the SYN).
pub const CONN_REFUSED: u16 = 2;
/// An outbound connect ended before it was established for any other reason: the SYN retries
/// ran out (`ETIMEDOUT`), an ICMP error ended it, or the application gave up (closed the
/// socket while it was still in `SYN_SENT`).
pub const CONN_TIMEOUT: u16 = 3;
/// An established connection ended with a socket error: reset by the peer (`ECONNRESET`,
/// `EPIPE`) or timed out (retransmissions or keepalives, `ETIMEDOUT`).
pub const CONN_RESET: u16 = 4;
/// An established connection ended without an error.
pub const CONN_CLOSED: u16 = 5;

/// A connection the probe follows from its first state (`SYN_SENT` or `SYN_RECV`) to
/// `TCP_CLOSE`. Value of the `CONN_SOCKS` LRU map (key: sock pointer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnSock {
    /// `bpf_ktime_get_ns` when it entered `SYN_SENT` / `SYN_RECV`.
    pub start_ns: u64,
    pub tgid: u32,
    pub direction: u16,
    /// 1 once `ESTABLISHED` was reached (and its event sent).
    pub established: u16,
}
const _: () = assert!(core::mem::size_of::<ConnSock>() == 16);

/// One connection transition, sent through the `CONN_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the transition.
    pub timestamp_ns: u64,
    /// From `SYN_SENT` / `SYN_RECV` to this transition.
    pub duration_ns: u64,
    /// The sock pointer: names the connection from its `established` event to its end (a
    /// pointer may be reused by a later connection once this one ended).
    pub sock: u64,
    /// Owner's thread group id (the listener's for inbound), [`UNKNOWN_OWNER`] if unknown.
    pub tgid: u32,
    /// `sk_err` at the transition (positive errno, 0 if none).
    pub err: i32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// [`CONN_ESTABLISHED`] .. [`CONN_CLOSED`].
    pub outcome: u16,
    /// [`CONN_OUTBOUND`] or [`CONN_INBOUND`].
    pub direction: u16,
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    pub _pad: [u16; 3],
    /// Local address: IPv4 in the first 4 bytes (network order), or IPv6.
    pub saddr: [u8; 16],
    /// Remote address, same encoding.
    pub daddr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ConnEvent>() == 80);
