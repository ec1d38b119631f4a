//! The CUDA backend: candle's fused ops for inference, and for training freshen's layer
//! norm, GELU and masked softmax as custom ops whose backward is a kernel too (candle-nn's
//! fused ops record no backward, so training on candle alone runs them as a dozen small
//! kernels each, forward and backward).

use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{launch, row_threads, view, MODULE, PTX};
use crate::backend::{AttentionShape, CandleOps, Kernels};
use crate::Result;

/// A null device pointer, for a kernel's optional argument.
const NULL: u64 = 0;

/// Threads of an element-wise launch.
const THREADS: u32 = 256;

/// The CUDA kernels for f32 tensors ([`crate::backend::for_device`] picks it).
#[derive(Debug)]
pub struct CudaOps;

impl Kernels for CudaOps {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        eps: f64,
        train: bool,
    ) -> Result<Tensor> {
        match train {
            true => Ok(x
                .contiguous()?
                .apply_op3(w, b, LayerNorm { eps: eps as f32 })?),
            false => CandleOps.layer_norm(x, w, b, eps, false),
        }
    }

    fn softmax_last_dim(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match train {
            true => {
                let t = x.dims().last().copied().unwrap_or(1);
                let rows = x.elem_count() / t.max(1);
                let op = MaskedSoftmax {
                    lengths: vec![t as u32],
                    rows_per_text: rows.max(1) as u32,
                    scale: 1.0,
                };
                Ok(x.contiguous()?.apply_op1(op)?)
            }
            false => CandleOps.softmax_last_dim(x, false),
        }
    }

    fn gelu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.apply_op1(Gelu)?)
    }

    fn attention_bias(&self, mask: &Tensor) -> Result<Option<Tensor>> {
        CandleOps.attention_bias(mask)
    }

    /// Training: the scores' softmax over each text's real keys by its length (no bias
    /// tensor); inference: candle's ops with the bias.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        shape: &AttentionShape,
        bias: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        if !train {
            return CandleOps.attention(q, k, v, shape, bias, false);
        }
        let (qh, kh, vh) = (
            shape.split_heads(q)?,
            shape.split_heads(k)?,
            shape.split_heads(v)?,
        );
        let scores = qh.matmul(&kh.t()?)?.contiguous()?;
        let op = MaskedSoftmax {
            lengths: shape.lengths.iter().map(|&l| l as u32).collect(),
            rows_per_text: (shape.heads * shape.tokens) as u32,
            scale: (1.0 / (shape.head_dim as f64).sqrt()) as f32,
        };
        shape.merge_heads(&scores.apply_op1(op)?.matmul(&vh)?)
    }
}

/// What a custom op answers on the CPU: these ops run on CUDA tensors only.
fn cuda_only<T>(name: &str) -> candle_core::Result<T> {
    candle_core::bail!("{name}: a CUDA op, given CPU tensors")
}

/// Rows and width of a tensor's layout, the width being its last dimension.
fn rows_width(l: &Layout) -> (usize, usize) {
    let n = l.dims().last().copied().unwrap_or(1).max(1);
    (l.shape().elem_count() / n, n)
}

/// Layer norm over the last dimension, `(x, w, b) → y`, with its backward.
struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "freshen-layer-norm"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let (rows, n) = rows_width(l1);
        let (x, w, b) = (view(s1, l1, "x")?, view(s2, l2, "w")?, view(s3, l3, "b")?);
        // SAFETY: every element is written by the kernel.
        let y = unsafe { dev.alloc::<f32>(rows * n)? };
        let f = dev.get_or_load_custom_func("add_layer_norm_fwd", MODULE, PTX)?;
        let mut a = f.builder();
        let (n32, threads) = (n as u32, row_threads(n));
        a.arg(&x).arg(&NULL).arg(&w).arg(&b).arg(&NULL).arg(&y);
        a.arg(&n32).arg(&self.eps);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { a.launch(launch(rows, threads, threads)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let all = dy.contiguous()?.apply_op3_no_bwd(
            &x.contiguous()?,
            &w.contiguous()?,
            &LayerNormBwd { eps: self.eps },
        )?;
        let rows = all.dim(0)? - 2;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        Ok((Some(dx), Some(all.get(rows)?), Some(all.get(rows + 1)?)))
    }
}

/// The layer norm's backward, `(dy, x, w) → (rows + 2, n)`: the rows of `dx`, then the
/// weight's gradient, then the bias's.
struct LayerNormBwd {
    eps: f32,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "freshen-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let (rows, n) = rows_width(l1);
        let (dy, x, w) = (view(s1, l1, "dy")?, view(s2, l2, "x")?, view(s3, l3, "w")?);
        // SAFETY: the kernels write every element of both.
        let mut out = unsafe { dev.alloc::<f32>((rows + 2) * n)? };
        let dy_xhat = unsafe { dev.alloc::<f32>(rows * n)? };
        let (n32, rows32, threads) = (n as u32, rows as u32, row_threads(n));
        {
            let f = dev.get_or_load_custom_func("add_layer_norm_bwd", MODULE, PTX)?;
            let mut dx = out.slice_mut(0..rows * n);
            let mut a = f.builder();
            a.arg(&dy).arg(&x).arg(&w).arg(&mut dx).arg(&dy_xhat);
            a.arg(&n32).arg(&self.eps);
            // SAFETY: the arguments match the kernel's signature.
            unsafe { a.launch(launch(rows, threads, threads)) }.w()?;
        }
        let cols = launch(n.div_ceil(THREADS as usize), THREADS, 0);
        for (src, at) in [(&dy_xhat.slice(..), rows), (&dy, rows + 1)] {
            let f = dev.get_or_load_custom_func("col_sum_f32", MODULE, PTX)?;
            let mut dst = out.slice_mut(at * n..(at + 1) * n);
            let mut a = f.builder();
            a.arg(src).arg(&rows32).arg(&n32).arg(&mut dst);
            // SAFETY: the arguments match the kernel's signature.
            unsafe { a.launch(cols) }.w()?;
        }
        let shape = Shape::from((rows + 2, n));
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
}

/// GELU in its exact (erf) form, with its backward.
struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "freshen-gelu"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &s.device;
        let count = l.shape().elem_count();
        let (_, n) = rows_width(l);
        let x = view(s, l, "x")?;
        // SAFETY: every element is written by the kernel.
        let y = unsafe { dev.alloc::<f32>(count)? };
        let f = dev.get_or_load_custom_func("bias_gelu_fwd", MODULE, PTX)?;
        let mut a = f.builder();
        let (count64, n32) = (count as u64, n as u32);
        a.arg(&x)
            .arg(&NULL)
            .arg(&NULL)
            .arg(&y)
            .arg(&count64)
            .arg(&n32);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { a.launch(launch(count.div_ceil(THREADS as usize), THREADS, 0)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op2_no_bwd(&x.contiguous()?, &GeluBwd)?,
        ))
    }
}

/// GELU's backward, `(dy, x) → dx`.
struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "freshen-gelu-bwd"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let count = l1.shape().elem_count();
        let (dy, x) = (view(s1, l1, "dy")?, view(s2, l2, "x")?);
        // SAFETY: every element is written by the kernel.
        let dx = unsafe { dev.alloc::<f32>(count)? };
        let f = dev.get_or_load_custom_func("bias_gelu_bwd", MODULE, PTX)?;
        let mut a = f.builder();
        let count64 = count as u64;
        a.arg(&dy).arg(&x).arg(&dx).arg(&count64);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { a.launch(launch(count.div_ceil(THREADS as usize), THREADS, 0)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev.clone()),
            l1.shape().clone(),
        ))
    }
}

/// Softmax of `scale · x` over each row's real keys: a row of text `i` (every
/// `rows_per_text` rows) keeps its first `lengths[i]` entries, the rest get exactly zero.
struct MaskedSoftmax {
    lengths: Vec<u32>,
    rows_per_text: u32,
    scale: f32,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "freshen-masked-softmax"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &s.device;
        let (rows, t) = rows_width(l);
        if rows.div_ceil(self.rows_per_text as usize) > self.lengths.len() {
            candle_core::bail!(
                "masked softmax: {rows} rows for {} texts",
                self.lengths.len()
            );
        }
        let x = view(s, l, "scores")?;
        let lengths = dev.cuda_stream().clone_htod(&self.lengths).w()?;
        // SAFETY: every element is written by the kernel.
        let y = unsafe { dev.alloc::<f32>(rows * t)? };
        let f = dev.get_or_load_custom_func("masked_softmax_fwd", MODULE, PTX)?;
        let mut a = f.builder();
        let (t32, threads) = (t as u32, row_threads(t));
        a.arg(&x)
            .arg(&lengths)
            .arg(&self.rows_per_text)
            .arg(&t32)
            .arg(&self.scale)
            .arg(&y);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { a.launch(launch(rows, threads, threads)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = SoftmaxBwd { scale: self.scale };
        Ok(Some(
            y.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &op)?,
        ))
    }
}

/// The masked softmax's backward, `(y, dy) → dx`.
struct SoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "freshen-masked-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let (rows, t) = rows_width(l1);
        let (y, dy) = (view(s1, l1, "y")?, view(s2, l2, "dy")?);
        // SAFETY: every element is written by the kernel.
        let dx = unsafe { dev.alloc::<f32>(rows * t)? };
        let f = dev.get_or_load_custom_func("masked_softmax_bwd", MODULE, PTX)?;
        let mut a = f.builder();
        let (t32, threads) = (t as u32, row_threads(t));
        a.arg(&y).arg(&dy).arg(&t32).arg(&self.scale).arg(&dx);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { a.launch(launch(rows, threads, threads)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev.clone()),
            l1.shape().clone(),
        ))
    }
}
