// CPU emulation of the tiny part of CUDA the voxelizer kernels use, for tests on machines
// without a GPU: every thread of a block is a host thread, __syncthreads and warp shuffles are
// real barriers, blocks run one after another (so `static` stands in for __shared__).
// It checks indexing, synchronisation and host logic; it says nothing about speed.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)
#define VOX_DYNAMIC_SHARED(name) unsigned char* name = gausstr_emulation::current().shared

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace gausstr_emulation {

// A reusable barrier; threads that exit leave it (as exited CUDA threads stop counting).
class Barrier {
 public:
  explicit Barrier(int expected) : expected_(expected) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == expected_) {
      release();
    } else {
      cv_.wait(lock, [&] { return generation != generation_; });
    }
  }
  void drop() {
    std::unique_lock<std::mutex> lock(mutex_);
    --expected_;
    if (expected_ > 0 && arrived_ == expected_) release();
  }

 private:
  void release() {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  int expected_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

struct BlockState {
  explicit BlockState(int threads) : block(threads), exchange(threads) {
    for (int w = 0; w < (threads + 31) / 32; ++w) {
      warps.emplace_back(std::make_unique<Barrier>(std::min(32, threads - 32 * w)));
    }
  }
  Barrier block;
  std::vector<std::unique_ptr<Barrier>> warps;
  std::vector<double> exchange;
  unsigned char* shared = nullptr;
};

inline thread_local BlockState* current_block = nullptr;
inline BlockState& current() { return *current_block; }
inline std::mutex atomic_mutex;

}  // namespace gausstr_emulation

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

inline void __syncthreads() { gausstr_emulation::current().block.wait(); }

template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask) {
  auto& block = gausstr_emulation::current();
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  block.exchange[tid] = static_cast<double>(value);  // exact for float and double
  block.warps[warp]->wait();
  const T out = static_cast<T>(block.exchange[warp * 32 + (lane ^ lane_mask)]);
  block.warps[warp]->wait();
  return out;
}

inline unsigned __ballot_sync(unsigned /*mask*/, bool predicate) {
  auto& block = gausstr_emulation::current();
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32;
  const int lanes = std::min(32, static_cast<int>(blockDim.x) - 32 * warp);
  block.exchange[tid] = predicate ? 1.0 : 0.0;
  block.warps[warp]->wait();
  unsigned bits = 0;
  for (int lane = 0; lane < lanes; ++lane) {
    if (block.exchange[warp * 32 + lane] != 0.0) bits |= 1u << lane;
  }
  block.warps[warp]->wait();
  return bits;
}

inline int __popc(unsigned bits) { return __builtin_popcount(bits); }

inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  std::lock_guard<std::mutex> lock(gausstr_emulation::atomic_mutex);
  const unsigned long long old = *address;
  if (value < old) *address = value;
  return old;
}

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
using std::isfinite;
using std::max;
using std::min;

namespace gausstr_voxelize::platform {

struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};

inline bool on_device(const at::Tensor& t) { return t.is_cpu(); }

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 blocks, dim3 threads, size_t shared_bytes, Args... args) {
  const int count = static_cast<int>(threads.x * threads.y * threads.z);
  TORCH_CHECK(threads.y == 1 && threads.z == 1, "the emulation supports 1D blocks only");
  const int64_t total = static_cast<int64_t>(blocks.x) * blocks.y * blocks.z;
  if (total == 0 || count == 0) return;
  std::vector<double> shared(shared_bytes / sizeof(double) + 2);
  // One host thread per CUDA thread, reused for every block; blocks run one after another.
  std::vector<std::unique_ptr<gausstr_emulation::BlockState>> states;
  for (int64_t b = 0; b < total; ++b) {
    states.emplace_back(std::make_unique<gausstr_emulation::BlockState>(count));
    states.back()->shared = reinterpret_cast<unsigned char*>(shared.data());
  }
  gausstr_emulation::Barrier between_blocks(count);
  std::vector<std::thread> pool;
  pool.reserve(count);
  for (int t = 0; t < count; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = dim3(t);
      blockDim = threads;
      gridDim = blocks;
      for (int64_t b = 0; b < total; ++b) {
        auto& state = *states[b];
        gausstr_emulation::current_block = &state;
        blockIdx = dim3(static_cast<unsigned>(b % blocks.x), static_cast<unsigned>(b / blocks.x % blocks.y),
                        static_cast<unsigned>(b / (static_cast<int64_t>(blocks.x) * blocks.y)));
        kernel(args...);
        state.warps[t / 32]->drop();
        state.block.drop();
        between_blocks.wait();  // shared memory is reused by the next block
      }
    });
  }
  for (auto& thread : pool) thread.join();
}

inline at::Tensor sort_keys(const at::Tensor& keys, int /*end_bit*/) { return std::get<0>(at::sort(keys)); }

inline size_t max_shared_optin() { return 227 * 1024; }

template <typename... KernelArgs>
void allow_shared(void (*)(KernelArgs...), size_t) {}

}  // namespace gausstr_voxelize::platform
