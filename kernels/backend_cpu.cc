// CpuBackend: forwards every op to its *Cpu twin.
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"
#include "kernels/backend.h"

namespace mim::kernels {
namespace {

class CpuComputeBackend final : public ComputeBackend {
 public:
  absl::string_view name() const override { return "cpu"; }

  bool host_memory() const override { return true; }
  absl::Status Allocate(size_t bytes, void** ptr) const override {
    *ptr = nullptr;
    if (bytes == 0) return absl::OkStatus();
    // 64-byte aligned like the SIMD paths prefer; rounded up as
    // aligned_alloc requires.
    const size_t rounded = (bytes + 63) / 64 * 64;
    *ptr = std::aligned_alloc(64, rounded);
    if (*ptr == nullptr) {
      return absl::InternalError(absl::StrFormat(
          "CpuBackend: cannot allocate %d bytes of host memory", bytes));
    }
    return absl::OkStatus();
  }
  void Free(void* ptr) const override { std::free(ptr); }
  absl::Status AllocateHost(size_t bytes, void** ptr) const override {
    return Allocate(bytes, ptr);
  }
  void FreeHost(void* ptr) const override { std::free(ptr); }
  absl::Status CopyToBackend(void* dst, const void* src,
                             size_t bytes) const override {
    return Copy(dst, src, bytes);
  }
  absl::Status CopyToHost(void* dst, const void* src,
                          size_t bytes) const override {
    return Copy(dst, src, bytes);
  }
  absl::Status Copy(void* dst, const void* src, size_t bytes) const override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status Zero(void* ptr, size_t bytes) const override {
    if (bytes > 0) std::memset(ptr, 0, bytes);
    return absl::OkStatus();
  }
  absl::Status NewEvent(void** event) const override {
    *event = nullptr;
    return absl::OkStatus();
  }
  void DeleteEvent(void*) const override {}
  absl::Status RecordEvent(void*) const override { return absl::OkStatus(); }
  absl::Status WaitEvent(void*) const override { return absl::OkStatus(); }
  absl::Status SyncEvent(void*) const override { return absl::OkStatus(); }
  absl::Status CopyToBackendAsync(void* dst, const void* src, size_t bytes,
                                  void*, void*) const override {
    return Copy(dst, src, bytes);
  }
  absl::Status CopyColumns(const ColumnCopyShape& s, const float* src,
                           float* dst) const override {
    return CopyColumnsCpu(s, src, dst);
  }
  absl::Status AddInto(int64_t n, const float* src,
                       float* dst) const override {
    return AddIntoCpu(n, src, dst);
  }

  absl::Status EmbeddingGather(const GatherShape& s, const float* table,
                               const int32_t* index,
                               float* out) const override {
    return EmbeddingGatherCpu(s, table, index, out);
  }
  absl::Status EmbeddingGatherBackward(const GatherShape& s,
                                       const float* grad_out,
                                       const int32_t* index, GradMode mode,
                                       float* grad_table) const override {
    return EmbeddingGatherBackwardCpu(s, grad_out, index, mode, grad_table);
  }
  absl::Status MaskedMeanPoolForward(const SeqShape& s, const float* x,
                                     const int32_t* lens,
                                     float* out) const override {
    return MaskedMeanPoolForwardCpu(s, x, lens, out);
  }
  absl::Status MaskedMeanPoolBackward(const SeqShape& s,
                                      const float* grad_out,
                                      const int32_t* lens,
                                      float* grad_x) const override {
    return MaskedMeanPoolBackwardCpu(s, grad_out, lens, grad_x);
  }
  absl::Status TopKSelect(const SeqShape& s, const float* x,
                          const float* target, const int32_t* lens, int k,
                          int32_t* positions,
                          int32_t* new_lens) const override {
    return TopKSelectCpu(s, x, target, lens, k, positions, new_lens);
  }
  absl::Status SelectRowsForward(const SeqShape& s, const float* x,
                                 const int32_t* positions, int k,
                                 float* out) const override {
    return SelectRowsForwardCpu(s, x, positions, k, out);
  }
  absl::Status SelectRowsBackward(const SeqShape& s, const float* grad_out,
                                  const int32_t* positions, int k,
                                  float* grad_x) const override {
    return SelectRowsBackwardCpu(s, grad_out, positions, k, grad_x);
  }
  absl::Status DinAttentionForward(const SeqShape& s,
                                   const AttentionMlpShape& m, const float* h,
                                   const float* h_t, const int32_t* lens,
                                   const AttentionMlpParams& p, float* scores,
                                   float* out) const override {
    return DinAttentionForwardCpu(s, m, h, h_t, lens, p, scores, out);
  }
  absl::Status DinAttentionBackward(const SeqShape& s,
                                    const AttentionMlpShape& m,
                                    const float* h, const float* h_t,
                                    const int32_t* lens,
                                    const AttentionMlpParams& p,
                                    const float* grad_out, float* grad_h,
                                    float* grad_h_t,
                                    const AttentionMlpGrads& g) const override {
    return DinAttentionBackwardCpu(s, m, h, h_t, lens, p, grad_out, grad_h,
                                   grad_h_t, g);
  }
  absl::Status ContentFusionForward(const ContentShape& s, const float* m,
                                    const float* m_t, const float* h,
                                    const int32_t* lens, float* alpha,
                                    float* h_mm,
                                    float* h_fusion) const override {
    return ContentFusionForwardCpu(s, m, m_t, h, lens, alpha, h_mm, h_fusion);
  }
  absl::Status ContentFusionBackward(const ContentShape& s, const float* m,
                                     const float* m_t, const float* h,
                                     const int32_t* lens,
                                     const float* grad_mm,
                                     const float* grad_fusion, float* grad_m,
                                     float* grad_m_t,
                                     float* grad_h) const override {
    return ContentFusionBackwardCpu(s, m, m_t, h, lens, grad_mm, grad_fusion,
                                    grad_m, grad_m_t, grad_h);
  }
  absl::Status DenseForward(const DenseShape& s, const float* x,
                            const float* w, const float* b, Activation act,
                            float* y) const override {
    return DenseForwardCpu(s, x, w, b, act, y);
  }
  absl::Status DenseBackward(const DenseShape& s, const float* x,
                             const float* w, const float* y,
                             const float* grad_y, Activation act,
                             float* grad_x, float* grad_w,
                             float* grad_b) const override {
    return DenseBackwardCpu(s, x, w, y, grad_y, act, grad_x, grad_w, grad_b);
  }
  absl::Status SigmoidCrossEntropyForward(int64_t n, const float* logits,
                                          const float* labels,
                                          float* loss) const override {
    return SigmoidCrossEntropyForwardCpu(n, logits, labels, loss);
  }
  absl::Status SigmoidCrossEntropyBackward(int64_t n, const float* logits,
                                           const float* labels,
                                           float* grad_logits) const override {
    return SigmoidCrossEntropyBackwardCpu(n, logits, labels, grad_logits);
  }
  absl::Status AdamUpdate(const AdamConfig& c, int64_t step, int64_t n,
                          const float* grad, float* param, float* m,
                          float* v) const override {
    return AdamUpdateCpu(c, step, n, grad, param, m, v);
  }
};

}  // namespace

const ComputeBackend& CpuBackend() {
  static const CpuComputeBackend* const backend = new CpuComputeBackend();
  return *backend;
}

}  // namespace mim::kernels
