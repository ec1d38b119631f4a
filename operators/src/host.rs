//! Reading tensors' host memory in place, where candle has no copy-free accessor.

use candle_core::Tensor;

/// Runs `f` on the values of `t` in place when it is a contiguous f32 CPU tensor (holding
/// its storage's read lock meanwhile); `None` otherwise.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    let data = cpu.as_slice::<f32>().ok()?;
    Some(f(&data[start..end]))
}
