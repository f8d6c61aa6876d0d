// CUDA Gaussian-to-voxel splatting: forward (tile gather) and backward (per-Gaussian reduction).
//
// Semantics (see gausstr_core/voxelize/api.py): for every voxel centre x and every included
// Gaussian g whose 3-sigma box contains x,
//   w_g(x) = o_g * exp(-0.5 (x - mu_g)^T P_g (x - mu_g)),  P_g = sym(Sigma_g^-1),
//   density(x) = sum_g w_g(x),  feature(x) = sum_g w_g(x) f_g / max(density(x), eps).
//
// Forward pipeline (all on the current stream, one host synchronisation):
//   1. prepare_kernel   one thread per Gaussian: input checks, the exact 3-sigma voxel box (same
//                       float64 op order as boxes.py), P in float64, number of tiles touched.
//   2. cumsum + D2H     offsets of each Gaussian's (tile, Gaussian) keys and their total (a bad
//                       input makes its count a huge sentinel, so the same read reports it).
//   3. emit_kernel      one thread per Gaussian writes key = tile * M + g for every tile it touches.
//   4. radix sort       keys sorted on their significant bits (unique keys: deterministic order);
//      tile_ranges      one thread per key finds where each tile's run of keys starts.
//   5. forward_kernel   one block per (8x8x4 voxel tile, channel chunk), one thread per voxel: the
//                       tile's Gaussians are staged through shared memory, every thread sums its
//                       voxel's density and CHUNK feature channels in registers, then normalises
//                       and writes its outputs once. No atomics, no zero-fill, deterministic.
// Gathering per tile suits both regimes: small boxes (1,800 x 18) cost one pass over a short
// list per tile; large channel counts (768) are split into chunks of 32 registers so each
// output element is still written exactly once, and only the weights are recomputed per chunk.
//
// Capturable forward (forward_capturable, for CUDA graphs): no host synchronisation and no
// allocation whose size depends on the data. Step 1 as above; then every (tile, channel chunk) block
// scans all Gaussians of its scene, keeps those whose box overlaps the tile (an ordered block-wide
// compaction) and accumulates them exactly as forward_kernel does. The kept Gaussians are the ones
// the sorted keys list for that tile, in the same increasing order, so both forwards give bitwise
// identical outputs; a bad input is reported in a device scalar instead of a host return value.
// Cost grows with N x tiles (fine for one scene of a few thousand Gaussians, not for 10^5).
//
// Backward: a per-voxel pass computes a(x) = dL/d density(x) - [D >= eps] (dL/dF . F) / D, then
// one block per Gaussian walks its box, one warp per voxel with lanes over channels, and reduces
// the Gaussian's gradients in registers/shared memory (no atomics, deterministic).

#include "platform.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

namespace gausstr_voxelize {

constexpr int TILE_X = 8;
constexpr int TILE_Y = 8;
constexpr int TILE_Z = 4;
constexpr int TILE_VOXELS = TILE_X * TILE_Y * TILE_Z;  // forward block size
constexpr int BATCH = 64;                              // Gaussians staged in shared memory at once
constexpr int PARAMS = 10;                             // mu (3), P (6: xx yy zz xy xz yz), opacity
constexpr int EMPTY_LO = 1 << 30;                      // box of a Gaussian that touches no voxel
constexpr int BACKWARD_WARPS = 8;
constexpr int64_t BAD_INPUT = int64_t(1) << 32;       // tile count marking an invalid Gaussian

struct GridSpec {
  int nx, ny, nz;        // voxels per axis
  int ntx, nty, ntz;     // tiles per axis
  double lx, ly, lz;     // lower corner [m]
  double voxel;          // voxel size [m]
};

// Explicitly rounded arithmetic: no FMA contraction, so the box and weight computations follow
// the PyTorch reference's operation order and rounding exactly.
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float exp_(float a) { return expf(a); }
__device__ __forceinline__ double exp_(double a) { return exp(a); }

// Voxel centre lo + (i + 0.5) * voxel, in the reference's order.
template <typename T>
__device__ __forceinline__ T voxel_centre(int i, T lower, T voxel) {
  return add_rn(mul_rn(add_rn(static_cast<T>(i), T(0.5)), voxel), lower);
}

// d^T P d with P given by its 6 distinct entries, in boxes.mahalanobis_sq's order.
template <typename T>
__device__ __forceinline__ T mahalanobis_sq(T dx, T dy, T dz, const T* p) {
  const T sxx = mul_rn(mul_rn(p[0], dx), dx);
  const T syy = mul_rn(mul_rn(p[1], dy), dy);
  const T szz = mul_rn(mul_rn(p[2], dz), dz);
  const T cxy = mul_rn(mul_rn(p[3], dx), dy);
  const T cxz = mul_rn(mul_rn(p[4], dx), dz);
  const T cyz = mul_rn(mul_rn(p[5], dy), dz);
  const T cross = add_rn(add_rn(cxy, cxz), cyz);
  return add_rn(add_rn(add_rn(sxx, syy), szz), mul_rn(T(2), cross));
}

template <typename T>
__device__ __forceinline__ T splat_weight(T opacity, T maha) {
  return mul_rn(opacity, exp_(mul_rn(T(-0.5), maha)));
}

// ---------------------------------------------------------------------------------------------
// 1. Per-Gaussian preparation.

template <typename T>
__global__ void prepare_kernel(const T* __restrict__ means, const T* __restrict__ covariances,
                               const T* __restrict__ opacities, const bool* __restrict__ valid,
                               int64_t count, GridSpec grid, T* __restrict__ params,
                               int* __restrict__ boxes, int64_t* __restrict__ tile_counts) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= count) return;
  T out[PARAMS];
  for (int j = 0; j < PARAMS; ++j) out[j] = T(0);
  int box[6] = {EMPTY_LO, EMPTY_LO, EMPTY_LO, -1, -1, -1};
  int64_t tiles = 0;

  if (valid == nullptr || valid[g]) {
    T mu[3], s[9];
    for (int j = 0; j < 3; ++j) mu[j] = means[g * 3 + j];
    for (int j = 0; j < 9; ++j) s[j] = covariances[g * 9 + j];
    const T opacity = opacities[g];
    bool ok = isfinite(opacity);
    for (int j = 0; j < 3; ++j) ok = ok && isfinite(mu[j]);
    for (int j = 0; j < 9; ++j) ok = ok && isfinite(s[j]);
    // Positive definite (Sylvester: leading principal minors > 0), in float64 like the reference.
    const double a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], p = s[6], q = s[7], k = s[8];
    const double c00 = e * k - f * q, c01 = c * q - b * k, c02 = b * f - c * e;
    const double c10 = f * p - d * k, c11 = a * k - c * p, c12 = c * d - a * f;
    const double c20 = d * q - e * p, c21 = b * p - a * q, c22 = a * e - b * d;
    const double det = a * c00 + b * c10 + c * c20;  // inverse = [c_ij] / det
    ok = ok && a > 0.0 && c22 > 0.0 && det > 0.0;
    if (!ok) {
      tiles = BAD_INPUT;
    } else {
      const double lower[3] = {grid.lx, grid.ly, grid.lz};
      const int size[3] = {grid.nx, grid.ny, grid.nz};
      int lo[3], hi[3];
      bool nonempty = true;
      for (int axis = 0; axis < 3; ++axis) {
        const double m = static_cast<double>(mu[axis]);
        const double r = __dmul_rn(3.0, sqrt(static_cast<double>(s[axis * 4])));
        double first = ceil(__dsub_rn(__ddiv_rn(__dsub_rn(__dsub_rn(m, r), lower[axis]), grid.voxel), 0.5));
        double last = floor(__dsub_rn(__ddiv_rn(__dsub_rn(__dadd_rn(m, r), lower[axis]), grid.voxel), 0.5));
        first = fmin(fmax(first, 0.0), static_cast<double>(size[axis]));
        last = fmax(fmin(last, static_cast<double>(size[axis] - 1)), -1.0);
        lo[axis] = static_cast<int>(first);
        hi[axis] = static_cast<int>(last);
        nonempty = nonempty && lo[axis] <= hi[axis];
      }
      if (nonempty) {
        const int tile[3] = {TILE_X, TILE_Y, TILE_Z};
        tiles = 1;
        for (int axis = 0; axis < 3; ++axis) {
          box[axis] = lo[axis];
          box[axis + 3] = hi[axis];
          tiles *= hi[axis] / tile[axis] - lo[axis] / tile[axis] + 1;
        }
        // General 3x3 inverse by the adjugate (above), in float64, then symmetrised.
        out[3] = static_cast<T>(c00 / det);
        out[4] = static_cast<T>(c11 / det);
        out[5] = static_cast<T>(c22 / det);
        out[6] = static_cast<T>(0.5 * (c01 / det + c10 / det));
        out[7] = static_cast<T>(0.5 * (c02 / det + c20 / det));
        out[8] = static_cast<T>(0.5 * (c12 / det + c21 / det));
        out[0] = mu[0];
        out[1] = mu[1];
        out[2] = mu[2];
        out[9] = opacity;
      }
    }
  }
  for (int j = 0; j < PARAMS; ++j) params[g * PARAMS + j] = out[j];
  for (int j = 0; j < 6; ++j) boxes[g * 6 + j] = box[j];
  tile_counts[g] = tiles;
}

// ---------------------------------------------------------------------------------------------
// 3. (tile, Gaussian) keys.

__global__ void emit_kernel(const int* __restrict__ boxes, const int64_t* __restrict__ tile_counts,
                            const int64_t* __restrict__ inclusive_ends, int64_t count,
                            int64_t per_scene, GridSpec grid, int64_t* __restrict__ keys) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= count || tile_counts[g] == 0) return;
  int64_t out = inclusive_ends[g] - tile_counts[g];
  const int* box = boxes + g * 6;
  const int64_t scene = g / per_scene;
  for (int tx = box[0] / TILE_X; tx <= box[3] / TILE_X; ++tx) {
    for (int ty = box[1] / TILE_Y; ty <= box[4] / TILE_Y; ++ty) {
      for (int tz = box[2] / TILE_Z; tz <= box[5] / TILE_Z; ++tz) {
        const int64_t tile = ((scene * grid.ntx + tx) * grid.nty + ty) * grid.ntz + tz;
        keys[out++] = tile * count + g;
      }
    }
  }
}

// offsets[t] = index of the first sorted key whose tile is >= t, for t in [0, tiles]; thread i in
// [0, total] writes the offsets of the tiles between key i - 1 and key i (each exactly once), and
// decodes key i's Gaussian index (so the forward kernel does no 64-bit division).
__global__ void tile_ranges_kernel(const int64_t* __restrict__ keys, int64_t total, int64_t count,
                                   int64_t tiles, int64_t* __restrict__ offsets,
                                   int* __restrict__ gaussians) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i > total) return;
  if (i < total) gaussians[i] = static_cast<int>(keys[i] % count);
  const int64_t first = i == 0 ? 0 : keys[i - 1] / count + 1;
  const int64_t last = i == total ? tiles : keys[i] / count;
  for (int64_t t = first; t <= last; ++t) offsets[t] = i;
}

// ---------------------------------------------------------------------------------------------
// 5. Forward gather: block = (tile, channel chunk), thread = voxel. The two forward kernels (sorted
// lists, 5; scan, 5') differ only in how they find a tile's Gaussians; decoding the voxel, staging a
// batch in shared memory, accumulating it and writing the voxel are these shared helpers, so both
// produce bitwise the same sums in the same order.

// The voxel thread `t` of tile `tile` owns (tiles are scene-major, then x, y, z).
template <typename T>
struct TileVoxel {
  int64_t scene;
  int tx, ty, tz;  // tile index
  int ix, iy, iz;  // voxel index
  bool inside;     // false for threads of a boundary tile that fall outside the grid
  T cx, cy, cz;    // voxel centre
};

template <typename T>
__device__ __forceinline__ TileVoxel<T> tile_voxel(int64_t tile, int t, const GridSpec& grid) {
  TileVoxel<T> v;
  int64_t rest = tile;
  v.tz = static_cast<int>(rest % grid.ntz);
  rest /= grid.ntz;
  v.ty = static_cast<int>(rest % grid.nty);
  rest /= grid.nty;
  v.tx = static_cast<int>(rest % grid.ntx);
  v.scene = rest / grid.ntx;
  v.ix = v.tx * TILE_X + t / (TILE_Y * TILE_Z);
  v.iy = v.ty * TILE_Y + (t / TILE_Z) % TILE_Y;
  v.iz = v.tz * TILE_Z + t % TILE_Z;
  v.inside = v.ix < grid.nx && v.iy < grid.ny && v.iz < grid.nz;
  const T voxel = static_cast<T>(grid.voxel);
  v.cx = voxel_centre<T>(v.ix, static_cast<T>(grid.lx), voxel);
  v.cy = voxel_centre<T>(v.iy, static_cast<T>(grid.ly), voxel);
  v.cz = voxel_centre<T>(v.iz, static_cast<T>(grid.lz), voxel);
  return v;
}

// Stage Gaussians list[0, n) (n <= BATCH) of the channel chunk starting at c0 in shared memory;
// every thread of the block takes part (thread t loads elements t, t + TILE_VOXELS, ...).
template <typename T, int CHUNK>
__device__ __forceinline__ void stage_batch(const int* list, int n, const T* __restrict__ params,
                                            const int* __restrict__ boxes,
                                            const T* __restrict__ features, int channels, int c0,
                                            int t, T (*s_params)[PARAMS], int (*s_box)[6],
                                            T (*s_feat)[CHUNK]) {
  for (int i = t; i < n * PARAMS; i += TILE_VOXELS) {
    const int64_t g = list[i / PARAMS];
    s_params[i / PARAMS][i % PARAMS] = params[g * PARAMS + i % PARAMS];
  }
  for (int i = t; i < n * 6; i += TILE_VOXELS) {
    const int64_t g = list[i / 6];
    s_box[i / 6][i % 6] = boxes[g * 6 + i % 6];
  }
  for (int i = t; i < n * CHUNK; i += TILE_VOXELS) {
    const int64_t g = list[i / CHUNK];
    const int c = c0 + i % CHUNK;
    s_feat[i / CHUNK][i % CHUNK] = c < channels ? features[g * channels + c] : T(0);
  }
}

// Add the n staged Gaussians' weights (to dens) and weighted features (to acc) at voxel v, in order.
template <typename T, int CHUNK>
__device__ __forceinline__ void accumulate_batch(int n, const T (*s_params)[PARAMS], const int (*s_box)[6],
                                                 const T (*s_feat)[CHUNK], const TileVoxel<T>& v,
                                                 T& dens, T (&acc)[CHUNK]) {
  for (int k = 0; k < n; ++k) {
    const int* box = s_box[k];
    if (v.ix < box[0] || v.ix > box[3] || v.iy < box[1] || v.iy > box[4] || v.iz < box[2] ||
        v.iz > box[5]) {
      continue;
    }
    const T* p = s_params[k];
    const T w = splat_weight(p[9], mahalanobis_sq(sub_rn(v.cx, p[0]), sub_rn(v.cy, p[1]),
                                                   sub_rn(v.cz, p[2]), p + 3));
    dens += w;
#pragma unroll
    for (int j = 0; j < CHUNK; ++j) acc[j] += w * s_feat[k][j];
  }
}

// Write voxel v's density (chunk 0 only) and its normalised features of this channel chunk.
template <typename T, int CHUNK>
__device__ __forceinline__ void write_voxel(const TileVoxel<T>& v, const GridSpec& grid, int channels,
                                            int c0, T eps, T dens, const T (&acc)[CHUNK],
                                            T* __restrict__ density, T* __restrict__ out_features) {
  const int64_t vox = ((v.scene * grid.nx + v.ix) * grid.ny + v.iy) * grid.nz + v.iz;
  if (c0 == 0) density[vox] = dens;
  const T denom = dens > eps ? dens : eps;
#pragma unroll
  for (int j = 0; j < CHUNK; ++j) {
    if (c0 + j < channels) out_features[vox * channels + c0 + j] = div_rn(acc[j], denom);
  }
}

template <typename T, int CHUNK>
__global__ void __launch_bounds__(TILE_VOXELS)
forward_kernel(const T* __restrict__ params, const int* __restrict__ boxes,
               const T* __restrict__ features, const int* __restrict__ tile_gaussians,
               const int64_t* __restrict__ tile_offsets, int channels,
               GridSpec grid, T eps, T* __restrict__ density, T* __restrict__ out_features) {
  __shared__ T s_params[BATCH][PARAMS];
  __shared__ int s_box[BATCH][6];
  __shared__ T s_feat[BATCH][CHUNK];

  const int64_t tile = blockIdx.x;
  const int c0 = blockIdx.y * CHUNK;
  const int t = threadIdx.x;
  const TileVoxel<T> v = tile_voxel<T>(tile, t, grid);

  T dens = T(0);
  T acc[CHUNK];
#pragma unroll
  for (int j = 0; j < CHUNK; ++j) acc[j] = T(0);

  const int64_t begin = tile_offsets[tile];
  const int64_t end = tile_offsets[tile + 1];
  for (int64_t base = begin; base < end; base += BATCH) {
    const int n = static_cast<int>(min(static_cast<int64_t>(BATCH), end - base));
    __syncthreads();  // the previous batch has been consumed
    stage_batch<T, CHUNK>(tile_gaussians + base, n, params, boxes, features, channels, c0, t,
                          s_params, s_box, s_feat);
    __syncthreads();
    if (v.inside) accumulate_batch<T, CHUNK>(n, s_params, s_box, s_feat, v, dens, acc);
  }
  if (v.inside) write_voxel<T, CHUNK>(v, grid, channels, c0, eps, dens, acc, density, out_features);
}

// ---------------------------------------------------------------------------------------------
// 5'. Capturable forward: block = (tile, channel chunk), thread = voxel, Gaussians found by a scan.

template <typename T, int CHUNK>
__global__ void __launch_bounds__(TILE_VOXELS)
forward_scan_kernel(const T* __restrict__ params, const int* __restrict__ boxes,
                    const T* __restrict__ features, int64_t per_scene, int channels, GridSpec grid, T eps,
                    T* __restrict__ density, T* __restrict__ out_features) {
  __shared__ T s_params[BATCH][PARAMS];
  __shared__ int s_box[BATCH][6];
  __shared__ T s_feat[BATCH][CHUNK];
  __shared__ int s_list[TILE_VOXELS];               // this window's overlapping Gaussians, in order
  __shared__ int s_warp_hits[TILE_VOXELS / 32];

  const int64_t tile = blockIdx.x;
  const int c0 = blockIdx.y * CHUNK;
  const int t = threadIdx.x;
  const int warp = t / 32, lane = t % 32;
  const TileVoxel<T> v = tile_voxel<T>(tile, t, grid);
  // The tile's voxel range; a Gaussian is listed for this tile by forward() exactly when its box
  // overlaps this range (box / TILE spans the tile index).
  const int tlo_x = v.tx * TILE_X, tlo_y = v.ty * TILE_Y, tlo_z = v.tz * TILE_Z;
  const int thi_x = tlo_x + TILE_X - 1, thi_y = tlo_y + TILE_Y - 1, thi_z = tlo_z + TILE_Z - 1;

  T dens = T(0);
  T acc[CHUNK];
#pragma unroll
  for (int j = 0; j < CHUNK; ++j) acc[j] = T(0);

  const int64_t first = v.scene * per_scene;
  for (int64_t window = 0; window < per_scene; window += TILE_VOXELS) {
    const int64_t g = first + window + t;
    bool hit = false;
    if (window + t < per_scene) {
      const int* box = boxes + g * 6;
      hit = box[0] <= thi_x && box[3] >= tlo_x && box[1] <= thi_y && box[4] >= tlo_y &&
            box[2] <= thi_z && box[5] >= tlo_z;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, hit);
    __syncthreads();  // the previous window's list and counts have been consumed
    if (lane == 0) s_warp_hits[warp] = __popc(ballot);
    __syncthreads();
    int offset = 0, n = 0;
    for (int w = 0; w < TILE_VOXELS / 32; ++w) {
      offset += w < warp ? s_warp_hits[w] : 0;
      n += s_warp_hits[w];
    }
    if (hit) s_list[offset + __popc(ballot & ((1u << lane) - 1u))] = static_cast<int>(g);
    __syncthreads();
    for (int base = 0; base < n; base += BATCH) {
      const int m = min(BATCH, n - base);
      __syncthreads();  // the previous batch has been consumed
      stage_batch<T, CHUNK>(s_list + base, m, params, boxes, features, channels, c0, t, s_params,
                            s_box, s_feat);
      __syncthreads();
      if (v.inside) accumulate_batch<T, CHUNK>(m, s_params, s_box, s_feat, v, dens, acc);
    }
  }
  if (v.inside) write_voxel<T, CHUNK>(v, grid, channels, c0, eps, dens, acc, density, out_features);
}

// ---------------------------------------------------------------------------------------------
// Backward.

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// a(x) = dL/dD(x) - [D(x) >= eps] (dL/dF(x) . F(x)) / D(x): the part of dL/dw_g(x) that does not
// depend on g. One warp per voxel, lanes over channels.
template <typename T>
__global__ void voxel_coefficient_kernel(const T* __restrict__ density, const T* __restrict__ features,
                                         const T* __restrict__ grad_density,
                                         const T* __restrict__ grad_features, int64_t voxels,
                                         int channels, T eps, T* __restrict__ coefficient) {
  const int64_t vox = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (vox >= voxels) return;
  T dot = T(0);
  for (int c = lane; c < channels; c += 32) {
    dot += grad_features[vox * channels + c] * features[vox * channels + c];
  }
  dot = warp_sum(dot);
  if (lane == 0) {
    const T d = density[vox];
    coefficient[vox] = grad_density[vox] - (d >= eps ? dot / d : T(0));
  }
}

// One block per Gaussian, one warp per voxel of its box. Dynamic shared memory:
// features of the Gaussian (C) + per-warp feature-gradient accumulators (warps x C) +
// per-warp scalar partial sums (warps x PARAMS).
template <typename T>
__global__ void backward_kernel(const T* __restrict__ params, const int* __restrict__ boxes,
                                const T* __restrict__ features, const T* __restrict__ density,
                                const T* __restrict__ coefficient,
                                const T* __restrict__ grad_features, int64_t per_scene, int channels,
                                GridSpec grid, T eps, T* __restrict__ grad_params,
                                T* __restrict__ grad_gaussian_features) {
  VOX_DYNAMIC_SHARED(smem_raw);
  T* s_f = reinterpret_cast<T*>(smem_raw);
  const int warps = blockDim.x / 32;
  T* s_acc = s_f + channels;
  T* s_red = s_acc + static_cast<int64_t>(warps) * channels;

  const int64_t g = blockIdx.x;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int* box = boxes + g * 6;
  const int lo_x = box[0], lo_y = box[1], lo_z = box[2];
  const int ext_x = box[3] - lo_x + 1, ext_y = box[4] - lo_y + 1, ext_z = box[5] - lo_z + 1;
  if (ext_x <= 0 || ext_y <= 0 || ext_z <= 0) {  // inactive: zero gradients
    for (int j = threadIdx.x; j < PARAMS; j += blockDim.x) grad_params[g * PARAMS + j] = T(0);
    for (int c = threadIdx.x; c < channels; c += blockDim.x) grad_gaussian_features[g * channels + c] = T(0);
    return;
  }
  for (int c = threadIdx.x; c < channels; c += blockDim.x) s_f[c] = features[g * channels + c];
  for (int i = threadIdx.x; i < warps * channels; i += blockDim.x) s_acc[i] = T(0);
  __syncthreads();

  T p[PARAMS];
#pragma unroll
  for (int j = 0; j < PARAMS; ++j) p[j] = params[g * PARAMS + j];
  const T voxel = static_cast<T>(grid.voxel);
  const T lx = static_cast<T>(grid.lx), ly = static_cast<T>(grid.ly), lz = static_cast<T>(grid.lz);
  const int64_t scene = g / per_scene;
  // dL/d mu (3), dL/d P entries (6, as used in mahalanobis_sq), dL/d opacity.
  T acc[PARAMS];
#pragma unroll
  for (int j = 0; j < PARAMS; ++j) acc[j] = T(0);
  T* s_acc_warp = s_acc + static_cast<int64_t>(warp) * channels;

  const int64_t volume = static_cast<int64_t>(ext_x) * ext_y * ext_z;
  for (int64_t v = warp; v < volume; v += warps) {
    const int ix = lo_x + static_cast<int>(v / (static_cast<int64_t>(ext_y) * ext_z));
    const int iy = lo_y + static_cast<int>((v / ext_z) % ext_y);
    const int iz = lo_z + static_cast<int>(v % ext_z);
    const T dx = sub_rn(voxel_centre<T>(ix, lx, voxel), p[0]);
    const T dy = sub_rn(voxel_centre<T>(iy, ly, voxel), p[1]);
    const T dz = sub_rn(voxel_centre<T>(iz, lz, voxel), p[2]);
    const T e = exp_(mul_rn(T(-0.5), mahalanobis_sq(dx, dy, dz, p + 3)));
    const T w = mul_rn(p[9], e);
    if (e == T(0)) continue;  // no contribution and no gradient; uniform across the warp
    const int64_t vox = ((scene * grid.nx + ix) * grid.ny + iy) * grid.nz + iz;
    const T d = density[vox];
    const T inv = T(1) / (d > eps ? d : eps);
    const T scale = w * inv;
    T dot = T(0);
    for (int c = lane; c < channels; c += 32) {
      const T gf = grad_features[vox * channels + c];
      dot += gf * s_f[c];
      s_acc_warp[c] += scale * gf;  // each lane owns its channels: no races
    }
    dot = warp_sum(dot);
    const T dl_dw = coefficient[vox] + dot * inv;
    const T dl_dm = T(-0.5) * w * dl_dw;
    // dm/dmu = -2 P d; dm/dP_xx = dx^2, ..., dm/dP_xy = 2 dx dy, ...
    acc[0] += dl_dm * T(-2) * (p[3] * dx + p[6] * dy + p[7] * dz);
    acc[1] += dl_dm * T(-2) * (p[6] * dx + p[4] * dy + p[8] * dz);
    acc[2] += dl_dm * T(-2) * (p[7] * dx + p[8] * dy + p[5] * dz);
    acc[3] += dl_dm * dx * dx;
    acc[4] += dl_dm * dy * dy;
    acc[5] += dl_dm * dz * dz;
    acc[6] += dl_dm * T(2) * dx * dy;
    acc[7] += dl_dm * T(2) * dx * dz;
    acc[8] += dl_dm * T(2) * dy * dz;
    acc[9] += dl_dw * e;
  }
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < PARAMS; ++j) s_red[warp * PARAMS + j] = acc[j];
  }
  __syncthreads();
  for (int j = threadIdx.x; j < PARAMS; j += blockDim.x) {
    T sum = T(0);
    for (int w = 0; w < warps; ++w) sum += s_red[w * PARAMS + j];
    grad_params[g * PARAMS + j] = sum;
  }
  for (int c = threadIdx.x; c < channels; c += blockDim.x) {
    T sum = T(0);
    for (int w = 0; w < warps; ++w) sum += s_acc[static_cast<int64_t>(w) * channels + c];
    grad_gaussian_features[g * channels + c] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

namespace {

GridSpec make_grid(const std::vector<double>& lower, double voxel, const std::vector<int64_t>& shape) {
  TORCH_CHECK(lower.size() == 3 && shape.size() == 3, "grid lower corner and shape need 3 values");
  GridSpec grid;
  grid.nx = static_cast<int>(shape[0]);
  grid.ny = static_cast<int>(shape[1]);
  grid.nz = static_cast<int>(shape[2]);
  grid.ntx = (grid.nx + TILE_X - 1) / TILE_X;
  grid.nty = (grid.ny + TILE_Y - 1) / TILE_Y;
  grid.ntz = (grid.nz + TILE_Z - 1) / TILE_Z;
  grid.lx = lower[0];
  grid.ly = lower[1];
  grid.lz = lower[2];
  grid.voxel = voxel;
  return grid;
}

int blocks_for(int64_t n, int threads) { return static_cast<int>((n + threads - 1) / threads); }

template <typename T, int CHUNK>
void launch_forward(const at::Tensor& params, const at::Tensor& boxes, const at::Tensor& features,
                    const at::Tensor& tile_gaussians, const at::Tensor& tile_offsets, int channels,
                    const GridSpec& grid, double eps, int64_t tiles, at::Tensor& density,
                    at::Tensor& out_features) {
  const int chunks = channels == 0 ? 1 : (channels + CHUNK - 1) / CHUNK;
  TORCH_CHECK(tiles < (int64_t(1) << 31), "too many voxel tiles: ", tiles);
  TORCH_CHECK(chunks <= 65535, "too many feature channels: ", channels);
  const dim3 blocks(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  platform::launch(forward_kernel<T, CHUNK>, blocks, dim3(TILE_VOXELS), 0,
      params.data_ptr<T>(), boxes.data_ptr<int>(), channels > 0 ? features.data_ptr<T>() : nullptr,
      tile_gaussians.data_ptr<int>(), tile_offsets.data_ptr<int64_t>(), channels, grid,
      static_cast<T>(eps), density.data_ptr<T>(), channels > 0 ? out_features.data_ptr<T>() : nullptr);
}

}  // namespace

namespace {

// The shape, dtype, device and layout checks both forwards share.
void check_forward_inputs(const at::Tensor& means, const at::Tensor& covariances, const at::Tensor& opacities,
                          const at::Tensor& features, const std::optional<at::Tensor>& valid) {
  TORCH_CHECK(platform::on_device(means) && means.dim() == 3 && means.size(2) == 3,
              "means must be a (B, N, 3) device tensor");
  const int64_t batch = means.size(0), per_scene = means.size(1), count = batch * per_scene;
  TORCH_CHECK(count < (int64_t(1) << 31), "too many Gaussians: ", count);
  TORCH_CHECK(covariances.sizes() == at::IntArrayRef({batch, per_scene, 3, 3}),
              "covariances must be (B, N, 3, 3)");
  TORCH_CHECK(opacities.sizes() == at::IntArrayRef({batch, per_scene}), "opacities must be (B, N)");
  TORCH_CHECK(features.dim() == 3 && features.size(0) == batch && features.size(1) == per_scene,
              "features must be (B, N, C)");
  for (const auto* t : {&covariances, &opacities, &features}) {
    TORCH_CHECK(t->scalar_type() == means.scalar_type() && t->device() == means.device(),
                "all inputs must share dtype and device");
    TORCH_CHECK(t->is_contiguous(), "inputs must be contiguous");
  }
  TORCH_CHECK(means.is_contiguous(), "inputs must be contiguous");
  if (valid.has_value() && valid->defined()) {
    TORCH_CHECK(valid->scalar_type() == at::kBool && valid->is_contiguous() &&
                    valid->sizes() == at::IntArrayRef({batch, per_scene}) && valid->device() == means.device(),
                "valid must be a contiguous (B, N) bool tensor on the inputs' device");
  }
}

}  // namespace

// Returns density (B, X, Y, Z), features (B, X, Y, Z, C), params (M, 10), boxes (M, 6) int32, and
// the flat index of the first included Gaussian with bad inputs (-1 if none); when it is >= 0 the
// other outputs are undefined and the caller raises.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t> forward(
    const at::Tensor& means, const at::Tensor& covariances, const at::Tensor& opacities,
    const at::Tensor& features, const std::optional<at::Tensor>& valid,
    const std::vector<double>& lower, double voxel, const std::vector<int64_t>& shape, double eps) {
  check_forward_inputs(means, covariances, opacities, features, valid);
  const platform::DeviceGuard guard(means.device());
  const int64_t batch = means.size(0), per_scene = means.size(1), count = batch * per_scene;
  const int channels = static_cast<int>(features.size(2));
  const bool has_valid = valid.has_value() && valid->defined();
  const GridSpec grid = make_grid(lower, voxel, shape);
  const int64_t tiles = batch * grid.ntx * grid.nty * grid.ntz;
  const auto opts = means.options();
  const auto long_opts = opts.dtype(at::kLong);

  at::Tensor params = at::empty({count, PARAMS}, opts);
  at::Tensor boxes = at::empty({count, 6}, opts.dtype(at::kInt));
  at::Tensor density = at::empty({batch, grid.nx, grid.ny, grid.nz}, opts);
  at::Tensor out_features = at::empty({batch, grid.nx, grid.ny, grid.nz, channels}, opts);
  at::Tensor tile_counts = at::empty({count}, long_opts);
  at::Tensor keys = at::empty({0}, long_opts);

  constexpr int threads = 256;
  int64_t total = 0;
  if (count > 0) {
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "voxelize_prepare", [&] {
      platform::launch(prepare_kernel<scalar_t>, dim3(blocks_for(count, threads)), dim3(threads), 0,
          means.data_ptr<scalar_t>(), covariances.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
          has_valid ? valid->data_ptr<bool>() : nullptr, count, grid, params.data_ptr<scalar_t>(),
          boxes.data_ptr<int>(), tile_counts.data_ptr<int64_t>());
    });
    at::Tensor ends = at::cumsum(tile_counts, 0);
    // The one host synchronisation: the number of keys, to allocate them, and the input check.
    total = ends[count - 1].item<int64_t>();
    if (total >= BAD_INPUT) {
      const int64_t bad = (tile_counts >= BAD_INPUT).nonzero()[0][0].item<int64_t>();
      return {density, out_features, params, boxes, bad};
    }
    if (total > 0) {
      keys = at::empty({total}, long_opts);
      platform::launch(emit_kernel, dim3(blocks_for(count, threads)), dim3(threads), 0,
          boxes.data_ptr<int>(), tile_counts.data_ptr<int64_t>(), ends.data_ptr<int64_t>(), count,
          per_scene, grid, keys.data_ptr<int64_t>());
      int end_bit = 1;
      while (end_bit < 63 && (int64_t(1) << end_bit) < tiles * count) ++end_bit;
      keys = platform::sort_keys(keys, end_bit);
    }
  }
  if (tiles == 0) return {density, out_features, params, boxes, int64_t(-1)};  // no scenes
  at::Tensor tile_offsets = at::empty({tiles + 1}, long_opts);
  at::Tensor tile_gaussians = at::empty({total}, opts.dtype(at::kInt));
  platform::launch(tile_ranges_kernel, dim3(blocks_for(total + 1, threads)), dim3(threads), 0,
      keys.data_ptr<int64_t>(), total, std::max<int64_t>(count, 1), tiles, tile_offsets.data_ptr<int64_t>(),
      tile_gaussians.data_ptr<int>());

  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "voxelize_forward", [&] {
    const auto run = [&](auto chunk) {
      launch_forward<scalar_t, decltype(chunk)::value>(params, boxes, features, tile_gaussians, tile_offsets,
                                                       channels, grid, eps, tiles, density, out_features);
    };
    // The smallest register chunk that holds all channels (<= 32), else chunks of 32.
    if (channels <= 4) {
      run(std::integral_constant<int, 4>{});
    } else if (channels <= 8) {
      run(std::integral_constant<int, 8>{});
    } else if (channels <= 16) {
      run(std::integral_constant<int, 16>{});
    } else if (channels <= 24) {
      run(std::integral_constant<int, 24>{});
    } else {
      run(std::integral_constant<int, 32>{});
    }
  });
  return {density, out_features, params, boxes, int64_t(-1)};
}

// The capturable forward: density (B, X, Y, Z), features (B, X, Y, Z, C) and `bad`, a one-element
// int64 device tensor holding the flat index of the first included Gaussian with bad inputs, or -1
// (the other outputs are undefined then). No host synchronisation, no data-dependent allocation.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_capturable(
    const at::Tensor& means, const at::Tensor& covariances, const at::Tensor& opacities,
    const at::Tensor& features, const std::optional<at::Tensor>& valid,
    const std::vector<double>& lower, double voxel, const std::vector<int64_t>& shape, double eps) {
  check_forward_inputs(means, covariances, opacities, features, valid);
  const platform::DeviceGuard guard(means.device());
  const int64_t batch = means.size(0), per_scene = means.size(1), count = batch * per_scene;
  const int channels = static_cast<int>(features.size(2));
  const bool has_valid = valid.has_value() && valid->defined();
  const GridSpec grid = make_grid(lower, voxel, shape);
  const int64_t tiles = batch * grid.ntx * grid.nty * grid.ntz;
  const auto opts = means.options();
  const auto long_opts = opts.dtype(at::kLong);

  at::Tensor density = at::empty({batch, grid.nx, grid.ny, grid.nz}, opts);
  at::Tensor out_features = at::empty({batch, grid.nx, grid.ny, grid.nz, channels}, opts);
  if (count == 0) {
    density.zero_();
    out_features.zero_();
    return {density, out_features, at::full({1}, -1, long_opts)};
  }
  at::Tensor params = at::empty({count, PARAMS}, opts);
  at::Tensor boxes = at::empty({count, 6}, opts.dtype(at::kInt));
  at::Tensor tile_counts = at::empty({count}, long_opts);
  constexpr int threads = 256;
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "voxelize_prepare", [&] {
    platform::launch(prepare_kernel<scalar_t>, dim3(blocks_for(count, threads)), dim3(threads), 0,
        means.data_ptr<scalar_t>(), covariances.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
        has_valid ? valid->data_ptr<bool>() : nullptr, count, grid, params.data_ptr<scalar_t>(),
        boxes.data_ptr<int>(), tile_counts.data_ptr<int64_t>());
  });
  // First bad index on the device: argmax of the mask returns its first true entry.
  const at::Tensor is_bad = tile_counts >= BAD_INPUT;
  const at::Tensor bad = at::where(is_bad.any(), is_bad.to(at::kInt).argmax(), at::full({}, -1, long_opts))
                             .reshape({1});
  if (tiles == 0) return {density, out_features, bad};
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "voxelize_forward_capturable", [&] {
    const auto run = [&](auto chunk) {
      constexpr int CHUNK = decltype(chunk)::value;
      const int chunks = channels == 0 ? 1 : (channels + CHUNK - 1) / CHUNK;
      TORCH_CHECK(tiles < (int64_t(1) << 31), "too many voxel tiles: ", tiles);
      TORCH_CHECK(chunks <= 65535, "too many feature channels: ", channels);
      platform::launch(forward_scan_kernel<scalar_t, CHUNK>,
          dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks)), dim3(TILE_VOXELS), 0,
          params.data_ptr<scalar_t>(), boxes.data_ptr<int>(),
          channels > 0 ? features.data_ptr<scalar_t>() : nullptr, per_scene, channels, grid,
          static_cast<scalar_t>(eps), density.data_ptr<scalar_t>(),
          channels > 0 ? out_features.data_ptr<scalar_t>() : nullptr);
    };
    if (channels <= 4) {
      run(std::integral_constant<int, 4>{});
    } else if (channels <= 8) {
      run(std::integral_constant<int, 8>{});
    } else if (channels <= 16) {
      run(std::integral_constant<int, 16>{});
    } else if (channels <= 24) {
      run(std::integral_constant<int, 24>{});
    } else {
      run(std::integral_constant<int, 32>{});
    }
  });
  return {density, out_features, bad};
}

// Returns dL/d params (M, 10) = (dL/dmu (3), dL/dP entries (6, as in mahalanobis_sq), dL/do)
// and dL/d features (M, C).
std::tuple<at::Tensor, at::Tensor> backward(
    const at::Tensor& params, const at::Tensor& boxes, const at::Tensor& features,
    const at::Tensor& density, const at::Tensor& voxel_features, const at::Tensor& grad_density,
    const at::Tensor& grad_features, const std::vector<double>& lower, double voxel,
    const std::vector<int64_t>& shape, double eps) {
  const platform::DeviceGuard guard(params.device());
  const int64_t batch = features.size(0), per_scene = features.size(1), count = batch * per_scene;
  const int channels = static_cast<int>(features.size(2));
  const GridSpec grid = make_grid(lower, voxel, shape);
  const int64_t voxels = density.numel();
  for (const auto* t :
       {&params, &boxes, &features, &density, &voxel_features, &grad_density, &grad_features}) {
    TORCH_CHECK(platform::on_device(*t) && t->is_contiguous(),
                "backward inputs must be contiguous device tensors");
  }
  TORCH_CHECK(grad_density.numel() == voxels && grad_features.numel() == voxels * channels,
              "output gradients do not match the outputs");
  at::Tensor grad_params = at::empty({count, PARAMS}, params.options());
  at::Tensor grad_gaussian_features = at::empty({batch, per_scene, channels}, params.options());
  if (count == 0 || voxels == 0) return {grad_params, grad_gaussian_features};
  at::Tensor coefficient = at::empty({voxels}, params.options());

  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "voxelize_backward", [&] {
    constexpr int threads = 256;
    platform::launch(voxel_coefficient_kernel<scalar_t>, dim3(blocks_for(voxels * 32, threads)),
        dim3(threads), 0,
        density.data_ptr<scalar_t>(), channels > 0 ? voxel_features.data_ptr<scalar_t>() : nullptr,
        grad_density.data_ptr<scalar_t>(), channels > 0 ? grad_features.data_ptr<scalar_t>() : nullptr,
        voxels, channels, static_cast<scalar_t>(eps), coefficient.data_ptr<scalar_t>());

    // As many warps as the shared memory allows (opting in beyond 48 KB for wide features).
    const size_t optin = platform::max_shared_optin();
    auto smem_for = [&](int warps) {
      const size_t scalars = static_cast<size_t>(warps + 1) * channels + static_cast<size_t>(warps) * PARAMS;
      return scalars * sizeof(scalar_t);
    };
    int warps = BACKWARD_WARPS;
    while (warps > 1 && smem_for(warps) > 48 * 1024) --warps;
    const size_t smem = smem_for(warps);
    TORCH_CHECK(smem <= optin, "too many feature channels for the backward kernel: ",
                channels, " (needs ", smem, " bytes of shared memory, the device has ", optin, ")");
    if (smem > 48 * 1024) platform::allow_shared(backward_kernel<scalar_t>, smem);
    TORCH_CHECK(count < (int64_t(1) << 31), "too many Gaussians: ", count);
    platform::launch(backward_kernel<scalar_t>, dim3(static_cast<unsigned>(count)), dim3(warps * 32), smem,
        params.data_ptr<scalar_t>(), boxes.data_ptr<int>(),
        channels > 0 ? features.data_ptr<scalar_t>() : nullptr, density.data_ptr<scalar_t>(),
        coefficient.data_ptr<scalar_t>(), channels > 0 ? grad_features.data_ptr<scalar_t>() : nullptr,
        per_scene, channels, grid, static_cast<scalar_t>(eps), grad_params.data_ptr<scalar_t>(),
        channels > 0 ? grad_gaussian_features.data_ptr<scalar_t>() : nullptr);
  });
  return {grad_params, grad_gaussian_features};
}

}  // namespace gausstr_voxelize
