//! Which threads do what, for the local API's latency.
//!
//! - The async runtime's threads (its two workers, which serve the local API and `/metrics`'s
//!   HTTP, and its blocking pool, which drains the ring buffers) ask the kernel for a short
//!   time slice ([`LATENCY_SLICE`], `sched_setattr`'s `sched_runtime` for a normal task,
//!   Linux 6.12 and later): under EEVDF a task that wakes with a shorter slice gets an earlier
//!   deadline and preempts the running one, so a worker woken by an application's
//!   `GET /v1/signals` runs within about that slice instead of after the running task's
//!   whole one. The CPU share stays that of any task of the same nice value: what the agent
//!   takes from the host does not change. Older kernels accept the call and ignore the slice.
//! - The bulk work (a collection's map walks and registry read, a scrape's encoding, the rule
//!   store's ingest and the rules' evaluation: tens of milliseconds per tick at ~30,000
//!   series) runs on [`THREADS`] threads of its own with the default slice, through [`run`].
//!
//! Not done: lowering the bulk threads' nice value. Measured (docs/benchmarks.md, "Series
//! scale"), +5 and +10 made both the scrape *and* the local API slower on a busy host: the
//! bulk threads hold locks that the workers take too (the control's and the rule engine's,
//! read for the agent's own metrics, and jemalloc's one arena), and a worker waiting on a
//! lock held by a starved thread waits as long as it is starved.

use std::{
    panic::AssertUnwindSafe,
    sync::{mpsc, Arc, Mutex, OnceLock},
    time::Duration,
};

/// Threads of bulk work: a collection, a rule tick's evaluation and scrapes' encodings at
/// once (as many as tokio's blocking pool had for all of them: with two, a scrape's encoding
/// queued behind a collection and an evaluation).
pub const THREADS: usize = 4;

/// The time slice the runtime's threads ask for: the shortest the kernel allows.
pub const LATENCY_SLICE: Duration = Duration::from_micros(100);

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    tx: Mutex<mpsc::Sender<Job>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sf-bulk-{i}"))
                .spawn(move || {
                    // Threads inherit their creator's slice: back to the default.
                    set_slice(Duration::ZERO);
                    loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        // A panicking job drops its answer's sender (the caller sees an error);
                        // the thread goes on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })
                .expect("starting a bulk-work thread");
        }
        Pool { tx: Mutex::new(tx) }
    })
}

/// The job panicked.
#[derive(Debug, thiserror::Error)]
#[error("a bulk-work job panicked")]
pub struct Panicked;

/// Runs `f` on the bulk-work threads; its answer when it is done.
pub async fn run<T, F>(f: F) -> Result<T, Panicked>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let sent = pool()
        .tx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job);
    if sent.is_err() {
        return Err(Panicked);
    }
    rx.await.map_err(|_| Panicked)
}

/// Asks for [`LATENCY_SLICE`] for the calling thread, keeping its policy (normal) and nice
/// value: for the runtime's `on_thread_start`. A refusal is logged once and changes nothing.
pub fn latency_slice() {
    set_slice(LATENCY_SLICE);
}

/// Sets the calling thread's slice (zero: the kernel's default).
fn set_slice(slice: Duration) {
    // SAFETY: no pointers.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: slice.as_nanos() as u64,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `attr` is a valid sched_attr of the size it states; pid 0 is this thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if rc != 0 {
        static ONCE: std::sync::Once = std::sync::Once::new();
        let e = std::io::Error::last_os_error();
        ONCE.call_once(|| {
            tracing::warn!(error = %e, "could not ask for a short time slice for the runtime's threads");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs run on the pool's threads with the kernel's default slice, and a panic is an error
    /// that leaves the pool working.
    #[tokio::test]
    async fn jobs_run_on_the_bulk_threads() {
        let name = run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("sf-bulk-"));
        // Whoever started them (the runtime's threads have the short slice), they run with
        // the default one.
        let default = base_slice_ns();
        latency_slice();
        let slice = run(slice_ns).await.unwrap();
        if let Some(default) = default {
            assert_eq!(slice, default);
        }
        assert!(run(|| panic!("a job's panic")).await.is_err());
        for _ in 0..THREADS + 1 {
            assert_eq!(run(|| 7).await.unwrap(), 7);
        }
    }

    /// The calling thread's slice as `sched_getattr` reports it (6.12 and later).
    fn slice_ns() -> u64 {
        // SAFETY: zeroed is a valid sched_attr.
        let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `attr` is writable and as large as the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr,
                std::mem::size_of::<libc::sched_attr>() as u32,
                0,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        attr.sched_runtime
    }

    /// The kernel's default slice, on kernels that take a custom one (6.12 and later).
    fn base_slice_ns() -> Option<u64> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        if (v.next().unwrap(), v.next().unwrap()) < (6, 12) {
            return None;
        }
        // A new thread of a thread that never asked has it.
        Some(std::thread::spawn(slice_ns).join().unwrap())
    }

    /// The kernel (6.12 and later) reports the slice asked for, and the nice value is kept.
    #[test]
    fn the_slice_is_set_and_the_nice_value_kept() {
        std::thread::spawn(|| {
            // SAFETY: no pointers.
            let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as _) };
            let before = nice();
            latency_slice();
            assert_eq!(nice(), before);
            if base_slice_ns().is_some() {
                assert_eq!(slice_ns(), LATENCY_SLICE.as_nanos() as u64);
            }
        })
        .join()
        .unwrap();
    }
}
