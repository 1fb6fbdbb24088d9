//! `memcpy` and `memmove` for the guard's static build.
//!
//! The image and the Debian package carry the guard linked statically against musl, whose x86-64 `memcpy` is
//! `rep movsq` for every copy of 8 bytes or more. The CPU starts such a string move slowly, and a request makes
//! dozens of small copies (hyper's head writer copies every field name and value; every move of a request, a
//! response or a future of more than 128 bytes is a call): profiled under load, musl's `memcpy` took 8.7 % of the
//! guard's CPU time, glibc's 3.4 %. These copy up to 32 bytes with two overlapping loads and stores, and more in
//! 32-byte steps.
//!
//! On the musl build (x86-64) the crate exports them as the C symbols, in place of musl's; `memmove` is exported
//! too because musl's `memmove` is written in terms of its `memcpy`. Elsewhere it exports nothing: [`copy`] is the
//! function both are, tested on every build.
#![cfg_attr(not(test), no_std)]
// The compiler must not turn these loops back into calls to `memcpy`.
#![no_builtins]

use core::ptr::{read_unaligned as load, write_unaligned as store};

type Chunk = [u128; 2];
const CHUNK: usize = core::mem::size_of::<Chunk>();

/// Copies `n` bytes from `src` to `dest`; the two may overlap (what `memmove` does, and so `memcpy` too).
///
/// # Safety
/// `src` must be valid for reads of `n` bytes and `dest` for writes of `n` bytes.
#[inline(always)]
#[allow(unsafe_code)]
pub unsafe fn copy(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: every access below is within the first `n` bytes of `src` (reads) or `dest` (writes), and unaligned.
    unsafe {
        if n <= CHUNK {
            return copy_small(dest, src, n);
        }
        // Each step loads before it stores, and the chunk at the far end is loaded before any store: where the two
        // overlap, nothing is overwritten before it has been read.
        if (dest as usize).wrapping_sub(src as usize) >= n {
            // `dest` before `src` (or apart): front to back, the last chunk (loaded first) stored last.
            let last = load(src.add(n - CHUNK).cast::<Chunk>());
            let mut at = 0;
            while at + CHUNK < n {
                store(dest.add(at).cast::<Chunk>(), load(src.add(at).cast::<Chunk>()));
                at += CHUNK;
            }
            store(dest.add(n - CHUNK).cast::<Chunk>(), last);
        } else {
            // `dest` after `src`, overlapping: back to front, the first chunk (loaded first) stored last.
            let first = load(src.cast::<Chunk>());
            let mut at = n;
            while at > CHUNK {
                at -= CHUNK;
                store(dest.add(at).cast::<Chunk>(), load(src.add(at).cast::<Chunk>()));
            }
            store(dest.cast::<Chunk>(), first);
        }
    }
}

/// Up to 32 bytes: the head and the tail, each as wide as fits, both loaded before either is stored.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn copy_small(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: as `copy`'s; `n <= 32`, and each pair covers `0..n` from both ends.
    unsafe {
        macro_rules! ends {
            ($t:ty) => {{
                let w = core::mem::size_of::<$t>();
                let (head, tail) = (load(src.cast::<$t>()), load(src.add(n - w).cast::<$t>()));
                store(dest.cast::<$t>(), head);
                store(dest.add(n - w).cast::<$t>(), tail);
            }};
        }
        match n {
            16.. => ends!(u128),
            8.. => ends!(u64),
            4.. => ends!(u32),
            2.. => ends!(u16),
            1 => *dest = *src,
            _ => {}
        }
    }
}

/// The C library's `memcpy`, in the musl build.
///
/// # Safety
/// As [`copy`]'s; C's `memcpy` also requires that the two do not overlap (this one does not need it).
#[cfg(all(target_env = "musl", target_arch = "x86_64", not(test)))]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's promise, as C's `memcpy` has it.
    unsafe { copy(dest, src, n) };
    dest
}

/// The C library's `memmove`, in the musl build.
///
/// # Safety
/// As [`copy`]'s.
#[cfg(all(target_env = "musl", target_arch = "x86_64", not(test)))]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's promise, as C's `memmove` has it.
    unsafe { copy(dest, src, n) };
    dest
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::copy;
    use proptest::prelude::*;

    /// `copy` within one buffer, beside the standard library's `copy_within` (a `memmove`) on a twin: the whole
    /// buffer must come out the same, so a byte written outside the destination fails it too.
    fn check(buf: &[u8], src: usize, dest: usize, n: usize) {
        let mut ours = buf.to_vec();
        let mut theirs = buf.to_vec();
        theirs.copy_within(src..src + n, dest);
        // SAFETY: `src + n` and `dest + n` are within the buffer (the callers' ranges make sure).
        unsafe {
            let p = ours.as_mut_ptr();
            copy(p.add(dest), p.add(src), n);
        }
        assert_eq!(ours, theirs, "n {n}, from {src} to {dest}");
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + i / 251) as u8).collect()
    }

    /// Every length up to 160 (each width of the small copies, each count of 32-byte steps and the tail), from and
    /// to every nearby place: apart, overlapping from before and from after, and onto itself.
    #[test]
    fn every_short_length_and_overlap_is_a_memmove() {
        let buf = pattern(512);
        for n in 0..=160 {
            for src in [0, 1, 7, 64, 200] {
                for dest in [0, 1, 3, 15, 16, 31, 33, 64, 65, 100, 200, 201, 232, 300] {
                    if src + n <= buf.len() && dest + n <= buf.len() {
                        check(&buf, src, dest, n);
                    }
                }
                for shift in 0..=40 {
                    if src + shift + n <= buf.len() {
                        check(&buf, src, src + shift, n);
                        check(&buf, src + shift, src, n);
                    }
                }
            }
        }
    }

    /// Two buffers apart, as `memcpy` is called: the destination's bytes around the copy stay as they were.
    #[test]
    fn a_copy_between_buffers_writes_exactly_its_bytes() {
        let src = pattern(4096);
        for n in (0..=300).chain([511, 512, 513, 1000, 4000]) {
            for at in [0, 1, 8, 13] {
                let mut dest = vec![0xa5u8; n + 32];
                // SAFETY: `at + n` is within `dest`, `n` within `src`.
                unsafe { copy(dest.as_mut_ptr().add(at), src.as_ptr(), n) };
                assert!(dest[..at].iter().all(|&b| b == 0xa5), "before, n {n}");
                assert_eq!(&dest[at..at + n], &src[..n], "n {n}");
                assert!(dest[at + n..].iter().all(|&b| b == 0xa5), "after, n {n}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any length, any two places in a buffer of random bytes.
        #[test]
        fn any_copy_within_a_buffer_is_a_memmove(
            buf in prop::collection::vec(any::<u8>(), 1..6000),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
            len in any::<prop::sample::Index>(),
        ) {
            let (src, dest) = (a.index(buf.len()), b.index(buf.len()));
            let n = len.index(buf.len() - src.max(dest) + 1);
            check(&buf, src, dest, n);
        }
    }
}
