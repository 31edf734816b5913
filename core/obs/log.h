// Structured, levelled logs for every service (spdlog). One line per event:
//   2026-12-01T09:00:00.123Z info moemesh-router: node expert-1 registered kind=expert ...
// in UTC, with the service name; events carry key=value fields (request_id=..., node=...,
// placement_version=...) so that they can be grepped and parsed. Levels: debug, info, warn,
// error, off; the default is info, or MOEMESH_LOG_LEVEL, or a service's --log-level.
// Thread-safe; logging before InitLogging goes to stderr under the name "moemesh".
#pragma once

#include <memory>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace moemesh::obs {

// Names the process's logger `service` (stderr) and sets the level ("" keeps
// MOEMESH_LOG_LEVEL or info). InvalidArgument for an unknown level name.
absl::Status InitLogging(std::string_view service, std::string_view level = "");
// debug | info | warn | error | off. InvalidArgument otherwise.
absl::Status SetLogLevel(std::string_view level);
// The process's logger.
spdlog::logger& Logger();

template <typename... Args>
void LogDebug(spdlog::format_string_t<Args...> format, Args&&... args) {
  Logger().debug(format, std::forward<Args>(args)...);
}
template <typename... Args>
void LogInfo(spdlog::format_string_t<Args...> format, Args&&... args) {
  Logger().info(format, std::forward<Args>(args)...);
}
template <typename... Args>
void LogWarn(spdlog::format_string_t<Args...> format, Args&&... args) {
  Logger().warn(format, std::forward<Args>(args)...);
}
template <typename... Args>
void LogError(spdlog::format_string_t<Args...> format, Args&&... args) {
  Logger().error(format, std::forward<Args>(args)...);
}

}  // namespace moemesh::obs
