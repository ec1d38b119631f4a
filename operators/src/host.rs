//! Tensors' values on the host: read in place where candle has no copy-free accessor, and
//! copied from a device through one counted door ([`HostRead`]).

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Tensor, WithDType};

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

/// Tensor values copied to the host, every copy counted: on a GPU each one waits for the
/// device, so a training step should make as few as it can. Use these in place of
/// candle's `to_vec1`, `to_vec2` and `to_scalar` (clippy refuses those outside this
/// module); [`reads`] is the count so far, which `update` logs per step.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use freshen_operators::host::{self, HostRead};
///
/// let t = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?;
/// let before = host::reads();
/// assert_eq!(t.host_vec1::<f32>()?, vec![1., 2., 3.]);
/// assert_eq!(t.sum_all()?.host_scalar::<f32>()?, 6.);
/// assert!(host::reads() >= before + 2);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub trait HostRead {
    /// The values of a 1-D tensor.
    fn host_vec1<T: WithDType>(&self) -> candle_core::Result<Vec<T>>;
    /// The rows of a 2-D tensor.
    fn host_vec2<T: WithDType>(&self) -> candle_core::Result<Vec<Vec<T>>>;
    /// The value of a 0-D tensor.
    fn host_scalar<T: WithDType>(&self) -> candle_core::Result<T>;
}

/// Device-to-host copies made by this process so far (every thread).
static READS: AtomicU64 = AtomicU64::new(0);

/// The device-to-host copies this process has made: a step's count is the difference
/// across it (with one worker, nothing else copies meanwhile).
pub fn reads() -> u64 {
    READS.load(Ordering::Relaxed)
}

#[allow(clippy::disallowed_methods)] // the one place that reads
impl HostRead for Tensor {
    fn host_vec1<T: WithDType>(&self) -> candle_core::Result<Vec<T>> {
        READS.fetch_add(1, Ordering::Relaxed);
        self.to_vec1()
    }

    fn host_vec2<T: WithDType>(&self) -> candle_core::Result<Vec<Vec<T>>> {
        READS.fetch_add(1, Ordering::Relaxed);
        self.to_vec2()
    }

    fn host_scalar<T: WithDType>(&self) -> candle_core::Result<T> {
        READS.fetch_add(1, Ordering::Relaxed);
        self.to_scalar()
    }
}
