// Test helpers for worker/model: seeded random data, random batches and a
// float finite-difference gradient check that tolerates ReLU kinks.
#ifndef MIM_WORKER_MODEL_MODEL_TEST_UTIL_H_
#define MIM_WORKER_MODEL_MODEL_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/model/batch.h"

namespace mim::model::testing {

inline std::vector<float> RandomFloats(size_t n, uint32_t seed,
                                       float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

inline double DotD(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double{a[i]} * double{b[i]};
  return s;
}

// Central-difference check of `analytic` = d f / d x, in float arithmetic.
// For each element, differences at step h and h/2 are compared first: if
// they disagree, f is not smooth within h of x (a ReLU kink or a top-k
// switch lies in between) and the element is skipped. Smooth elements must
// satisfy |fd - analytic| <= atol + rtol * max(|fd|, |analytic|). At most
// `max_skip` of the elements may be skipped, and the analytic gradient must
// not be all zero (the check must test something).
struct FdOptions {
  double step = 1e-2;
  double atol = 2e-4;
  double rtol = 2e-2;
  double max_skip = 0.1;
};

inline void ExpectGradMatchesFd(const std::string& what,
                                std::vector<float>* x,
                                const std::function<double()>& f,
                                const std::vector<float>& analytic,
                                const FdOptions& o = FdOptions()) {
  ASSERT_EQ(x->size(), analytic.size()) << what;
  double abs_sum = 0;
  for (float a : analytic) abs_sum += std::abs(a);
  ASSERT_GT(abs_sum, 0.0) << what << ": analytic gradient is all zero";
  size_t skipped = 0;
  for (size_t i = 0; i < x->size(); ++i) {
    const float saved = (*x)[i];
    auto at = [&](double delta) {
      (*x)[i] = static_cast<float>(saved + delta);
      const double actual = double{(*x)[i]} - saved;  // after rounding
      const double v = f();
      (*x)[i] = saved;
      return std::make_pair(v, actual);
    };
    const auto [u1, du1] = at(o.step);
    const auto [d1, dd1] = at(-o.step);
    const auto [u2, du2] = at(o.step / 2);
    const auto [d2, dd2] = at(-o.step / 2);
    const double c1 = (u1 - d1) / (du1 - dd1);
    const double c2 = (u2 - d2) / (du2 - dd2);
    const double smooth_tol =
        o.atol + o.rtol * std::max(std::abs(c1), std::abs(c2));
    if (std::abs(c1 - c2) > smooth_tol) {
      ++skipped;
      continue;
    }
    const double a = analytic[i];
    ASSERT_NEAR(a, c2, o.atol + o.rtol * std::max(std::abs(a), std::abs(c2)))
        << what << " element " << i << " of " << x->size();
  }
  EXPECT_LE(skipped, static_cast<size_t>(o.max_skip * x->size()) + 1)
      << what << ": too many non-smooth elements";
}

// A random, well-formed batch: lens cover 0, L and values between; every
// row has 0..3 genres; content row 0 is all zero and some content indices
// are -1 (items without content). Padding positions hold random valid
// indices, not -1, so masking is exercised.
inline Batch RandomBatch(int B, int L, int U, int Uc, int d, int dm,
                         uint32_t seed) {
  std::mt19937 rng(seed);
  auto idx = [&](int n) {
    return static_cast<int32_t>(std::uniform_int_distribution<int>(0, n - 1)(rng));
  };
  Batch b;
  b.batch_size = B;
  b.max_len = L;
  b.num_id_rows = U;
  b.id_rows = RandomFloats(static_cast<size_t>(U) * d, seed + 1, -0.5f, 0.5f);
  b.num_content_rows = Uc;
  b.content_rows = RandomFloats(static_cast<size_t>(Uc) * dm, seed + 2);
  for (int r = 0; r < Uc; ++r) {  // L2-normalise, row 0 stays zero
    float* row = b.content_rows.data() + static_cast<size_t>(r) * dm;
    double n2 = DotD(row, row, dm);
    for (int k = 0; k < dm; ++k) {
      row[k] = r == 0 ? 0.0f : static_cast<float>(row[k] / std::sqrt(n2));
    }
  }
  b.genre_offsets.push_back(0);
  for (int r = 0; r < B; ++r) {
    int len = r == 0 ? L : r == 1 ? 0 : idx(L + 1);
    b.lens.push_back(len);
    b.user_idx.push_back(idx(U));
    b.age_idx.push_back(idx(U));
    b.gender_idx.push_back(idx(U));
    b.occ_idx.push_back(idx(U));
    b.target_idx.push_back(idx(U));
    const int ng = idx(4);
    for (int g = 0; g < ng; ++g) b.genre_rows.push_back(idx(U));
    b.genre_offsets.push_back(static_cast<int32_t>(b.genre_rows.size()));
    b.content_target_idx.push_back(r == 2 ? -1 : idx(Uc));
    for (int i = 0; i < L; ++i) {
      b.behavior_idx.push_back(idx(U));
      b.content_behavior_idx.push_back(i == 1 ? -1 : idx(Uc));
    }
    b.labels.push_back(static_cast<float>(idx(2)));
  }
  return b;
}

}  // namespace mim::model::testing

#endif  // MIM_WORKER_MODEL_MODEL_TEST_UTIL_H_
