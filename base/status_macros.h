// Status propagation macros shared by every package (Abseil 20220623, the
// Debian 12 version, has no ABSL_RETURN_IF_ERROR / ASSIGN_OR_RETURN).
#ifndef MIM_BASE_STATUS_MACROS_H_
#define MIM_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the current function with the status of `expr` if it is not
// OK. `expr` is evaluated once.
#define MIM_RETURN_IF_ERROR(expr)                  \
  do {                                             \
    const absl::Status mim_status_ = (expr);       \
    if (!mim_status_.ok()) return mim_status_;     \
  } while (0)

#define MIM_STATUS_MACROS_CONCAT_INNER_(x, y) x##y
#define MIM_STATUS_MACROS_CONCAT_(x, y) MIM_STATUS_MACROS_CONCAT_INNER_(x, y)

// `lhs = value of rexpr` when `rexpr` (an absl::StatusOr<T>) is OK; else
// returns its status. `lhs` may declare a variable: MIM_ASSIGN_OR_RETURN(
// auto x, F()).
#define MIM_ASSIGN_OR_RETURN(lhs, rexpr)                                     \
  MIM_ASSIGN_OR_RETURN_IMPL_(                                                \
      MIM_STATUS_MACROS_CONCAT_(mim_statusor_, __LINE__), lhs, rexpr)

#define MIM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (!statusor.ok()) return statusor.status();          \
  lhs = std::move(statusor).value()

#endif  // MIM_BASE_STATUS_MACROS_H_
