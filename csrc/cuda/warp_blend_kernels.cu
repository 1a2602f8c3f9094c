// CUDA kernels of fabnet::warp_blend, warp_blend_l1 and their backward. No torch headers: raw
// pointers and cudaStream_t, so `nvcc -c` checks this file on a machine without torch's CUDA build
// (tests/ops/test_cuda_compile.py does, with -Xptxas -v, and fails on register spills).
//
// One thread per output pixel (forward: VEC adjacent pixels of one row) and sample. Per pixel the
// thread computes each source's bilinear cell once and reuses it for a tile of up to kChunk
// channels (C = 3 is the common case: a standalone sampler would recompute the cell per channel
// and gain nothing; the gain is the fusion), keeps an online softmax over K (running max and
// denominator, so the logits are read once), and blends in float (double for double inputs).
//
// - warp_blend_l1 never writes the blend: each block reduces |target - blend| to one partial sum
//   (warp shuffles, then one value per warp through shared memory); a second small kernel sums a
//   sample's partials in a fixed order, so the loss does not depend on scheduling.
// - The forward loads flows, logits and target as 16-byte packs (4 floats, 2 doubles; 8 bytes for
//   4 halves) and stores the blend the same way when their rows are contiguous and aligned and
//   W is a multiple of the pack; otherwise one pixel per thread. The source taps are gathers and
//   are loaded one by one; the backward reads one pixel per thread (warp-coalesced, unpacked).
// - The backward recomputes the blend instead of reading a stored one, and a pixel whose upstream
//   gradient is zero in every channel (all pixels of a sample whose loss gradient is zero: the
//   curriculum back-propagates half of each batch) writes zeros and reads nothing else. Flow,
//   logit and target gradients are gather-only (a thread writes its own pixel); only the source
//   gradient scatters, with atomics into a float (double) buffer, and only when requested.
// - Offsets are int64 throughout: products of sizes pass 2^31 (256 x 3 x 3 x 1024 x 1024 sources).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../warp_blend_math.h"
#include "warp_blend_kernels.h"

#if defined(FABNET_CUDA_EMULATION)
// Tests compile this file with the host compiler and run every launch on CPU threads
// (tests/ops/cuda_emulation.h), so the kernels' logic is checked where no GPU is available.
#include "cuda_emulation.h"
#endif

namespace fabnet {
namespace cuda {
namespace {

// Every launch goes through here (the CPU emulation substitutes its own).
#if defined(FABNET_CUDA_EMULATION)
using ::fabnet_emulation::launch;
#else
template <typename... Params, typename... Values>
void launch(void (*kernel)(Params...), dim3 grid, int threads, cudaStream_t stream, const Values&... args) {
  kernel<<<grid, threads, 0, stream>>>(args...);
}
#endif

// 256 threads: 8 warps per block keep enough loads in flight to hide the gathers' latency.
constexpr int kThreads = 256;
// The forward asks ptxas for 2 resident blocks per SM (at most 128 registers per thread). Left
// free, ptxas spilled the float VEC=1 blend kernel at 48 registers (8-byte stack frame, 4-byte
// spill loads on sm_80, nvcc 13.0); with the bound no forward kernel spills and the packed
// float kernels use 104 (loss) / 103 (blend) registers on sm_80 instead of 122 / 116.
constexpr int kForwardMinBlocks = 2;
// The backward at 2 blocks of 256 threads per SM (at most 128 registers): without a minimum,
// ptxas chose 80 registers for the float64 backward on sm_90 and spilled 8 bytes.
constexpr int kBackwardMinBlocks = 2;
// Channels per register tile. C = 1, 3, 4 take one tile; larger C loops over tiles.
constexpr int kChunk = 4;
// gridDim.y limit; larger batches are launched in slices.
constexpr int64_t kMaxGridY = 65535;

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

template <typename acc_t, typename T>
__device__ __forceinline__ acc_t to_acc(T x) {
  return static_cast<acc_t>(x);
}
template <>
__device__ __forceinline__ float to_acc<float, __half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T, typename acc_t>
__device__ __forceinline__ T from_acc(acc_t x) {
  return static_cast<T>(x);
}
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float fast_exp(float x) { return __expf(x); }
__device__ __forceinline__ double fast_exp(double x) { return ::exp(x); }

// N adjacent elements as one aligned load / store (ld.global.v4 for 4 floats).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, typename acc_t, typename T>
__device__ __forceinline__ void load_pack(const T* p, acc_t (&out)[N]) {
  const Pack<T, N> x = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_acc<acc_t>(x.v[i]);
}

template <int N, typename T, typename acc_t>
__device__ __forceinline__ void store_pack(T* p, const acc_t (&in)[N]) {
  Pack<T, N> x;
#pragma unroll
  for (int i = 0; i < N; ++i) x.v[i] = from_acc<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = x;
}

// Typed view of a WarpBlendProblem, passed to the kernels by value (kernel parameter space).
template <typename T>
struct Args {
  using acc_t = typename AccOf<T>::type;
  const T* src;
  const T* flow;
  const T* logit;  // nullptr: equal weights
  const T* tgt;    // nullptr: blend
  int64_t ss[5], fs[5], ls[4], ts[4];
  int64_t K, C, Hs, Ws, H, W;
  Axis<acc_t> ax, ay;
  const acc_t* __restrict__ identity_x;  // (W,) F.affine_grid's identity (zeros without residual)
  const acc_t* __restrict__ identity_y;  // (H,)
  bool border, residual;
};

// The bilinear cell of one sampling point: top-left tap, fractions, d(pixel)/d(grid coordinate).
template <typename acc_t>
struct Cell {
  int64_t x0, y0;
  acc_t tx, ty, dx, dy;
};

// `poison`: NaN where grid_sample's result is NaN, else 0 (added to the cell's fraction, so the
// blend and the other coordinate's gradient are NaN there): with zeros padding a NaN or infinite
// coordinate (inf - inf is NaN), with border padding a NaN one (an infinite one clamps).
template <typename acc_t>
__device__ __forceinline__ acc_t source_coord(acc_t g, const Axis<acc_t>& a, bool border, acc_t* d,
                                              acc_t* poison) {
  acc_t coord = a.to_pixel(g);
  *d = a.scale;
  if (border) coord = clamp_with_grad(coord, a.size, d);  // passes NaN through
  // After the border clamp (which passes NaN through and maps +-inf to the edge), coord - coord
  // is that NaN for exactly the cases above, and 0 otherwise: no branch, no extra register.
  *poison = coord - coord;
  // Far-away and non-finite points sample nothing; bounding them keeps the int cast defined
  // (a NaN fails the first comparison and lands on -2, where every tap is outside).
  coord = coord > acc_t(-2) ? coord : acc_t(-2);
  coord = coord < acc_t(a.size + 1) ? coord : acc_t(a.size + 1);
  return coord;
}

template <typename T, typename acc_t>
__device__ __forceinline__ Cell<acc_t> make_cell(const Args<T>& a, acc_t gx, acc_t gy, int64_t h,
                                                 int64_t w) {
  if (a.residual) {  // F.affine_grid's identity grid, as affine_grid computed it (checks.h)
    gx += a.identity_x[w];
    gy += a.identity_y[h];
  }
  Cell<acc_t> c;
  acc_t poison_x, poison_y;
  const acc_t ix = source_coord(gx, a.ax, a.border, &c.dx, &poison_x);
  const acc_t iy = source_coord(gy, a.ay, a.border, &c.dy, &poison_y);
  const acc_t fx = floor(ix), fy = floor(iy);
  c.x0 = static_cast<int64_t>(fx);
  c.y0 = static_cast<int64_t>(fy);
  c.tx = ix - fx + poison_x;
  c.ty = iy - fy + poison_y;
  return c;
}

// The four taps nw, ne, sw, se of one channel plane; 0 outside the source (zeros padding).
template <typename T, typename acc_t>
__device__ __forceinline__ void gather(const T* __restrict__ plane, const Cell<acc_t>& c,
                                       int64_t sy, int64_t sx, int64_t Hs, int64_t Ws, acc_t (&v)[4]) {
  const bool x0in = c.x0 >= 0 && c.x0 < Ws, x1in = c.x0 + 1 >= 0 && c.x0 + 1 < Ws;
  const bool y0in = c.y0 >= 0 && c.y0 < Hs, y1in = c.y0 + 1 >= 0 && c.y0 + 1 < Hs;
  const T* p = plane + c.y0 * sy + c.x0 * sx;
  v[0] = (y0in && x0in) ? to_acc<acc_t>(p[0]) : acc_t(0);
  v[1] = (y0in && x1in) ? to_acc<acc_t>(p[sx]) : acc_t(0);
  v[2] = (y1in && x0in) ? to_acc<acc_t>(p[sy]) : acc_t(0);
  v[3] = (y1in && x1in) ? to_acc<acc_t>(p[sy + sx]) : acc_t(0);
}

template <typename acc_t>
__device__ __forceinline__ acc_t bilinear(const Cell<acc_t>& c, const acc_t (&v)[4]) {
  const acc_t ux = acc_t(1) - c.tx, uy = acc_t(1) - c.ty;
  return uy * (ux * v[0] + c.tx * v[1]) + c.ty * (ux * v[2] + c.tx * v[3]);
}

// Sum over the block, valid in thread 0. Called by every thread of the block.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v) {
  __shared__ acc_t warp_sums[kThreads / 32];
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = (threadIdx.x < kThreads / 32) ? warp_sums[threadIdx.x] : acc_t(0);
  if (warp == 0) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Forward. Each thread: VEC adjacent pixels of one row (VEC divides W), all channels.
// LOSS: partials[b * gridDim.x + blockIdx.x] = sum of |target - blend| over the block's pixels;
// else out (B, C, H, W) contiguous = blend.
template <typename T, int VEC, bool LOSS>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocks)
    warp_blend_forward_cuda_kernel(const Args<T> a, int64_t b0, T* __restrict__ out,
                                   typename AccOf<T>::type* __restrict__ partials) {
  using acc_t = typename AccOf<T>::type;
  const int64_t b = b0 + blockIdx.y;
  const int64_t hw = a.H * a.W;
  const int64_t p0 = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * VEC;
  acc_t loss = acc_t(0);
  if (p0 < hw) {
    const int64_t h = p0 / a.W, w0 = p0 - h * a.W;
    for (int64_t c0 = 0; c0 < a.C; c0 += kChunk) {
      const int64_t nc = a.C - c0 < kChunk ? a.C - c0 : kChunk;
      acc_t acc[kChunk][VEC], run_max[VEC], denom[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        run_max[i] = -INFINITY;
        denom[i] = acc_t(0);
#pragma unroll
        for (int j = 0; j < kChunk; ++j) acc[j][i] = acc_t(0);
      }
      for (int64_t k = 0; k < a.K; ++k) {
        const T* fk = a.flow + b * a.fs[0] + k * a.fs[1] + h * a.fs[3] + w0 * a.fs[4];
        acc_t fx[VEC], fy[VEC], e[VEC], alpha[VEC];
        load_pack<VEC>(fk, fx);
        load_pack<VEC>(fk + a.fs[2], fy);
        if (a.logit != nullptr) {
          acc_t l[VEC];
          load_pack<VEC>(a.logit + b * a.ls[0] + k * a.ls[1] + h * a.ls[2] + w0 * a.ls[3], l);
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const acc_t m = l[i] > run_max[i] ? l[i] : run_max[i];
            alpha[i] = fast_exp(run_max[i] - m);  // 0 for the first source (run_max = -inf)
            e[i] = fast_exp(l[i] - m);
            run_max[i] = m;
          }
        } else {
#pragma unroll
          for (int i = 0; i < VEC; ++i) alpha[i] = e[i] = acc_t(1);
        }
        const T* plane = a.src + b * a.ss[0] + k * a.ss[1] + c0 * a.ss[2];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const Cell<acc_t> cell = make_cell(a, fx[i], fy[i], h, w0 + i);
#pragma unroll
          for (int j = 0; j < kChunk; ++j) {
            if (j < nc) {
              acc_t v[4];
              gather(plane + j * a.ss[2], cell, a.ss[3], a.ss[4], a.Hs, a.Ws, v);
              acc[j][i] = acc[j][i] * alpha[i] + e[i] * bilinear(cell, v);
            }
          }
          denom[i] = denom[i] * alpha[i] + e[i];
        }
      }
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        if (j < nc) {
          acc_t blend[VEC];
#pragma unroll
          for (int i = 0; i < VEC; ++i) blend[i] = acc[j][i] / denom[i];
          if (LOSS) {
            acc_t t[VEC];
            load_pack<VEC>(a.tgt + b * a.ts[0] + (c0 + j) * a.ts[1] + h * a.ts[2] + w0 * a.ts[3], t);
#pragma unroll
            for (int i = 0; i < VEC; ++i) loss += fabs(t[i] - blend[i]);
          } else {
            store_pack<VEC>(out + (b * a.C + c0 + j) * hw + p0, blend);
          }
        }
      }
    }
  }
  if (LOSS) {
    const acc_t total = block_sum(loss);
    if (threadIdx.x == 0) partials[b * gridDim.x + blockIdx.x] = total;
  }
}

// loss[b] = sum(partials[b, :n]) / count, one block per sample, fixed summation order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    warp_blend_l1_finalize_cuda_kernel(const typename AccOf<T>::type* __restrict__ partials,
                                       int64_t n, double count, int64_t b0, T* __restrict__ loss) {
  using acc_t = typename AccOf<T>::type;
  const int64_t b = b0 + blockIdx.x;
  acc_t s = acc_t(0);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += partials[b * n + i];
  s = block_sum(s);
  if (threadIdx.x == 0) loss[b] = from_acc<T>(static_cast<acc_t>(static_cast<double>(s) / count));
}

template <typename T>
struct GradArgs {
  using acc_t = typename AccOf<T>::type;
  const T* grad;
  int64_t gs[4];
  acc_t* src;  // accumulation buffer or nullptr
  T* flow;
  T* logit;
  T* tgt;
  double count;  // C H W: the loss is a mean
};

// Writes (or, for channel tiles after the first, adds to) a thread-owned gradient element.
template <typename T, typename acc_t>
__device__ __forceinline__ void put(T* p, acc_t v, bool first) {
  *p = from_acc<T>(first ? v : to_acc<acc_t>(*p) + v);
}

// Backward, one thread per pixel. Channels are processed in tiles of kChunk; every gradient is a
// sum over channels, so tiles after the first add to the thread's own outputs.
template <typename T, bool LOSS>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocks)
    warp_blend_backward_cuda_kernel(const Args<T> a, const GradArgs<T> g, int64_t b0) {
  using acc_t = typename AccOf<T>::type;
  const int64_t b = b0 + blockIdx.y;
  const int64_t hw = a.H * a.W;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (p >= hw) return;
  const int64_t h = p / a.W, w = p - h * a.W;
  const bool has_logits = a.logit != nullptr;
  const bool need_logit = g.logit != nullptr && has_logits;

  acc_t scale = acc_t(0);
  bool active;
  if (LOSS) {
    scale = static_cast<acc_t>(static_cast<double>(to_acc<acc_t>(g.grad[b * g.gs[0]])) / g.count);
    active = scale != acc_t(0);
  } else {
    active = false;  // NaN != 0: a NaN upstream still propagates
    for (int64_t c = 0; c < a.C; ++c)
      active |= to_acc<acc_t>(g.grad[b * g.gs[0] + c * g.gs[1] + h * g.gs[2] + w * g.gs[3]]) != acc_t(0);
  }
  if (!active) {  // nothing flows back through this pixel: zeros, and no source access at all
    for (int64_t k = 0; k < a.K; ++k) {
      if (g.flow != nullptr) {
        g.flow[((b * a.K + k) * 2) * hw + p] = from_acc<T>(acc_t(0));
        g.flow[((b * a.K + k) * 2 + 1) * hw + p] = from_acc<T>(acc_t(0));
      }
      if (need_logit) g.logit[(b * a.K + k) * hw + p] = from_acc<T>(acc_t(0));
    }
    if (LOSS && g.tgt != nullptr)
      for (int64_t c = 0; c < a.C; ++c) g.tgt[(b * a.C + c) * hw + p] = from_acc<T>(acc_t(0));
    return;
  }

  // Softmax statistics from the logits alone, so both passes below use final weights.
  acc_t run_max = acc_t(0), denom = acc_t(1);
  if (has_logits) {
    run_max = -INFINITY;
    denom = acc_t(0);
    for (int64_t k = 0; k < a.K; ++k) {
      const acc_t l = to_acc<acc_t>(a.logit[b * a.ls[0] + k * a.ls[1] + h * a.ls[2] + w * a.ls[3]]);
      const acc_t m = l > run_max ? l : run_max;
      denom = denom * fast_exp(run_max - m) + fast_exp(l - m);
      run_max = m;
    }
  }
  const acc_t inv_k = acc_t(1) / acc_t(a.K);
  auto weight = [&](int64_t k) -> acc_t {
    if (!has_logits) return inv_k;
    const acc_t l = to_acc<acc_t>(a.logit[b * a.ls[0] + k * a.ls[1] + h * a.ls[2] + w * a.ls[3]]);
    return fast_exp(l - run_max) / denom;
  };
  auto cell_of = [&](int64_t k) -> Cell<acc_t> {
    const T* fk = a.flow + b * a.fs[0] + k * a.fs[1] + h * a.fs[3] + w * a.fs[4];
    return make_cell(a, to_acc<acc_t>(fk[0]), to_acc<acc_t>(fk[a.fs[2]]), h, w);
  };

  for (int64_t c0 = 0; c0 < a.C; c0 += kChunk) {
    const int64_t nc = a.C - c0 < kChunk ? a.C - c0 : kChunk;
    const bool first = c0 == 0;
    acc_t blend[kChunk], u[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j) blend[j] = u[j] = acc_t(0);
    if (LOSS || need_logit) {  // pass 1: the blend (the L1 sign and the softmax Jacobian need it)
      for (int64_t k = 0; k < a.K; ++k) {
        const acc_t wk = weight(k);
        const Cell<acc_t> cell = cell_of(k);
        const T* plane = a.src + b * a.ss[0] + k * a.ss[1] + c0 * a.ss[2];
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (j < nc) {
            acc_t v[4];
            gather(plane + j * a.ss[2], cell, a.ss[3], a.ss[4], a.Hs, a.Ws, v);
            blend[j] += wk * bilinear(cell, v);
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      if (j < nc) {
        const int64_t c = c0 + j;
        if (LOSS) {
          const acc_t t = to_acc<acc_t>(a.tgt[b * a.ts[0] + c * a.ts[1] + h * a.ts[2] + w * a.ts[3]]);
          const acc_t diff = blend[j] - t;
          u[j] = diff > acc_t(0) ? scale : (diff < acc_t(0) ? -scale : acc_t(0));
          if (g.tgt != nullptr) g.tgt[(b * a.C + c) * hw + p] = from_acc<T>(-u[j]);
        } else {
          u[j] = to_acc<acc_t>(g.grad[b * g.gs[0] + c * g.gs[1] + h * g.gs[2] + w * g.gs[3]]);
        }
      }
    }
    // sum_k w_k dL/dw_k = sum_c u_c blend_c: the shared term of the softmax Jacobian.
    acc_t weighted = acc_t(0);
#pragma unroll
    for (int j = 0; j < kChunk; ++j) weighted += u[j] * blend[j];

    if (g.flow == nullptr && !need_logit && g.src == nullptr) continue;
    for (int64_t k = 0; k < a.K; ++k) {  // pass 2: per source, values and derivatives
      const acc_t wk = weight(k);
      const Cell<acc_t> cell = cell_of(k);
      const T* plane = a.src + b * a.ss[0] + k * a.ss[1] + c0 * a.ss[2];
      if (g.flow != nullptr || need_logit) {
        acc_t dw = acc_t(0), gx = acc_t(0), gy = acc_t(0);
        const acc_t ux = acc_t(1) - cell.tx, uy = acc_t(1) - cell.ty;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (j < nc) {
            acc_t v[4];
            gather(plane + j * a.ss[2], cell, a.ss[3], a.ss[4], a.Hs, a.Ws, v);
            dw += u[j] * bilinear(cell, v);
            gx += u[j] * (uy * (v[1] - v[0]) + cell.ty * (v[3] - v[2]));
            gy += u[j] * (ux * (v[2] - v[0]) + cell.tx * (v[3] - v[1]));
          }
        }
        if (need_logit) put(g.logit + (b * a.K + k) * hw + p, wk * (dw - weighted), first);
        if (g.flow != nullptr) {
          put(g.flow + ((b * a.K + k) * 2) * hw + p, wk * gx * cell.dx, first);
          put(g.flow + ((b * a.K + k) * 2 + 1) * hw + p, wk * gy * cell.dy, first);
        }
      }
      if (g.src != nullptr) {  // scatter: several pixels may share a tap, hence atomics
        const bool x0in = cell.x0 >= 0 && cell.x0 < a.Ws, x1in = cell.x0 + 1 >= 0 && cell.x0 + 1 < a.Ws;
        const bool y0in = cell.y0 >= 0 && cell.y0 < a.Hs, y1in = cell.y0 + 1 >= 0 && cell.y0 + 1 < a.Hs;
        const acc_t ux = acc_t(1) - cell.tx, uy = acc_t(1) - cell.ty;
        const int64_t plane_size = a.Hs * a.Ws;
        acc_t* gplane = g.src + ((b * a.K + k) * a.C + c0) * plane_size + cell.y0 * a.Ws + cell.x0;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (j < nc && u[j] != acc_t(0)) {
            const acc_t gw = wk * u[j];
            acc_t* q = gplane + j * plane_size;
            if (y0in && x0in) atomicAdd(q, gw * ux * uy);
            if (y0in && x1in) atomicAdd(q + 1, gw * cell.tx * uy);
            if (y1in && x0in) atomicAdd(q + a.Ws, gw * ux * cell.ty);
            if (y1in && x1in) atomicAdd(q + a.Ws + 1, gw * cell.tx * cell.ty);
          }
        }
      }
    }
  }
}

template <typename T>
Args<T> make_args(const WarpBlendProblem& p) {
  using acc_t = typename AccOf<T>::type;
  Args<T> a;
  a.src = static_cast<const T*>(p.sources);
  a.flow = static_cast<const T*>(p.flows);
  a.logit = static_cast<const T*>(p.logits);
  a.tgt = static_cast<const T*>(p.target);
  for (int i = 0; i < 5; ++i) a.ss[i] = p.sources_stride[i];
  for (int i = 0; i < 5; ++i) a.fs[i] = p.flows_stride[i];
  for (int i = 0; i < 4; ++i) a.ls[i] = p.logits != nullptr ? p.logits_stride[i] : 0;
  for (int i = 0; i < 4; ++i) a.ts[i] = p.target != nullptr ? p.target_stride[i] : 0;
  a.K = p.K;
  a.C = p.C;
  a.Hs = p.Hs;
  a.Ws = p.Ws;
  a.H = p.H;
  a.W = p.W;
  a.ax = Axis<acc_t>::make(p.Ws, p.W, p.align_corners);
  a.ay = Axis<acc_t>::make(p.Hs, p.H, p.align_corners);
  a.border = p.border;
  a.residual = p.residual;
  a.identity_x = static_cast<const acc_t*>(p.identity_x);
  a.identity_y = static_cast<const acc_t*>(p.identity_y);
  return a;
}

bool aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(bytes) == 0;
}

// Whether rows of a (.., W) operand can be read VEC elements at a time: unit stride along W,
// every other stride and the base pointer aligned to the pack.
bool packable(const void* ptr, const int64_t* stride, int n, int vec, int64_t elem) {
  if (ptr == nullptr) return true;
  if (stride[n - 1] != 1 || !aligned(ptr, vec * elem)) return false;
  for (int i = 0; i < n - 1; ++i)
    if (stride[i] % vec != 0) return false;
  return true;
}

// The widest pack (16 bytes, at most 4 elements) the layout allows, else 1.
template <typename T>
int pack_width(const WarpBlendProblem& p, const void* out) {
  constexpr int vec = 16 / sizeof(T) < 4 ? 16 / sizeof(T) : 4;
  const int64_t elem = sizeof(T);
  const bool ok = p.W % vec == 0 && packable(p.flows, p.flows_stride, 5, vec, elem) &&
                  packable(p.logits, p.logits_stride, 4, vec, elem) &&
                  packable(p.target, p.target_stride, 4, vec, elem) &&
                  (out == nullptr || aligned(out, vec * elem));
  return ok ? vec : 1;
}

template <typename T, int VEC, bool LOSS>
void launch_forward(const WarpBlendProblem& p, void* out, void* partials, cudaStream_t stream) {
  using acc_t = typename AccOf<T>::type;
  const Args<T> a = make_args<T>(p);
  const int64_t per_block = int64_t(kThreads) * VEC;
  const unsigned blocks = static_cast<unsigned>((p.H * p.W + per_block - 1) / per_block);
  for (int64_t b0 = 0; b0 < p.B; b0 += kMaxGridY) {
    const unsigned nb = static_cast<unsigned>(p.B - b0 < kMaxGridY ? p.B - b0 : kMaxGridY);
    launch(warp_blend_forward_cuda_kernel<T, VEC, LOSS>, dim3(blocks, nb), kThreads, stream, a, b0,
           static_cast<T*>(out), static_cast<acc_t*>(partials));
  }
}

template <typename T, bool LOSS>
void forward_typed(const WarpBlendProblem& p, void* out, void* partials, cudaStream_t stream) {
  constexpr int vec = 16 / sizeof(T) < 4 ? 16 / sizeof(T) : 4;
  if (pack_width<T>(p, LOSS ? nullptr : out) == vec)
    launch_forward<T, vec, LOSS>(p, out, partials, stream);
  else
    launch_forward<T, 1, LOSS>(p, out, partials, stream);
}

template <typename Fn>
void dispatch(DType dtype, const Fn& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); break;
    case DType::kFloat64: fn(double{}); break;
    case DType::kFloat16: fn(__half{}); break;
    case DType::kBFloat16: fn(__nv_bfloat16{}); break;
  }
}

// Partial sums per sample: one per block of the vectorised or scalar launch (same formula as
// launch_forward, evaluated before the launch so the caller can allocate).
template <typename T>
int64_t num_partials_typed(const WarpBlendProblem& p) {
  const int64_t per_block = int64_t(kThreads) * pack_width<T>(p, nullptr);
  return (p.H * p.W + per_block - 1) / per_block;
}

}  // namespace

void warp_blend_forward_cuda(const WarpBlendProblem& p, void* out, cudaStream_t stream) {
  if (p.B == 0 || p.C == 0 || p.H * p.W == 0) return;
  dispatch(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_typed<T, false>(p, out, nullptr, stream);
  });
}

int64_t warp_blend_l1_num_partials(const WarpBlendProblem& p) {
  int64_t n = 0;
  dispatch(p.dtype, [&](auto tag) { n = num_partials_typed<decltype(tag)>(p); });
  return n;
}

void warp_blend_l1_partials_cuda(const WarpBlendProblem& p, void* partials, cudaStream_t stream) {
  if (p.B == 0 || p.C == 0 || p.H * p.W == 0) return;
  dispatch(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_typed<T, true>(p, nullptr, partials, stream);
  });
}

void warp_blend_l1_finalize_cuda(const WarpBlendProblem& p, const void* partials, void* loss,
                                 cudaStream_t stream) {
  if (p.B == 0) return;
  const int64_t n = warp_blend_l1_num_partials(p);
  const double count = static_cast<double>(p.C * p.H * p.W);
  dispatch(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename AccOf<T>::type;
    // One block per sample; batches past the grid limit are launched in slices.
    for (int64_t b0 = 0; b0 < p.B; b0 += 2147483647LL) {
      const unsigned nb = static_cast<unsigned>(p.B - b0 < 2147483647LL ? p.B - b0 : 2147483647LL);
      launch(warp_blend_l1_finalize_cuda_kernel<T>, dim3(nb), kThreads, stream,
             static_cast<const acc_t*>(partials), n, count, b0, static_cast<T*>(loss));
    }
  });
}

void warp_blend_backward_cuda(const WarpBlendProblem& p, const WarpBlendGrads& g, cudaStream_t stream) {
  if (p.B == 0 || p.C == 0 || p.H * p.W == 0) return;
  dispatch(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename AccOf<T>::type;
    const Args<T> a = make_args<T>(p);
    GradArgs<T> ga;
    ga.grad = static_cast<const T*>(g.grad);
    for (int i = 0; i < 4; ++i) ga.gs[i] = g.grad_stride[i];
    ga.src = static_cast<acc_t*>(g.sources);
    ga.flow = static_cast<T*>(g.flows);
    ga.logit = static_cast<T*>(g.logits);
    ga.tgt = static_cast<T*>(g.target);
    ga.count = static_cast<double>(p.C * p.H * p.W);
    const unsigned blocks = static_cast<unsigned>((p.H * p.W + kThreads - 1) / kThreads);
    for (int64_t b0 = 0; b0 < p.B; b0 += kMaxGridY) {
      const unsigned nb = static_cast<unsigned>(p.B - b0 < kMaxGridY ? p.B - b0 : kMaxGridY);
      if (p.target != nullptr)
        launch(warp_blend_backward_cuda_kernel<T, true>, dim3(blocks, nb), kThreads, stream, a, ga, b0);
      else
        launch(warp_blend_backward_cuda_kernel<T, false>, dim3(blocks, nb), kThreads, stream, a, ga, b0);
    }
  });
}

}  // namespace cuda
}  // namespace fabnet
