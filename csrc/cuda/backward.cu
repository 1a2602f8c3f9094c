// Backward kernel of fabnet::warp_blend and warp_blend_l1, and its launcher. No torch headers.
//
// One thread per output pixel and sample. The backward recomputes the blend instead of reading a
// stored one, and a pixel whose upstream gradient is zero in every channel (all pixels of a sample
// whose loss gradient is zero: the curriculum back-propagates half of each batch) writes zeros and
// reads nothing else. Flow, logit and target gradients are gather-only (a thread writes its own
// pixel). Only the source gradient scatters: with atomics into a float (double) buffer, or, for
// deterministic results, as per-pixel contributions that the binding sums in a fixed order.
#include "launch.cuh"

namespace fabnet {
namespace cuda {
namespace {

using namespace detail;

// Softmax weights of up to kCachedK sources stay in shared memory for the whole pixel: read and
// exponentiated once, instead of once per pass and channel tile (3 x K exponentials per pixel
// before, 60 MUFU.EX2 in the sm_90 float kernel). 8 x 256 floats = 8 KB per block, 32 KB for the
// 4 resident blocks of 50 % occupancy (sm_80 has 164 KB per SM). More sources recompute them.
constexpr int kCachedK = 8;

template <typename T, typename I>
struct GradArgs {
  using acc_t = typename AccOf<T>::type;
  const T* grad;
  I gs[4];
  acc_t* src;          // atomic accumulation buffer, or nullptr
  acc_t* contrib;      // deterministic: (B, K, C, H W, 4) tap contributions, or nullptr
  int32_t* taps;       // deterministic: (B, K, H W, 4) tap offsets in the (Hs, Ws) plane
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

template <typename T, bool LOSS, typename I>
__global__ void __launch_bounds__(kThreads, (min_blocks<T, I>()))
    warp_blend_backward_cuda_kernel(const Args<T, I> a, const GradArgs<T, I> g, I b0) {
  using acc_t = typename AccOf<T>::type;
  __shared__ acc_t cached[kCachedK][kThreads];  // [k][thread]: consecutive threads, distinct banks
  const I b = b0 + static_cast<I>(blockIdx.y);
  const I hw = a.H * a.W;
  const I p = static_cast<I>(blockIdx.x) * kThreads + static_cast<I>(threadIdx.x);
  if (p >= hw) return;
  I h, w;
  a.row_col(p, &h, &w);
  const bool has_logits = a.logit != nullptr;
  const bool need_logit = g.logit != nullptr && has_logits;
  const T* logit_px = has_logits ? a.logit + b * a.ls[0] + h * a.ls[2] + w * a.ls[3] : nullptr;

  acc_t scale = acc_t(0);
  bool active;
  if (LOSS) {
    scale = static_cast<acc_t>(static_cast<double>(to_acc<acc_t>(ldg(g.grad + b * g.gs[0]))) / g.count);
    active = scale != acc_t(0);
  } else {
    active = false;  // NaN != 0: a NaN upstream still propagates
    for (I c = 0; c < a.C; ++c)
      active |= to_acc<acc_t>(ldg(g.grad + b * g.gs[0] + c * g.gs[1] + h * g.gs[2] + w * g.gs[3])) != acc_t(0);
  }
  if (!active) {  // nothing flows back through this pixel: zeros, and no source access at all
    for (I k = 0; k < a.K; ++k) {
      if (g.flow != nullptr) {
        g.flow[((b * a.K + k) * 2) * hw + p] = from_acc<T>(acc_t(0));
        g.flow[((b * a.K + k) * 2 + 1) * hw + p] = from_acc<T>(acc_t(0));
      }
      if (need_logit) g.logit[(b * a.K + k) * hw + p] = from_acc<T>(acc_t(0));
    }
    if (LOSS && g.tgt != nullptr)
      for (I c = 0; c < a.C; ++c) g.tgt[(b * a.C + c) * hw + p] = from_acc<T>(acc_t(0));
    return;
  }

  // Softmax weights: max, then exponentials (kept in shared memory) and their sum.
  const bool cache = a.K <= kCachedK;
  acc_t run_max = acc_t(0), inv_denom = acc_t(1) / static_cast<acc_t>(a.K);
  if (has_logits) {
    run_max = -INFINITY;
    for (I k = 0; k < a.K; ++k) {
      const acc_t l = to_acc<acc_t>(ldg(logit_px + k * a.ls[1]));
      if (cache) cached[k][threadIdx.x] = l;
      run_max = l > run_max ? l : run_max;  // a NaN logit is skipped here and poisons the sum below
    }
    acc_t denom = acc_t(0);
    for (I k = 0; k < a.K; ++k) {
      const acc_t l = cache ? cached[k][threadIdx.x] : to_acc<acc_t>(ldg(logit_px + k * a.ls[1]));
      const acc_t e = fast_exp(l - run_max);
      if (cache) cached[k][threadIdx.x] = e;
      denom += e;
    }
    inv_denom = acc_t(1) / denom;
  }
  auto weight = [&](I k) -> acc_t {
    if (!has_logits) return inv_denom;
    if (cache) return cached[k][threadIdx.x] * inv_denom;
    return fast_exp(to_acc<acc_t>(ldg(logit_px + k * a.ls[1])) - run_max) * inv_denom;
  };
  auto cell_of = [&](I k) -> Cell<acc_t, I> {
    const T* fk = a.flow + b * a.fs[0] + k * a.fs[1] + h * a.fs[3] + w * a.fs[4];
    return make_cell(a, to_acc<acc_t>(ldg(fk)), to_acc<acc_t>(ldg(fk + a.fs[2])), h, w);
  };

  for (I c0 = 0; c0 < a.C; c0 += kChunk) {
    const I nc = a.C - c0 < kChunk ? a.C - c0 : kChunk;
    const bool first = c0 == 0;
    acc_t blend[kChunk], u[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j) blend[j] = u[j] = acc_t(0);
    if (LOSS || need_logit) {  // pass 1: the blend (the L1 sign and the softmax Jacobian need it)
      for (I k = 0; k < a.K; ++k) {
        const acc_t wk = weight(k);
        const Cell<acc_t, I> cell = cell_of(k);
        const TapMask<I> in(cell, a.Hs, a.Ws);
        const T* plane = a.src + b * a.ss[0] + k * a.ss[1] + c0 * a.ss[2];
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (j < nc) {
            acc_t v[4];
            gather(plane + j * a.ss[2], cell, in, a.ss[3], a.ss[4], v);
            blend[j] += wk * bilinear(cell, v);
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      if (j < nc) {
        const I c = c0 + j;
        if (LOSS) {
          const acc_t t = to_acc<acc_t>(ldg(a.tgt + b * a.ts[0] + c * a.ts[1] + h * a.ts[2] + w * a.ts[3]));
          const acc_t diff = blend[j] - t;
          u[j] = diff > acc_t(0) ? scale : (diff < acc_t(0) ? -scale : acc_t(0));
          if (g.tgt != nullptr) g.tgt[(b * a.C + c) * hw + p] = from_acc<T>(-u[j]);
        } else {
          u[j] = to_acc<acc_t>(ldg(g.grad + b * g.gs[0] + c * g.gs[1] + h * g.gs[2] + w * g.gs[3]));
        }
      }
    }
    // sum_k w_k dL/dw_k = sum_c u_c blend_c: the shared term of the softmax Jacobian.
    acc_t weighted = acc_t(0);
#pragma unroll
    for (int j = 0; j < kChunk; ++j) weighted += u[j] * blend[j];

    if (g.flow == nullptr && !need_logit && g.src == nullptr && g.contrib == nullptr) continue;
    for (I k = 0; k < a.K; ++k) {  // pass 2: per source, values and derivatives
      const acc_t wk = weight(k);
      const Cell<acc_t, I> cell = cell_of(k);
      const TapMask<I> in(cell, a.Hs, a.Ws);
      const T* plane = a.src + b * a.ss[0] + k * a.ss[1] + c0 * a.ss[2];
      if (g.flow != nullptr || need_logit) {
        acc_t dw = acc_t(0), gx = acc_t(0), gy = acc_t(0);
        const acc_t ux = acc_t(1) - cell.tx, uy = acc_t(1) - cell.ty;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (j < nc) {
            acc_t v[4];
            gather(plane + j * a.ss[2], cell, in, a.ss[3], a.ss[4], v);
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
      if (g.src == nullptr && g.contrib == nullptr) continue;
      const BilinearWeights<acc_t> bw(cell.tx, cell.ty);
      const acc_t tap_weight[4] = {bw.nw, bw.ne, bw.sw, bw.se};
      const bool tap_in[4] = {in.y0 && in.x0, in.y0 && in.x1, in.y1 && in.x0, in.y1 && in.x1};
      const I plane_size = a.Hs * a.Ws;
      if (g.src != nullptr) {  // scatter: several pixels may share a tap, hence atomics
        acc_t* gplane = g.src + ((b * a.K + k) * a.C + c0) * plane_size + cell.y0 * a.Ws + cell.x0;
        const I tap_offset[4] = {0, 1, a.Ws, a.Ws + 1};
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (j < nc && u[j] != acc_t(0)) {
            const acc_t gw = wk * u[j];
#pragma unroll
            for (int t = 0; t < 4; ++t)
              if (tap_in[t]) atomicAdd(gplane + j * plane_size + tap_offset[t], gw * tap_weight[t]);
          }
        }
      } else {  // deterministic: this pixel's four contributions per channel, summed by the binding
        if (first) {
          const I y1 = cell.y0 + 1, x1 = cell.x0 + 1;
          const int32_t offsets[4] = {
              static_cast<int32_t>(tap_in[0] ? cell.y0 * a.Ws + cell.x0 : 0),
              static_cast<int32_t>(tap_in[1] ? cell.y0 * a.Ws + x1 : 0),
              static_cast<int32_t>(tap_in[2] ? y1 * a.Ws + cell.x0 : 0),
              static_cast<int32_t>(tap_in[3] ? y1 * a.Ws + x1 : 0),
          };
          store_pack<4>(g.taps + ((b * a.K + k) * hw + p) * 4, offsets);
        }
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          if (j < nc) {
            const acc_t gw = wk * u[j];
            acc_t values[4];
#pragma unroll
            for (int t = 0; t < 4; ++t) values[t] = tap_in[t] ? gw * tap_weight[t] : acc_t(0);
            store_pack<4>(g.contrib + (((b * a.K + k) * a.C + c0 + j) * hw + p) * 4, values);
          }
        }
      }
    }
  }
}

template <typename T, typename I>
void launch_backward(const WarpBlendProblem& p, const WarpBlendGrads& g, cudaStream_t stream) {
  using acc_t = typename AccOf<T>::type;
  const Args<T, I> a = make_args<T, I>(p);
  GradArgs<T, I> ga;
  ga.grad = static_cast<const T*>(g.grad);
  for (int i = 0; i < 4; ++i) ga.gs[i] = static_cast<I>(g.grad_stride[i]);
  ga.src = static_cast<acc_t*>(g.sources);
  ga.contrib = g.sources == nullptr ? static_cast<acc_t*>(g.source_contributions) : nullptr;
  ga.taps = g.source_taps;
  ga.flow = static_cast<T*>(g.flows);
  ga.logit = static_cast<T*>(g.logits);
  ga.tgt = static_cast<T*>(g.target);
  ga.count = static_cast<double>(p.C * p.H * p.W);
  const unsigned blocks = static_cast<unsigned>((p.H * p.W + kThreads - 1) / kThreads);
  for (int64_t b0 = 0; b0 < p.B; b0 += kMaxGridY) {
    const unsigned nb = static_cast<unsigned>(p.B - b0 < kMaxGridY ? p.B - b0 : kMaxGridY);
    if (p.target != nullptr)
      launch(warp_blend_backward_cuda_kernel<T, true, I>, dim3(blocks, nb), kThreads, stream, a, ga,
             static_cast<I>(b0));
    else
      launch(warp_blend_backward_cuda_kernel<T, false, I>, dim3(blocks, nb), kThreads, stream, a, ga,
             static_cast<I>(b0));
  }
}

}  // namespace

void warp_blend_backward_cuda(const WarpBlendProblem& p, const WarpBlendGrads& g, cudaStream_t stream) {
  if (p.B == 0 || p.C == 0 || p.H * p.W == 0) return;
  const int64_t contributions = g.source_contributions != nullptr ? p.B * p.K * p.C * p.H * p.W * 4 : 0;
  dispatch(p.dtype, [&](auto tag) {
    with_index_type(fits_int32(p, contributions), [&](auto index) {
      launch_backward<decltype(tag), decltype(index)>(p, g, stream);
    });
  });
}

}  // namespace cuda
}  // namespace fabnet
