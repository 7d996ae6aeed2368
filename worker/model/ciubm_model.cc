#include "worker/model/ciubm_model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "base/atomic_file.h"
#include "base/fnv1a.h"
#include "base/status_macros.h"
#include "kernels/backend.h"
#include "kernels/backend_buffer.h"
#include "worker/model/modules.h"

namespace mim::model {
namespace {

constexpr const char* kValidNames[] = {
    "avgpool",    "din",    "sim",         "avgpool_ct", "din_ct",
    "sim_ct",     "avgpool_mim", "din_mim", "sim_mim"};

constexpr char kMagic[8] = {'M', 'I', 'M', 'M', 'O', 'D', 'E', 'L'};
// Version 2 adds the Adam state after the params; version 1 files (params
// only) still load, with fresh Adam state.
constexpr uint32_t kFormatVersion = 2;
constexpr uint32_t kOldestFormatVersion = 1;

// splitmix64: a portable, seedable stream (std distributions differ across
// standard libraries; saved models must not).
class InitRng {
 public:
  explicit InitRng(uint64_t seed) : state_(seed) {}
  // Uniform in [-limit, limit).
  float Uniform(float limit) {
    state_ += 0x9E3779B97F4A7C15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    const double u = static_cast<double>(z >> 11) * 0x1.0p-53;  // [0, 1)
    return static_cast<float>((2.0 * u - 1.0) * limit);
  }

 private:
  uint64_t state_;
};

kernels::AttentionMlpShape AttShape(const ModelConfig& c) {
  kernels::AttentionMlpShape s;
  if (c.att_hidden.size() == 2) {
    s.hidden1 = c.att_hidden[0];
    s.hidden2 = c.att_hidden[1];
  }
  return s;
}

bool HasAttention(const ModelConfig& c) {
  return c.use_id_interest && c.backbone != Backbone::kAvgPool;
}
bool UsesContentInterest(const ModelConfig& c) {
  return c.mim && c.use_content_interest;
}
bool UsesFusion(const ModelConfig& c) { return c.mim && c.use_fusion; }

// Fan-in / fan-out of each weight slice, for initialisation; biases: 0.
struct SliceInit {
  int64_t fan_in = 0, fan_out = 0;
  bool relu = false;
  bool is_bias = true;
};

void AppendSlice(std::vector<ParamSlice>* out, std::vector<SliceInit>* init,
                 std::string name, int64_t size, SliceInit si) {
  const int64_t offset =
      out->empty() ? 0 : out->back().offset + out->back().size;
  out->push_back(ParamSlice{std::move(name), offset, size});
  if (init != nullptr) init->push_back(si);
}

std::vector<ParamSlice> Layout(const ModelConfig& c,
                               std::vector<SliceInit>* init) {
  std::vector<ParamSlice> out;
  if (HasAttention(c)) {
    const kernels::AttentionMlpShape a = AttShape(c);
    const int64_t d = c.id_dim;
    AppendSlice(&out, init, "att.w1", kernels::AttentionW1Size(d, a),
                {4 * d, a.hidden1, true, false});
    AppendSlice(&out, init, "att.b1", a.hidden1, {});
    AppendSlice(&out, init, "att.w2", a.hidden1 * a.hidden2,
                {a.hidden1, a.hidden2, true, false});
    AppendSlice(&out, init, "att.b2", a.hidden2, {});
    AppendSlice(&out, init, "att.w3", a.hidden2, {a.hidden2, 1, false, false});
    AppendSlice(&out, init, "att.b3", 1, {});
  }
  std::vector<int64_t> widths = {MlpInputWidth(c)};
  for (int h : c.mlp_hidden) widths.push_back(h);
  widths.push_back(1);
  for (size_t l = 0; l + 1 < widths.size(); ++l) {
    const bool relu = l + 2 < widths.size();
    AppendSlice(&out, init, absl::StrCat("mlp.", l, ".w"),
                widths[l] * widths[l + 1],
                {widths[l], widths[l + 1], relu, false});
    AppendSlice(&out, init, absl::StrCat("mlp.", l, ".b"), widths[l + 1], {});
  }
  return out;
}

// --- Serialization ---------------------------------------------------------

class Writer {
 public:
  template <typename T>
  void Pod(T v) {
    const char* p = reinterpret_cast<const char*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void Bytes(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    bytes_.insert(bytes_.end(), c, c + n);
  }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

class Reader {
 public:
  Reader(const char* p, size_t n) : p_(p), end_(p + n) {}
  template <typename T>
  bool Pod(T* v) {
    return Bytes(v, sizeof(T));
  }
  bool Bytes(void* out, size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    std::memcpy(out, p_, n);
    p_ += n;
    return true;
  }
  size_t left() const { return end_ - p_; }

 private:
  const char* p_;
  const char* end_;
};

void WriteConfig(const ModelConfig& c, Writer* w) {
  w->Pod<uint32_t>(static_cast<uint32_t>(c.name.size()));
  w->Bytes(c.name.data(), c.name.size());
  w->Pod<uint32_t>(static_cast<uint32_t>(c.backbone));
  for (bool f : {c.content_target, c.mim, c.use_id_interest,
                 c.use_content_interest, c.use_fusion}) {
    w->Pod<uint8_t>(f ? 1 : 0);
  }
  w->Pod<int32_t>(c.id_dim);
  w->Pod<int32_t>(c.content_dim);
  w->Pod<int32_t>(c.sim_k);
  for (const std::vector<int>* v : {&c.mlp_hidden, &c.att_hidden}) {
    w->Pod<uint32_t>(static_cast<uint32_t>(v->size()));
    for (int x : *v) w->Pod<int32_t>(x);
  }
  w->Pod<uint64_t>(c.seed);
  w->Pod<float>(c.adam.learning_rate);
  w->Pod<float>(c.adam.beta1);
  w->Pod<float>(c.adam.beta2);
  w->Pod<float>(c.adam.epsilon);
}

bool ReadConfig(Reader* r, ModelConfig* c) {
  uint32_t n = 0;
  if (!r->Pod(&n) || n > r->left()) return false;
  c->name.resize(n);
  if (!r->Bytes(c->name.data(), n)) return false;
  uint32_t backbone = 0;
  if (!r->Pod(&backbone) || backbone > 2) return false;
  c->backbone = static_cast<Backbone>(backbone);
  for (bool* f : {&c->content_target, &c->mim, &c->use_id_interest,
                  &c->use_content_interest, &c->use_fusion}) {
    uint8_t v = 0;
    if (!r->Pod(&v) || v > 1) return false;
    *f = v == 1;
  }
  int32_t id_dim = 0, content_dim = 0, sim_k = 0;
  if (!r->Pod(&id_dim) || !r->Pod(&content_dim) || !r->Pod(&sim_k)) {
    return false;
  }
  c->id_dim = id_dim;
  c->content_dim = content_dim;
  c->sim_k = sim_k;
  for (std::vector<int>* v : {&c->mlp_hidden, &c->att_hidden}) {
    uint32_t len = 0;
    if (!r->Pod(&len) || len > r->left() / sizeof(int32_t)) return false;
    v->resize(len);
    for (uint32_t i = 0; i < len; ++i) {
      int32_t x = 0;
      if (!r->Pod(&x)) return false;
      (*v)[i] = x;
    }
  }
  return r->Pod(&c->seed) && r->Pod(&c->adam.learning_rate) &&
         r->Pod(&c->adam.beta1) && r->Pod(&c->adam.beta2) &&
         r->Pod(&c->adam.epsilon);
}

bool SameArchitecture(const ModelConfig& a, const ModelConfig& b) {
  return a.backbone == b.backbone && a.content_target == b.content_target &&
         a.mim == b.mim && a.use_id_interest == b.use_id_interest &&
         a.use_content_interest == b.use_content_interest &&
         a.use_fusion == b.use_fusion && a.id_dim == b.id_dim &&
         a.content_dim == b.content_dim && a.sim_k == b.sim_k &&
         a.mlp_hidden == b.mlp_hidden && a.att_hidden == b.att_hidden;
}

// Adam state stored with the params (format version 2).
struct AdamState {
  int64_t step = 0;
  std::vector<float> m, v;  // empty: fresh state (version 1 file)
};

// Index of the first non-finite value in `v`, or -1.
int64_t FirstNonFinite(const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) return static_cast<int64_t>(i);
  }
  return -1;
}

// Parses a model file into its config, params and Adam state;
// DATA_LOSS/NOT_FOUND.
absl::Status ReadModelFile(const std::string& path, ModelConfig* config,
                           std::vector<float>* params, AdamState* adam) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open model file '", path, "'"));
  }
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  auto loss = [&path](absl::string_view why) {
    return absl::DataLossError(
        absl::StrCat("model file '", path, "': ", why));
  };
  Reader r(data.data(), data.size());
  char magic[8];
  uint32_t version = 0;
  uint64_t payload_len = 0;
  if (!r.Bytes(magic, 8) || std::memcmp(magic, kMagic, 8) != 0) {
    return loss("bad magic, expected \"MIMMODEL\" (not a mim model file)");
  }
  if (!r.Pod(&version) || version < kOldestFormatVersion ||
      version > kFormatVersion) {
    return loss(absl::StrFormat(
        "unsupported format version %d, expected %d to %d", version,
        kOldestFormatVersion, kFormatVersion));
  }
  // Compared without adding to payload_len: a length near 2^64 would wrap.
  if (!r.Pod(&payload_len) || r.left() < sizeof(uint64_t) ||
      payload_len != r.left() - sizeof(uint64_t)) {
    return loss(absl::StrFormat(
        "truncated or oversized: payload length %d, %d bytes follow",
        payload_len, r.left()));
  }
  const char* payload = data.data() + (data.size() - r.left());
  uint64_t stored_sum = 0;
  std::memcpy(&stored_sum, payload + payload_len, sizeof(stored_sum));
  if (base::Fnv1a64(payload, payload_len) != stored_sum) {
    return loss("checksum mismatch (file corrupted)");
  }
  Reader pr(payload, payload_len);
  if (!ReadConfig(&pr, config)) return loss("malformed config section");
  absl::Status valid = ValidateModelConfig(*config);
  if (!valid.ok()) return loss(valid.message());
  uint64_t count = 0;
  // v1: the params are the rest of the payload; v2: params, then u64 Adam
  // step and the two moment vectors of the same length.
  const uint64_t tail_floats = version == 1 ? 1 : 3;
  const uint64_t tail_extra = version == 1 ? 0 : sizeof(uint64_t);
  if (!pr.Pod(&count) || pr.left() < tail_extra ||
      (pr.left() - tail_extra) % (tail_floats * sizeof(float)) != 0 ||
      count != (pr.left() - tail_extra) / (tail_floats * sizeof(float))) {
    return loss("parameter section size does not match its count");
  }
  int64_t expected = 0;
  for (const ParamSlice& s : DenseParamLayout(*config)) expected += s.size;
  if (static_cast<int64_t>(count) != expected) {
    return loss(absl::StrFormat("%d parameters, the config needs %d", count,
                                expected));
  }
  params->resize(count);
  pr.Bytes(params->data(), count * sizeof(float));
  *adam = AdamState();
  if (version >= 2) {
    uint64_t step = 0;
    pr.Pod(&step);
    if (step > (uint64_t{1} << 62)) {
      return loss(absl::StrFormat("Adam step %d out of range", step));
    }
    adam->step = static_cast<int64_t>(step);
    adam->m.resize(count);
    adam->v.resize(count);
    pr.Bytes(adam->m.data(), count * sizeof(float));
    pr.Bytes(adam->v.data(), count * sizeof(float));
  }
  const std::pair<const char*, const std::vector<float>*> sections[] = {
      {"parameter", params}, {"Adam first moment", &adam->m},
      {"Adam second moment", &adam->v}};
  for (const auto& [what, values] : sections) {
    const int64_t bad = FirstNonFinite(*values);
    if (bad >= 0) {
      return loss(absl::StrFormat("%s %d is %f (not finite)", what, bad,
                                  (*values)[bad]));
    }
  }
  for (size_t i = 0; i < adam->v.size(); ++i) {
    if (adam->v[i] < 0) {
      return loss(absl::StrFormat("Adam second moment %d is negative (%f)", i,
                                  adam->v[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfigFromName(absl::string_view name) {
  ModelConfig c;
  c.name = std::string(name);
  absl::string_view base = name;
  if (absl::ConsumeSuffix(&base, "_ct")) {
    c.content_target = true;
  } else if (absl::ConsumeSuffix(&base, "_mim")) {
    c.mim = true;
  }
  if (base == "avgpool") {
    c.backbone = Backbone::kAvgPool;
  } else if (base == "din") {
    c.backbone = Backbone::kDin;
  } else if (base == "sim") {
    c.backbone = Backbone::kSim;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model name '", name,
                     "', expected one of: ", absl::StrJoin(kValidNames, ", ")));
  }
  return c;
}

absl::Status ValidateModelConfig(const ModelConfig& c) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("ModelConfig: ", parts...));
  };
  if (c.id_dim <= 0) return bad("id_dim ", c.id_dim, " must be positive");
  if (c.content_dim <= 0) {
    return bad("content_dim ", c.content_dim, " must be positive");
  }
  if (c.sim_k <= 0) return bad("sim_k ", c.sim_k, " must be positive");
  if (c.backbone != Backbone::kAvgPool && c.backbone != Backbone::kDin &&
      c.backbone != Backbone::kSim) {
    return bad("unknown backbone ", static_cast<int>(c.backbone));
  }
  if (c.att_hidden.size() != 2) {
    return bad("att_hidden has ", c.att_hidden.size(),
               " layers, expected exactly 2");
  }
  for (int h : c.att_hidden) {
    if (h <= 0) return bad("att_hidden sizes must be positive, got ", h);
  }
  for (int h : c.mlp_hidden) {
    if (h <= 0) return bad("mlp_hidden sizes must be positive, got ", h);
  }
  // Bounds far above any real model keep every size product (4 d h1,
  // width x width) well inside int64, also for a crafted model file.
  constexpr int kMaxWidth = 1 << 16;
  constexpr size_t kMaxLayers = 64;
  for (int w : {c.id_dim, c.content_dim, c.sim_k}) {
    if (w > kMaxWidth) return bad("dimension ", w, " exceeds ", kMaxWidth);
  }
  for (const std::vector<int>* v : {&c.att_hidden, &c.mlp_hidden}) {
    for (int h : *v) {
      if (h > kMaxWidth) return bad("hidden size ", h, " exceeds ", kMaxWidth);
    }
  }
  if (c.mlp_hidden.size() > kMaxLayers) {
    return bad("mlp_hidden has ", c.mlp_hidden.size(), " layers, at most ",
               kMaxLayers);
  }
  return absl::OkStatus();
}

int64_t MlpInputWidth(const ModelConfig& c) {
  int64_t w = 6 * int64_t{c.id_dim};
  if (c.use_id_interest) w += c.id_dim;
  if (UsesContentInterest(c)) w += c.content_dim;
  if (UsesFusion(c)) w += c.id_dim;
  if (UsesContent(c)) w += c.content_dim;
  return w;
}

std::vector<ParamSlice> DenseParamLayout(const ModelConfig& c) {
  return Layout(c, nullptr);
}

// ---------------------------------------------------------------------------

namespace {

// A batch's lookups packed on the host for the one ID gather (see
// ModelWorkspace::State) and the content gather.
struct Lookups {
  int64_t G = 0;  // most genres in a row
  std::vector<int32_t> id_index, genre_lens, content_index;
};

int64_t MostGenres(const Batch& b) {
  int64_t G = 0;
  for (int64_t r = 0; r < b.batch_size; ++r) {
    G = std::max<int64_t>(G, b.genre_offsets[r + 1] - b.genre_offsets[r]);
  }
  return G;
}

// Fills *l from `b` (a valid batch).
void PackLookups(const Batch& b, bool content, Lookups* l) {
  const int64_t B = b.batch_size, L = b.max_len;
  const int64_t G = MostGenres(b);
  l->G = G;
  l->id_index.resize(B * (5 + L + G));
  int32_t* ix = l->id_index.data();
  for (const std::vector<int32_t>* v :
       {&b.user_idx, &b.age_idx, &b.gender_idx, &b.occ_idx, &b.target_idx,
        &b.behavior_idx}) {
    ix = std::copy(v->begin(), v->end(), ix);
  }
  l->genre_lens.resize(B);
  for (int64_t r = 0; r < B; ++r) {
    const int32_t lo = b.genre_offsets[r], hi = b.genre_offsets[r + 1];
    l->genre_lens[r] = hi - lo;
    int32_t* row = ix + r * G;
    std::copy(b.genre_rows.begin() + lo, b.genre_rows.begin() + hi, row);
    std::fill(row + (hi - lo), row + G, -1);
  }
  l->content_index.clear();
  if (content) {
    l->content_index.resize(B * (1 + L));
    std::copy(b.content_target_idx.begin(), b.content_target_idx.end(),
              l->content_index.begin());
    std::copy(b.content_behavior_idx.begin(), b.content_behavior_idx.end(),
              l->content_index.begin() + B);
  }
}

bool HasLabels(const Batch& b) {
  return static_cast<int64_t>(b.labels.size()) == b.batch_size;
}

// 4-byte words of a batch's inputs in the one-copy layout of LayOutInputs
// (G: MostGenres(b)).
size_t InputWords(const Batch& b, bool content, int64_t G) {
  const size_t B = b.batch_size, L = b.max_len;
  size_t words = b.id_rows.size() + (HasLabels(b) ? B : 0) +
                 B * (5 + L + G) + B + b.lens.size();
  if (content) words += b.content_rows.size() + B * (1 + L);
  return words;
}

// Copies `v` into the staging words at *at and returns where the copy
// will be in the backend's buffer `base`.
template <typename T>
const T* StageVector(const std::vector<T>& v, char* staging, size_t* at,
                     const float* base) {
  static_assert(sizeof(T) == sizeof(float), "staging holds 4-byte words");
  if (v.empty()) return nullptr;
  std::memcpy(staging + *at, v.data(), v.size() * sizeof(T));
  const T* out = reinterpret_cast<const T*>(
      reinterpret_cast<const char*>(base) + *at);
  *at += v.size() * sizeof(T);
  return out;
}

}  // namespace

// A batch's inputs where the backend computes (backend pointers).
struct ModelInputs {
  const float* id_rows = nullptr;
  const float* content_rows = nullptr;
  const float* labels = nullptr;
  const int32_t* id_index = nullptr;
  const int32_t* genre_lens = nullptr;
  const int32_t* lens = nullptr;
  const int32_t* content_index = nullptr;
};

namespace {

// Writes the inputs into `staging` (InputWords words) and returns their
// views in a backend buffer `base` that will hold the same bytes.
ModelInputs LayOutInputs(const Batch& b, bool content, const Lookups& l,
                         char* staging, const float* base) {
  static const std::vector<float> kNone;
  static const std::vector<int32_t> kNoIndex;
  ModelInputs in;
  size_t at = 0;
  in.id_rows = StageVector(b.id_rows, staging, &at, base);
  in.content_rows =
      StageVector(content ? b.content_rows : kNone, staging, &at, base);
  in.labels = StageVector(HasLabels(b) ? b.labels : kNone, staging, &at, base);
  in.id_index = StageVector(l.id_index, staging, &at, base);
  in.genre_lens = StageVector(l.genre_lens, staging, &at, base);
  in.lens = StageVector(b.lens, staging, &at, base);
  in.content_index =
      StageVector(content ? l.content_index : kNoIndex, staging, &at, base);
  return in;
}

}  // namespace

// One of an InputStager's two buffers: pinned staging, the device input
// set, and the events ordering it (see InputStager). Not thread-safe:
// written by the staging thread in Stage and read by the computing thread
// once the batch is handed over (the hand-over orders the two);
// `released`, which both touch at once, is atomic.
class InputSlot {
 public:
  explicit InputSlot(const kernels::ComputeBackend& b)
      : backend(&b), inputs(&b), copied(&b), read_done(&b) {}
  ~InputSlot() { backend->FreeHost(staging); }

  const kernels::ComputeBackend* const backend;
  void* staging = nullptr;
  size_t staging_bytes = 0;
  kernels::BackendArray<float> inputs;  // 4-byte words, floats and int32s
  // Recorded on the staging thread's copy stream after the copy in; on the
  // compute stream after the last op that reads `inputs`.
  kernels::BackendEvent copied, read_done;
  ModelInputs in;  // views into `inputs`
  int64_t B = 0, G = 0;
  size_t words = 0;
  bool content = false;
  uint64_t sequence = 0;  // stagings so far
  // The last staging whose compute is queued and recorded in read_done.
  std::atomic<uint64_t> released{0};
};

// Per-call state: the modules (each keeps its last Forward's inputs for
// Backward) and the work buffers, reused across calls. The ID gather packs
// every lookup of the batch into one index list, blocks of rows in this
// order:
//   user B | age B | gender B | occ B | target B | behaviour B*L |
//   genres B*G (G = most genres in a row, padded with -1)
// so one gather fills all inputs and one segment-sum backward produces the
// per-unique-row gradient.
struct ModelWorkspace::State {
  State(const ModelConfig& c, const kernels::ComputeBackend& b)
      : backend(&b),
        id_interest(b, c.backbone, c.id_dim, AttShape(c), c.sim_k),
        content(b, c.id_dim, c.content_dim),
        mlp(b, MlpInputWidth(c), c.mlp_hidden),
        inputs(&b),
        gathered(&b),
        grad_gathered(&b),
        genre_mean(&b),
        grad_genre_mean(&b),
        id_out(&b),
        grad_id_out(&b),
        grad_target_tmp(&b),
        grad_beh_tmp(&b),
        content_gathered(&b),
        h_mm(&b),
        h_fusion(&b),
        grad_h_fusion(&b),
        mlp_in(&b),
        grad_mlp_in(&b),
        logits(&b),
        grad_logits(&b),
        loss(&b),
        grad_id_rows(&b) {}
  ~State() { backend->FreeHost(staging); }

  const kernels::ComputeBackend* backend;
  IdInterestModule id_interest;
  ContentInterestModule content;
  MlpTower mlp;

  int64_t B = 0, L = 0, G = 0;
  Lookups lookups;  // packed on the host (see above)
  // The batch's inputs in the backend's memory: on a host backend the
  // Batch's and `lookups`; for a batch an InputStager staged, views into
  // its slot; else views into `inputs`, which StageInputs fills with one
  // copy from the pinned `staging` buffer.
  using Inputs = ModelInputs;
  Inputs in;
  void* staging = nullptr;
  size_t staging_bytes = 0;
  kernels::BackendArray<float> inputs;  // 4-byte words, floats and int32s

  kernels::BackendArray<float> gathered, grad_gathered;
  kernels::BackendArray<float> genre_mean, grad_genre_mean;
  kernels::BackendArray<float> id_out, grad_id_out, grad_target_tmp,
      grad_beh_tmp;
  kernels::BackendArray<float> content_gathered;  // m_t B | m B*L
  kernels::BackendArray<float> h_mm, h_fusion, grad_h_fusion;
  kernels::BackendArray<float> mlp_in, grad_mlp_in, logits, grad_logits;
  kernels::BackendArray<float> loss, grad_id_rows;  // device backends only
  std::vector<float> logits_host;                   // device backends only

  // Puts the batch's inputs where the backend computes: a host backend
  // reads them in place; a device backend gets them in one copy from
  // pinned host memory (rows pulled from the shards, the packed indices,
  // lens, labels).
  absl::Status StageInputs(const Batch& b, bool content);
  // probs = sigmoid(logits), read back from the backend.
  absl::Status Probs(std::vector<float>* probs);
};

ModelWorkspace::ModelWorkspace(std::unique_ptr<State> state)
    : state_(std::move(state)) {}
ModelWorkspace::~ModelWorkspace() = default;

absl::Status ModelWorkspace::State::StageInputs(const Batch& b,
                                                bool content) {
  State* w = this;
  const kernels::ComputeBackend& backend = *w->backend;
  Inputs& in = w->in;
  if (backend.host_memory()) {
    in.id_rows = b.id_rows.data();
    in.content_rows = content ? b.content_rows.data() : nullptr;
    in.labels = HasLabels(b) ? b.labels.data() : nullptr;
    in.id_index = w->lookups.id_index.data();
    in.genre_lens = w->lookups.genre_lens.data();
    in.lens = b.lens.data();
    in.content_index = content ? w->lookups.content_index.data() : nullptr;
    return absl::OkStatus();
  }
  const size_t words = InputWords(b, content, w->lookups.G);
  const size_t bytes = words * sizeof(float);
  if (w->staging_bytes < bytes) {
    backend.FreeHost(w->staging);
    w->staging = nullptr;
    w->staging_bytes = 0;
    MIM_RETURN_IF_ERROR(backend.AllocateHost(bytes, &w->staging));
    w->staging_bytes = bytes;
  }
  MIM_RETURN_IF_ERROR(w->inputs.Resize(static_cast<int64_t>(words)));
  in = LayOutInputs(b, content, w->lookups, static_cast<char*>(w->staging),
                    w->inputs.data());
  return backend.CopyToBackend(w->inputs.data(), w->staging, bytes);
}

absl::Status ModelWorkspace::State::Probs(std::vector<float>* probs) {
  const int64_t n = B;
  const float* z = logits.data();
  if (!backend->host_memory()) {
    logits_host.resize(n);
    MIM_RETURN_IF_ERROR(
        backend->CopyToHost(logits_host.data(), z, n * sizeof(float)));
    z = logits_host.data();
  }
  probs->resize(n);
  for (int64_t i = 0; i < n; ++i) {
    (*probs)[i] = 1.0f / (1.0f + std::exp(-z[i]));
  }
  return absl::OkStatus();
}

// The config and layout are read-only after construction. The dense state
// lives in host vectors; a device backend computes on device copies of it
// (d_*), synchronised lazily in both directions under sync_mu, so that
// concurrent Predict calls upload changed parameters once.
struct CiubmModel::Impl {
  Impl(const ModelConfig& c, const kernels::ComputeBackend& b)
      : config(c),
        backend(&b),
        layout(Layout(c, &init)),
        d_params(&b),
        d_grads(&b),
        d_m(&b),
        d_v(&b),
        d_ext_grads(&b) {
    int64_t n = 0;
    for (const ParamSlice& s : layout) n += s.size;
    params.assign(n, 0.0f);
    grads.assign(n, 0.0f);
    adam_m.assign(n, 0.0f);
    adam_v.assign(n, 0.0f);
    att_offset = 0;
    mlp_offset = 0;
    if (HasAttention(c)) {
      IdInterestModule probe(b, c.backbone, c.id_dim, AttShape(c), c.sim_k);
      mlp_offset = probe.num_params();
    }
  }

  // The device copies of the dense state (nothing on a host backend).
  absl::Status AllocateDeviceState() {
    if (backend->host_memory()) return absl::OkStatus();
    const int64_t n = static_cast<int64_t>(params.size());
    for (kernels::BackendArray<float>* a : {&d_params, &d_grads, &d_m, &d_v}) {
      MIM_RETURN_IF_ERROR(a->Resize(n));
    }
    return absl::OkStatus();
  }

  void InitParams() {
    InitRng rng(config.seed);
    for (size_t i = 0; i < layout.size(); ++i) {
      const SliceInit& si = init[i];
      float* p = params.data() + layout[i].offset;
      if (si.is_bias) {
        std::fill(p, p + layout[i].size, 0.0f);
        continue;
      }
      const double limit =
          si.relu ? std::sqrt(6.0 / si.fan_in)
                  : std::sqrt(6.0 / (si.fan_in + si.fan_out));
      for (int64_t j = 0; j < layout[i].size; ++j) {
        p[j] = rng.Uniform(static_cast<float>(limit));
      }
    }
    MarkHostNewer(/*adam=*/true);
  }

  // Adam state from a model file; empty moments (version 1) mean fresh.
  void SetAdamState(AdamState s) {
    adam_step = s.step;
    if (s.m.empty()) {
      std::fill(adam_m.begin(), adam_m.end(), 0.0f);
      std::fill(adam_v.begin(), adam_v.end(), 0.0f);
    } else {
      adam_m = std::move(s.m);
      adam_v = std::move(s.v);
    }
    MarkHostNewer(/*adam=*/true);
  }

  ModelWorkspace::State& train() {
    if (train_ws == nullptr) {
      train_ws = std::make_unique<ModelWorkspace::State>(config, *backend);
    }
    return *train_ws;
  }

  // --- Dense state on the backend -----------------------------------------
  bool on_host() const { return backend->host_memory(); }
  const float* BackendParams() const {
    return on_host() ? params.data() : d_params.data();
  }
  float* BackendGrads() { return on_host() ? grads.data() : d_grads.data(); }

  // The host params (and Adam state) were or may be written: the device
  // copies are stale.
  void MarkHostNewer(bool adam) {
    absl::MutexLock lock(&sync_mu);
    host_params_newer = true;
    if (adam) host_adam_newer = true;
    device_newer = false;
  }
  // Uploads what the host changed. Safe for concurrent callers.
  absl::Status EnsureDeviceState() const {
    if (on_host()) return absl::OkStatus();
    absl::MutexLock lock(&sync_mu);
    const size_t bytes = params.size() * sizeof(float);
    // From pageable memory the copy has left `params` when this returns,
    // so the host vectors may change right after.
    if (host_params_newer) {
      MIM_RETURN_IF_ERROR(
          backend->CopyToBackend(d_params.data(), params.data(), bytes));
      host_params_newer = false;
    }
    if (host_adam_newer) {
      MIM_RETURN_IF_ERROR(
          backend->CopyToBackend(d_m.data(), adam_m.data(), bytes));
      MIM_RETURN_IF_ERROR(
          backend->CopyToBackend(d_v.data(), adam_v.data(), bytes));
      host_adam_newer = false;
    }
    return absl::OkStatus();
  }
  // Downloads what the device changed (params and Adam state after Adam
  // steps there). Safe for concurrent callers.
  absl::Status EnsureHostState() const {
    if (on_host()) return absl::OkStatus();
    absl::MutexLock lock(&sync_mu);
    if (!device_newer) return absl::OkStatus();
    const size_t bytes = params.size() * sizeof(float);
    MIM_RETURN_IF_ERROR(backend->CopyToHost(params.data(), d_params.data(), bytes));
    MIM_RETURN_IF_ERROR(backend->CopyToHost(adam_m.data(), d_m.data(), bytes));
    MIM_RETURN_IF_ERROR(backend->CopyToHost(adam_v.data(), d_v.data(), bytes));
    device_newer = false;
    return absl::OkStatus();
  }
  absl::Status EnsureHostGrads() const {
    if (on_host() || !host_grads_stale) return absl::OkStatus();
    MIM_RETURN_IF_ERROR(backend->CopyToHost(
        grads.data(), d_grads.data(), grads.size() * sizeof(float)));
    host_grads_stale = false;
    return absl::OkStatus();
  }
  // One Adam step with a gradient in the backend's memory.
  absl::Status AdamOnBackend(const float* grad) {
    const int64_t n = static_cast<int64_t>(params.size());
    if (n == 0) return absl::OkStatus();
    MIM_RETURN_IF_ERROR(EnsureDeviceState());
    ++adam_step;
    if (on_host()) {
      return backend->AdamUpdate(config.adam, adam_step, n, grad,
                                 params.data(), adam_m.data(), adam_v.data());
    }
    MIM_RETURN_IF_ERROR(backend->AdamUpdate(config.adam, adam_step, n, grad,
                                            d_params.data(), d_m.data(),
                                            d_v.data()));
    absl::MutexLock lock(&sync_mu);
    device_newer = true;
    return absl::OkStatus();
  }

  absl::Status RunForward(const Batch& b, ModelWorkspace::State* w) const;
  // A batch an InputStager staged: its inputs in the slot, once the copy in
  // has landed (the compute stream waits for it). FAILED_PRECONDITION when
  // the slot belongs to another backend or model kind, or was restaged.
  absl::Status UseStaged(const Batch& b, ModelWorkspace::State* w) const;
  // After the last op that reads a staged batch's inputs: marks them free
  // for the stager (nothing for an unstaged batch).
  absl::Status ReleaseStaged(const Batch& b) const;
  // Returns `status`; when it is an error, first frees the slot of a batch
  // whose staged inputs the failed call took, so that a caller that goes
  // on (and stages again) is not refused that slot forever.
  absl::Status AbandonStagedOnError(const Batch& b, absl::Status status) const;
  absl::Status RunBackward(const Batch& b, ModelWorkspace::State* w,
                           float* grad_dense,
                           std::vector<float>* grad_id_rows) const;

  ModelConfig config;
  const kernels::ComputeBackend* backend;
  std::vector<SliceInit> init;
  std::vector<ParamSlice> layout;
  int64_t att_offset = 0, mlp_offset = 0;

  // Host dense state. Mutable: const methods (Predict, Save) may bring it
  // up to date from the device (EnsureHostState, under sync_mu).
  mutable std::vector<float> params, grads, adam_m, adam_v;
  int64_t adam_step = 0;
  std::unique_ptr<ModelWorkspace::State> train_ws;  // training methods only

  // Device copies (device backends only) and which side is newer.
  mutable kernels::BackendArray<float> d_params, d_grads, d_m, d_v;
  kernels::BackendArray<float> d_ext_grads;  // ApplyDenseGradients' input
  mutable absl::Mutex sync_mu;
  mutable bool host_params_newer ABSL_GUARDED_BY(sync_mu) = true;
  mutable bool host_adam_newer ABSL_GUARDED_BY(sync_mu) = true;
  mutable bool device_newer ABSL_GUARDED_BY(sync_mu) = false;
  // d_grads holds a gradient `grads` lacks (training methods only).
  mutable bool host_grads_stale = false;
};

absl::Status CiubmModel::Impl::RunForward(const Batch& b,
                                          ModelWorkspace::State* w) const {
  const ModelConfig& c = config;
  const int64_t d = c.id_dim, dm = c.content_dim;
  MIM_RETURN_IF_ERROR(ValidateBatch(b, d, UsesContent(c) ? dm : 0));
  const int64_t B = b.batch_size, L = b.max_len;
  w->B = B;
  w->L = L;
  if (b.staged.slot != nullptr) {
    MIM_RETURN_IF_ERROR(UseStaged(b, w));
  } else {
    PackLookups(b, UsesContent(c), &w->lookups);
    w->G = w->lookups.G;
    MIM_RETURN_IF_ERROR(w->StageInputs(b, UsesContent(c)));
  }
  const int64_t G = w->G;
  const int64_t n_idx = B * (5 + L + G);
  MIM_RETURN_IF_ERROR(EnsureDeviceState());
  const float* params = BackendParams();
  const ModelWorkspace::State::Inputs& in = w->in;

  MIM_RETURN_IF_ERROR(w->gathered.Resize(n_idx * d));
  MIM_RETURN_IF_ERROR(backend->EmbeddingGather(
      {b.num_id_rows, d, n_idx}, in.id_rows, in.id_index,
      w->gathered.data()));
  const float* user = w->gathered.data();
  const float* target = user + 4 * B * d;
  const float* beh = user + 5 * B * d;
  const float* genres = beh + B * L * d;

  MIM_RETURN_IF_ERROR(w->genre_mean.Resize(B * d));
  MIM_RETURN_IF_ERROR(backend->MaskedMeanPoolForward(
      {B, G, d}, genres, in.genre_lens, w->genre_mean.data()));

  const kernels::SeqShape seq{B, L, d};
  if (c.use_id_interest) {
    MIM_RETURN_IF_ERROR(w->id_out.Resize(B * d));
    MIM_RETURN_IF_ERROR(w->id_interest.Forward(seq, beh, target, in.lens,
                                               params + att_offset,
                                               w->id_out.data()));
  }
  const float* m_t = nullptr;
  if (UsesContent(c)) {
    MIM_RETURN_IF_ERROR(w->content_gathered.Resize(B * (1 + L) * dm));
    MIM_RETURN_IF_ERROR(backend->EmbeddingGather(
        {b.num_content_rows, dm, B * (1 + L)}, in.content_rows,
        in.content_index, w->content_gathered.data()));
    m_t = w->content_gathered.data();
  }
  if (UsesContentInterest(c) || UsesFusion(c)) {
    MIM_RETURN_IF_ERROR(w->h_mm.Resize(B * dm));
    MIM_RETURN_IF_ERROR(w->h_fusion.Resize(B * d));
    MIM_RETURN_IF_ERROR(w->content.Forward(seq, m_t + B * dm, m_t, beh,
                                           in.lens, w->h_mm.data(),
                                           w->h_fusion.data()));
  }
  // Feature concat, in the order documented in ciubm_model.h.
  ColumnBlock blocks[10];
  int nb = 0;
  for (int k = 0; k < 4; ++k) blocks[nb++] = {user + k * B * d, d};
  blocks[nb++] = {w->genre_mean.data(), d};
  blocks[nb++] = {target, d};
  if (c.use_id_interest) blocks[nb++] = {w->id_out.data(), d};
  if (UsesContentInterest(c)) blocks[nb++] = {w->h_mm.data(), dm};
  if (UsesFusion(c)) blocks[nb++] = {w->h_fusion.data(), d};
  if (UsesContent(c)) blocks[nb++] = {m_t, dm};
  const int64_t width = MlpInputWidth(c);
  MIM_RETURN_IF_ERROR(w->mlp_in.Resize(B * width));
  MIM_RETURN_IF_ERROR(ConcatColumns(*backend, B,
                                    absl::MakeConstSpan(blocks, nb),
                                    w->mlp_in.data()));
  MIM_RETURN_IF_ERROR(w->logits.Resize(B));
  return w->mlp.Forward(B, w->mlp_in.data(), params + mlp_offset,
                        w->logits.data());
}

absl::Status CiubmModel::Impl::UseStaged(const Batch& b,
                                         ModelWorkspace::State* w) const {
  InputSlot& s = *b.staged.slot;
  const bool content = UsesContent(config);
  if (s.backend != backend || s.content != content) {
    return absl::FailedPreconditionError(absl::StrCat(
        "batch staged by an InputStager of another model (backend '",
        s.backend->name(), "', content ", s.content, "); expected one from "
        "this model's NewInputStager (backend '", backend->name(),
        "', content ", content, ")"));
  }
  if (b.staged.sequence != s.sequence) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the batch's staged inputs were overwritten: it holds staging %d of "
        "its slot, which now holds staging %d; stage at most one batch ahead "
        "of the model",
        b.staged.sequence, s.sequence));
  }
  const int64_t G = MostGenres(b);
  if (s.B != b.batch_size || s.G != G ||
      s.words != InputWords(b, content, G)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the batch changed after InputStager::Stage: staged B=%d G=%d with "
        "%d input words, now B=%d G=%d with %d",
        s.B, s.G, s.words, b.batch_size, G, InputWords(b, content, G)));
  }
  w->G = G;
  w->in = s.in;
  return backend->WaitEvent(s.copied.get());
}

absl::Status CiubmModel::Impl::ReleaseStaged(const Batch& b) const {
  if (b.staged.slot == nullptr) return absl::OkStatus();
  InputSlot& s = *b.staged.slot;
  MIM_RETURN_IF_ERROR(backend->RecordEvent(s.read_done.get()));
  s.released.store(b.staged.sequence, std::memory_order_release);
  return absl::OkStatus();
}

absl::Status CiubmModel::Impl::AbandonStagedOnError(const Batch& b,
                                                    absl::Status status) const {
  if (status.ok() || b.staged.slot == nullptr) return status;
  InputSlot& s = *b.staged.slot;
  // Only a staging this model may use and that is still the slot's own; a
  // foreign or overwritten one is left to whoever holds it.
  if (s.backend != backend || s.content != UsesContent(config) ||
      s.sequence != b.staged.sequence ||
      s.released.load(std::memory_order_acquire) == s.sequence) {
    return status;
  }
  // After whatever the failed call queued; if even that fails the device
  // is broken and the slot stays held (Stage then refuses it).
  if (backend->RecordEvent(s.read_done.get()).ok()) {
    s.released.store(b.staged.sequence, std::memory_order_release);
  }
  return status;
}

absl::Status CiubmModel::Impl::RunBackward(
    const Batch& b, ModelWorkspace::State* w, float* grad_dense,
    std::vector<float>* grad_id_rows) const {
  const ModelConfig& c = config;
  const int64_t d = c.id_dim, dm = c.content_dim;
  const int64_t B = w->B, L = w->L, G = w->G;
  const ModelWorkspace::State::Inputs& in = w->in;
  MIM_RETURN_IF_ERROR(w->grad_logits.Resize(B));
  MIM_RETURN_IF_ERROR(backend->SigmoidCrossEntropyBackward(
      B, w->logits.data(), in.labels, w->grad_logits.data()));
  const int64_t width = MlpInputWidth(c);
  MIM_RETURN_IF_ERROR(w->grad_mlp_in.Resize(B * width));
  MIM_RETURN_IF_ERROR(w->mlp.Backward(w->grad_logits.data(),
                                      w->grad_mlp_in.data(),
                                      grad_dense + mlp_offset));

  const int64_t n_idx = B * (5 + L + G);
  MIM_RETURN_IF_ERROR(w->grad_gathered.Resize(n_idx * d));
  float* g_user = w->grad_gathered.data();
  float* g_target = g_user + 4 * B * d;
  float* g_beh = g_user + 5 * B * d;
  float* g_genres = g_beh + B * L * d;
  MIM_RETURN_IF_ERROR(w->grad_genre_mean.Resize(B * d));
  MIM_RETURN_IF_ERROR(w->grad_id_out.Resize(B * d));
  MIM_RETURN_IF_ERROR(w->grad_h_fusion.Resize(B * d));
  MutableColumnBlock blocks[10];
  int nb = 0;
  for (int k = 0; k < 4; ++k) blocks[nb++] = {g_user + k * B * d, d};
  blocks[nb++] = {w->grad_genre_mean.data(), d};
  blocks[nb++] = {g_target, d};
  if (c.use_id_interest) blocks[nb++] = {w->grad_id_out.data(), d};
  // Content vectors are frozen and h_MM depends on nothing trainable, so
  // its gradient is not needed.
  if (UsesContentInterest(c)) blocks[nb++] = {nullptr, dm};
  if (UsesFusion(c)) blocks[nb++] = {w->grad_h_fusion.data(), d};
  if (UsesContent(c)) blocks[nb++] = {nullptr, dm};
  MIM_RETURN_IF_ERROR(SplitColumns(*backend, B, w->grad_mlp_in.data(),
                                   absl::MakeConstSpan(blocks, nb)));

  MIM_RETURN_IF_ERROR(backend->MaskedMeanPoolBackward(
      {B, G, d}, w->grad_genre_mean.data(), in.genre_lens, g_genres));

  if (c.use_id_interest) {
    MIM_RETURN_IF_ERROR(w->grad_target_tmp.Resize(B * d));
    MIM_RETURN_IF_ERROR(w->id_interest.Backward(
        w->grad_id_out.data(), g_beh, w->grad_target_tmp.data(),
        grad_dense + att_offset));
    MIM_RETURN_IF_ERROR(
        backend->AddInto(B * d, w->grad_target_tmp.data(), g_target));
  } else {
    MIM_RETURN_IF_ERROR(
        backend->Zero(g_beh, static_cast<size_t>(B * L * d) * sizeof(float)));
  }
  if (UsesFusion(c)) {
    MIM_RETURN_IF_ERROR(w->grad_beh_tmp.Resize(B * L * d));
    MIM_RETURN_IF_ERROR(w->content.Backward(nullptr, w->grad_h_fusion.data(),
                                            w->grad_beh_tmp.data()));
    MIM_RETURN_IF_ERROR(
        backend->AddInto(B * L * d, w->grad_beh_tmp.data(), g_beh));
  }
  grad_id_rows->resize(b.num_id_rows * d);
  float* grad_rows = grad_id_rows->data();
  if (!backend->host_memory()) {
    MIM_RETURN_IF_ERROR(w->grad_id_rows.Resize(b.num_id_rows * d));
    grad_rows = w->grad_id_rows.data();
  }
  MIM_RETURN_IF_ERROR(backend->EmbeddingGatherBackward(
      {b.num_id_rows, d, n_idx}, w->grad_gathered.data(), in.id_index,
      kernels::GradMode::kDeterministic, grad_rows));
  if (backend->host_memory()) return absl::OkStatus();
  // The step's one copy out of the sparse gradient.
  return backend->CopyToHost(grad_id_rows->data(), grad_rows,
                             grad_id_rows->size() * sizeof(float));
}

// ---------------------------------------------------------------------------

CiubmModel::CiubmModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CiubmModel::~CiubmModel() = default;

absl::StatusOr<std::unique_ptr<CiubmModel>> CiubmModel::Create(
    const ModelConfig& config, const kernels::ComputeBackend& backend) {
  MIM_RETURN_IF_ERROR(ValidateModelConfig(config));
  auto impl = std::make_unique<Impl>(config, backend);
  MIM_RETURN_IF_ERROR(impl->AllocateDeviceState());
  impl->InitParams();
  return std::unique_ptr<CiubmModel>(new CiubmModel(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<CiubmModel>> CiubmModel::LoadFromFile(
    const std::string& path, const kernels::ComputeBackend& backend) {
  ModelConfig config;
  std::vector<float> params;
  AdamState adam;
  MIM_RETURN_IF_ERROR(ReadModelFile(path, &config, &params, &adam));
  auto impl = std::make_unique<Impl>(config, backend);
  MIM_RETURN_IF_ERROR(impl->AllocateDeviceState());
  impl->params = std::move(params);
  impl->SetAdamState(std::move(adam));
  return std::unique_ptr<CiubmModel>(new CiubmModel(std::move(impl)));
}

const ModelConfig& CiubmModel::config() const { return impl_->config; }
const kernels::ComputeBackend& CiubmModel::backend() const {
  return *impl_->backend;
}

std::unique_ptr<ModelWorkspace> CiubmModel::NewWorkspace() const {
  return std::unique_ptr<ModelWorkspace>(new ModelWorkspace(
      std::make_unique<ModelWorkspace::State>(impl_->config,
                                              *impl_->backend)));
}

absl::Status CiubmModel::Predict(const Batch& batch, ModelWorkspace* workspace,
                                 std::vector<float>* probs) const {
  if (workspace == nullptr) {
    return absl::InvalidArgumentError("Predict: workspace is null");
  }
  ModelWorkspace::State* w = workspace->state_.get();
  MIM_RETURN_IF_ERROR(
      impl_->AbandonStagedOnError(batch, impl_->RunForward(batch, w)));
  MIM_RETURN_IF_ERROR(impl_->ReleaseStaged(batch));
  MIM_RETURN_IF_ERROR(w->Probs(probs));
  // Finite parameters can still overflow (inf - inf) on some inputs; a NaN
  // must not reach a caller as a score.
  for (int64_t b = 0; b < w->B; ++b) {
    if (std::isnan((*probs)[b])) {
      return absl::InternalError(absl::StrFormat(
          "Predict: the score of batch row %d is NaN: the model's dense "
          "parameters or the rows overflow on this input (a diverged or "
          "damaged model)",
          b));
    }
  }
  return absl::OkStatus();
}

absl::Status CiubmModel::Forward(const Batch& batch,
                                 std::vector<float>* probs) {
  ModelWorkspace::State* w = &impl_->train();
  MIM_RETURN_IF_ERROR(
      impl_->AbandonStagedOnError(batch, impl_->RunForward(batch, w)));
  MIM_RETURN_IF_ERROR(impl_->ReleaseStaged(batch));
  return w->Probs(probs);
}

absl::Status CiubmModel::ForwardBackward(const Batch& batch, float* loss,
                                         std::vector<float>* grad_id_rows,
                                         std::vector<float>* grad_dense) {
  Impl& m = *impl_;
  ModelWorkspace::State* w = &m.train();
  float* loss_out = loss;
  // Everything that reads the batch's inputs.
  const absl::Status computed = [&]() -> absl::Status {
    MIM_RETURN_IF_ERROR(m.RunForward(batch, w));
    if (!m.on_host()) {
      MIM_RETURN_IF_ERROR(w->loss.Resize(1));
      loss_out = w->loss.data();
    }
    MIM_RETURN_IF_ERROR(m.backend->SigmoidCrossEntropyForward(
        w->B, w->logits.data(), w->in.labels, loss_out));
    m.host_grads_stale = !m.on_host();
    return m.RunBackward(batch, w, m.BackendGrads(), grad_id_rows);
  }();
  MIM_RETURN_IF_ERROR(m.AbandonStagedOnError(batch, computed));
  MIM_RETURN_IF_ERROR(m.ReleaseStaged(batch));
  if (!m.on_host()) {
    MIM_RETURN_IF_ERROR(
        m.backend->CopyToHost(loss, loss_out, sizeof(float)));
  }
  if (grad_dense != nullptr) {
    MIM_RETURN_IF_ERROR(m.EnsureHostGrads());
    *grad_dense = m.grads;
  }
  return absl::OkStatus();
}

absl::Status CiubmModel::TrainStep(const Batch& batch, float* loss,
                                   std::vector<float>* grad_id_rows,
                                   std::vector<float>* probs) {
  MIM_RETURN_IF_ERROR(ForwardBackward(batch, loss, grad_id_rows, nullptr));
  if (probs != nullptr) {
    MIM_RETURN_IF_ERROR(impl_->train_ws->Probs(probs));
  }
  // The gradient stays where it was computed.
  return impl_->AdamOnBackend(impl_->BackendGrads());
}

absl::Status CiubmModel::ApplyDenseGradients(absl::Span<const float> grad) {
  Impl& m = *impl_;
  const int64_t n = static_cast<int64_t>(m.params.size());
  if (static_cast<int64_t>(grad.size()) != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ApplyDenseGradients: %d gradients, expected %d", grad.size(), n));
  }
  if (n == 0) return absl::OkStatus();
  if (m.on_host()) return m.AdamOnBackend(grad.data());
  MIM_RETURN_IF_ERROR(m.d_ext_grads.Resize(n));
  MIM_RETURN_IF_ERROR(m.backend->CopyToBackend(
      m.d_ext_grads.data(), grad.data(), n * sizeof(float)));
  return m.AdamOnBackend(m.d_ext_grads.data());
}

float* CiubmModel::backend_dense_gradients() {
  // The caller may change it in place: the host copy is then stale.
  impl_->host_grads_stale = !impl_->on_host();
  return impl_->BackendGrads();
}

absl::Status CiubmModel::ApplyBackendDenseGradients() {
  return impl_->AdamOnBackend(impl_->BackendGrads());
}

void CiubmModel::set_learning_rate(float lr) {
  impl_->config.adam.learning_rate = lr;
}

int64_t CiubmModel::num_dense_params() const {
  return static_cast<int64_t>(impl_->params.size());
}
std::vector<float>& CiubmModel::dense_params() {
  // A download failure leaves the last host copy; the device keeps the
  // newer state and the next call tries again.
  const absl::Status st = impl_->EnsureHostState();
  if (!st.ok()) {
    std::fprintf(stderr, "CiubmModel::dense_params: %s\n",
                 std::string(st.message()).c_str());
    return impl_->params;
  }
  impl_->MarkHostNewer(/*adam=*/false);
  return impl_->params;
}
const std::vector<float>& CiubmModel::dense_gradients() const {
  const absl::Status st = impl_->EnsureHostGrads();
  if (!st.ok()) {
    std::fprintf(stderr, "CiubmModel::dense_gradients: %s\n",
                 std::string(st.message()).c_str());
  }
  return impl_->grads;
}
int64_t CiubmModel::adam_step() const { return impl_->adam_step; }

absl::Status CiubmModel::Save(const std::string& path) const {
  MIM_RETURN_IF_ERROR(impl_->EnsureHostState());
  Writer payload;
  WriteConfig(impl_->config, &payload);
  const size_t n = impl_->params.size();
  payload.Pod<uint64_t>(n);
  payload.Bytes(impl_->params.data(), n * sizeof(float));
  payload.Pod<uint64_t>(static_cast<uint64_t>(impl_->adam_step));
  payload.Bytes(impl_->adam_m.data(), n * sizeof(float));
  payload.Bytes(impl_->adam_v.data(), n * sizeof(float));
  Writer file;
  file.Bytes(kMagic, sizeof(kMagic));
  file.Pod<uint32_t>(kFormatVersion);
  file.Pod<uint64_t>(payload.bytes().size());
  file.Bytes(payload.bytes().data(), payload.bytes().size());
  file.Pod<uint64_t>(base::Fnv1a64(payload.bytes().data(), payload.bytes().size()));

  return base::WriteFileAtomically(path, file.bytes());
}

absl::Status CiubmModel::Load(const std::string& path) {
  ModelConfig file_config;
  std::vector<float> params;
  AdamState adam;
  MIM_RETURN_IF_ERROR(ReadModelFile(path, &file_config, &params, &adam));
  if (!SameArchitecture(file_config, impl_->config)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model file '", path, "' holds model '", file_config.name,
        "' whose architecture differs from this model '", impl_->config.name,
        "'"));
  }
  impl_->params = std::move(params);
  impl_->SetAdamState(std::move(adam));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------

struct InputStager::Impl {
  Impl(const ModelConfig& c, const kernels::ComputeBackend& b)
      : id_dim(c.id_dim),
        content_dim(c.content_dim),
        content(UsesContent(c)),
        backend(&b),
        slots{std::make_shared<InputSlot>(b), std::make_shared<InputSlot>(b)} {}

  const int64_t id_dim, content_dim;
  const bool content;
  const kernels::ComputeBackend* const backend;
  std::shared_ptr<InputSlot> slots[2];
  uint64_t staged = 0;  // batches staged so far
  Lookups lookups;      // scratch
};

InputStager::InputStager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
InputStager::~InputStager() = default;

absl::Status InputStager::Stage(Batch* batch) {
  Impl& m = *impl_;
  batch->staged = StagedInputs{};
  if (m.backend->host_memory()) return absl::OkStatus();
  MIM_RETURN_IF_ERROR(
      ValidateBatch(*batch, m.id_dim, m.content ? m.content_dim : 0));
  const int k = static_cast<int>(m.staged % 2);
  InputSlot& s = *m.slots[k];
  if (s.released.load(std::memory_order_acquire) != s.sequence) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "InputStager: slot %d still holds staging %d, which the model has "
        "not computed on yet; stage at most one batch ahead of the model",
        k, s.sequence));
  }
  MIM_RETURN_IF_ERROR(s.copied.Create());
  MIM_RETURN_IF_ERROR(s.read_done.Create());
  // The previous copy out of this slot's pinned buffer must be done before
  // the host rewrites it.
  if (s.sequence > 0) MIM_RETURN_IF_ERROR(m.backend->SyncEvent(s.copied.get()));
  PackLookups(*batch, m.content, &m.lookups);
  const size_t words = InputWords(*batch, m.content, m.lookups.G);
  const size_t bytes = words * sizeof(float);
  if (s.staging_bytes < bytes) {
    m.backend->FreeHost(s.staging);
    s.staging = nullptr;
    s.staging_bytes = 0;
    MIM_RETURN_IF_ERROR(m.backend->AllocateHost(bytes, &s.staging));
    s.staging_bytes = bytes;
  }
  MIM_RETURN_IF_ERROR(s.inputs.Resize(static_cast<int64_t>(words)));
  s.in = LayOutInputs(*batch, m.content, m.lookups,
                      static_cast<char*>(s.staging), s.inputs.data());
  s.B = batch->batch_size;
  s.G = m.lookups.G;
  s.words = words;
  s.content = m.content;
  // After the compute that last read this set (two batches ago).
  MIM_RETURN_IF_ERROR(m.backend->CopyToBackendAsync(
      s.inputs.data(), s.staging, bytes,
      s.sequence > 0 ? s.read_done.get() : nullptr, s.copied.get()));
  ++s.sequence;
  ++m.staged;
  batch->staged = StagedInputs{m.slots[k], s.sequence};
  return absl::OkStatus();
}

std::unique_ptr<InputStager> CiubmModel::NewInputStager() const {
  return std::unique_ptr<InputStager>(new InputStager(
      std::make_unique<InputStager::Impl>(impl_->config, *impl_->backend)));
}

}  // namespace mim::model
