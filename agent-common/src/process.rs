//! Process lifecycle events, sent through the `PROC_EVENTS` ring buffer.

/// A process image was replaced by `execve`: the comm is the new program's.
pub const PROC_EXEC: u32 = 1;
/// The thread-group leader exited: the process is gone (or going).
pub const PROC_EXIT: u32 = 2;

pub const COMM_LEN: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    /// [`PROC_EXEC`] or [`PROC_EXIT`].
    pub kind: u32,
    pub tgid: u32,
    /// Thread id of the task the event happened on.
    pub pid: u32,
    pub _pad: u32,
    /// Cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<ProcEvent>() == 40);

impl ProcEvent {
    /// The comm up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.comm[..end]
    }
}
