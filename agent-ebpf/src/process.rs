//! Process lifecycle (`sched_process_exec`, `sched_process_exit`) as sparse ring-buffer events,
//! so userspace can name processes that lived less than one collection interval.

use agent_common::{
    loss::LOSS_PROC_EVENTS,
    process::{ProcEvent, PROC_EXEC, PROC_EXIT},
};
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{btf_tracepoint, map},
    maps::RingBuf,
    programs::BtfTracePointContext,
};

use crate::{
    config::agent_tgid,
    loss::{count_lost, submit_flags},
};

/// Sized by userspace (`EbpfLoader::set_max_entries`) from the config.
#[map]
static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(_ctx: BtfTracePointContext) -> i32 {
    let _ = try_emit(PROC_EXEC, false);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    let _ = try_emit(PROC_EXIT, true);
    0
}

#[inline(always)]
fn try_emit(kind: u32, leader_only: bool) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let pid = id as u32;
    if tgid == agent_tgid() || (leader_only && pid != tgid) {
        return Ok(());
    }
    let Some(mut entry) = PROC_EVENTS.reserve::<ProcEvent>(0) else {
        count_lost(LOSS_PROC_EVENTS);
        return Err(-1);
    };
    // SAFETY: helpers without preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    entry.write(ProcEvent {
        kind,
        tgid,
        pid,
        _pad: 0,
        cgroup_id,
        comm,
    });
    entry.submit(submit_flags::<ProcEvent>(&PROC_EVENTS, LOSS_PROC_EVENTS));
    Ok(())
}
