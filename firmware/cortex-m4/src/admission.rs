//! The device side of admission (docs/wire.md §7), with the hub on the host at the other end of semihosting files.
//!
//! `custos_proto::admission` runs Noise `XXpsk3` through `snow`, which allocates: its resolver and every primitive
//! it resolves are boxed trait objects, and the messages come back as `Vec`s. The heap is a fixed arena of [`ARENA`] bytes in `.uninit` (so it is neither
//! zeroed at reset nor counted in `.bss`), managed by `embedded-alloc`'s linked-list first-fit allocator; a thin
//! wrapper records the most bytes in use at once.
//!
//! Exchange, all in QEMU's working directory: the device writes `hello.bin`, waits for `response.bin`, writes
//! `finish.bin`, waits for `welcome.bin` (each written as `*.part` and renamed, see [`crate::host`]).

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use custos_proto::admission::DeviceAwaitingResponse;
use custos_proto::{DeviceId, Secret};
use embedded_alloc::LlffHeap;

use crate::host::Field::Hex;
use crate::host::{Failure, Out, files};

/// The heap arena, bytes. The handshake's peak is reported as `heap_peak`; this leaves room above it.
pub const ARENA: usize = 2 * 1024;

/// How long the device waits for each answer from the hub: 60 s.
const ANSWER_TIMEOUT_CS: usize = 6000;

#[unsafe(link_section = ".uninit.custos_heap")]
static mut ARENA_MEM: [MaybeUninit<u8>; ARENA] = [MaybeUninit::uninit(); ARENA];

/// The allocator, and the high-water mark of its bytes in use.
struct Counted {
    heap: LlffHeap,
    peak: AtomicUsize,
}

// SAFETY: every call goes to `LlffHeap`, a `GlobalAlloc` that serialises itself in a critical section; the counter
// only reads its state.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `LlffHeap`'s.
        let p = unsafe { self.heap.alloc(layout) };
        self.peak.fetch_max(self.heap.used(), Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`: `ptr` came from this allocator with this layout.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: Counted = Counted {
    heap: LlffHeap::empty(),
    peak: AtomicUsize::new(0),
};

/// Hands the arena to the allocator. Call once, before anything allocates.
pub fn init_heap() {
    // SAFETY: called once at the start of `main`, before any allocation; the arena is a static of `ARENA` bytes
    // that nothing else refers to.
    unsafe { HEAP.heap.init((&raw mut ARENA_MEM) as usize, ARENA) }
}

/// The most heap bytes in use at once so far.
pub fn heap_peak() -> usize {
    HEAP.peak.load(Ordering::Relaxed)
}

/// What the factory put in the device: its X25519 identity key and its join code (wire.md Vector 4's).
pub struct Factory {
    /// The device's id.
    pub device: DeviceId,
    /// The device's Noise static key.
    pub static_key: Secret,
    /// The code on the label.
    pub join_code: [u8; 16],
}

/// Joins the hub on the host; returns the server–device key after `Welcome` proved the hub knew the code.
/// Prints `admitted <handshake hash> <hub static key>`: public values both sides must agree on.
pub fn join(out: &mut Out, factory: &Factory, ephemeral: Secret) -> Result<Secret, Failure> {
    let (device, hello) = DeviceAwaitingResponse::start(
        factory.device,
        &factory.static_key,
        &factory.join_code,
        ephemeral,
        None,
    )?;
    files::put(c"hello.part", c"hello.bin", &hello)?;
    drop(hello);
    let mut buf = [0u8; 128];
    let n = files::take(c"response.bin", &mut buf, ANSWER_TIMEOUT_CS)?;
    let (device, finish) = device.read_response(&buf[..n])?;
    files::put(c"finish.part", c"finish.bin", &finish)?;
    drop(finish);
    let n = files::take(c"welcome.bin", &mut buf, ANSWER_TIMEOUT_CS)?;
    let admitted = device.read_welcome(&buf[..n])?;
    out.line(
        "admitted",
        &[Hex(&admitted.handshake_hash), Hex(&admitted.peer_static)],
    )?;
    Ok(admitted.session_key)
}
