// Device functions and constants shared by the forward (forward.cu) and backward (backward.cu)
// kernels: storage <-> accumulation conversions, packed loads and stores, the typed view of a
// problem, the bilinear cell and its taps, the block reduction. No torch headers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "../warp_blend_math.h"
#include "warp_blend_kernels.h"

#if defined(FABNET_CUDA_EMULATION)
// Tests compile the kernels with the host compiler and run every launch on CPU threads
// (tests/ops/cuda_emulation.h), so their logic is checked where no GPU is available.
#include "cuda_emulation.h"
#endif

namespace fabnet {
namespace cuda {
namespace detail {

// 256 threads: 8 warps per block keep enough loads in flight to hide the gathers' latency.
constexpr int kThreads = 256;
// Blocks of 256 threads the fp32 / half kernels with 32-bit indices are built to keep resident
// per SM: 4 blocks = 32 of 64 warps (50 % occupancy), which caps them at 64 registers a thread.
// Float64 and 64-bit-index kernels (rare: tensors of 2^31 elements or more) keep 2 blocks.
constexpr int kResidentBlocks = 4;
// Channels per register tile. C = 1, 3, 4 take one tile; larger C loops over tiles.
constexpr int kChunk = 4;
// gridDim.y limit; larger batches are launched in slices.
constexpr int64_t kMaxGridY = 65535;

template <typename T, typename I>
constexpr int min_blocks() {
  return (sizeof(T) <= 4 && sizeof(I) == 4) ? kResidentBlocks : 2;
}

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

// A read of memory no thread of the launch writes, through the read-only data cache
// (LDG.E.CONSTANT): the backward writes gradients, so the compiler cannot prove it by itself.
template <typename T>
__device__ __forceinline__ T ldg(const T* p) {
  return __ldg(p);
}

// N adjacent elements as one aligned load / store (ld.global.v4 for 4 floats).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// The unsigned integer word of a pack's size. A pack is stored as one such word with __stwb (an
// st.global.wb.v4 the compiler cannot split): nvcc 13.0 split a plain store of the Pack struct
// into N scalar stores (4x STG.E for 4 floats, no STG.E.128, cuobjdump on sm_80 and sm_90), and
// a plain store of a uint4 too in the 64-bit-index kernels, where it lost the pointer's alignment.
template <int Bytes>
struct WordOf;
template <>
struct WordOf<16> {
  using type = uint4;
};
template <>
struct WordOf<8> {
  using type = uint2;
};
template <>
struct WordOf<4> {
  using type = unsigned int;
};
template <>
struct WordOf<2> {
  using type = unsigned short;
};

// Loads go through the read-only cache as whole words (__ldg has overloads for uint4 / uint2 /
// unsigned / unsigned short, not for a Pack struct).
template <int N, typename acc_t, typename T>
__device__ __forceinline__ void load_pack(const T* p, acc_t (&out)[N]) {
  constexpr int kBytes = sizeof(T) * N, kWordBytes = kBytes < 16 ? kBytes : 16;
  using Word = typename WordOf<kWordBytes>::type;
  Pack<T, N> x;
#pragma unroll
  for (int i = 0; i < kBytes / kWordBytes; ++i) {
    const Word word = ldg(reinterpret_cast<const Word*>(p) + i);
    memcpy(reinterpret_cast<char*>(&x) + i * kWordBytes, &word, sizeof(Word));
  }
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_acc<acc_t>(x.v[i]);
}

template <int N, typename T, typename acc_t>
__device__ __forceinline__ void store_pack(T* p, const acc_t (&in)[N]) {
  // At most 16 bytes per store instruction: 4 doubles are two STG.E.128.
  constexpr int kBytes = sizeof(T) * N, kWordBytes = kBytes < 16 ? kBytes : 16;
  using Word = typename WordOf<kWordBytes>::type;
  Pack<T, N> x;
#pragma unroll
  for (int i = 0; i < N; ++i) x.v[i] = from_acc<T>(in[i]);
#pragma unroll
  for (int i = 0; i < kBytes / kWordBytes; ++i) {
    Word word;
    memcpy(&word, reinterpret_cast<const char*>(&x) + i * kWordBytes, sizeof(Word));
    __stwb(reinterpret_cast<Word*>(p) + i, word);
  }
}

// Unsigned division by a fixed divisor as a multiply-high and a shift (Granlund and Montgomery,
// 1994): integer division has no instruction, and the 32-bit routine nvcc emits is ~20
// instructions (the 64-bit one ~70). Exact for n, d < 2^31.
struct FastDiv {
  uint32_t d, magic, shift;
  static FastDiv make(uint32_t divisor) {
    FastDiv f;
    f.d = divisor;
    f.shift = 0;
    while ((uint64_t(1) << f.shift) < divisor) ++f.shift;
    f.magic = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << f.shift) - divisor)) / divisor + 1);
    return f;
  }
  FABNET_HD uint32_t div(uint32_t n) const {
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * magic) >> 32);
    return (hi + n) >> shift;
  }
};

// Typed view of a WarpBlendProblem, passed to the kernels by value (kernel parameter space).
// I: the index type, int32_t when every tensor's offsets fit (launch.cuh decides), else int64_t.
template <typename T, typename I>
struct Args {
  using acc_t = typename AccOf<T>::type;
  const T* src;
  const T* flow;
  const T* logit;  // nullptr: equal weights
  const T* tgt;    // nullptr: blend
  I ss[5], fs[5], ls[4], ts[4];
  I K, C, Hs, Ws, H, W;
  FastDiv by_w;  // p / W for the 32-bit path
  Axis<acc_t> ax, ay;
  const acc_t* identity_x;  // (W,) F.affine_grid's identity (zeros without residual)
  const acc_t* identity_y;  // (H,)
  bool border, residual;

  // Row and column of flat pixel p of an (H, W) plane.
  __device__ __forceinline__ void row_col(I p, I* h, I* w) const {
    if (sizeof(I) == 4) {
      *h = static_cast<I>(by_w.div(static_cast<uint32_t>(p)));
    } else {
      *h = p / W;
    }
    *w = p - *h * W;
  }
};

// The bilinear cell of one sampling point: top-left tap, fractions, d(pixel)/d(grid coordinate).
template <typename acc_t, typename I>
struct Cell {
  I x0, y0;
  acc_t tx, ty, dx, dy;
};

template <typename T, typename I, typename acc_t>
__device__ __forceinline__ Cell<acc_t, I> make_cell(const Args<T, I>& a, acc_t gx, acc_t gy, I h, I w) {
  if (a.residual) {  // F.affine_grid's identity grid, as affine_grid computed it (checks.h)
    gx += ldg(a.identity_x + w);
    gy += ldg(a.identity_y + h);
  }
  Cell<acc_t, I> c;
  const SourceCoord<acc_t> x = source_coord(gx, a.ax, a.border);
  const SourceCoord<acc_t> y = source_coord(gy, a.ay, a.border);
  const acc_t fx = floor(x.pixel), fy = floor(y.pixel);
  c.x0 = static_cast<I>(fx);
  c.y0 = static_cast<I>(fy);
  c.tx = x.pixel - fx + x.poison;
  c.ty = y.pixel - fy + y.poison;
  c.dx = x.d;
  c.dy = y.d;
  return c;
}

// Which of the cell's four taps lie inside the source (zeros padding reads 0 outside).
template <typename I>
struct TapMask {
  bool x0, x1, y0, y1;
  template <typename acc_t>
  __device__ __forceinline__ TapMask(const Cell<acc_t, I>& c, I Hs, I Ws)
      : x0(c.x0 >= 0 && c.x0 < Ws), x1(c.x0 + 1 >= 0 && c.x0 + 1 < Ws), y0(c.y0 >= 0 && c.y0 < Hs),
        y1(c.y0 + 1 >= 0 && c.y0 + 1 < Hs) {}
};

// The four taps nw, ne, sw, se of one channel plane; 0 outside the source (zeros padding).
template <typename T, typename acc_t, typename I>
__device__ __forceinline__ void gather(const T* plane, const Cell<acc_t, I>& c, const TapMask<I>& in, I sy, I sx,
                                       acc_t (&v)[4]) {
  const T* p = plane + c.y0 * sy + c.x0 * sx;
  v[0] = (in.y0 && in.x0) ? to_acc<acc_t>(ldg(p)) : acc_t(0);
  v[1] = (in.y0 && in.x1) ? to_acc<acc_t>(ldg(p + sx)) : acc_t(0);
  v[2] = (in.y1 && in.x0) ? to_acc<acc_t>(ldg(p + sy)) : acc_t(0);
  v[3] = (in.y1 && in.x1) ? to_acc<acc_t>(ldg(p + sy + sx)) : acc_t(0);
}

template <typename acc_t, typename I>
__device__ __forceinline__ acc_t bilinear(const Cell<acc_t, I>& c, const acc_t (&v)[4]) {
  const BilinearWeights<acc_t> w(c.tx, c.ty);
  return w.nw * v[0] + w.ne * v[1] + w.sw * v[2] + w.se * v[3];
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

}  // namespace detail
}  // namespace cuda
}  // namespace fabnet
