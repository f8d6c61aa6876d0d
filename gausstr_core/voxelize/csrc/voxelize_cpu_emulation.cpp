// The CUDA voxelizer compiled for the CPU emulation harness (tests without a GPU): the same
// kernels and host code as voxelize_kernels.cu, the same bindings as voxelize.cpp.
#define GAUSSTR_CPU_EMULATION
#include "voxelize_kernels.cu"  // NOLINT(bugprone-suspicious-include)
#include "voxelize.cpp"         // NOLINT(bugprone-suspicious-include)
