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

// CUDA events (cudaEvent_t as void*), for double-buffered inputs
// (ComputeBackend's event methods). Record and wait act on the default
// stream, where the kernels run; HostWaitsForEvent is
// cudaEventSynchronize. A null event is refused (INVALID_ARGUMENT).
absl::Status EventCreate(void** event);
void EventDestroy(void* event);
absl::Status EventRecordOnCompute(void* event);
absl::Status ComputeWaitsForEvent(void* event);
absl::Status HostWaitsForEvent(void* event);

// Queues a host-to-device copy on the calling thread's copy stream after
// the last record of `after` (null: no wait) and records `done` after it.
// The default stream does not wait for it (ComputeWaitsForEvent(done)).
absl::Status CopyHostToDeviceAfter(void* dst, const void* src, size_t bytes,
                                   void* after, void* done);

// Device-to-device copy on the default stream.
absl::Status CopyDeviceToDevice(void* dst, const void* src, size_t bytes);

}  // namespace mim::kernels::internal

#endif  // MIM_KERNELS_BACKEND_RUNTIME_H_
