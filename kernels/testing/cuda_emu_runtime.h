// The CUDA runtime API subset the kernels' host code uses, emulated on host
// memory for the CUDA grid emulator (kernels/testing/README.md). Reached
// through the stand-in <cuda_runtime.h> in kernels/testing/include/, so the
// same .cu sources compile unchanged as host C++.
//
// Model: one emulated device (ordinal 0). Device memory is host memory
// from posix_memalign, registered so that copies, kernel arguments and GEMM
// operands can be checked against the allocation they point into. Every
// call is synchronous, which is a legal schedule of in-order streams; the
// ordering the stream and event calls declare is checked instead: an
// operation that touches an allocation another stream's operation also
// touches (one of them writing), with no event wait or host
// synchronization ordering the two, is a fault (a stream-order hazard:
// what a GPU could run in either order). Launches, copies and GEMMs are
// serialised by one process-wide lock (the legacy default stream), so
// calls from several host threads are safe.
//
// Errors follow CUDA's two kinds:
//  - a bad call (invalid argument, bad launch configuration, a copy outside
//    its allocation) returns an error and records it as the calling
//    thread's last error (cudaGetLastError reads and clears it);
//  - a fault found while a kernel runs (a shared-memory race or
//    out-of-bounds index, a barrier deadlock, misuse of a warp intrinsic, a
//    host pointer passed as a kernel argument) is sticky, as a device fault
//    is: every later call returns it until cuda_emu::ClearStickyError().
//    cudaGetErrorString() of that code carries the emulator's report, and
//    each report is also printed to stderr as it is found.
//
// Thread-safety: every function here is safe for concurrent access.
#ifndef MIM_KERNELS_TESTING_CUDA_EMU_RUNTIME_H_
#define MIM_KERNELS_TESTING_CUDA_EMU_RUNTIME_H_

#include <cstddef>
#include <string>
#include <vector>

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};

// Values as in CUDA's driver_types.h, so logs read the same.
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoDevice = 100,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
#define cudaStreamNonBlocking 0x01
#define cudaHostAllocDefault 0x00
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int major;
  int minor;
  int multiProcessorCount;
};

const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();

cudaError_t cudaGetDeviceCount(int* count);  // 1
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);  // 0 only
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();

cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
// Pinned host memory: host memory that kernels may also address (UVA).
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int flags);
cudaError_t cudaFreeHost(void* ptr);

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
// Always 0 ms: the emulator has no device timeline.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

namespace cuda_emu {

// Order in which the threads of a block start and resume after a barrier.
// Any order is a legal GPU schedule; running a suite in both orders shows
// results that depend on one (a missing barrier the race detector cannot
// see, say in global memory). Default: kForward, or kReverse when the
// environment variable MIM_CUDA_EMU_ORDER=reverse is set at start-up.
enum class ThreadOrder { kForward, kReverse };
void SetThreadOrder(ThreadOrder order);

// The fault reports found so far (one line each), oldest first; clears them.
std::vector<std::string> TakeReports();
// Forgets the sticky error, as a fresh CUDA context would (allocations stay).
void ClearStickyError();

// Bytes currently allocated with cudaMalloc, and the number of launches so
// far (for tests of the emulator itself).
size_t DeviceBytesInUse();
long long LaunchCount();

}  // namespace cuda_emu

#endif  // MIM_KERNELS_TESTING_CUDA_EMU_RUNTIME_H_
