//! A claimed length never makes decoding allocate: an operation's payload of a
//! few bytes that claims a huge byte string or a huge count decodes to an
//! error having allocated no more than a small multiple of its own length.
//!
//! This binary counts allocations with its own global allocator (one per test
//! binary), so it holds this one test alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use keel_engine::operation::Operation;

/// The largest allocation decoding a hostile payload of under 16 bytes may
/// make: a few small growing vectors, far below the claimed lengths (1 MiB and
/// more), which is what bincode and serde reserved from them before.
const DECODE_ALLOCATION_BYTES_MAX: usize = 1024;

thread_local! {
    /// The largest allocation this thread made since it was last reset.
    static LARGEST_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, noting each thread's largest allocation.
struct Noting;

fn note(bytes: usize) {
    // `try_with`: an allocation during the thread's teardown is not ours.
    let _ = LARGEST_BYTES.try_with(|largest| largest.set(largest.get().max(bytes)));
}

// SAFETY: every call goes to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Noting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Noting = Noting;

/// bincode's varint prefix of a u32: 252, then four little-endian bytes.
fn varint_u32(value: u32) -> Vec<u8> {
    let mut bytes = vec![252];
    bytes.extend_from_slice(&value.to_le_bytes());
    bytes
}

#[test]
fn claimed_lengths_allocate_nothing_of_their_size() {
    // Under bincode's limit (the largest frame's payload, 1 GiB).
    let half_a_gib = 1 << 29;
    let hostile: [(&str, Vec<u8>); 5] = [
        ("a Set's key", [vec![0], varint_u32(half_a_gib)].concat()),
        (
            "a Set's value",
            [vec![0, 1, b'k'], varint_u32(half_a_gib)].concat(),
        ),
        (
            "a Delete's key count",
            [vec![1], varint_u32(u32::MAX)].concat(),
        ),
        (
            "a Delete's key",
            [vec![1, 1], varint_u32(half_a_gib)].concat(),
        ),
        ("a Batch's count", [vec![5], varint_u32(u32::MAX)].concat()),
    ];
    for (claim, payload) in hostile {
        LARGEST_BYTES.with(|largest| largest.set(0));
        let decoded = keel_wal::codec::decode::<Operation>(&payload);
        let largest = LARGEST_BYTES.with(Cell::get);
        assert!(decoded.is_err(), "{claim}: {payload:?} decoded");
        assert!(
            largest <= DECODE_ALLOCATION_BYTES_MAX,
            "{claim}: decoding {} bytes allocated {largest} bytes at once",
            payload.len()
        );
    }
}
