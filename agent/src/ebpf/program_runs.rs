//! Runs of the loaded programs that the kernel skipped (`recursion_misses` of
//! `struct bpf_prog_info`, 5.12+).
//!
//! The kernel does not run a program on a CPU where that same program is already running: a
//! BTF tracepoint program that runs in process context (a retransmit from `release_sock`)
//! and is interrupted by a softirq that hits the same tracepoint (another socket's
//! retransmit timer) skips the second run. Uprobe programs are skipped more often (see
//! `uprobes.rs`). A skipped run is an event or count that is missing: counted here, never
//! silent.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::{
    programs::{Program, ProgramFd},
    Ebpf,
};

/// The tracepoint programs that are loaded, with a descriptor of each to read its
/// statistics.
pub struct ProgramRuns {
    programs: Vec<(String, ProgramFd)>,
}

impl ProgramRuns {
    /// Every loaded BTF tracepoint program of `ebpf` (the uprobe programs have their own
    /// count, per probe).
    pub(super) fn new(ebpf: &Ebpf) -> Self {
        let programs = ebpf
            .programs()
            .filter(|(_, p)| matches!(p, Program::BtfTracePoint(_)))
            .filter_map(|(name, p)| Some((name.to_owned(), p.fd().ok()?.try_clone().ok()?)))
            .collect();
        Self { programs }
    }

    /// (program name, runs skipped since it was loaded) of each program, by name.
    pub fn missed(&self) -> Vec<(String, u64)> {
        let mut out: Vec<_> = self
            .programs
            .iter()
            .map(|(name, fd)| (name.clone(), recursion_misses(fd.as_fd()).unwrap_or(0)))
            .collect();
        out.sort();
        out
    }
}

/// `recursion_misses` of a loaded program (`BPF_OBJ_GET_INFO_BY_FD`), None if unavailable.
pub(super) fn recursion_misses(fd: BorrowedFd<'_>) -> Option<u64> {
    use aya_obj::generated::{bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, bpf_prog_info};
    /// The `info` member of `union bpf_attr`; the kernel accepts an attr this short.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is a plain C struct of integers: all zeroes is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: (&mut info as *mut bpf_prog_info) as u64,
    };
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which outlives the call,
    // and reads `attr` of the size given; the fd is a live program fd borrowed for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    (ret == 0).then_some(info.recursion_misses)
}
