//! Where tensors live: the one place a device is named and opened.
//!
//! Every model takes a [`DeviceChoice`] (`cpu`, `cuda`, `cuda:N` or `auto`) and creates its
//! tensors on [`DeviceChoice::open`]'s device; everything else follows the tensors it is
//! given. The CPU is [`cpu()`]: no other module writes `Device::Cpu`.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// The host: where data is read and written, and where models run by default.
pub fn cpu() -> Device {
    Device::Cpu
}

/// A device as logs and summaries name it: `cpu`, `cuda:N`, `metal:N`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Why a CUDA device did not open, in one line (candle's error may carry a backtrace),
/// with what to check.
fn cannot_open(e: &candle_core::Error) -> String {
    let text = e.to_string();
    format!(
        "cannot open it ({}); check `nvidia-smi`, and that the CUDA 13 libraries (pip's \
         nvidia/cu13/lib) are on LD_LIBRARY_PATH",
        text.lines().next().unwrap_or_default().trim()
    )
}

/// CUDA device `n`, its memory pool set to keep what it frees (cudarc's pool gives it back
/// at every synchronisation otherwise, and a training step would pay to allocate again).
fn open_cuda(n: usize) -> candle_core::Result<Device> {
    let device = Device::new_cuda(n)?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &device {
        crate::backend::cuda::keep_freed_memory(d)?;
    }
    Ok(device)
}

/// Whether this build can run on CUDA devices (`--features cuda`).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// A device as a setting names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N (`cuda` is `cuda:0`).
    Cuda(usize),
    /// The first CUDA device when this build has CUDA and one is present, else the CPU.
    Auto,
}

impl DeviceChoice {
    /// Opens the device. `auto` never fails; `cuda` fails with one line that says what is
    /// missing (a CUDA build, a driver, the device).
    pub fn open(&self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(cpu()),
            DeviceChoice::Auto => match CUDA_BUILD && candle_core::utils::cuda_is_available() {
                true => open_cuda(0).or_else(|_| Ok(cpu())),
                false => Ok(cpu()),
            },
            DeviceChoice::Cuda(n) => {
                if !CUDA_BUILD {
                    return Err(Error::Device {
                        device: self.to_string(),
                        message: "this build has no CUDA (build it with scripts/build-cuda.sh, \
                                  or --features cuda)"
                            .into(),
                    });
                }
                open_cuda(*n).map_err(|e| Error::Device {
                    device: self.to_string(),
                    message: cannot_open(&e),
                })
            }
        }
    }

    /// Checks that this build can run on the device (a CUDA device needs a CUDA build);
    /// the error names the `device` setting, for `freshen check`.
    pub fn check_build(&self) -> Result<()> {
        if let (DeviceChoice::Cuda(n), true) = (self, CUDA_BUILD) {
            // A CUDA build opens the device, so that `check` finds a missing GPU or driver.
            return Device::new_cuda(*n).map(|_| ()).map_err(|e| {
                crate::ranges::field_error(
                    "device",
                    format!("`device` is `{self}`: {}", cannot_open(&e)),
                )
            });
        }
        match (self, CUDA_BUILD) {
            (DeviceChoice::Cuda(_), false) => Err(crate::ranges::field_error(
                "device",
                format!(
                    "`device` is `{self}` but this build has no CUDA (build it with \
                     scripts/build-cuda.sh, or cargo build --release --features cuda; \
                     `auto` falls back to the CPU)"
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            crate::ranges::field_error(
                "device",
                format!("`device` is `{s}` (expected cpu, cuda, cuda:N or auto)"),
            )
        };
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for DeviceChoice {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceChoice".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(cpu|auto|cuda(:[0-9]+)?)$",
            "description": "`cpu`, `cuda`, `cuda:N` or `auto` (a GPU when this build has CUDA and one is present)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_opens() {
        for (text, choice) in [
            ("cpu", DeviceChoice::Cpu),
            ("auto", DeviceChoice::Auto),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), choice);
        }
        assert_eq!(DeviceChoice::Cuda(0).to_string(), "cuda:0");
        assert!("gpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        if !CUDA_BUILD {
            assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
            let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(
                e.starts_with("device cuda:0: this build has no CUDA"),
                "{e}"
            );
        }
    }
}

/// The precision a model computes in: `f32` (the default), or `bf16` / `f16` for mixed
/// precision as PyTorch's autocast does it: the weights the optimiser updates and its
/// moments stay f32 (the master copy), each forward casts them to the compute type,
/// layer norms and softmaxes run in f32, and the vectors a model returns are f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats throughout.
    #[default]
    F32,
    /// bfloat16 matrix products (the range of f32, 8 bits of mantissa).
    Bf16,
    /// IEEE half matrix products (more mantissa, a narrow range).
    F16,
}

impl Precision {
    /// candle's dtype for the compute.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// Whether this is a half type (anything but f32).
    pub fn is_half(self) -> bool {
        self != Precision::F32
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// The names serde reads (`f32`, `bf16`, `f16`), for command-line flags.
    fn from_str(s: &str) -> Result<Self> {
        use serde::de::value::{Error as DeError, StrDeserializer};
        Precision::deserialize(StrDeserializer::<DeError>::new(s)).map_err(|_| {
            crate::ranges::field_error(
                "dtype",
                format!("`dtype` is `{s}` (expected f32, bf16 or f16)"),
            )
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}
