//! Cache prefetch hints for the probes' hot path. At 100,000 probed replicas each
//! replica's memory is touched once a second and is cold by then: every line a check
//! touches is a cache miss, waited for one after another: the three places that touch
//! them first (the probe loop's poll, its log's write, the runtime's own lookup) held
//! over a third of that row's samples, most of each on one load. Asked for together, up
//! front, the loads overlap.

/// Ask the CPU to start loading the cache line at `p`: a hint, never a read, so any
/// address will do (a prefetch does not fault).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) fn line<T>(p: *const T) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch reads nothing and cannot fault, whatever `p` points to; SSE, the
    // instruction's feature, is part of every x86_64 CPU.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn line<T>(_: *const T) {}

/// Every line of the `len` bytes from `p`.
pub(crate) fn bytes<T>(p: *const T, len: usize) {
    const LINE: usize = 64;
    let start = p.cast::<u8>();
    let mut off = 0;
    while off < len {
        line(start.wrapping_add(off));
        off += LINE;
    }
}

/// Every line of the value at `p`.
pub(crate) fn value<T>(p: *const T) {
    bytes(p, std::mem::size_of::<T>());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hint that read its address would kill this test with a segmentation fault.
    #[test]
    fn a_hint_at_any_address_never_faults() {
        bytes(std::ptr::null::<u8>(), 4096);
        bytes(usize::MAX as *const u8, 256);
        value(std::ptr::dangling::<[u64; 100]>());
    }
}
