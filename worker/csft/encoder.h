// The C-SFT item encoder: content vectors and genres in, one unit vector
// h_MM per item out, in the space of the plain content vectors:
//
//   a   = the item's modality vectors, concatenated (the first `dim` values
//         are the plain vector the content table held before)
//   b   = mean of the fusion genre embeddings of the item's genres (0: none)
//   z   = [a; 1] (outer) [b; 1] flattened     (tensor fusion; or [a; b])
//   r   = W2 relu(W1 z + b1) + b2             the residual, size penalised
//   g   = n / (n + K) with the residual gate K > 0 (n: the item's training
//         pairs), else 1
//   h   = normalize(plain + g r)
//
// The gate keeps an item the encoder saw little or nothing of at (or near)
// its plain vector: a new item (n = 0, e.g. one the serving tier upserts)
// gets exactly normalize(plain).
//
// Keeping the plain vector in h (a residual whose size the loss penalises,
// W2 = 0 at the start) is the guard against what a naive port showed: an
// encoder free to replace the vector learns to recognise training items
// instead of a mapping that transfers. An untrained encoder gives exactly
// normalize(plain). Query and item share the encoder (the CTR model compares
// items by cosine in one table), so there is no separate query projection.
//
// Two single-modality heads serve the multi-level loss only (not saved into
// the table): text t = normalize(P plain + bt), category
// c = normalize(mean of the category embeddings of the genres).
#ifndef MIM_WORKER_CSFT_ENCODER_H_
#define MIM_WORKER_CSFT_ENCODER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mim::csft {

// Plain value type.
struct EncoderConfig {
  int dim = 0;        // plain vector (and output) dim
  int input_dim = 0;  // all modalities concatenated, >= dim
  int num_genres = 0; // genre ids in [0, num_genres)
  int genre_dim = 8;
  int hidden = 128;
  bool tensor_fusion = true;
  // K of the residual gate n / (n + K); 0: no gate (g = 1 for every item).
  float residual_gate = 0;
  int64_t fusion_dim() const {
    return tensor_fusion ? (int64_t{input_dim} + 1) * (int64_t{genre_dim} + 1)
                         : int64_t{input_dim} + genre_dim;
  }
};

// One item's inputs; the pointers must outlive the call.
struct ItemInput {
  const float* features = nullptr;            // input_dim floats
  const std::vector<int32_t>* genres = nullptr;  // may be null: none
  // Training pairs the item is in (read only with a residual gate); 0 for
  // an item training never saw.
  int64_t interactions = 0;
  // Training only (C-SFT's modality dropout, CsftOptions): the fusion sees
  // zeros in place of the modality vectors, so this row's residual comes
  // from its genres alone; the plain vector in h and the text head keep
  // the real input.
  bool drop_modalities = false;
};

// Activations of one forward pass, kept for the backward. Not thread-safe.
struct EncoderPass {
  int64_t rows = 0;
  // a: the fusion's modality input (zeros for a dropped row); plain: the
  // plain vectors [rows, dim].
  std::vector<float> a, plain, b, z, h1, r, u, v, tu, t, cu, c;
  std::vector<float> gate;  // g per row
  std::vector<const std::vector<int32_t>*> genres;
};

// Const methods are safe for concurrent use; others need external
// synchronization.
class CsftEncoder {
 public:
  // Most parameters an encoder may have (2^30 floats, 4 GiB).
  static constexpr int64_t kMaxParams = int64_t{1} << 30;
  // OK, or INVALID_ARGUMENT naming the fields: a non-positive size,
  // input_dim < dim, a bad residual gate, or more than kMaxParams
  // parameters.
  static absl::Status CheckConfig(const EncoderConfig& config);
  // Fresh parameters from `seed` (W2, b2 zero: output = normalize(plain)).
  // Errors as CheckConfig.
  static absl::StatusOr<std::unique_ptr<CsftEncoder>> Create(
      const EncoderConfig& config, uint64_t seed);

  // The file format (docs/ARCHITECTURE.md, C-SFT): one text header line
  //   #mim-csft-encoder v1<TAB>dim=D<TAB>input_dim=I<TAB>num_genres=G
  //   <TAB>genre_dim=E<TAB>hidden=H<TAB>fusion=tensor|concat
  //   [<TAB>residual_gate=K, only when K > 0]<TAB>params=N
  //   <TAB>fnv1a64=<16 hex digits of the parameter bytes>
  // then N float32 little-endian in the order Gf, W1, b1, W2, b2, P, bt, Gc.
  // Load: NOT_FOUND if unreadable, DATA_LOSS naming the file for a bad
  // header, a short file, a checksum mismatch or a non-finite parameter. Save: INTERNAL on a write
  // failure (written to a temporary name, then renamed).
  static absl::StatusOr<std::unique_ptr<CsftEncoder>> Load(
      const std::string& path);
  absl::Status Save(const std::string& path) const;

  // h_MM of each item into out [items.size(), dim]. INVALID_ARGUMENT for a
  // null feature pointer or a genre id outside [0, num_genres); DATA_LOSS
  // naming the encoder when an output is not finite (a guard: the kernels
  // normalise overflowed rows, so none is known to reach it); `out` is
  // untouched on error.
  absl::Status Encode(const std::vector<ItemInput>& items, float* out) const;

  // Training: forward keeps activations; backward adds the gradient of
  // sum(grad_v . v) + sum(grad_t . t) + sum(grad_c . c)
  // + residual_penalty * mean_rows |r|^2 into `grads` (num_params floats).
  // grad_t / grad_c may be null.
  absl::Status Forward(const std::vector<ItemInput>& items,
                       EncoderPass* pass) const;
  absl::Status Backward(const EncoderPass& pass, const float* grad_v,
                        const float* grad_t, const float* grad_c,
                        float residual_penalty, float* grads) const;

  const EncoderConfig& config() const { return config_; }
  int64_t num_params() const { return static_cast<int64_t>(params_.size()); }
  std::vector<float>* mutable_params() { return &params_; }
  const std::vector<float>& params() const { return params_; }
  // FNV-1a 64 of the parameter bytes (the file's checksum).
  uint64_t Fingerprint() const;

 private:
  explicit CsftEncoder(const EncoderConfig& config);
  // Where each parameter block starts; `end` is the parameter count. In
  // int64_t for the encoder; in double to check a config's size before any
  // product could wrap (CheckConfig). Layout is defined in encoder.cc.
  template <typename T>
  struct OffsetsIn {
    T gf, w1, b1, w2, b2, p, bt, gc, end;
  };
  using Offsets = OffsetsIn<int64_t>;
  template <typename T>
  static OffsetsIn<T> Layout(const EncoderConfig& c);

  EncoderConfig config_;
  Offsets off_;
  std::vector<float> params_;
};

}  // namespace mim::csft

#endif  // MIM_WORKER_CSFT_ENCODER_H_
