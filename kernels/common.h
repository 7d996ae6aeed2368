// Shared shapes and runtime settings for the CiUBM compute kernels.
//
// Every operation in kernels/ comes in two twins with the same signature,
// declared side by side (FBGEMM style): `FooCpu` works on host pointers,
// `FooCuda` on device pointers (allocate with DeviceBuffer, device_buffer.h).
// Buffers are row-major float32 and caller-allocated so a trainer can reuse
// them across steps. Outputs are overwritten, never accumulated into.
//
// Failure contract shared by all ops: a shape that is negative, a length
// outside [0, max_len], an index out of range or a required null pointer
// gives INVALID_ARGUMENT and leaves outputs unspecified. A CUDA twin built
// without CUDA returns UNIMPLEMENTED ("built without CUDA"); a CUDA runtime
// error returns INTERNAL naming the kernel and the shapes.
//
// CUDA twins run on the default stream; they return once the work is
// queued, except where a header says they synchronize (result checks).
#ifndef MIM_KERNELS_COMMON_H_
#define MIM_KERNELS_COMMON_H_

#include <cstdint>

#include "absl/status/status.h"

namespace mim::kernels {

// A padded batch of sequences: tensor [batch, max_len, dim], with per-row
// valid lengths lens[batch] (int32, 0 <= lens[b] <= max_len). Positions
// i >= lens[b] are padding: they are never read by forward passes and get
// zero gradient.
struct SeqShape {
  int64_t batch = 0;
  int64_t max_len = 0;
  int64_t dim = 0;
};

// Number of host threads the CPU twins use (a parallel-for over the batch;
// each thread calls single-threaded BLAS). Default 1. Setting it also puts
// OpenBLAS's own pool at 1 thread, process-wide, so threads do not
// oversubscribe the cores. Safe to call from any thread; takes effect for
// calls that start afterwards.
void SetCpuThreads(int num_threads);
int CpuThreads();

// OK when a CUDA device is usable. FAILED_PRECONDITION "no CUDA device:
// <reason>" when the runtime finds none (e.g. no driver), UNIMPLEMENTED when
// built without CUDA. Tests use it to decide GTEST_SKIP().
absl::Status CudaDeviceStatus();

// Waits for all queued CUDA work; surfaces asynchronous kernel errors.
absl::Status CudaSynchronize();

}  // namespace mim::kernels

#endif  // MIM_KERNELS_COMMON_H_
