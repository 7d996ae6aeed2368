// CUDA twins of memory_ops.h, and the runtime pieces the CUDA compute
// backend (backend_cuda.cc) needs beyond DeviceBuffer: pinned host memory
// and a host-to-device copy on a copy stream that the compute stream waits
// for (backend_runtime.h).
#include "kernels/backend_runtime.h"
#include "kernels/cuda_util.cuh"
#include "kernels/memory_ops.h"

namespace mim::kernels {
namespace {

__global__ void CopyColumnsKernel(int64_t rows, int64_t width,
                                  int64_t src_stride, int64_t dst_stride,
                                  const float* src, float* dst) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= rows * width) return;
  const int64_t r = e / width, c = e % width;
  dst[r * dst_stride + c] = src[r * src_stride + c];
}

__global__ void AddIntoKernel(int64_t n, const float* src, float* dst) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) dst[i] += src[i];
}

}  // namespace

absl::Status CopyColumnsCuda(const ColumnCopyShape& s, const float* src,
                             float* dst) {
  const char* op = "CopyColumnsCuda";
  if (s.rows < 0 || s.width < 0 || s.src_stride < s.width ||
      s.dst_stride < s.width) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: rows=%d width=%d src_stride=%d dst_stride=%d; expected sizes "
        ">= 0 and strides >= width",
        op, s.rows, s.width, s.src_stride, s.dst_stride));
  }
  const int64_t n = s.rows * s.width;
  MIM_RETURN_IF_ERROR(
      cuda::RequireNonNull(op, {{"src", src, n > 0}, {"dst", dst, n > 0}}));
  if (n == 0) return absl::OkStatus();
  CopyColumnsKernel<<<cuda::Blocks(n), 256>>>(s.rows, s.width, s.src_stride,
                                              s.dst_stride, src, dst);
  return cuda::CheckLaunch(op, absl::StrFormat("rows=%d width=%d", s.rows,
                                               s.width));
}

absl::Status AddIntoCuda(int64_t n, const float* src, float* dst) {
  const char* op = "AddIntoCuda";
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: negative n=%d", op, n));
  }
  MIM_RETURN_IF_ERROR(
      cuda::RequireNonNull(op, {{"src", src, n > 0}, {"dst", dst, n > 0}}));
  if (n == 0) return absl::OkStatus();
  AddIntoKernel<<<cuda::Blocks(n), 256>>>(n, src, dst);
  return cuda::CheckLaunch(op, absl::StrFormat("n=%d", n));
}

namespace internal {
namespace {

// The calling thread's copy stream and the event the compute stream waits
// on. Non-blocking, so a copy does not wait for kernels queued on the
// default stream (a copy into a buffer those kernels still read must come
// after them: the model's inputs are only rewritten after the step's
// results were read back, which waited for them).
struct CopyStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t done = nullptr;
  ~CopyStream() {
    if (done != nullptr) cudaEventDestroy(done);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

absl::Status ThreadCopyStream(CopyStream** out) {
  thread_local CopyStream s;
  if (s.stream == nullptr) {
    cudaStream_t stream = nullptr;
    MIM_RETURN_IF_ERROR(cuda::Check(
        cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
        "cudaStreamCreateWithFlags", "copy stream"));
    cudaEvent_t done = nullptr;
    const absl::Status st =
        cuda::Check(cudaEventCreate(&done), "cudaEventCreate", "copy stream");
    if (!st.ok()) {
      cudaStreamDestroy(stream);
      return st;
    }
    s.stream = stream;
    s.done = done;
  }
  *out = &s;
  return absl::OkStatus();
}

}  // namespace

absl::Status PinnedAlloc(size_t bytes, void** ptr) {
  *ptr = nullptr;
  if (bytes == 0) return absl::OkStatus();
  return cuda::Check(cudaMallocHost(ptr, bytes), "cudaMallocHost",
                     absl::StrFormat("%d bytes", bytes));
}

void PinnedFree(void* ptr) {
  if (ptr != nullptr) cudaFreeHost(ptr);
}

absl::Status CopyHostToDeviceOnCopyStream(void* dst, const void* src,
                                          size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  CopyStream* s = nullptr;
  MIM_RETURN_IF_ERROR(ThreadCopyStream(&s));
  const std::string what = absl::StrFormat("%d bytes", bytes);
  MIM_RETURN_IF_ERROR(cuda::Check(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s->stream),
      "cudaMemcpyAsync H2D (copy stream)", what));
  MIM_RETURN_IF_ERROR(cuda::Check(cudaEventRecord(s->done, s->stream),
                                  "cudaEventRecord (copy stream)", what));
  // Kernels queued after this call (default stream) see the copied data.
  return cuda::Check(cudaStreamWaitEvent(nullptr, s->done, 0),
                     "cudaStreamWaitEvent (default stream)", what);
}

namespace {
absl::Status NullEvent(const char* what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: null event; expected one from EventCreate", what));
}
}  // namespace

absl::Status EventCreate(void** event) {
  *event = nullptr;
  cudaEvent_t e = nullptr;
  // Without timing: recording and waiting are then cheaper.
  MIM_RETURN_IF_ERROR(cuda::Check(
      cudaEventCreateWithFlags(&e, cudaEventDisableTiming),
      "cudaEventCreateWithFlags", "input event"));
  *event = e;
  return absl::OkStatus();
}

void EventDestroy(void* event) {
  if (event != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

absl::Status EventRecordOnCompute(void* event) {
  if (event == nullptr) return NullEvent("EventRecordOnCompute");
  return cuda::Check(cudaEventRecord(static_cast<cudaEvent_t>(event), nullptr),
                     "cudaEventRecord (default stream)", "input event");
}

absl::Status ComputeWaitsForEvent(void* event) {
  if (event == nullptr) return NullEvent("ComputeWaitsForEvent");
  return cuda::Check(
      cudaStreamWaitEvent(nullptr, static_cast<cudaEvent_t>(event), 0),
      "cudaStreamWaitEvent (default stream)", "input event");
}

absl::Status HostWaitsForEvent(void* event) {
  if (event == nullptr) return NullEvent("HostWaitsForEvent");
  return cuda::Check(cudaEventSynchronize(static_cast<cudaEvent_t>(event)),
                     "cudaEventSynchronize", "input event");
}

absl::Status CopyHostToDeviceAfter(void* dst, const void* src, size_t bytes,
                                   void* after, void* done) {
  if (done == nullptr) return NullEvent("CopyHostToDeviceAfter");
  CopyStream* s = nullptr;
  MIM_RETURN_IF_ERROR(ThreadCopyStream(&s));
  const std::string what = absl::StrFormat("%d bytes", bytes);
  if (after != nullptr) {
    MIM_RETURN_IF_ERROR(cuda::Check(
        cudaStreamWaitEvent(s->stream, static_cast<cudaEvent_t>(after), 0),
        "cudaStreamWaitEvent (copy stream)", what));
  }
  if (bytes > 0) {
    MIM_RETURN_IF_ERROR(cuda::Check(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s->stream),
        "cudaMemcpyAsync H2D (copy stream)", what));
  }
  return cuda::Check(cudaEventRecord(static_cast<cudaEvent_t>(done), s->stream),
                     "cudaEventRecord (copy stream)", what);
}

absl::Status CopyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return cuda::Check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice),
                     "cudaMemcpy D2D", absl::StrFormat("%d bytes", bytes));
}

}  // namespace internal
}  // namespace mim::kernels
