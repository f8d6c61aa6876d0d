// What the voxelizer's host code needs from the platform: kernel launches, the device guard and
// shared-memory limits. On CUDA these are the real thing; with GAUSSTR_CPU_EMULATION the same
// kernels and host code run on CPU tensors through cpu_emulation.h (a test harness that runs
// every thread of a block as a host thread, with real barriers and warp shuffles).
#pragma once

#ifdef GAUSSTR_CPU_EMULATION
#include "cpu_emulation.h"
#else
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#define VOX_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]

namespace gausstr_voxelize::platform {

using DeviceGuard = c10::cuda::CUDAGuard;

inline bool on_device(const at::Tensor& t) { return t.is_cuda(); }

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 blocks, dim3 threads, size_t shared_bytes, Args... args) {
  kernel<<<blocks, threads, shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Largest dynamic shared memory a block may opt in to on the current device [bytes].
inline size_t max_shared_optin() {
  int device = 0, bytes = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(bytes);
}

template <typename... KernelArgs>
void allow_shared(void (*kernel)(KernelArgs...), size_t bytes) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)));
}

// Ascending sort of non-negative int64 keys that fit in bits [0, end_bit): cub's radix sort on the
// significant bits only (a few passes instead of eight).
inline at::Tensor sort_keys(const at::Tensor& keys, int end_bit) {
  const int64_t n = keys.numel();
  TORCH_CHECK(n < (int64_t(1) << 31), "too many (tile, Gaussian) pairs: ", n);
  at::Tensor sorted = at::empty_like(keys);
  const auto* in = reinterpret_cast<const unsigned long long*>(keys.data_ptr<int64_t>());
  auto* out = reinterpret_cast<unsigned long long*>(sorted.data_ptr<int64_t>());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  size_t temp_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, temp_bytes, in, out, static_cast<int>(n), 0, end_bit,
                                                stream));
  at::Tensor temp = at::empty({static_cast<int64_t>(temp_bytes)}, keys.options().dtype(at::kByte));
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(temp.data_ptr(), temp_bytes, in, out, static_cast<int>(n), 0,
                                                end_bit, stream));
  return sorted;
}

}  // namespace gausstr_voxelize::platform
#endif
