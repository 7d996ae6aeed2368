// CTR models of the MIM paper (Yan, Chen et al., Alibaba 2025): avgpool,
// DIN and SIM backbones, their "_ct" variants (target content vector as an
// extra MLP input) and "_mim" variants (CiUBM: ID interest module + content
// interest module + fusion module).
//
// MLP input, per sample, in this order (d = id_dim, dm = content_dim):
//   user, age, gender, occupation, mean(genres), target item   6 x d
//   ID interest (backbone output)             d    unless !use_id_interest
//   content interest h_MM = sum a_i m_i       dm   mim && use_content_interest
//   fusion h_Fusion = sum a_i h_i             d    mim && use_fusion
//   target content vector m_t                 dm   content_target || mim
// with a_i = cos(m_t, m_i) over the valid behaviours. MLP: mlp_hidden ReLU
// layers then one linear logit; p = sigmoid(logit).
// Backbones: kAvgPool (masked mean of behaviour ID embeddings); kDin (target
// attention, MLP att_hidden on [h_i, h_t, h_i-h_t, h_i*h_t], no softmax);
// kSim (top-sim_k behaviours by dot product with the target ID embedding,
// then DIN over them). The content and fusion modules always see the whole
// behaviour sequence, also for SIM.
//
// All math runs on a kernels::ComputeBackend chosen when the model is built
// (the CPU twins by default, or kernels::CudaBackend()). Dense parameters
// live in one flat float vector (layout: DenseParamLayout); ID embeddings
// live on the PS and come in with the Batch; their gradients go out per
// unique row. On a device backend the dense parameters, the Adam state and
// every activation stay in device memory across steps; a batch's inputs
// (pulled rows, indices, lengths, labels) go in with one copy from pinned
// host memory and the ID-row gradients come out with one copy; the host
// vector dense_params() is a copy synchronised on access.
//
// Serving and training share this class: Predict is const and takes a
// per-call ModelWorkspace, so one loaded model serves any number of
// concurrent callers; the training methods use a workspace of the model's
// own.
#ifndef MIM_WORKER_MODEL_CIUBM_MODEL_H_
#define MIM_WORKER_MODEL_CIUBM_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "kernels/dense_ops.h"
#include "worker/model/batch.h"

namespace mim::model {

enum class Backbone { kAvgPool = 0, kDin = 1, kSim = 2 };

// Plain value type.
struct ModelConfig {
  std::string name;  // e.g. "din_mim"; informational, saved with the model
  Backbone backbone = Backbone::kDin;
  bool content_target = false;  // "_ct": m_t as an MLP input
  bool mim = false;             // "_mim": CiUBM (implies m_t as input)
  // Ablation switches (paper Table 5). use_id_interest applies to every
  // model; the other two only matter when mim is set.
  bool use_id_interest = true;
  bool use_content_interest = true;
  bool use_fusion = true;
  int id_dim = 32;
  int content_dim = 64;
  int sim_k = 20;
  std::vector<int> mlp_hidden = {200, 80};
  std::vector<int> att_hidden = {80, 40};  // exactly two layers
  uint64_t seed = 1;  // dense parameter initialisation
  kernels::AdamConfig adam;  // dense optimizer (learning_rate etc.)
};

// Valid names: avgpool, din, sim, avgpool_ct, din_ct, sim_ct, avgpool_mim,
// din_mim, sim_mim. Returns the default config for that name, else
// INVALID_ARGUMENT listing the valid names.
absl::StatusOr<ModelConfig> ModelConfigFromName(absl::string_view name);

// OK if dims, sim_k and layer sizes are positive and att_hidden has two
// entries; else INVALID_ARGUMENT saying which field and why.
absl::Status ValidateModelConfig(const ModelConfig& c);

// Width of the MLP input for `c` (see the table above).
int64_t MlpInputWidth(const ModelConfig& c);

// True if the model reads the content side of a Batch.
inline bool UsesContent(const ModelConfig& c) {
  return c.content_target || c.mim;
}

// One named slice of the flat dense parameter vector.
struct ParamSlice {
  std::string name;  // "att.w1", "mlp.0.w", "mlp.2.b", ...
  int64_t offset = 0;
  int64_t size = 0;
};
// Slices in order: DIN attention (w1 b1 w2 b2 w3 b3, only for kDin/kSim
// with use_id_interest), then the MLP layers (w, b per layer, w is in x out).
std::vector<ParamSlice> DenseParamLayout(const ModelConfig& c);

class CiubmModel;

// Per-call scratch of one model: the modules' saved activations and work
// buffers, which grow to the largest batch seen and are reused (steady-state
// calls do not allocate). Made by CiubmModel::NewWorkspace and usable only
// with that model. Not thread-safe: one workspace per concurrent caller.
class ModelWorkspace {
 public:
  ~ModelWorkspace();
  ModelWorkspace(const ModelWorkspace&) = delete;
  ModelWorkspace& operator=(const ModelWorkspace&) = delete;

 private:
  friend class CiubmModel;
  struct State;
  explicit ModelWorkspace(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Double-buffered inputs for a device backend: copies each batch's inputs
// (pulled rows, packed indices, lens, labels) into the backend ahead of the
// model's compute, so that the copy of batch N+1 overlaps batch N's
// compute. Two slots, each a pinned host buffer and a device input set;
// Stage packs batch N+1 into slot (N+1) % 2 and queues its copy on the
// calling thread's copy stream, ordered after the compute that last read
// that set (batch N-1, through an event the model records) and before any
// compute that reads it (the model's compute stream waits for the copy's
// event). The model then reads the staged inputs of a batch instead of
// copying it in itself; the results are the same bits.
// Made by CiubmModel::NewInputStager. Not thread-safe: one thread stages
// (e.g. BatchPipeline's prefetch thread) while another computes; the
// caller hands each staged batch over (a mutex or queue orders the two).
class InputStager {
 public:
  ~InputStager();
  InputStager(const InputStager&) = delete;
  InputStager& operator=(const InputStager&) = delete;

  // Stages `batch` (batch->staged) for the model's next Forward,
  // ForwardBackward, TrainStep or Predict on it; the batch must not change
  // afterwards. Batches must be computed in staging order, at most one
  // ahead: slot (N+1) % 2 is reused only once the model has queued its
  // compute of batch N-1. On a host backend it does nothing (the model
  // reads the batch in place). Errors: INVALID_ARGUMENT as ValidateBatch;
  // FAILED_PRECONDITION naming the slot when it is staged again before the
  // model computed its last batch; the backend's copy and event errors.
  // A model call that fails on a staged batch gives its slot back (the
  // batch must be staged again to be computed), so a caller that goes on
  // after an error is not refused that slot.
  absl::Status Stage(Batch* batch);

 private:
  friend class CiubmModel;
  struct Impl;
  explicit InputStager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A CiUBM/baseline model: dense parameters and Adam state.
// Const methods are safe for concurrent access (Predict with one workspace
// per caller); the others (training, Load, dense_params()) need external
// synchronization, also against concurrent Predict calls.
class CiubmModel {
 public:
  // Validates `config` and initialises dense params deterministically from
  // config.seed (He-uniform for ReLU layers, Xavier-uniform for linear
  // outputs, zero biases). INVALID_ARGUMENT for a bad config. `backend`
  // must outlive the model.
  static absl::StatusOr<std::unique_ptr<CiubmModel>> Create(
      const ModelConfig& config,
      const kernels::ComputeBackend& backend = kernels::CpuBackend());

  // Reads a file written by Save and returns a model with that config,
  // those parameters and that Adam state (a version 1 file has none: fresh
  // state), so training resumes exactly where Save left it. NOT_FOUND if the file
  // cannot be opened; DATA_LOSS if it is truncated, has a bad magic,
  // version, checksum or an inconsistent config.
  static absl::StatusOr<std::unique_ptr<CiubmModel>> LoadFromFile(
      const std::string& path,
      const kernels::ComputeBackend& backend = kernels::CpuBackend());

  ~CiubmModel();
  CiubmModel(const CiubmModel&) = delete;
  CiubmModel& operator=(const CiubmModel&) = delete;

  const ModelConfig& config() const;
  const kernels::ComputeBackend& backend() const;

  // A new workspace for Predict.
  std::unique_ptr<ModelWorkspace> NewWorkspace() const;
  // A stager of this model's inputs (see InputStager); it must not outlive
  // the model's backend. A batch it staged is refused (FAILED_PRECONDITION)
  // by a model of another backend or content kind, or once its slot was
  // staged again.
  std::unique_ptr<InputStager> NewInputStager() const;

  // probs[b] = predicted click probability, computed in `workspace` (one of
  // this model's, used by no other caller meanwhile). INVALID_ARGUMENT if
  // the batch is malformed (ValidateBatch) or workspace is null; INTERNAL
  // naming the row if a score is NaN (finite parameters or rows that
  // overflow on this input: a diverged or damaged model); *probs is then
  // unspecified. The same batch gives the same bits as Forward.
  absl::Status Predict(const Batch& batch, ModelWorkspace* workspace,
                       std::vector<float>* probs) const;

  // Predict in the model's own training workspace (not const: it shares
  // that workspace with the training methods).
  absl::Status Forward(const Batch& batch, std::vector<float>* probs);

  // Forward + backward, no update. Writes the mean sigmoid cross-entropy
  // loss, grad_id_rows [U * id_dim] (dLoss/d id_rows, summed over every use
  // of a row; rows used only at padding get 0) and, if non-null, grad_dense
  // (same layout as dense_params()). The dense gradient is also kept
  // internally (dense_gradients()). Errors as Forward.
  absl::Status ForwardBackward(const Batch& batch, float* loss,
                               std::vector<float>* grad_id_rows,
                               std::vector<float>* grad_dense);

  // ForwardBackward, then one Adam step on the dense params with the
  // internal gradient. `probs` may be null.
  absl::Status TrainStep(const Batch& batch, float* loss,
                         std::vector<float>* grad_id_rows,
                         std::vector<float>* probs = nullptr);

  // One Adam step (config().adam, internal step counter) with `grad`, e.g.
  // a gradient averaged across data-parallel replicas. INVALID_ARGUMENT if
  // grad.size() != num_dense_params().
  absl::Status ApplyDenseGradients(absl::Span<const float> grad);
  void set_learning_rate(float lr);

  // The dense gradient of the last ForwardBackward where the backend keeps
  // it (device memory for CUDA; dense_gradients() is its host copy), for a
  // collective to reduce in place, e.g. an NCCL all-reduce across replicas;
  // then ApplyBackendDenseGradients() takes the Adam step with it, without
  // a trip through host memory. num_dense_params() floats.
  float* backend_dense_gradients();
  absl::Status ApplyBackendDenseGradients();

  int64_t num_dense_params() const;
  // Flat dense parameters (DenseParamLayout). Writable, e.g. to broadcast
  // parameters from a leader replica; the size must not change. On a
  // device backend each call brings the host copy up to date and marks it
  // as the newer one, so writes through the returned reference reach the
  // device at the next compute call; a reference kept across compute calls
  // must be fetched again before writing (a CPU backend computes on this
  // vector itself).
  std::vector<float>& dense_params();
  const std::vector<float>& dense_gradients() const;
  int64_t adam_step() const;

  // Writes config, dense params and Adam state to `path` (via a temp file
  // and rename). File format (little-endian), version 2:
  //   "MIMMODEL" (8 bytes), u32 version, u64 payload length N,
  //   payload: config fields (see ciubm_model.cc), u64 count, count float32
  //   params, u64 Adam step, count float32 first moments, count float32
  //   second moments; then u64 FNV-1a-64 of the payload.
  // Version 1 (still read) ends the payload after the params.
  // INTERNAL on an I/O error.
  absl::Status Save(const std::string& path) const;
  // Replaces the dense params and Adam state (step counter included) with
  // those of a file written by Save; the config (learning rate too) stays.
  // Errors as LoadFromFile (DATA_LOSS also for non-finite values), plus FAILED_PRECONDITION if the file's architecture
  // (everything but name, seed and adam) differs from config().
  absl::Status Load(const std::string& path);

 private:
  struct Impl;
  explicit CiubmModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mim::model

#endif  // MIM_WORKER_MODEL_CIUBM_MODEL_H_
