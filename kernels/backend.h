// The compute backend a model runs on: every op the CiUBM model needs,
// behind one interface chosen when the model is built, so that the model
// code never names a device. CpuBackend() forwards to the *Cpu twins; a
// CUDA backend (the *Cuda twins on one stream, device buffers) implements
// the same interface.
//
// Each op has the signature and contract of its twins in kernels/*_ops.h
// (pointers are row-major float32 blocks in the backend's memory; errors
// are the twins' INVALID_ARGUMENT for bad shapes or null tensors). The
// memory methods let a model keep its parameters and activations in the
// backend's memory (device memory for CUDA) and move a batch in and its
// results out in one copy each.
#ifndef MIM_KERNELS_BACKEND_H_
#define MIM_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kernels/attention_ops.h"
#include "kernels/common.h"
#include "kernels/content_ops.h"
#include "kernels/dense_ops.h"
#include "kernels/embedding_ops.h"
#include "kernels/memory_ops.h"
#include "kernels/sequence_ops.h"

namespace mim::kernels {

// Implementations are stateless or internally synchronised: const methods
// are safe for concurrent access (several model workspaces may run on one
// backend at once).
class ComputeBackend {
 public:
  virtual ~ComputeBackend() = default;

  virtual absl::string_view name() const = 0;  // "cpu", "cuda", ...

  // --- Memory ---------------------------------------------------------------
  // True when the backend's pointers are host pointers (CPU): host data may
  // then be passed to the ops as it is, without a copy.
  virtual bool host_memory() const = 0;
  // `bytes` of the backend's memory, contents unspecified; *ptr is null for
  // 0 bytes. Errors: INTERNAL naming the size when the allocator fails;
  // UNIMPLEMENTED for CUDA built without CUDA.
  virtual absl::Status Allocate(size_t bytes, void** ptr) const = 0;
  virtual void Free(void* ptr) const = 0;
  // Host memory to stage copies in (page-locked for CUDA, so copies from it
  // are asynchronous). Errors as Allocate.
  virtual absl::Status AllocateHost(size_t bytes, void** ptr) const = 0;
  virtual void FreeHost(void* ptr) const = 0;
  // Host -> backend. Ops called afterwards on this thread see the data.
  // `src` must stay unchanged until the next CopyToHost on this thread
  // returns (the copy may still be in flight). Errors: INTERNAL naming the
  // size (e.g. a range outside an allocation).
  virtual absl::Status CopyToBackend(void* dst, const void* src,
                                     size_t bytes) const = 0;
  // Backend -> host; returns once every op queued before it has finished
  // and `dst` holds the data (this is where asynchronous kernel errors
  // surface). Errors as CopyToBackend.
  virtual absl::Status CopyToHost(void* dst, const void* src,
                                  size_t bytes) const = 0;
  // Within the backend's memory; the ranges must not overlap.
  virtual absl::Status Copy(void* dst, const void* src,
                            size_t bytes) const = 0;
  virtual absl::Status Zero(void* ptr, size_t bytes) const = 0;
  // --- Ordering across threads: double-buffered inputs ----------------------
  // An event marks a point in the backend's queues (a CUDA event), so that
  // a batch can be copied in on one thread's copy stream while the compute
  // stream still works on the previous batch. A host backend runs every
  // call at once: its events are null and these calls only copy (or do
  // nothing).
  // A new event; *event is null on a host backend. Errors as Allocate.
  virtual absl::Status NewEvent(void** event) const = 0;
  virtual void DeleteEvent(void* event) const = 0;
  // Records `event` after the ops queued so far on the compute stream.
  virtual absl::Status RecordEvent(void* event) const = 0;
  // Ops queued on the compute stream after this call start after the last
  // record of `event` has completed (no-op if it was never recorded).
  virtual absl::Status WaitEvent(void* event) const = 0;
  // Returns once the last record of `event` has completed.
  virtual absl::Status SyncEvent(void* event) const = 0;
  // Host -> backend on the calling thread's copy stream: starts after the
  // last record of `after` (null: no wait), and records `done` once
  // complete. Unlike CopyToBackend, ops on the compute stream do not wait
  // for it: they must WaitEvent(done). `src` (AllocateHost memory) must stay
  // unchanged until SyncEvent(done) returns. Errors as CopyToBackend.
  virtual absl::Status CopyToBackendAsync(void* dst, const void* src,
                                          size_t bytes, void* after,
                                          void* done) const = 0;
  // Strided column copy and in-place add (memory_ops.h).
  virtual absl::Status CopyColumns(const ColumnCopyShape& s, const float* src,
                                   float* dst) const = 0;
  virtual absl::Status AddInto(int64_t n, const float* src,
                               float* dst) const = 0;

  // Embedding gather / segment-sum backward (embedding_ops.h).
  virtual absl::Status EmbeddingGather(const GatherShape& s,
                                       const float* table,
                                       const int32_t* index,
                                       float* out) const = 0;
  virtual absl::Status EmbeddingGatherBackward(const GatherShape& s,
                                               const float* grad_out,
                                               const int32_t* index,
                                               GradMode mode,
                                               float* grad_table) const = 0;

  // Sequence ops (sequence_ops.h).
  virtual absl::Status MaskedMeanPoolForward(const SeqShape& s,
                                             const float* x,
                                             const int32_t* lens,
                                             float* out) const = 0;
  virtual absl::Status MaskedMeanPoolBackward(const SeqShape& s,
                                              const float* grad_out,
                                              const int32_t* lens,
                                              float* grad_x) const = 0;
  virtual absl::Status TopKSelect(const SeqShape& s, const float* x,
                                  const float* target, const int32_t* lens,
                                  int k, int32_t* positions,
                                  int32_t* new_lens) const = 0;
  virtual absl::Status SelectRowsForward(const SeqShape& s, const float* x,
                                         const int32_t* positions, int k,
                                         float* out) const = 0;
  virtual absl::Status SelectRowsBackward(const SeqShape& s,
                                          const float* grad_out,
                                          const int32_t* positions, int k,
                                          float* grad_x) const = 0;

  // DIN target attention (attention_ops.h).
  virtual absl::Status DinAttentionForward(const SeqShape& s,
                                           const AttentionMlpShape& m,
                                           const float* h, const float* h_t,
                                           const int32_t* lens,
                                           const AttentionMlpParams& p,
                                           float* scores,
                                           float* out) const = 0;
  virtual absl::Status DinAttentionBackward(
      const SeqShape& s, const AttentionMlpShape& m, const float* h,
      const float* h_t, const int32_t* lens, const AttentionMlpParams& p,
      const float* grad_out, float* grad_h, float* grad_h_t,
      const AttentionMlpGrads& g) const = 0;

  // Content interest + fusion (content_ops.h).
  virtual absl::Status ContentFusionForward(const ContentShape& s,
                                            const float* m, const float* m_t,
                                            const float* h,
                                            const int32_t* lens, float* alpha,
                                            float* h_mm,
                                            float* h_fusion) const = 0;
  virtual absl::Status ContentFusionBackward(
      const ContentShape& s, const float* m, const float* m_t, const float* h,
      const int32_t* lens, const float* grad_mm, const float* grad_fusion,
      float* grad_m, float* grad_m_t, float* grad_h) const = 0;

  // Dense layers, loss and the dense optimizer (dense_ops.h).
  virtual absl::Status DenseForward(const DenseShape& s, const float* x,
                                    const float* w, const float* b,
                                    Activation act, float* y) const = 0;
  virtual absl::Status DenseBackward(const DenseShape& s, const float* x,
                                     const float* w, const float* y,
                                     const float* grad_y, Activation act,
                                     float* grad_x, float* grad_w,
                                     float* grad_b) const = 0;
  virtual absl::Status SigmoidCrossEntropyForward(int64_t n,
                                                  const float* logits,
                                                  const float* labels,
                                                  float* loss) const = 0;
  virtual absl::Status SigmoidCrossEntropyBackward(
      int64_t n, const float* logits, const float* labels,
      float* grad_logits) const = 0;
  virtual absl::Status AdamUpdate(const AdamConfig& c, int64_t step,
                                  int64_t n, const float* grad, float* param,
                                  float* m, float* v) const = 0;
};

// The CPU twins (host memory). Lives for the whole process.
const ComputeBackend& CpuBackend();

// The CUDA twins on device memory (backend_cuda.cc): cuBLAS in strict fp32
// for the dense layers, the project's kernels for the rest, all on the
// default stream of device 0; copies in go through the calling thread's
// copy stream. Lives for the whole process. Every call returns
// UNIMPLEMENTED when built without CUDA; check CudaDeviceStatus() first.
// Under the grid emulator (kernels/testing) it runs on the CPU.
const ComputeBackend& CudaBackend();

}  // namespace mim::kernels

#endif  // MIM_KERNELS_BACKEND_H_
