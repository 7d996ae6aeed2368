// Internal to the CUDA grid emulator: the device-wide state shared by the
// runtime (runtime.cc), the block scheduler (scheduler.cc) and the cuBLAS
// stand-in (cublas.cc).
#ifndef MIM_KERNELS_TESTING_EMULATOR_INTERNAL_H_
#define MIM_KERNELS_TESTING_EMULATOR_INTERNAL_H_

#include <cstddef>
#include <mutex>
#include <string>

#include "kernels/testing/cuda_emu_runtime.h"

namespace cuda_emu::internal {

// Serialises launches, copies, memsets and GEMMs (the legacy default
// stream): one kernel runs at a time, process-wide.
std::mutex& DeviceMutex();

// The sticky error, or cudaSuccess.
cudaError_t StickyError();
// Records a fault found while running device code: prints `report` to
// stderr, keeps it for TakeReports(), and makes `code` the sticky error
// (the first one stays).
void Fault(cudaError_t code, const std::string& report);
// Records a non-sticky error of the calling thread (cudaGetLastError) and
// prints `why` to stderr when non-empty; returns `code`.
cudaError_t CallError(cudaError_t code, const std::string& why);

// True when [p, p + bytes) lies inside one allocation; `pinned_too` also
// accepts cudaMallocHost memory.
bool InDeviceRange(const void* p, size_t bytes, bool pinned_too);

ThreadOrder CurrentThreadOrder();
void CountLaunch();

// Shared-memory limit per block without opt-in, as on sm_80/sm_90.
constexpr size_t kMaxSharedBytes = 48 * 1024;

}  // namespace cuda_emu::internal

#endif  // MIM_KERNELS_TESTING_EMULATOR_INTERNAL_H_
