#include "worker/csft/encoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/atomic_file.h"
#include "base/fnv1a.h"
#include "base/status_macros.h"
#include "kernels/csft_ops.h"
#include "kernels/dense_ops.h"

namespace mim::csft {
namespace {

constexpr char kMagic[] = "#mim-csft-encoder v1";

void AddInto(const std::vector<float>& src, float* dst) {
  for (size_t i = 0; i < src.size(); ++i) dst[i] += src[i];
}

}  // namespace

template <typename T>
CsftEncoder::OffsetsIn<T> CsftEncoder::Layout(const EncoderConfig& c) {
  OffsetsIn<T> o;
  const T f = T(c.fusion_dim());
  o.gf = 0;
  o.w1 = o.gf + T(c.num_genres) * c.genre_dim;
  o.b1 = o.w1 + f * c.hidden;
  o.w2 = o.b1 + c.hidden;
  o.b2 = o.w2 + T(c.hidden) * c.dim;
  o.p = o.b2 + c.dim;
  o.bt = o.p + T(c.dim) * c.dim;
  o.gc = o.bt + c.dim;
  o.end = o.gc + T(c.num_genres) * c.dim;
  return o;
}

CsftEncoder::CsftEncoder(const EncoderConfig& config)
    : config_(config),
      off_(Layout<int64_t>(config)),
      params_(off_.end, 0.0f) {}

absl::Status CsftEncoder::CheckConfig(const EncoderConfig& c) {
  if (c.dim < 1 || c.input_dim < c.dim || c.num_genres < 1 ||
      c.genre_dim < 1 || c.hidden < 1 || !(c.residual_gate >= 0) ||
      !std::isfinite(c.residual_gate)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "encoder config dim=", c.dim, " input_dim=", c.input_dim,
        " num_genres=", c.num_genres, " genre_dim=", c.genre_dim,
        " hidden=", c.hidden, " residual_gate=", c.residual_gate,
        "; expected all >= 1, input_dim >= dim (the plain vector comes "
        "first) and a finite residual_gate >= 0"));
  }
  // Counted in floating point, so that no product can wrap: the layout is
  // computed in int64 only once the total is known to fit.
  const double total = Layout<double>(c).end;
  if (total > double(kMaxParams)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "encoder config dim=%d input_dim=%d num_genres=%d genre_dim=%d "
        "hidden=%d fusion=%s needs %.4g parameters; at most %d (%d MiB) are "
        "allowed",
        c.dim, c.input_dim, c.num_genres, c.genre_dim, c.hidden,
        c.tensor_fusion ? "tensor" : "concat", total, kMaxParams,
        static_cast<int>(kMaxParams * sizeof(float) >> 20)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CsftEncoder>> CsftEncoder::Create(
    const EncoderConfig& c, uint64_t seed) {
  MIM_RETURN_IF_ERROR(CheckConfig(c));
  std::unique_ptr<CsftEncoder> e(new CsftEncoder(c));
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t from, int64_t to, double limit) {
    std::uniform_real_distribution<double> u(-limit, limit);
    for (int64_t i = from; i < to; ++i) e->params_[i] = float(u(rng));
  };
  const Offsets& o = e->off_;
  uniform(o.gf, o.w1, 0.5);
  uniform(o.w1, o.b1, std::sqrt(6.0 / (c.fusion_dim() + c.hidden)));
  // W2, b2 stay zero: the untrained encoder is the plain vector.
  for (int k = 0; k < c.dim; ++k) e->params_[o.p + int64_t(k) * c.dim + k] = 1;
  uniform(o.gc, o.end, 1.0);
  return e;
}

uint64_t CsftEncoder::Fingerprint() const {
  return base::Fnv1a64(params_.data(), params_.size() * sizeof(float));
}

absl::Status CsftEncoder::Save(const std::string& path) const {
  const EncoderConfig& c = config_;
  const std::string gate =
      c.residual_gate > 0 ? absl::StrFormat("\tresidual_gate=%.9g", c.residual_gate)
                          : "";
  std::string out = absl::StrFormat(
      "%s\tdim=%d\tinput_dim=%d\tnum_genres=%d\tgenre_dim=%d\thidden=%d\t"
      "fusion=%s%s\tparams=%d\tfnv1a64=%016x\n",
      kMagic, c.dim, c.input_dim, c.num_genres, c.genre_dim, c.hidden,
      c.tensor_fusion ? "tensor" : "concat", gate, params_.size(),
      Fingerprint());
  out.append(reinterpret_cast<const char*>(params_.data()),
             params_.size() * sizeof(float));
  return base::WriteFileAtomically(path, out);
}

absl::StatusOr<std::unique_ptr<CsftEncoder>> CsftEncoder::Load(
    const std::string& path) {
  std::string bytes;
  MIM_RETURN_IF_ERROR(base::ReadFileToString(path, &bytes));
  auto bad = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(
        path, ": ", what, "; expected a C-SFT encoder file (", kMagic,
        " header, then float32 parameters)"));
  };
  const size_t nl = bytes.find('\n');
  if (nl == std::string::npos) return bad("no header line");
  std::vector<std::string> fields =
      absl::StrSplit(bytes.substr(0, nl), '\t');
  if (fields.empty() || fields[0] != kMagic) return bad("bad header");
  EncoderConfig c;
  int64_t n = -1;
  uint64_t sum = 0;
  bool have_sum = false;
  for (size_t i = 1; i < fields.size(); ++i) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(fields[i], absl::MaxSplits('=', 1));
    bool ok = true;
    if (kv.first == "dim") ok = absl::SimpleAtoi(kv.second, &c.dim);
    else if (kv.first == "input_dim") ok = absl::SimpleAtoi(kv.second, &c.input_dim);
    else if (kv.first == "num_genres") ok = absl::SimpleAtoi(kv.second, &c.num_genres);
    else if (kv.first == "genre_dim") ok = absl::SimpleAtoi(kv.second, &c.genre_dim);
    else if (kv.first == "hidden") ok = absl::SimpleAtoi(kv.second, &c.hidden);
    else if (kv.first == "params") ok = absl::SimpleAtoi(kv.second, &n);
    else if (kv.first == "residual_gate") {
      ok = absl::SimpleAtof(kv.second, &c.residual_gate) && c.residual_gate > 0;
    }
    else if (kv.first == "fusion") {
      ok = kv.second == "tensor" || kv.second == "concat";
      c.tensor_fusion = kv.second == "tensor";
    } else if (kv.first == "fnv1a64") {
      ok = absl::SimpleHexAtoi(kv.second, &sum);
      have_sum = true;
    } else {
      ok = false;
    }
    if (!ok) return bad(absl::StrCat("bad header field '", fields[i], "'"));
  }
  // The config is checked, and its parameter count compared with the
  // file's size, before anything is allocated: a damaged header must not
  // ask for gigabytes.
  if (absl::Status st = CheckConfig(c); !st.ok()) {
    return bad(std::string(st.message()));
  }
  const int64_t needed = Layout<int64_t>(c).end;
  if (n != needed || !have_sum ||
      bytes.size() - nl - 1 != size_t(needed) * sizeof(float)) {
    return bad(absl::StrCat("header says ", n, " parameters, the config needs ",
                            needed, ", the file holds ",
                            (bytes.size() - nl - 1) / sizeof(float)));
  }
  auto created = Create(c, 0);
  if (!created.ok()) return bad(std::string(created.status().message()));
  std::unique_ptr<CsftEncoder> e = std::move(*created);
  if (n != e->num_params() || !have_sum ||
      bytes.size() - nl - 1 != size_t(n) * sizeof(float)) {
    return bad(absl::StrCat("header says ", n, " parameters, the config needs ",
                            e->num_params(), ", the file holds ",
                            (bytes.size() - nl - 1) / sizeof(float)));
  }
  std::memcpy(e->params_.data(), bytes.data() + nl + 1, n * sizeof(float));
  if (e->Fingerprint() != sum) return bad("checksum mismatch");
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(e->params_[i])) {
      return bad(absl::StrCat("parameter ", i, " is not finite"));
    }
  }
  return e;
}

absl::Status CsftEncoder::Forward(const std::vector<ItemInput>& items,
                                  EncoderPass* pass) const {
  const EncoderConfig& c = config_;
  const int64_t rows = static_cast<int64_t>(items.size());
  const int64_t f = c.fusion_dim();
  pass->rows = rows;
  pass->a.resize(rows * c.input_dim);
  pass->b.assign(rows * c.genre_dim, 0.0f);
  pass->cu.assign(rows * c.dim, 0.0f);
  pass->genres.resize(rows);
  const float* gf = params_.data() + off_.gf;
  const float* gc = params_.data() + off_.gc;
  for (int64_t r = 0; r < rows; ++r) {
    if (items[r].features == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("encoder input row ", r, " has no features"));
    }
    if (items[r].drop_modalities) {
      std::fill_n(pass->a.begin() + r * c.input_dim, c.input_dim, 0.0f);
    } else {
      std::copy(items[r].features, items[r].features + c.input_dim,
                pass->a.begin() + r * c.input_dim);
    }
    pass->genres[r] = items[r].genres;
    if (items[r].genres == nullptr || items[r].genres->empty()) continue;
    const float inv = 1.0f / float(items[r].genres->size());
    for (int32_t g : *items[r].genres) {
      if (g < 0 || g >= c.num_genres) {
        return absl::InvalidArgumentError(
            absl::StrCat("genre id ", g, " of encoder input row ", r,
                         "; expected in [0, ", c.num_genres, ")"));
      }
      for (int k = 0; k < c.genre_dim; ++k) {
        pass->b[r * c.genre_dim + k] += inv * gf[int64_t(g) * c.genre_dim + k];
      }
      for (int k = 0; k < c.dim; ++k) {
        pass->cu[r * c.dim + k] += inv * gc[int64_t(g) * c.dim + k];
      }
    }
  }
  pass->z.resize(rows * f);
  if (c.tensor_fusion) {
    MIM_RETURN_IF_ERROR(kernels::TensorFusionForwardCpu(
        {rows, c.input_dim, c.genre_dim}, pass->a.data(), pass->b.data(),
        pass->z.data()));
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      std::copy(pass->a.begin() + r * c.input_dim,
                pass->a.begin() + (r + 1) * c.input_dim,
                pass->z.begin() + r * f);
      std::copy(pass->b.begin() + r * c.genre_dim,
                pass->b.begin() + (r + 1) * c.genre_dim,
                pass->z.begin() + r * f + c.input_dim);
    }
  }
  pass->h1.resize(rows * c.hidden);
  pass->r.resize(rows * c.dim);
  MIM_RETURN_IF_ERROR(kernels::DenseForwardCpu(
      {rows, f, c.hidden}, pass->z.data(), params_.data() + off_.w1,
      params_.data() + off_.b1, kernels::Activation::kRelu, pass->h1.data()));
  MIM_RETURN_IF_ERROR(kernels::DenseForwardCpu(
      {rows, c.hidden, c.dim}, pass->h1.data(), params_.data() + off_.w2,
      params_.data() + off_.b2, kernels::Activation::kNone, pass->r.data()));
  pass->u.resize(rows * c.dim);
  pass->gate.assign(rows, 1.0f);
  std::vector<float>& plain = pass->plain;
  plain.resize(rows * c.dim);
  for (int64_t r = 0; r < rows; ++r) {
    if (c.residual_gate > 0) {
      const double n = double(std::max<int64_t>(items[r].interactions, 0));
      pass->gate[r] = float(n / (n + c.residual_gate));
    }
    const float g = pass->gate[r];
    for (int k = 0; k < c.dim; ++k) {
      plain[r * c.dim + k] = items[r].features[k];
      pass->u[r * c.dim + k] = plain[r * c.dim + k] + g * pass->r[r * c.dim + k];
    }
  }
  pass->v.resize(rows * c.dim);
  MIM_RETURN_IF_ERROR(kernels::L2NormalizeForwardCpu(rows, c.dim,
                                                     pass->u.data(),
                                                     pass->v.data()));
  pass->tu.resize(rows * c.dim);
  MIM_RETURN_IF_ERROR(kernels::DenseForwardCpu(
      {rows, c.dim, c.dim}, plain.data(), params_.data() + off_.p,
      params_.data() + off_.bt, kernels::Activation::kNone, pass->tu.data()));
  pass->t.resize(rows * c.dim);
  MIM_RETURN_IF_ERROR(kernels::L2NormalizeForwardCpu(rows, c.dim,
                                                     pass->tu.data(),
                                                     pass->t.data()));
  pass->c.resize(rows * c.dim);
  return kernels::L2NormalizeForwardCpu(rows, c.dim, pass->cu.data(),
                                        pass->c.data());
}

absl::Status CsftEncoder::Backward(const EncoderPass& pass,
                                   const float* grad_v, const float* grad_t,
                                   const float* grad_c, float residual_penalty,
                                   float* grads) const {
  const EncoderConfig& c = config_;
  const int64_t rows = pass.rows;
  const int64_t f = c.fusion_dim();
  if (rows == 0) return absl::OkStatus();
  // h = normalize(plain + g r): grad_r = g grad_u + 2 lambda r / rows.
  std::vector<float> grad_r(rows * c.dim);
  MIM_RETURN_IF_ERROR(kernels::L2NormalizeBackwardCpu(
      rows, c.dim, pass.u.data(), grad_v, grad_r.data()));
  const float pen = 2.0f * residual_penalty / float(rows);
  for (int64_t i = 0; i < rows * c.dim; ++i) {
    grad_r[i] = pass.gate[i / c.dim] * grad_r[i] + pen * pass.r[i];
  }

  std::vector<float> grad_h1(rows * c.hidden), gw2(int64_t(c.hidden) * c.dim),
      gb2(c.dim);
  MIM_RETURN_IF_ERROR(kernels::DenseBackwardCpu(
      {rows, c.hidden, c.dim}, pass.h1.data(), params_.data() + off_.w2,
      pass.r.data(), grad_r.data(), kernels::Activation::kNone,
      grad_h1.data(), gw2.data(), gb2.data()));
  AddInto(gw2, grads + off_.w2);
  AddInto(gb2, grads + off_.b2);
  std::vector<float> grad_z(rows * f), gw1(f * c.hidden), gb1(c.hidden);
  MIM_RETURN_IF_ERROR(kernels::DenseBackwardCpu(
      {rows, f, c.hidden}, pass.z.data(), params_.data() + off_.w1,
      pass.h1.data(), grad_h1.data(), kernels::Activation::kRelu,
      grad_z.data(), gw1.data(), gb1.data()));
  AddInto(gw1, grads + off_.w1);
  AddInto(gb1, grads + off_.b1);
  std::vector<float> grad_b(rows * c.genre_dim);
  if (c.tensor_fusion) {
    MIM_RETURN_IF_ERROR(kernels::TensorFusionBackwardCpu(
        {rows, c.input_dim, c.genre_dim}, pass.a.data(), pass.b.data(),
        grad_z.data(), nullptr, grad_b.data()));
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      for (int k = 0; k < c.genre_dim; ++k) {
        grad_b[r * c.genre_dim + k] = grad_z[r * f + c.input_dim + k];
      }
    }
  }
  std::vector<float> grad_cu;
  if (grad_c != nullptr) {
    grad_cu.resize(rows * c.dim);
    MIM_RETURN_IF_ERROR(kernels::L2NormalizeBackwardCpu(
        rows, c.dim, pass.cu.data(), grad_c, grad_cu.data()));
  }
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<int32_t>* g = pass.genres[r];
    if (g == nullptr || g->empty()) continue;
    const float inv = 1.0f / float(g->size());
    for (int32_t id : *g) {
      float* gf = grads + off_.gf + int64_t(id) * c.genre_dim;
      for (int k = 0; k < c.genre_dim; ++k) gf[k] += inv * grad_b[r * c.genre_dim + k];
      if (grad_c != nullptr) {
        float* gc = grads + off_.gc + int64_t(id) * c.dim;
        for (int k = 0; k < c.dim; ++k) gc[k] += inv * grad_cu[r * c.dim + k];
      }
    }
  }
  if (grad_t != nullptr) {
    std::vector<float> grad_tu(rows * c.dim);
    MIM_RETURN_IF_ERROR(kernels::L2NormalizeBackwardCpu(
        rows, c.dim, pass.tu.data(), grad_t, grad_tu.data()));
    std::vector<float> gp(int64_t(c.dim) * c.dim), gbt(c.dim);
    MIM_RETURN_IF_ERROR(kernels::DenseBackwardCpu(
        {rows, c.dim, c.dim}, pass.plain.data(), params_.data() + off_.p,
        pass.tu.data(), grad_tu.data(), kernels::Activation::kNone, nullptr,
        gp.data(), gbt.data()));
    AddInto(gp, grads + off_.p);
    AddInto(gbt, grads + off_.bt);
  }
  return absl::OkStatus();
}

absl::Status CsftEncoder::Encode(const std::vector<ItemInput>& items,
                                 float* out) const {
  EncoderPass pass;
  MIM_RETURN_IF_ERROR(Forward(items, &pass));
  for (size_t i = 0; i < pass.v.size(); ++i) {
    if (!std::isfinite(pass.v[i])) {
      return absl::DataLossError(absl::StrFormat(
          "C-SFT encoder %016x gave a non-finite value for input row %d "
          "(parameters out of range for this input)",
          Fingerprint(), int64_t(i) / config_.dim));
    }
  }
  std::copy(pass.v.begin(), pass.v.end(), out);
  return absl::OkStatus();
}

}  // namespace mim::csft
