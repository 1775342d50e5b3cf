//! HTTP/1.x requests seen from syscall tracepoints: the kernel tracks the sockets a process
//! accepted or connected (key: tgid and fd) and sends one sparse event per successful read or
//! write on them, with the first bytes transferred; userspace runs the per-connection state
//! machine (request line, status line) on those events.

/// Bytes of each read or write captured in an event: enough for any request-line prefix the
/// parser decides on (a method, a space and the first byte of the target; the HTTP/2 preface
/// `PRI * HTTP/2.0\r\n`) and for a status line's `HTTP/1.1 200 `.
pub const HTTP_CAPTURE: usize = 32;

/// Room for the captured bytes in an event: [`HTTP_CAPTURE`] and the terminating NUL that a
/// string read (`bpf_probe_read_user_str`, how transfers longer than [`HTTP_CAPTURE`] are
/// captured) writes after them, rounded up so the event has no padding.
pub const HTTP_CAPTURE_ROOM: usize = HTTP_CAPTURE + 8;
const _: () = assert!(HTTP_CAPTURE_ROOM > HTTP_CAPTURE);

/// Bytes were read from the connection (`read`, `readv`, `recvfrom`, `recvmsg`).
pub const HTTP_EV_READ: u32 = 1;
/// Bytes were written to it (`write`, `writev`, `sendto`, `sendmsg`).
pub const HTTP_EV_WRITE: u32 = 2;
/// The process connected the socket (`connect`); the event carries the peer address.
pub const HTTP_EV_CONNECT: u32 = 3;
/// The process accepted the connection (`accept`, `accept4`).
pub const HTTP_EV_ACCEPT: u32 = 4;
/// The process closed the fd (`close`).
pub const HTTP_EV_CLOSE: u32 = 5;

/// Role of a tracked connection: the process accepted it (it serves requests).
pub const HTTP_ROLE_SERVER: u32 = 1;
/// The process connected it (it sends requests).
pub const HTTP_ROLE_CLIENT: u32 = 2;

/// The syscall a thread is in, remembered from enter to exit (`HTTP_IO` value, per thread).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpIoSlot {
    /// The user pointer the bytes are at: the buffer, the `iovec` array or the `msghdr`;
    /// for `connect` the `sockaddr`, for `accept` the peer `sockaddr` (may be null).
    pub ptr: u64,
    pub fd: u32,
    /// What the thread is doing: one of the `HTTP_EV_*` kinds, 0 when idle.
    pub kind: u32,
    /// How `ptr` is laid out: [`HTTP_BUF_PLAIN`], [`HTTP_BUF_IOVEC`] or [`HTTP_BUF_MSGHDR`].
    pub layout: u32,
    /// [`HTTP_ROLE_SERVER`] or [`HTTP_ROLE_CLIENT`].
    pub role: u32,
}
const _: () = assert!(core::mem::size_of::<HttpIoSlot>() == 24);

/// `ptr` is the bytes themselves.
pub const HTTP_BUF_PLAIN: u32 = 0;
/// `ptr` is a `struct iovec[]`: the bytes are at its first element.
pub const HTTP_BUF_IOVEC: u32 = 1;
/// `ptr` is a `struct user_msghdr`: the bytes are at the first element of its `msg_iov`.
pub const HTTP_BUF_MSGHDR: u32 = 2;

/// One read, write, connect, accept or close on a tracked socket (`HTTP_EVENTS` ring buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the syscall's exit.
    pub timestamp_ns: u64,
    pub tgid: u32,
    pub fd: u32,
    /// One of the `HTTP_EV_*` kinds.
    pub kind: u32,
    /// [`HTTP_ROLE_SERVER`] or [`HTTP_ROLE_CLIENT`].
    pub role: u32,
    /// Bytes the syscall transferred (its return value, capped at `u32::MAX`).
    pub len: u32,
    /// Leading bytes of those in `data` (at most [`HTTP_CAPTURE`]; fewer than `len` when the
    /// transfer was longer, when its first `iovec` was shorter, or when a transfer longer than
    /// [`HTTP_CAPTURE`] holds a NUL byte within its first [`HTTP_CAPTURE`]: then the bytes end
    /// with that NUL, which no request or status line holds).
    pub captured: u32,
    /// For connect: `AF_INET` (2) or `AF_INET6` (10) of the peer, else 0.
    pub family: u16,
    /// For connect: the peer port, host byte order.
    pub port: u16,
    pub _pad: u32,
    /// For connect: the peer address (IPv4 in the first 4 bytes, network order, or IPv6).
    pub addr: [u8; 16],
    pub data: [u8; HTTP_CAPTURE_ROOM],
}
const _: () = assert!(core::mem::size_of::<HttpEvent>() == 96);

impl Default for HttpEvent {
    fn default() -> Self {
        HttpEvent {
            timestamp_ns: 0,
            tgid: 0,
            fd: 0,
            kind: 0,
            role: 0,
            len: 0,
            captured: 0,
            family: 0,
            port: 0,
            _pad: 0,
            addr: [0; 16],
            data: [0; HTTP_CAPTURE_ROOM],
        }
    }
}

impl HttpEvent {
    /// The captured bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..(self.captured as usize).min(HTTP_CAPTURE)]
    }
}
