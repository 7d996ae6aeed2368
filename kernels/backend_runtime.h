// Runtime calls of the CUDA compute backend (backend_cuda.cc) beyond
// DeviceBuffer's (device_buffer.h): implemented in memory_cuda.cu (nvcc or
// the grid emulator), UNIMPLEMENTED in cuda_stub.cc. Internal to kernels/.
#ifndef MIM_KERNELS_BACKEND_RUNTIME_H_
#define MIM_KERNELS_BACKEND_RUNTIME_H_

#include <cstddef>

#include "absl/status/status.h"

namespace mim::kernels::internal {

// Page-locked host memory (cudaMallocHost), so copies from it run
// asynchronously. bytes 0 gives null.
absl::Status PinnedAlloc(size_t bytes, void** ptr);
void PinnedFree(void* ptr);

// Queues a host-to-device copy on the calling thread's copy stream and
// makes the default stream (where the kernels run) wait for it: work
// queued afterwards sees the data, and the host returns at once when `src`
// is pinned. `src` must stay unchanged until the next synchronizing call
// (a device-to-host copy or CudaSynchronize) returns.
absl::Status CopyHostToDeviceOnCopyStream(void* dst, const void* src,
                                          size_t bytes);

// Device-to-device copy on the default stream.
absl::Status CopyDeviceToDevice(void* dst, const void* src, size_t bytes);

}  // namespace mim::kernels::internal

#endif  // MIM_KERNELS_BACKEND_RUNTIME_H_
