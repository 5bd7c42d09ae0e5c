//! A counting global allocator for the load tests: the largest single host allocation made
//! while a closure runs. Shared by `crates/models/tests/{load_alloc,pth_load,fuzz_weights}.rs`
//! and `crates/cuda/tests/load_alloc.rs` through `#[path]` (each test binary installs its own
//! `#[global_allocator]` with `install_counting_allocator!()`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

pub struct Counting;

static ALL_THREADS: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// One measurement at a time (the counter is process-wide; tests run in parallel).
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    static THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whose allocations count: every thread's (a load that may fan out to worker threads), or only
/// the calling thread's (a test that runs beside other allocating tests, e.g. proptest's).
#[derive(Clone, Copy)]
#[allow(dead_code)] // each test binary uses one of the two
pub enum Scope {
    AllThreads,
    ThisThread,
}

fn note(size: usize) {
    if ALL_THREADS.load(Ordering::Relaxed) || THIS_THREAD.try_with(|a| a.get()).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

/// Runs `f`; returns the largest single host allocation it made (in `scope`) and its result.
pub fn largest_alloc<R>(scope: Scope, f: impl FnOnce() -> R) -> (usize, R) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    LARGEST.store(0, Ordering::SeqCst);
    match scope {
        Scope::AllThreads => ALL_THREADS.store(true, Ordering::SeqCst),
        Scope::ThisThread => THIS_THREAD.with(|a| a.set(true)),
    }
    let r = f();
    ALL_THREADS.store(false, Ordering::SeqCst);
    THIS_THREAD.with(|a| a.set(false));
    (LARGEST.load(Ordering::SeqCst), r)
}
