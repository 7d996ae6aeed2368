#include "worker/model/modules.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace mim::model {

absl::Status ConcatColumns(const kernels::ComputeBackend& backend,
                           int64_t rows, absl::Span<const ColumnBlock> in,
                           float* out) {
  int64_t total = 0;
  for (const ColumnBlock& c : in) total += c.width;
  int64_t off = 0;
  for (const ColumnBlock& c : in) {
    MIM_RETURN_IF_ERROR(backend.CopyColumns({rows, c.width, c.width, total},
                                            c.data, out + off));
    off += c.width;
  }
  return absl::OkStatus();
}

absl::Status SplitColumns(const kernels::ComputeBackend& backend,
                          int64_t rows, const float* in,
                          absl::Span<const MutableColumnBlock> out) {
  int64_t total = 0;
  for (const MutableColumnBlock& c : out) total += c.width;
  int64_t off = 0;
  for (const MutableColumnBlock& c : out) {
    if (c.data != nullptr) {
      MIM_RETURN_IF_ERROR(backend.CopyColumns({rows, c.width, total, c.width},
                                              in + off, c.data));
    }
    off += c.width;
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------

IdInterestModule::IdInterestModule(const kernels::ComputeBackend& backend,
                                   Backbone backbone, int64_t dim,
                                   const kernels::AttentionMlpShape& att,
                                   int sim_k)
    : backend_(&backend),
      backbone_(backbone),
      dim_(dim),
      att_(att),
      sim_k_(sim_k),
      positions_(&backend),
      new_lens_(&backend),
      selected_(&backend),
      grad_selected_(&backend) {}

int64_t IdInterestModule::num_params() const {
  if (backbone_ == Backbone::kAvgPool) return 0;
  return kernels::AttentionW1Size(dim_, att_) + att_.hidden1 +
         att_.hidden1 * att_.hidden2 + att_.hidden2 + att_.hidden2 + 1;
}

kernels::AttentionMlpParams IdInterestModule::Params(const float* p) const {
  kernels::AttentionMlpParams out;
  out.w1 = p;
  p += kernels::AttentionW1Size(dim_, att_);
  out.b1 = p;
  p += att_.hidden1;
  out.w2 = p;
  p += att_.hidden1 * att_.hidden2;
  out.b2 = p;
  p += att_.hidden2;
  out.w3 = p;
  p += att_.hidden2;
  out.b3 = p;
  return out;
}

kernels::AttentionMlpGrads IdInterestModule::Grads(float* p) const {
  // Same layout as Params; the casts undo the const it adds.
  const kernels::AttentionMlpParams v = Params(p);
  return {p,
          const_cast<float*>(v.b1),
          const_cast<float*>(v.w2),
          const_cast<float*>(v.b2),
          const_cast<float*>(v.w3),
          const_cast<float*>(v.b3)};
}

absl::Status IdInterestModule::Forward(const kernels::SeqShape& s,
                                       const float* h, const float* h_t,
                                       const int32_t* lens,
                                       const float* params, float* out) {
  if (s.dim != dim_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IdInterestModule: dim %d, expected %d", s.dim, dim_));
  }
  shape_ = s;
  h_ = h;
  h_t_ = h_t;
  lens_ = lens;
  params_ = params;
  switch (backbone_) {
    case Backbone::kAvgPool:
      return backend_->MaskedMeanPoolForward(s, h, lens, out);
    case Backbone::kDin:
      return backend_->DinAttentionForward(s, att_, h, h_t, lens,
                                             Params(params), nullptr, out);
    case Backbone::kSim: {
      k_ = static_cast<int>(std::min<int64_t>(sim_k_, s.max_len));
      k_ = std::max(k_, 1);
      MIM_RETURN_IF_ERROR(positions_.Resize(s.batch * k_));
      MIM_RETURN_IF_ERROR(new_lens_.Resize(s.batch));
      MIM_RETURN_IF_ERROR(selected_.Resize(s.batch * k_ * s.dim));
      absl::Status st = backend_->TopKSelect(s, h, h_t, lens, k_,
                                               positions_.data(),
                                               new_lens_.data());
      if (!st.ok()) return st;
      st = backend_->SelectRowsForward(s, h, positions_.data(), k_,
                                         selected_.data());
      if (!st.ok()) return st;
      const kernels::SeqShape ks{s.batch, k_, s.dim};
      return backend_->DinAttentionForward(ks, att_, selected_.data(), h_t,
                                             new_lens_.data(), Params(params),
                                             nullptr, out);
    }
  }
  return absl::InternalError("IdInterestModule: unknown backbone");
}

absl::Status IdInterestModule::Backward(const float* grad_out, float* grad_h,
                                        float* grad_h_t, float* grad_params) {
  const kernels::SeqShape& s = shape_;
  switch (backbone_) {
    case Backbone::kAvgPool:
      MIM_RETURN_IF_ERROR(backend_->Zero(
          grad_h_t, static_cast<size_t>(s.batch * s.dim) * sizeof(float)));
      return backend_->MaskedMeanPoolBackward(s, grad_out, lens_, grad_h);
    case Backbone::kDin: {
      const kernels::AttentionMlpParams ap = Params(params_);
      const kernels::AttentionMlpGrads g = Grads(grad_params);
      return backend_->DinAttentionBackward(s, att_, h_, h_t_, lens_, ap,
                                              grad_out, grad_h, grad_h_t, g);
    }
    case Backbone::kSim: {
      const kernels::AttentionMlpParams ap = Params(params_);
      const kernels::AttentionMlpGrads g = Grads(grad_params);
      MIM_RETURN_IF_ERROR(grad_selected_.Resize(selected_.size()));
      const kernels::SeqShape ks{s.batch, k_, s.dim};
      absl::Status st = backend_->DinAttentionBackward(
          ks, att_, selected_.data(), h_t_, new_lens_.data(), ap, grad_out,
          grad_selected_.data(), grad_h_t, g);
      if (!st.ok()) return st;
      return backend_->SelectRowsBackward(s, grad_selected_.data(),
                                            positions_.data(), k_, grad_h);
    }
  }
  return absl::InternalError("IdInterestModule: unknown backbone");
}

// ---------------------------------------------------------------------------

ContentInterestModule::ContentInterestModule(
    const kernels::ComputeBackend& backend, int64_t id_dim,
    int64_t content_dim)
    : backend_(&backend),
      id_dim_(id_dim),
      content_dim_(content_dim),
      zeros_(&backend) {}

absl::Status ContentInterestModule::Forward(const kernels::SeqShape& s,
                                            const float* m, const float* m_t,
                                            const float* h,
                                            const int32_t* lens, float* h_mm,
                                            float* h_fusion) {
  shape_ = kernels::SeqShape{s.batch, s.max_len, content_dim_};
  m_ = m;
  m_t_ = m_t;
  h_ = h;
  lens_ = lens;
  kernels::ContentShape cs;
  cs.content = shape_;
  cs.id_dim = id_dim_;
  return backend_->ContentFusionForward(cs, m, m_t, h, lens, nullptr, h_mm,
                                          h_fusion);
}

absl::Status ContentInterestModule::Backward(const float* grad_mm,
                                             const float* grad_fusion,
                                             float* grad_h) {
  const int64_t need =
      shape_.batch * std::max(id_dim_, content_dim_);
  if (zeros_.size() < need) MIM_RETURN_IF_ERROR(zeros_.ResizeZeroed(need));
  kernels::ContentShape cs;
  cs.content = shape_;
  cs.id_dim = id_dim_;
  return backend_->ContentFusionBackward(
      cs, m_, m_t_, h_, lens_, grad_mm ? grad_mm : zeros_.data(),
      grad_fusion ? grad_fusion : zeros_.data(), nullptr, nullptr, grad_h);
}

// ---------------------------------------------------------------------------

MlpTower::MlpTower(const kernels::ComputeBackend& backend, int64_t input_width,
                   const std::vector<int>& hidden)
    : backend_(&backend) {
  widths_.push_back(input_width);
  for (int h : hidden) widths_.push_back(h);
  widths_.push_back(1);
  for (size_t l = 0; l + 1 < widths_.size(); ++l) {
    acts_.emplace_back(&backend);
    grads_.emplace_back(&backend);
  }
}

int64_t MlpTower::num_params() const {
  int64_t n = 0;
  for (size_t l = 0; l + 1 < widths_.size(); ++l) {
    n += widths_[l] * widths_[l + 1] + widths_[l + 1];
  }
  return n;
}

absl::Status MlpTower::Forward(int64_t rows, const float* x,
                               const float* params, float* logits) {
  rows_ = rows;
  x_ = x;
  params_ = params;
  const size_t layers = widths_.size() - 1;
  const float* in = x;
  const float* p = params;
  for (size_t l = 0; l < layers; ++l) {
    const kernels::DenseShape ds{rows, widths_[l], widths_[l + 1]};
    const bool last = l + 1 == layers;
    float* out = last ? logits : nullptr;
    if (!last) {
      MIM_RETURN_IF_ERROR(acts_[l].Resize(rows * widths_[l + 1]));
      out = acts_[l].data();
    }
    absl::Status st = backend_->DenseForward(
        ds, in, p, p + ds.in * ds.out,
        last ? kernels::Activation::kNone : kernels::Activation::kRelu, out);
    if (!st.ok()) return st;
    p += ds.in * ds.out + ds.out;
    in = out;
  }
  return absl::OkStatus();
}

absl::Status MlpTower::Backward(const float* grad_logits, float* grad_x,
                                float* grad_params) {
  const size_t layers = widths_.size() - 1;
  // Offsets of each layer's parameters.
  int64_t off_end = num_params();
  const float* grad_out = grad_logits;
  for (size_t l = layers; l-- > 0;) {
    const kernels::DenseShape ds{rows_, widths_[l], widths_[l + 1]};
    const int64_t off = off_end - (ds.in * ds.out + ds.out);
    const bool last = l + 1 == layers;
    const float* in = l == 0 ? x_ : acts_[l - 1].data();
    // For the last layer y is unused (no ReLU); pass the input grads' source.
    const float* y = last ? grad_logits : acts_[l].data();
    float* gx = nullptr;
    if (l > 0) {
      MIM_RETURN_IF_ERROR(grads_[l - 1].Resize(rows_ * widths_[l]));
      gx = grads_[l - 1].data();
    } else {
      gx = grad_x;
    }
    absl::Status st = backend_->DenseBackward(
        ds, in, params_ + off, y, grad_out,
        last ? kernels::Activation::kNone : kernels::Activation::kRelu, gx,
        grad_params + off, grad_params + off + ds.in * ds.out);
    if (!st.ok()) return st;
    grad_out = gx;
    off_end = off;
  }
  return absl::OkStatus();
}

}  // namespace mim::model
