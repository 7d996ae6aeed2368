// CPU twins of memory_ops.h.
#include <cstring>

#include "absl/strings/str_format.h"
#include "kernels/cpu_util.h"
#include "kernels/memory_ops.h"

namespace mim::kernels {
namespace {

absl::Status ValidateColumnCopy(const char* op, const ColumnCopyShape& s,
                                const float* src, const float* dst) {
  if (s.rows < 0 || s.width < 0 || s.src_stride < s.width ||
      s.dst_stride < s.width) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: rows=%d width=%d src_stride=%d dst_stride=%d; expected sizes "
        ">= 0 and strides >= width",
        op, s.rows, s.width, s.src_stride, s.dst_stride));
  }
  const bool any = s.rows * s.width > 0;
  return cpu::RequireNonNull(op, {{"src", src, any}, {"dst", dst, any}});
}

}  // namespace

absl::Status CopyColumnsCpu(const ColumnCopyShape& s, const float* src,
                            float* dst) {
  absl::Status st = ValidateColumnCopy("CopyColumnsCpu", s, src, dst);
  if (!st.ok() || s.rows * s.width == 0) return st;
  const size_t bytes = static_cast<size_t>(s.width) * sizeof(float);
  for (int64_t r = 0; r < s.rows; ++r) {
    std::memcpy(dst + r * s.dst_stride, src + r * s.src_stride, bytes);
  }
  return absl::OkStatus();
}

absl::Status AddIntoCpu(int64_t n, const float* src, float* dst) {
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("AddIntoCpu: negative n=%d", n));
  }
  absl::Status st =
      cpu::RequireNonNull("AddIntoCpu", {{"src", src, n > 0}, {"dst", dst, n > 0}});
  if (!st.ok()) return st;
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
  return absl::OkStatus();
}

}  // namespace mim::kernels
