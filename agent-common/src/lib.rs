//! Types shared by the eBPF programs (`agent-ebpf`) and the userspace daemon (`agent`).
//!
//! Every type here is `#[repr(C)]`, `Copy`, has no implicit padding and no `bool`, so both sides
//! agree on the bytes. With the `user` feature the types implement `aya::Pod`.
#![no_std]

pub mod http;
pub mod process;
pub mod syscall;
pub mod task;
pub mod tcp;
pub mod uprobe;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is repr(C), Copy, made only of integers and integer arrays,
    // and has no padding (checked by the size assertions next to each type).
    unsafe impl aya::Pod for crate::syscall::ThreadSlot {}
    unsafe impl aya::Pod for crate::syscall::HistKey {}
    unsafe impl aya::Pod for crate::syscall::Hist {}
    unsafe impl aya::Pod for crate::process::ProcEvent {}
    unsafe impl aya::Pod for crate::syscall::ErrKey {}
    unsafe impl aya::Pod for crate::syscall::SlowSyscallEvent {}
    unsafe impl aya::Pod for crate::task::TaskCounts {}
    unsafe impl aya::Pod for crate::tcp::TcpOffsets {}
    unsafe impl aya::Pod for crate::tcp::TcpCounts {}
    unsafe impl aya::Pod for crate::tcp::TcpEvent {}
    unsafe impl aya::Pod for crate::tcp::ConnEvent {}
    unsafe impl aya::Pod for crate::tcp::ConnSock {}
    unsafe impl aya::Pod for crate::uprobe::AllocCounts {}
    unsafe impl aya::Pod for crate::uprobe::PendingAlloc {}
    unsafe impl aya::Pod for crate::uprobe::PtrKey {}
    unsafe impl aya::Pod for crate::uprobe::GoCounts {}
    unsafe impl aya::Pod for crate::uprobe::GoGc {}
    unsafe impl aya::Pod for crate::http::HttpEvent {}
}

pub mod loss {
    //! Sources of lost events, indexes of the `EVENTS_LOST` per-CPU array.

    /// Process lifecycle events (`PROC_EVENTS` ring buffer).
    pub const LOSS_PROC_EVENTS: u32 = 0;
    /// Slow syscall events (`SYSCALL_EVENTS` ring buffer).
    pub const LOSS_SYSCALL_EVENTS: u32 = 1;
    /// TCP retransmit events (`TCP_EVENTS` ring buffer).
    pub const LOSS_TCP_EVENTS: u32 = 2;
    /// HTTP socket I/O events (`HTTP_EVENTS` ring buffer).
    pub const LOSS_HTTP_EVENTS: u32 = 3;
    /// TCP connection events (`CONN_EVENTS` ring buffer).
    pub const LOSS_CONN_EVENTS: u32 = 5;
    /// Number of sources (size of the array).
    pub const SOURCES: u32 = 8;

    /// Label value of each source in `steadfast_events_lost_total{source}`.
    pub const fn source_name(source: u32) -> &'static str {
        match source {
            LOSS_PROC_EVENTS => "process",
            LOSS_SYSCALL_EVENTS => "slow_syscall",
            LOSS_TCP_EVENTS => "tcp",
            LOSS_HTTP_EVENTS => "http",
            LOSS_CONN_EVENTS => "connections",
            _ => "unknown",
        }
    }
}
