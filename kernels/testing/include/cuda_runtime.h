// Stand-in for CUDA's <cuda_runtime.h> when the .cu sources are compiled as
// host C++ for the grid emulator (kernels/testing/README.md). Only targets
// built by cuda_emulated_library see this directory.
#ifndef MIM_KERNELS_TESTING_INCLUDE_CUDA_RUNTIME_H_
#define MIM_KERNELS_TESTING_INCLUDE_CUDA_RUNTIME_H_

#include "kernels/testing/cuda_emu_device.h"

#endif  // MIM_KERNELS_TESTING_INCLUDE_CUDA_RUNTIME_H_
