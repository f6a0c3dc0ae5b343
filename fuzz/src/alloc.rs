//! A global allocator that counts what is allocated and aborts on an
//! allocation a decoder should never make: a single block over
//! [`MAX_ONE`] bytes, or more than [`MAX_LIVE`] bytes live at once.
//! Aborting is the only safe answer inside an allocator (a panic there would
//! allocate); the message names the target and the input being run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The largest single allocation allowed: 64 MiB.
pub const MAX_ONE: usize = 64 << 20;
/// The most that may be live at once: 256 MiB.
pub const MAX_LIVE: usize = 256 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The input being run, for the abort message; `u64::MAX` when none is.
pub static CURRENT_INPUT: AtomicU64 = AtomicU64::new(u64::MAX);
/// The seed of the run, for the abort message.
pub static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);
/// Index into [`crate::targets::NAMES`] of the target being run.
pub static CURRENT_TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The allocator: [`System`]'s, counted and bounded.
pub struct Limited;

/// What was allocated since the last [`reset_peaks`].
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub peak_live: usize,
    pub largest: usize,
}

/// Starts counting peaks afresh (the live count goes on).
pub fn reset_peaks() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
}

/// The peaks since the last [`reset_peaks`].
pub fn usage() -> Usage {
    Usage {
        peak_live: PEAK.load(Ordering::Relaxed),
        largest: LARGEST.load(Ordering::Relaxed),
    }
}

/// Counts a block of `size` bytes, `added` of them new.
fn grow(size: usize, added: usize) {
    if size > MAX_ONE {
        die(b"a single allocation of ", size);
    }
    LARGEST.fetch_max(size, Ordering::Relaxed);
    let live = LIVE.fetch_add(added, Ordering::Relaxed) + added;
    if live > MAX_LIVE {
        die(b"live allocations reached ", live);
    }
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrink(size: usize) {
    LIVE.fetch_sub(size, Ordering::Relaxed);
}

/// Writes `text`, a number and the input being run to stderr without
/// allocating, then aborts.
fn die(text: &[u8], n: usize) -> ! {
    let mut line = Line::default();
    line.push(b"barge-fuzz: FINDING: ");
    line.push(text);
    line.number(n as u64);
    line.push(b" bytes (limits: one ");
    line.number(MAX_ONE as u64);
    line.push(b", live ");
    line.number(MAX_LIVE as u64);
    line.push(b")");
    let target = CURRENT_TARGET.load(Ordering::Relaxed);
    if let Some(name) = crate::targets::NAMES.get(target) {
        line.push(b" in target ");
        line.push(name.as_bytes());
        let input = CURRENT_INPUT.load(Ordering::Relaxed);
        if input != u64::MAX {
            line.push(b"; reproduce: barge-fuzz ");
            line.push(name.as_bytes());
            line.push(b" --seed ");
            line.number(CURRENT_SEED.load(Ordering::Relaxed));
            line.push(b" --skip ");
            line.number(input);
            line.push(b" --count 1");
        }
    }
    line.push(b"\n");
    // SAFETY: writes `len` initialised bytes of `line.buf` to fd 2.
    unsafe { libc::write(2, line.buf.as_ptr().cast(), line.len) };
    std::process::abort();
}

/// A fixed buffer for [`die`]'s message.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

// SAFETY: every call goes to `System` with the caller's layout and pointer
// unchanged; the counting around it only reads sizes.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size(), layout.size());
        // SAFETY: forwarded as given (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size(), layout.size());
        // SAFETY: forwarded as given (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: forwarded as given (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grow(new_size, new_size - layout.size());
        } else {
            shrink(layout.size() - new_size);
        }
        // SAFETY: forwarded as given (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
