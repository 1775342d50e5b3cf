//! The ring-buffer record decoder accepts exactly the records of the right size and never
//! panics; decoded events become spans without panicking.
#![no_main]
use agent_common::{process::ProcEvent, syscall::SlowSyscallEvent, tcp::TcpEvent};
use libfuzzer_sys::fuzz_target;
use steadfast::ebpf::decode;

fuzz_target!(|data: &[u8]| {
    let p = decode::<ProcEvent>(data);
    assert_eq!(p.is_some(), data.len() == std::mem::size_of::<ProcEvent>());
    if let Some(ev) = decode::<SlowSyscallEvent>(data) {
        let _ = steadfast::export::SpanRecord::slow_syscall(&ev, "svc", ev.start_ns);
    }
    let _ = decode::<TcpEvent>(data);
});
