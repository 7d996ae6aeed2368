// Internal to the CUDA grid emulator: the device-wide state shared by the
// runtime (runtime.cc), the block scheduler (scheduler.cc) and the cuBLAS
// stand-in (cublas.cc).
#ifndef MIM_KERNELS_TESTING_EMULATOR_INTERNAL_H_
#define MIM_KERNELS_TESTING_EMULATOR_INTERNAL_H_

#include <cstddef>
#include <initializer_list>
#include <mutex>
#include <string>

#include "kernels/testing/cuda_emu_device.h"
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

// Stream-order checker. The emulator runs every call at once, which is one
// legal schedule; a GPU may run the work of different streams in any order
// that their events and the host's synchronizations allow. So each queued
// operation gets a vector clock (what is ordered before it: earlier work of
// its stream, the events its stream waited for, what the queuing host
// thread had synchronized with), and for each allocation the emulator keeps
// the last operation that wrote it and the last reader per stream. An
// operation that writes an allocation another stream's operation reads or
// writes, or reads one another stream writes, with neither ordered before
// the other, is a hazard: a buffer rewritten while queued work may still
// read it, or read before its copy lands. Memory outside every allocation
// (pageable host memory) and host writes into pinned memory are not seen.
//
// Records an operation `what` (a string that lives for the process, e.g. a
// kernel name) queued on `stream` by the calling host thread and touching
// `operands`; returns the hazard report, or "" when there is none (the
// caller then Faults).
std::string StreamOp(cudaStream_t stream, const char* what, const Operand* operands, int n);
// The calling host thread has waited for the work queued on `stream` so far
// (the legacy default stream: also for every blocking stream), or for the
// whole device.
void HostWaitsForStream(cudaStream_t stream);
void HostWaitsForDevice();
// Stream and event calls (cudaStreamCreate*, cudaEventRecord,
// cudaStreamWaitEvent, cudaEventSynchronize).
void RegisterStream(cudaStream_t stream, bool blocking);
void RecordEvent(cudaEvent_t event, cudaStream_t stream);
void StreamWaitsForEvent(cudaStream_t stream, cudaEvent_t event);
void HostWaitsForEvent(cudaEvent_t event);
// StreamOp, and Fault with its report on a hazard; false then.
bool Queue(cudaStream_t stream, const char* what, std::initializer_list<Operand> ops);

ThreadOrder CurrentThreadOrder();
void CountLaunch();

// Shared-memory limit per block without opt-in, as on sm_80/sm_90.
constexpr size_t kMaxSharedBytes = 48 * 1024;

}  // namespace cuda_emu::internal

#endif  // MIM_KERNELS_TESTING_EMULATOR_INTERNAL_H_
