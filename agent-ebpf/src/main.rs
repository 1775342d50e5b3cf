//! steadfast's kernel probes. Each file is one kernel concept; every entry point is a thin
//! shell around a `try_` function returning `Result`.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod allocations;
mod atomic;
mod config;
mod connections;
mod go_gc;
mod goroutines;
mod http;
mod loss;
mod process;
mod syscall_latency;
mod tasks;
mod tcp_retransmit;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that can reach a real panic; this is never linked in.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
