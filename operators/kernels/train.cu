// freshen's CUDA kernels for training and search, compiled to PTX at build time
// (operators/build.rs, with the nvcc that scripts/build-cuda.sh installs) and loaded by
// operators/src/backend/cuda.rs. Each mirrors a CPU kernel of the crate and is held to it
// by the CUDA test binary (f32 to 1e-5): the arithmetic follows the CPU's order, and the
// build passes --fmad=false so that no multiply-add is contracted where the CPU rounds
// twice.
//
//   adamw_multi_f32        one AdamW step of every dense parameter of a model
//                          (train/fused.rs), moments in two flat buffers
//   sq_norm_multi_f32      the squared norm of every gradient together: one f64 partial a
//   finish_norm            block, summed in block order on the device, then the clipping
//                          factor (train/grads.rs: Gradients::clip_factor)
//   add_layer_norm_fwd/bwd residual + layer norm and its backward (backend/fused/norm.rs)
//   bias_gelu_fwd/bwd      bias + exact GELU with its backward
//   col_sum_f32            column sums in row order (the bias and norm weights' gradients)
//   masked_softmax_fwd/bwd the attention's softmax over each text's real keys only
//   topk_rows_f32          each query's best k of a chunk of scores (search/select.rs:
//   topk_merge_f32         higher score first, ties to the lower row, NaN never kept,
//                          excluded rows skipped); chunks merge on the device

#include <stdint.h>

typedef unsigned long long u64;

// ---------------------------------------------------------------- AdamW and the norm

// One parameter: its weights, its gradient, and where its moments start in the flat
// buffers. `lr` and `decay` (1 - lr * weight_decay, rounded from f64 on the host) are its own.
struct Seg {
    float* w;
    const float* g;
    u64 offset;
    u64 len;
    float lr;
    float decay;
};

// A block's share of the work: BLOCK_ELEMS elements of one segment from `start`.
struct Blk {
    unsigned int seg;
    u64 start;
};

#define BLOCK_ELEMS 4096

// `scale` points at the clipping factor on the device (finish_norm's out[1], or one the
// host wrote); it is read there, so clipping needs no host round trip.
extern "C" __global__ void adamw_multi_f32(const Seg* segs, const Blk* blks, float* m, float* v,
                                           float beta1, float rest1, float beta2, float rest2,
                                           float inv_c1, float inv_c2, float eps,
                                           const double* scale) {
    const Blk b = blks[blockIdx.x];
    const Seg s = segs[b.seg];
    const u64 end = min(b.start + BLOCK_ELEMS, s.len);
    const float sc = scale ? (float)*scale : 1.0f;
    for (u64 i = b.start + threadIdx.x; i < end; i += blockDim.x) {
        float g = s.g[i];
        if (sc != 1.0f) g = g * sc;
        const u64 j = s.offset + i;
        const float mi = m[j] * beta1 + g * rest1;
        const float vi = v[j] * beta2 + (g * g) * rest2;
        m[j] = mi;
        v[j] = vi;
        const float step = (mi * inv_c1) / (sqrtf(vi * inv_c2) + eps);
        s.w[i] = s.w[i] * s.decay - step * s.lr;
    }
}

// Per block: the sum of squares of its elements in f64, reduced in a fixed tree.
extern "C" __global__ void sq_norm_multi_f32(const Seg* segs, const Blk* blks, double* partial) {
    __shared__ double acc[256];
    const Blk b = blks[blockIdx.x];
    const Seg s = segs[b.seg];
    const u64 end = min(b.start + BLOCK_ELEMS, s.len);
    double sum = 0.0;
    for (u64 i = b.start + threadIdx.x; i < end; i += blockDim.x) {
        const double x = (double)s.g[i];
        sum += x * x;
    }
    acc[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) acc[threadIdx.x] += acc[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = acc[0];
}

// One thread: the partials summed in order; out[0] = the squared norm, out[1] = the factor
// that clips the norm to max_norm (1 when max_norm <= 0 or the norm is below it).
extern "C" __global__ void finish_norm(const double* partial, unsigned int n, double max_norm,
                                       double* out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double sum = 0.0;
    for (unsigned int i = 0; i < n; ++i) sum += partial[i];
    const double norm = sqrt(sum);
    out[0] = sum;
    out[1] = (max_norm > 0.0 && norm > max_norm) ? max_norm / (norm + 1e-12) : 1.0;
}

// ---------------------------------------------------------------- block reductions

__device__ float block_sum(float x, float* shared) {
    shared[threadIdx.x] = x;
    __syncthreads();
    for (unsigned int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) shared[threadIdx.x] += shared[threadIdx.x + w];
        __syncthreads();
    }
    const float total = shared[0];
    __syncthreads();
    return total;
}

__device__ float block_max(float x, float* shared) {
    shared[threadIdx.x] = x;
    __syncthreads();
    for (unsigned int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + w]);
        __syncthreads();
    }
    const float total = shared[0];
    __syncthreads();
    return total;
}

// ---------------------------------------------------------------- residual + layer norm

// One block a row of width n (blockDim.x a power of two, at most 1024, with as many floats
// of shared memory): s = x + r, y = (s - mean) * rstd * w + b. With r null, s is x and
// s_out may be null; s_out keeps s for the backward when given.
extern "C" __global__ void add_layer_norm_fwd(const float* x, const float* r, const float* w,
                                              const float* b, float* s_out, float* y,
                                              unsigned int n, float eps) {
    extern __shared__ float shared[];
    const u64 row = blockIdx.x;
    const float* xr = x + row * n;
    const float* rr = r ? r + row * n : nullptr;
    float* sr = s_out ? s_out + row * n : nullptr;
    float local = 0.0f;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = rr ? xr[i] + rr[i] : xr[i];
        if (sr) sr[i] = v;
        local += v;
    }
    const float* src = sr ? sr : xr;
    const float mean = block_sum(local, shared) / (float)n;
    float dev = 0.0f;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        const float d = src[i] - mean;
        dev += d * d;
    }
    const float var = block_sum(dev, shared) / (float)n;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        y[row * n + i] = (src[i] - mean) * rstd * w[i] + b[i];
    }
}

// The input's gradient of a layer norm of s (the residual's is the same tensor), the row's
// mean and rstd recomputed as the forward computed them:
// dx = rstd * (dy·w - mean(dy·w) - xhat * mean(dy·w·xhat)). Also writes dy·xhat, whose
// column sums (col_sum_f32) are the weight's gradient; dy's are the bias's.
extern "C" __global__ void add_layer_norm_bwd(const float* dy, const float* s, const float* w,
                                              float* dx, float* dy_xhat, unsigned int n,
                                              float eps) {
    extern __shared__ float shared[];
    const u64 row = blockIdx.x;
    const float* sr = s + row * n;
    float local = 0.0f;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) local += sr[i];
    const float mu = block_sum(local, shared) / (float)n;
    float dev = 0.0f;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        const float d = sr[i] - mu;
        dev += d * d;
    }
    const float rs = 1.0f / sqrtf(block_sum(dev, shared) / (float)n + eps);
    float a = 0.0f, c = 0.0f;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        const float xhat = (sr[i] - mu) * rs;
        const float g = dy[row * n + i] * w[i];
        a += g;
        c += g * xhat;
        dy_xhat[row * n + i] = dy[row * n + i] * xhat;
    }
    const float mean_g = block_sum(a, shared) / (float)n;
    const float mean_gx = block_sum(c, shared) / (float)n;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        const float xhat = (sr[i] - mu) * rs;
        const float g = dy[row * n + i] * w[i];
        dx[row * n + i] = rs * (g - mean_g - xhat * mean_gx);
    }
}

// Column sums of a (rows, n) matrix, each column's rows added in order by one thread: the
// same bits on every run, whatever the launch.
extern "C" __global__ void col_sum_f32(const float* x, unsigned int rows, unsigned int n,
                                       float* out) {
    const unsigned int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= n) return;
    float sum = 0.0f;
    for (unsigned int r = 0; r < rows; ++r) sum += x[(u64)r * n + col];
    out[col] = sum;
}

// ---------------------------------------------------------------- bias + GELU

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

// y = gelu(x + b[col]) with the exact (erf) GELU; b may be null (no bias), and u = x + b
// is kept for the backward when u_out is given.
extern "C" __global__ void bias_gelu_fwd(const float* x, const float* b, float* u_out, float* y,
                                         u64 count, unsigned int n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    const float u = b ? x[i] + b[i % n] : x[i];
    if (u_out) u_out[i] = u;
    y[i] = 0.5f * u * (1.0f + erff(u * INV_SQRT2));
}

// du = dy * gelu'(u): the input's gradient; its column sums are the bias's.
extern "C" __global__ void bias_gelu_bwd(const float* dy, const float* u, float* du, u64 count) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    const float x = u[i];
    const float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2));
    const float pdf = INV_SQRT_2PI * expf(-0.5f * x * x);
    du[i] = dy[i] * (cdf + x * pdf);
}

// ---------------------------------------------------------------- masked softmax

// Rows of t scores, `rows_per_text` rows (heads × queries) to a text; a text's keys at or
// past lengths[text] get exactly zero weight. y = softmax(scale * x) over the real keys.
extern "C" __global__ void masked_softmax_fwd(const float* x, const unsigned int* lengths,
                                              unsigned int rows_per_text, unsigned int t,
                                              float scale, float* y) {
    extern __shared__ float shared[];
    const u64 row = blockIdx.x;
    const unsigned int len = lengths[row / rows_per_text];
    const float* xr = x + row * t;
    float* yr = y + row * t;
    float mx = -INFINITY;
    for (unsigned int i = threadIdx.x; i < len; i += blockDim.x) mx = fmaxf(mx, xr[i] * scale);
    mx = block_max(mx, shared);
    float sum = 0.0f;
    for (unsigned int i = threadIdx.x; i < len; i += blockDim.x) sum += expf(xr[i] * scale - mx);
    sum = block_sum(sum, shared);
    for (unsigned int i = threadIdx.x; i < t; i += blockDim.x) {
        yr[i] = i < len ? expf(xr[i] * scale - mx) / sum : 0.0f;
    }
}

// dx = scale * y * (dy - Σ dy·y), zero on the padded keys (where y is zero).
extern "C" __global__ void masked_softmax_bwd(const float* y, const float* dy, unsigned int t,
                                              float scale, float* dx) {
    extern __shared__ float shared[];
    const u64 row = blockIdx.x;
    float dot = 0.0f;
    for (unsigned int i = threadIdx.x; i < t; i += blockDim.x) dot += dy[row * t + i] * y[row * t + i];
    dot = block_sum(dot, shared);
    for (unsigned int i = threadIdx.x; i < t; i += blockDim.x) {
        dx[row * t + i] = scale * y[row * t + i] * (dy[row * t + i] - dot);
    }
}

// ---------------------------------------------------------------- exact top-k

#define TOPK_MAX 128
#define TOPK_THREADS 128

// Whether (ia, sa) ranks before (ib, sb): higher score first, then the lower row.
__device__ __forceinline__ bool before(float sa, unsigned int ia, float sb, unsigned int ib) {
    return sa > sb || (sa == sb && ia < ib);
}

// Whether `id` is in the sorted ex[lo .. hi).
__device__ bool excluded(const unsigned int* ex, unsigned int lo, unsigned int hi,
                         unsigned int id) {
    const unsigned int end = hi;
    while (lo < hi) {
        const unsigned int mid = lo + (hi - lo) / 2;
        if (ex[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < end && ex[lo] == id;
}

// One block a query: its best k (k <= TOPK_MAX) of the chunk's `cols` scores, rows
// numbered from `base`. Each thread keeps its strided share's best k, sorted, in local
// memory; the block then takes k rounds of the best head among the threads. A query's
// excluded rows (sorted, ex[ex_off[q] .. ex_off[q + 1]]) are never kept; nor is NaN.
// Unfilled places get row 0xffffffff and score -inf.
extern "C" __global__ void topk_rows_f32(const float* scores, unsigned int cols, unsigned int base,
                                         unsigned int k, const unsigned int* ex,
                                         const unsigned int* ex_off, unsigned int* out_idx,
                                         float* out_score) {
    __shared__ float head_s[TOPK_THREADS];
    __shared__ unsigned int head_i[TOPK_THREADS];
    __shared__ unsigned int head_t[TOPK_THREADS];
    const unsigned int q = blockIdx.x, tid = threadIdx.x;
    const float* row = scores + (u64)q * cols;
    const unsigned int lo = ex_off ? ex_off[q] : 0, hi = ex_off ? ex_off[q + 1] : 0;
    float ls[TOPK_MAX];
    unsigned int li[TOPK_MAX];
    unsigned int held = 0;
    for (unsigned int c = tid; c < cols; c += blockDim.x) {
        const float s = row[c];
        const unsigned int id = base + c;
        if (!(s == s)) continue;  // NaN
        if (held == k && !before(s, id, ls[k - 1], li[k - 1])) continue;
        if (hi > lo && excluded(ex, lo, hi, id)) continue;
        unsigned int p = held < k ? held++ : k - 1;
        while (p > 0 && before(s, id, ls[p - 1], li[p - 1])) {
            ls[p] = ls[p - 1];
            li[p] = li[p - 1];
            --p;
        }
        ls[p] = s;
        li[p] = id;
    }
    unsigned int next = 0;
    for (unsigned int r = 0; r < k; ++r) {
        head_s[tid] = next < held ? ls[next] : -INFINITY;
        head_i[tid] = next < held ? li[next] : 0xffffffffu;
        head_t[tid] = tid;
        __syncthreads();
        for (unsigned int w = blockDim.x / 2; w > 0; w >>= 1) {
            if (tid < w && before(head_s[tid + w], head_i[tid + w], head_s[tid], head_i[tid])) {
                head_s[tid] = head_s[tid + w];
                head_i[tid] = head_i[tid + w];
                head_t[tid] = head_t[tid + w];
            }
            __syncthreads();
        }
        if (tid == 0) {
            out_idx[(u64)q * k + r] = head_i[0];
            out_score[(u64)q * k + r] = head_s[0];
        }
        if (head_i[0] != 0xffffffffu && head_t[0] == tid) ++next;
        __syncthreads();
    }
}

// One thread a query: two sorted lists of k merged into the best k (the running result
// and a new chunk's).
extern "C" __global__ void topk_merge_f32(const unsigned int* a_idx, const float* a_s,
                                          const unsigned int* b_idx, const float* b_s,
                                          unsigned int queries, unsigned int k,
                                          unsigned int* out_idx, float* out_s) {
    const unsigned int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= queries) return;
    const u64 o = (u64)q * k;
    unsigned int i = 0, j = 0;
    for (unsigned int r = 0; r < k; ++r) {
        const bool take_a =
            j >= k || (i < k && before(a_s[o + i], a_idx[o + i], b_s[o + j], b_idx[o + j]));
        if (take_a) {
            out_idx[o + r] = a_idx[o + i];
            out_s[o + r] = a_s[o + i];
            ++i;
        } else {
            out_idx[o + r] = b_idx[o + j];
            out_s[o + r] = b_s[o + j];
            ++j;
        }
    }
}
