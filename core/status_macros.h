// Status propagation helpers for absl::Status / absl::StatusOr.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MOEMESH_STATUS_CONCAT_INNER(a, b) a##b
#define MOEMESH_STATUS_CONCAT(a, b) MOEMESH_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if `expression` is not OK.
#define RETURN_IF_ERROR(expression)                        \
  do {                                                     \
    if (::absl::Status moemesh_status_ = (expression);     \
        !moemesh_status_.ok()) {                           \
      return moemesh_status_;                              \
    }                                                      \
  } while (false)

// `ASSIGN_OR_RETURN(target, expression)`: evaluates a StatusOr; returns its status on error,
// otherwise moves its value into `target` (which may be a declaration).
#define ASSIGN_OR_RETURN(target, expression)                                        \
  auto MOEMESH_STATUS_CONCAT(moemesh_status_or_, __LINE__) = (expression);          \
  if (!MOEMESH_STATUS_CONCAT(moemesh_status_or_, __LINE__).ok()) {                  \
    return MOEMESH_STATUS_CONCAT(moemesh_status_or_, __LINE__).status();            \
  }                                                                                 \
  target = *std::move(MOEMESH_STATUS_CONCAT(moemesh_status_or_, __LINE__))
