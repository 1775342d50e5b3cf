//! Task (thread) lifecycle counters per thread group, from `task_newtask` and
//! `sched_process_exit`.

/// `CLONE_THREAD` from `linux/sched.h`: the new task joins the creator's thread group.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// Counters of one thread group (one shared copy in the kernel, added to atomically). The
/// number of live threads changes by `threads_started - exited`; userspace anchors it to
/// `/proc/<pid>/status` once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Tasks this thread group created: threads and child processes.
    pub created: u64,
    /// Of those, threads (`CLONE_THREAD`) that joined this thread group.
    pub threads_started: u64,
    /// Tasks of this thread group that exited (every thread, the leader included).
    pub exited: u64,
}
const _: () = assert!(core::mem::size_of::<TaskCounts>() == 24);
