// Forward kernels of fabnet::warp_blend and warp_blend_l1, and their launchers. No torch headers:
// `nvcc -c` checks this file on a machine without torch's CUDA build (tests/ops/test_cuda_compile.py
// reads its machine code).
//
// One thread per VEC adjacent pixels of one row (VEC = 4, or 2 doubles, when the rows are aligned
// and the grid still fills the GPU; else 1) and one sample. Per pixel the thread computes each
// source's bilinear cell once and reuses it for a tile of up to kChunk channels (C = 3 is the
// common case: a standalone sampler would recompute the cell per channel and gain nothing; the
// gain is the fusion), keeps an online softmax over K (running max and denominator, so the logits
// are read once), and blends in float (double for double inputs).
//
// - warp_blend_l1 never writes the blend: each block reduces |target - blend| to one partial sum
//   (warp shuffles, then one value per warp through shared memory); a second small kernel sums a
//   sample's partials in a fixed order, so the loss does not depend on scheduling.
// - Flows, logits and target are read as 16-byte packs (8 bytes for 4 halves) and the blend is
//   stored the same way (STG.E.128 for fp32). The source taps are gathers, loaded one by one.
// - Offsets are int32 when every tensor's fit (launch.cuh), int64 otherwise: products of sizes
//   pass 2^31 at (256, 3, 3, 1024, 1024) sources.
#include "launch.cuh"

namespace fabnet {
namespace cuda {
namespace {

using namespace detail;

// Forward. Each thread: VEC adjacent pixels of one row (VEC divides W), all channels.
// LOSS: partials[b * gridDim.x + blockIdx.x] = sum of |target - blend| over the block's pixels;
// else out (B, C, H, W) contiguous = blend.
template <typename T, int VEC, bool LOSS, typename I>
__global__ void __launch_bounds__(kThreads, (min_blocks<T, I>()))
    warp_blend_forward_cuda_kernel(const Args<T, I> a, I b0, T* __restrict__ out,
                                   typename AccOf<T>::type* __restrict__ partials) {
  using acc_t = typename AccOf<T>::type;
  const I b = b0 + static_cast<I>(blockIdx.y);
  const I hw = a.H * a.W;
  const I p0 = (static_cast<I>(blockIdx.x) * kThreads + static_cast<I>(threadIdx.x)) * VEC;
  // Packed threads hold VEC x CHUNK accumulators; tiles of 3 channels (RGB, one tile) rather than 4
  // keep the half-type loss kernel within 64 registers on sm_80 (with 4 it spilled 24 bytes).
  constexpr int CHUNK = VEC > 1 ? 3 : kChunk;
  acc_t loss = acc_t(0);
  if (p0 < hw) {
    I h, w0;
    a.row_col(p0, &h, &w0);
    for (I c0 = 0; c0 < a.C; c0 += CHUNK) {
      const I nc = a.C - c0 < CHUNK ? a.C - c0 : CHUNK;
      acc_t acc[CHUNK][VEC], run_max[VEC], denom[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        run_max[i] = -INFINITY;
        denom[i] = acc_t(0);
#pragma unroll
        for (int j = 0; j < CHUNK; ++j) acc[j][i] = acc_t(0);
      }
      for (I k = 0; k < a.K; ++k) {
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
          const Cell<acc_t, I> cell = make_cell(a, fx[i], fy[i], h, w0 + i);
          const TapMask<I> in(cell, a.Hs, a.Ws);
#pragma unroll
          for (int j = 0; j < CHUNK; ++j) {
            if (j < nc) {
              acc_t v[4];
              gather(plane + j * a.ss[2], cell, in, a.ss[3], a.ss[4], v);
              acc[j][i] = acc[j][i] * alpha[i] + e[i] * bilinear(cell, v);
            }
          }
          denom[i] = denom[i] * alpha[i] + e[i];
        }
      }
#pragma unroll
      for (int j = 0; j < CHUNK; ++j) {
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
    if (threadIdx.x == 0) partials[b * static_cast<I>(gridDim.x) + static_cast<I>(blockIdx.x)] = total;
  }
}

// loss[b] = sum(partials[b, :n]) / count, one block per sample, fixed summation order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    warp_blend_l1_finalize_cuda_kernel(const typename AccOf<T>::type* __restrict__ partials, int64_t n,
                                       double count, int64_t b0, T* __restrict__ loss) {
  using acc_t = typename AccOf<T>::type;
  const int64_t b = b0 + blockIdx.x;
  acc_t s = acc_t(0);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += partials[b * n + i];
  s = block_sum(s);
  if (threadIdx.x == 0) loss[b] = from_acc<T>(static_cast<acc_t>(static_cast<double>(s) / count));
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

template <typename T>
constexpr int kPack = 16 / sizeof(T) < 4 ? 16 / sizeof(T) : 4;

int64_t blocks_per_sample(const WarpBlendProblem& p, int vec) {
  const int64_t per_block = int64_t(kThreads) * vec;
  return (p.H * p.W + per_block - 1) / per_block;
}

// Pixels per thread: the widest pack (16 bytes, at most 4 elements) the layout allows, unless the
// packed grid would leave SMs short of resident blocks. At (8, 3, 3, 128, 128) packing gives 128
// blocks for 132 SMs (H100) that each hold 4: under a quarter of a wave, 8 warps per SM to hide
// the gathers' latency. One pixel per thread gives 512 blocks, 4 per SM.
template <typename T>
int pixels_per_thread(const WarpBlendProblem& p, const void* out) {
  constexpr int vec = kPack<T>;
  const int64_t elem = sizeof(T);
  const bool ok = p.W % vec == 0 && packable(p.flows, p.flows_stride, 5, vec, elem) &&
                  packable(p.logits, p.logits_stride, 4, vec, elem) &&
                  packable(p.target, p.target_stride, 4, vec, elem) && (out == nullptr || aligned(out, vec * elem));
  if (!ok) return 1;
  const bool fills = p.num_sms <= 0 || p.B * blocks_per_sample(p, vec) >= int64_t(p.num_sms) * kResidentBlocks;
  return fills ? vec : 1;
}

template <typename T, int VEC, bool LOSS, typename I>
void launch_forward(const WarpBlendProblem& p, void* out, void* partials, cudaStream_t stream) {
  using acc_t = typename AccOf<T>::type;
  const Args<T, I> a = make_args<T, I>(p);
  const unsigned blocks = static_cast<unsigned>(blocks_per_sample(p, VEC));
  for (int64_t b0 = 0; b0 < p.B; b0 += kMaxGridY) {
    const unsigned nb = static_cast<unsigned>(p.B - b0 < kMaxGridY ? p.B - b0 : kMaxGridY);
    launch(warp_blend_forward_cuda_kernel<T, VEC, LOSS, I>, dim3(blocks, nb), kThreads, stream, a,
           static_cast<I>(b0), static_cast<T*>(out), static_cast<acc_t*>(partials));
  }
}

template <typename T, bool LOSS>
void forward_typed(const WarpBlendProblem& p, void* out, void* partials, cudaStream_t stream) {
  const bool packed = pixels_per_thread<T>(p, LOSS ? nullptr : out) > 1;
  with_index_type(fits_int32(p), [&](auto index) {
    using I = decltype(index);
    if (packed)
      launch_forward<T, kPack<T>, LOSS, I>(p, out, partials, stream);
    else
      launch_forward<T, 1, LOSS, I>(p, out, partials, stream);
  });
}

}  // namespace

void warp_blend_forward_cuda(const WarpBlendProblem& p, void* out, cudaStream_t stream) {
  if (p.B == 0 || p.C == 0 || p.H * p.W == 0) return;
  dispatch(p.dtype, [&](auto tag) { forward_typed<decltype(tag), false>(p, out, nullptr, stream); });
}

int64_t warp_blend_l1_num_partials(const WarpBlendProblem& p) {
  int64_t n = 0;
  dispatch(p.dtype, [&](auto tag) { n = blocks_per_sample(p, pixels_per_thread<decltype(tag)>(p, nullptr)); });
  return n;
}

void warp_blend_l1_partials_cuda(const WarpBlendProblem& p, void* partials, cudaStream_t stream) {
  if (p.B == 0 || p.C == 0 || p.H * p.W == 0) return;
  dispatch(p.dtype, [&](auto tag) { forward_typed<decltype(tag), true>(p, nullptr, partials, stream); });
}

void warp_blend_l1_finalize_cuda(const WarpBlendProblem& p, const void* partials, void* loss, cudaStream_t stream) {
  if (p.B == 0) return;
  const int64_t n = warp_blend_l1_num_partials(p);
  const double count = static_cast<double>(p.C * p.H * p.W);
  dispatch(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename AccOf<T>::type;
    // One block per sample; batches past the grid limit are launched in slices.
    for (int64_t b0 = 0; b0 < p.B; b0 += 2147483647LL) {
      const unsigned nb = static_cast<unsigned>(p.B - b0 < 2147483647LL ? p.B - b0 : 2147483647LL);
      launch(warp_blend_l1_finalize_cuda_kernel<T>, dim3(nb), kThreads, stream, static_cast<const acc_t*>(partials),
             n, count, b0, static_cast<T*>(loss));
    }
  });
}

}  // namespace cuda
}  // namespace fabnet
