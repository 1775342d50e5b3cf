//! TCP connections (`probes.connections`), followed through `inet_sock_set_state`: the program
//! of the retransmit probe calls [`on_set_state`] for every TCP state change, so this costs
//! nothing on any syscall path, only on state changes.
//!
//! A connection is tracked in `CONN_SOCKS` (LRU, keyed by the sock pointer) from its first
//! state: `SYN_SENT` (outbound: `connect()` in process context, `current` is the owner) or
//! `SYN_RECV` (inbound: the child of a listener, created in softirq; it belongs to the
//! listener's owner from `TCP_LISTENERS`). Then:
//! - `ESTABLISHED`: one `established` event (outbound: with the time since `SYN_SENT`);
//! - `TCP_CLOSE`: the entry goes, and one event says how it ended, from `sk_err`, which the
//!   kernel sets before it moves the socket to `TCP_CLOSE` (`tcp_reset`, `tcp_write_err`):
//!   never established and `ECONNREFUSED` -> `refused`; never established otherwise (SYN
//!   retries exhausted, ICMP error, connect abandoned by the application) -> `timeout`;
//!   established and an error (`ECONNRESET`, `EPIPE`, `ETIMEDOUT`) -> `reset`; established
//!   and no error -> `closed`. An inbound connection that never got established (a handshake
//!   the client abandoned) sends nothing.
//!
//! Connections whose first state was not seen (older than the agent, or evicted from the
//! LRU) send nothing at all. Events go through `CONN_EVENTS`; a full ring loses them, counted
//! in `EVENTS_LOST[LOSS_CONN_EVENTS]`.

use agent_common::{
    loss::LOSS_CONN_EVENTS,
    tcp::{
        ConnEvent, ConnSock, TcpOffsets, CONN_CLOSED, CONN_ESTABLISHED, CONN_INBOUND,
        CONN_OUTBOUND, CONN_REFUSED, CONN_RESET, CONN_TIMEOUT, TCP_CLOSE, TCP_ESTABLISHED,
        TCP_SYN_RECV, TCP_SYN_SENT,
    },
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{LruHashMap, RingBuf},
};

use crate::{
    loss::{count_lost, submit_flags_at},
    tcp_retransmit::{listener_owner, read},
};

/// 1 when `probes.connections` is on. Written by userspace.
#[unsafe(no_mangle)]
static CONN_ENABLED: u32 = 0;

/// Below this many unread bytes in `CONN_EVENTS` a submit does not wake the reader (it drains
/// on its collection tick anyway). Written by userspace.
#[unsafe(no_mangle)]
static CONN_WAKEUP_MIN_BYTES: u64 = 0;

/// Sized by userspace from `probes.connections.ring_buffer_bytes`.
#[map]
static CONN_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Sock pointer -> the connection's start. Sized from `probes.connections.max_connections`.
#[map]
static CONN_SOCKS: LruHashMap<u64, ConnSock> = LruHashMap::with_max_entries(65536, 0);

const AF_INET6: u16 = 10;
const ECONNREFUSED: i32 = 111;

#[inline(always)]
pub fn enabled() -> bool {
    crate::config::load(&CONN_ENABLED) != 0
}

/// One TCP state change of `sk` (its `struct sock_common` at `common`).
#[inline(always)]
pub fn on_set_state(sk: *const u8, common: *const u8, new: u32, o: &TcpOffsets) {
    let key = sk as u64;
    match new {
        TCP_SYN_SENT => start(
            key,
            CONN_OUTBOUND,
            (bpf_get_current_pid_tgid() >> 32) as u32,
        ),
        TCP_SYN_RECV => {
            // Unknown listener (opened before the agent started): tgid 0, `unknown`.
            let owner = listener_owner(common, o).unwrap_or_default();
            start(key, CONN_INBOUND, owner.tgid);
        }
        TCP_ESTABLISHED => {
            let Some(conn) = CONN_SOCKS.get_ptr_mut(key) else {
                return;
            };
            // SAFETY: the entry is ours to update; a racing update of the same socket (none:
            // state changes of one socket are serialized by its lock) could at worst repeat
            // the event.
            let c = unsafe { &mut *conn };
            if c.established != 0 {
                return;
            }
            c.established = 1;
            let c = *c;
            emit(key, &c, CONN_ESTABLISHED, 0, common, o);
        }
        TCP_CLOSE => {
            // SAFETY: copied out at once, then removed.
            let Some(c) = (unsafe { CONN_SOCKS.get(key) }).copied() else {
                return;
            };
            let _ = CONN_SOCKS.remove(key);
            let err = read::<i32>(sk, o.sk_err);
            let outcome = if c.established != 0 {
                if err != 0 {
                    CONN_RESET
                } else {
                    CONN_CLOSED
                }
            } else if c.direction == CONN_INBOUND {
                return;
            } else if err == ECONNREFUSED {
                CONN_REFUSED
            } else {
                CONN_TIMEOUT
            };
            emit(key, &c, outcome, err, common, o);
        }
        _ => {}
    }
}

#[inline(always)]
fn start(key: u64, direction: u16, tgid: u32) {
    let conn = ConnSock {
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        direction,
        established: 0,
    };
    let _ = CONN_SOCKS.insert(key, conn, 0);
}

/// Sends one event; a failed reservation is counted as lost.
#[inline(always)]
fn emit(sock: u64, c: &ConnSock, outcome: u16, err: i32, common: *const u8, o: &TcpOffsets) {
    let Some(mut entry) = CONN_EVENTS.reserve::<ConnEvent>(0) else {
        count_lost(LOSS_CONN_EVENTS);
        return;
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
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
    entry.write(ConnEvent {
        timestamp_ns: now,
        duration_ns: now.saturating_sub(c.start_ns),
        sock,
        tgid: c.tgid,
        err,
        family,
        outcome,
        direction: c.direction,
        sport: read::<u16>(common, o.num),
        dport: u16::from_be(read::<u16>(common, o.dport)),
        _pad: [0; 3],
        saddr,
        daddr,
    });
    let min = crate::config::load(&CONN_WAKEUP_MIN_BYTES);
    entry.submit(submit_flags_at::<ConnEvent>(
        &CONN_EVENTS,
        LOSS_CONN_EVENTS,
        min,
    ));
}
