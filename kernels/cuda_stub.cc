// Default build (no --config=cuda): every CUDA twin reports UNIMPLEMENTED so
// callers and tests can tell "built without CUDA" from a device failure.
#include "absl/status/status.h"
#include "kernels/attention_ops.h"
#include "kernels/backend_runtime.h"
#include "kernels/common.h"
#include "kernels/content_ops.h"
#include "kernels/dense_ops.h"
#include "kernels/device_buffer.h"
#include "kernels/embedding_ops.h"
#include "kernels/memory_ops.h"
#include "kernels/sequence_ops.h"

namespace mim::kernels {
namespace {
absl::Status NoCuda() {
  return absl::UnimplementedError("built without CUDA (use --config=cuda)");
}
}  // namespace

absl::Status CudaDeviceStatus() { return NoCuda(); }
absl::Status CudaSynchronize() { return NoCuda(); }

namespace internal {
absl::Status DeviceAlloc(size_t, void**) { return NoCuda(); }
void DeviceFree(void*) {}
absl::Status CopyHostToDevice(void*, const void*, size_t) { return NoCuda(); }
absl::Status CopyDeviceToHost(void*, const void*, size_t) { return NoCuda(); }
absl::Status DeviceMemsetZero(void*, size_t) { return NoCuda(); }
absl::Status PinnedAlloc(size_t, void** ptr) {
  *ptr = nullptr;
  return NoCuda();
}
void PinnedFree(void*) {}
absl::Status CopyHostToDeviceOnCopyStream(void*, const void*, size_t) {
  return NoCuda();
}
absl::Status CopyDeviceToDevice(void*, const void*, size_t) { return NoCuda(); }
absl::Status EventCreate(void** event) {
  *event = nullptr;
  return NoCuda();
}
void EventDestroy(void*) {}
absl::Status EventRecordOnCompute(void*) { return NoCuda(); }
absl::Status ComputeWaitsForEvent(void*) { return NoCuda(); }
absl::Status HostWaitsForEvent(void*) { return NoCuda(); }
absl::Status CopyHostToDeviceAfter(void*, const void*, size_t, void*, void*) {
  return NoCuda();
}
}  // namespace internal

absl::Status EmbeddingGatherCuda(const GatherShape&, const float*,
                                 const int32_t*, float*) {
  return NoCuda();
}
absl::Status EmbeddingGatherBackwardCuda(const GatherShape&, const float*,
                                         const int32_t*, GradMode, float*) {
  return NoCuda();
}
absl::Status DinAttentionForwardCuda(const SeqShape&, const AttentionMlpShape&,
                                     const float*, const float*,
                                     const int32_t*, const AttentionMlpParams&,
                                     float*, float*) {
  return NoCuda();
}
absl::Status DinAttentionBackwardCuda(const SeqShape&,
                                      const AttentionMlpShape&, const float*,
                                      const float*, const int32_t*,
                                      const AttentionMlpParams&, const float*,
                                      float*, float*,
                                      const AttentionMlpGrads&) {
  return NoCuda();
}
absl::Status ContentFusionForwardCuda(const ContentShape&, const float*,
                                      const float*, const float*,
                                      const int32_t*, float*, float*, float*) {
  return NoCuda();
}
absl::Status ContentFusionBackwardCuda(const ContentShape&, const float*,
                                       const float*, const float*,
                                       const int32_t*, const float*,
                                       const float*, float*, float*, float*) {
  return NoCuda();
}
absl::Status MaskedMeanPoolForwardCuda(const SeqShape&, const float*,
                                       const int32_t*, float*) {
  return NoCuda();
}
absl::Status MaskedMeanPoolBackwardCuda(const SeqShape&, const float*,
                                        const int32_t*, float*) {
  return NoCuda();
}
absl::Status TopKSelectCuda(const SeqShape&, const float*, const float*,
                            const int32_t*, int, int32_t*, int32_t*) {
  return NoCuda();
}
absl::Status SelectRowsForwardCuda(const SeqShape&, const float*,
                                   const int32_t*, int, float*) {
  return NoCuda();
}
absl::Status SelectRowsBackwardCuda(const SeqShape&, const float*,
                                    const int32_t*, int, float*) {
  return NoCuda();
}
absl::Status DenseForwardCuda(const DenseShape&, const float*, const float*,
                              const float*, Activation, float*) {
  return NoCuda();
}
absl::Status DenseBackwardCuda(const DenseShape&, const float*, const float*,
                               const float*, const float*, Activation, float*,
                               float*, float*) {
  return NoCuda();
}
absl::Status SigmoidCrossEntropyForwardCuda(int64_t, const float*,
                                            const float*, float*) {
  return NoCuda();
}
absl::Status SigmoidCrossEntropyBackwardCuda(int64_t, const float*,
                                             const float*, float*) {
  return NoCuda();
}
absl::Status AdamUpdateCuda(const AdamConfig&, int64_t, int64_t, const float*,
                            float*, float*, float*) {
  return NoCuda();
}

absl::Status CopyColumnsCuda(const ColumnCopyShape&, const float*, float*) {
  return NoCuda();
}
absl::Status AddIntoCuda(int64_t, const float*, float*) { return NoCuda(); }

}  // namespace mim::kernels
