// Runs the CUDA kernels of csrc/cuda/*.cu on CPU threads, so their indexing,
// masks, packing and reductions are tested on machines without a GPU (test_cuda_emulation.py).
//
// Included by csrc/cuda/device_functions.cuh, after the CUDA headers, when compiled by the host compiler with
// -DFABNET_CUDA_EMULATION. Every launch runs its blocks one after another, each block as
// blockDim.x std::threads: __syncthreads is a block-wide barrier, __shfl_down_sync exchanges
// through a per-warp slot array between two warp-wide barriers, __shared__ variables are statics
// (one block at a time), atomicAdd takes a mutex. Not emulated: anything about timing, memory
// coalescing, occupancy or registers (the ptxas report in test_cuda_compile.py covers the last).
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <barrier>
#include <cmath>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fabnet_emulation {

inline thread_local uint3 thread_index{0, 0, 0};
inline thread_local uint3 block_index{0, 0, 0};
inline dim3 grid_dim{1, 1, 1};
inline dim3 block_dim{1, 1, 1};
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<std::array<double, 32>> warp_slots;
inline std::mutex atomic_mutex;

inline void syncthreads() { block_barrier->arrive_and_wait(); }

// All 32 lanes of a warp call this together (as in the kernels' reductions).
template <typename T>
T shfl_down_sync(unsigned /*mask*/, T value, int offset) {
  const unsigned lane = thread_index.x & 31u, warp = thread_index.x >> 5;
  warp_slots[warp][lane] = static_cast<double>(value);  // exact for float and double
  warp_barriers[warp]->arrive_and_wait();
  const T out = lane + offset < 32 ? static_cast<T>(warp_slots[warp][lane + offset]) : value;
  warp_barriers[warp]->arrive_and_wait();
  return out;
}

template <typename T>
T atomic_add(T* address, T value) {
  std::lock_guard<std::mutex> lock(atomic_mutex);
  const T old = *address;
  *address = old + value;
  return old;
}

inline float expf_(float x) { return std::exp(x); }

// kernel<<<grid, threads>>>(args...), block by block.
template <typename... Params, typename... Values>
void launch(void (*kernel)(Params...), dim3 grid, int threads, cudaStream_t /*stream*/,
            const Values&... args) {
  grid_dim = grid;
  block_dim = dim3(threads, 1, 1);
  const int warps = (threads + 31) / 32;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        block_barrier = std::make_unique<std::barrier<>>(threads);
        warp_barriers.clear();
        for (int w = 0; w < warps; ++w)
          warp_barriers.push_back(std::make_unique<std::barrier<>>(threads - 32 * w < 32 ? threads - 32 * w : 32));
        warp_slots.assign(warps, {});
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (int t = 0; t < threads; ++t)
          pool.emplace_back([&, t] {
            thread_index = uint3{static_cast<unsigned>(t), 0, 0};
            block_index = uint3{x, y, z};
            kernel(args...);
          });
        for (auto& th : pool) th.join();
      }
}

}  // namespace fabnet_emulation

#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)
#define threadIdx (::fabnet_emulation::thread_index)
#define blockIdx (::fabnet_emulation::block_index)
#define gridDim (::fabnet_emulation::grid_dim)
#define blockDim (::fabnet_emulation::block_dim)
#define __syncthreads() ::fabnet_emulation::syncthreads()
#define __shfl_down_sync(mask, value, offset) ::fabnet_emulation::shfl_down_sync(mask, value, offset)
#define atomicAdd(address, value) ::fabnet_emulation::atomic_add(address, value)
#define __expf(x) ::fabnet_emulation::expf_(x)
#define __ldg(p) (*(p))
#define __stwb(p, value) (*(p) = (value))
