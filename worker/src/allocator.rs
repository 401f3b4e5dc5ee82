//! The allocator's settings for a process that signs collections.
//!
//! A sign holds a collection's records for the length of a job and reads its listing through buffers of a few
//! hundred KiB. glibc's malloc serves blocks from 128 KiB up with `mmap` at first, but raises that threshold
//! (up to 32 MiB) each time such a block is freed; from then on the large buffers come from the heap, where
//! they fragment it and stay mapped between jobs. Fixed thresholds keep them in `mmap`, returned to the system
//! when freed, and the heap's free top is trimmed from 128 KiB: a worker's resident memory follows what it
//! holds (BENCHMARKS.md, "Worker memory and the allocator"). An operator's own `GLIBC_TUNABLES` for malloc wins.

/// The threshold for both: glibc's initial mmap threshold, kept instead of raised.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Applies the settings, unless the environment sets malloc's tunables. Call before the work starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let operator_set = std::env::var("GLIBC_TUNABLES")
            .is_ok_and(|tunables| tunables.contains("glibc.malloc."));
        if operator_set {
            return;
        }
        for (parameter, name) in [
            (libc::M_MMAP_THRESHOLD, "M_MMAP_THRESHOLD"),
            (libc::M_TRIM_THRESHOLD, "M_TRIM_THRESHOLD"),
        ] {
            if !set(parameter, THRESHOLD_BYTES) {
                tracing::warn!(
                    parameter = name,
                    "malloc refused a threshold; its default stays"
                );
            }
        }
    }
}

/// Whether malloc took the setting.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set(parameter: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: mallopt takes two integers, changes only malloc's own parameters (under its lock) and answers 0
    // when it refuses them, glibc's defaults then staying.
    unsafe { libc::mallopt(parameter, value) == 1 }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// Bytes malloc holds in mmapped blocks.
    fn mapped() -> usize {
        // SAFETY: mallinfo2 only reads malloc's statistics.
        unsafe { libc::mallinfo2().hblkhd }
    }

    #[test]
    fn a_freed_large_buffer_leaves_the_next_ones_mapped_apart_from_the_heap() {
        tune();
        let first = vec![1u8; 1 << 20];
        drop(std::hint::black_box(first));
        // With glibc's dynamic threshold, freeing the first buffer would have raised it past this size and
        // put the second one on the heap, where it stays after it is freed.
        let before = mapped();
        let second = vec![1u8; 512 << 10];
        let while_held = mapped();
        drop(std::hint::black_box(second));
        assert!(
            while_held >= before + (512 << 10),
            "the second buffer is not mmapped: {before} then {while_held} bytes mapped"
        );
        assert_eq!(mapped(), before, "the freed buffer stays mapped");
    }
}
