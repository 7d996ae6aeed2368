// CudaBackend: every op on its *Cuda twin (device pointers, the default
// stream); memory through the CUDA runtime (backend_runtime.h,
// device_buffer.h). Plain C++: the runtime calls live in the CUDA library
// (nvcc), in the grid emulator's build of it, or in cuda_stub.cc.
#include <string>

#include "kernels/backend.h"
#include "kernels/backend_runtime.h"
#include "kernels/device_buffer.h"

namespace mim::kernels {
namespace {

class CudaComputeBackend final : public ComputeBackend {
 public:
  absl::string_view name() const override { return "cuda"; }

  bool host_memory() const override { return false; }
  absl::Status Allocate(size_t bytes, void** ptr) const override {
    return internal::DeviceAlloc(bytes, ptr);
  }
  void Free(void* ptr) const override { internal::DeviceFree(ptr); }
  absl::Status AllocateHost(size_t bytes, void** ptr) const override {
    return internal::PinnedAlloc(bytes, ptr);
  }
  void FreeHost(void* ptr) const override { internal::PinnedFree(ptr); }
  absl::Status CopyToBackend(void* dst, const void* src,
                             size_t bytes) const override {
    return internal::CopyHostToDeviceOnCopyStream(dst, src, bytes);
  }
  absl::Status CopyToHost(void* dst, const void* src,
                          size_t bytes) const override {
    // cudaMemcpy D2H on the default stream: waits for the kernels before it.
    return internal::CopyDeviceToHost(dst, src, bytes);
  }
  absl::Status Copy(void* dst, const void* src, size_t bytes) const override {
    return internal::CopyDeviceToDevice(dst, src, bytes);
  }
  absl::Status Zero(void* ptr, size_t bytes) const override {
    return internal::DeviceMemsetZero(ptr, bytes);
  }
  absl::Status NewEvent(void** event) const override {
    return internal::EventCreate(event);
  }
  void DeleteEvent(void* event) const override {
    internal::EventDestroy(event);
  }
  absl::Status RecordEvent(void* event) const override {
    return internal::EventRecordOnCompute(event);
  }
  absl::Status WaitEvent(void* event) const override {
    return internal::ComputeWaitsForEvent(event);
  }
  absl::Status SyncEvent(void* event) const override {
    return internal::HostWaitsForEvent(event);
  }
  absl::Status CopyToBackendAsync(void* dst, const void* src, size_t bytes,
                                  void* after, void* done) const override {
    return internal::CopyHostToDeviceAfter(dst, src, bytes, after, done);
  }
  absl::Status CopyColumns(const ColumnCopyShape& s, const float* src,
                           float* dst) const override {
    return CopyColumnsCuda(s, src, dst);
  }
  absl::Status AddInto(int64_t n, const float* src,
                       float* dst) const override {
    return AddIntoCuda(n, src, dst);
  }

  absl::Status EmbeddingGather(const GatherShape& s, const float* table,
                               const int32_t* index,
                               float* out) const override {
    return EmbeddingGatherCuda(s, table, index, out);
  }
  absl::Status EmbeddingGatherBackward(const GatherShape& s,
                                       const float* grad_out,
                                       const int32_t* index, GradMode mode,
                                       float* grad_table) const override {
    return EmbeddingGatherBackwardCuda(s, grad_out, index, mode, grad_table);
  }
  absl::Status MaskedMeanPoolForward(const SeqShape& s, const float* x,
                                     const int32_t* lens,
                                     float* out) const override {
    return MaskedMeanPoolForwardCuda(s, x, lens, out);
  }
  absl::Status MaskedMeanPoolBackward(const SeqShape& s,
                                      const float* grad_out,
                                      const int32_t* lens,
                                      float* grad_x) const override {
    return MaskedMeanPoolBackwardCuda(s, grad_out, lens, grad_x);
  }
  absl::Status TopKSelect(const SeqShape& s, const float* x,
                          const float* target, const int32_t* lens, int k,
                          int32_t* positions,
                          int32_t* new_lens) const override {
    return TopKSelectCuda(s, x, target, lens, k, positions, new_lens);
  }
  absl::Status SelectRowsForward(const SeqShape& s, const float* x,
                                 const int32_t* positions, int k,
                                 float* out) const override {
    return SelectRowsForwardCuda(s, x, positions, k, out);
  }
  absl::Status SelectRowsBackward(const SeqShape& s, const float* grad_out,
                                  const int32_t* positions, int k,
                                  float* grad_x) const override {
    return SelectRowsBackwardCuda(s, grad_out, positions, k, grad_x);
  }
  absl::Status DinAttentionForward(const SeqShape& s,
                                   const AttentionMlpShape& m, const float* h,
                                   const float* h_t, const int32_t* lens,
                                   const AttentionMlpParams& p, float* scores,
                                   float* out) const override {
    return DinAttentionForwardCuda(s, m, h, h_t, lens, p, scores, out);
  }
  absl::Status DinAttentionBackward(const SeqShape& s,
                                    const AttentionMlpShape& m,
                                    const float* h, const float* h_t,
                                    const int32_t* lens,
                                    const AttentionMlpParams& p,
                                    const float* grad_out, float* grad_h,
                                    float* grad_h_t,
                                    const AttentionMlpGrads& g) const override {
    return DinAttentionBackwardCuda(s, m, h, h_t, lens, p, grad_out, grad_h,
                                   grad_h_t, g);
  }
  absl::Status ContentFusionForward(const ContentShape& s, const float* m,
                                    const float* m_t, const float* h,
                                    const int32_t* lens, float* alpha,
                                    float* h_mm,
                                    float* h_fusion) const override {
    return ContentFusionForwardCuda(s, m, m_t, h, lens, alpha, h_mm, h_fusion);
  }
  absl::Status ContentFusionBackward(const ContentShape& s, const float* m,
                                     const float* m_t, const float* h,
                                     const int32_t* lens,
                                     const float* grad_mm,
                                     const float* grad_fusion, float* grad_m,
                                     float* grad_m_t,
                                     float* grad_h) const override {
    return ContentFusionBackwardCuda(s, m, m_t, h, lens, grad_mm, grad_fusion,
                                    grad_m, grad_m_t, grad_h);
  }
  absl::Status DenseForward(const DenseShape& s, const float* x,
                            const float* w, const float* b, Activation act,
                            float* y) const override {
    return DenseForwardCuda(s, x, w, b, act, y);
  }
  absl::Status DenseBackward(const DenseShape& s, const float* x,
                             const float* w, const float* y,
                             const float* grad_y, Activation act,
                             float* grad_x, float* grad_w,
                             float* grad_b) const override {
    return DenseBackwardCuda(s, x, w, y, grad_y, act, grad_x, grad_w, grad_b);
  }
  absl::Status SigmoidCrossEntropyForward(int64_t n, const float* logits,
                                          const float* labels,
                                          float* loss) const override {
    return SigmoidCrossEntropyForwardCuda(n, logits, labels, loss);
  }
  absl::Status SigmoidCrossEntropyBackward(int64_t n, const float* logits,
                                           const float* labels,
                                           float* grad_logits) const override {
    return SigmoidCrossEntropyBackwardCuda(n, logits, labels, grad_logits);
  }
  absl::Status AdamUpdate(const AdamConfig& c, int64_t step, int64_t n,
                          const float* grad, float* param, float* m,
                          float* v) const override {
    return AdamUpdateCuda(c, step, n, grad, param, m, v);
  }
};

}  // namespace

const ComputeBackend& CudaBackend() {
  static const CudaComputeBackend* const backend = new CudaComputeBackend();
  return *backend;
}

}  // namespace mim::kernels
