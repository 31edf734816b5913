#include "core/obs/log.h"

#include <cstdlib>
#include <mutex>
#include <string>

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace moemesh::obs {
namespace {

std::mutex& InitMutex() {
  static std::mutex mutex;
  return mutex;
}

std::shared_ptr<spdlog::logger>& Current() {
  static std::shared_ptr<spdlog::logger> logger;
  return logger;
}

std::shared_ptr<spdlog::logger> Make(std::string_view name) {
  auto logger = std::make_shared<spdlog::logger>(
      std::string(name), std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %n: %v", spdlog::pattern_time_type::utc);
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  return logger;
}

absl::StatusOr<spdlog::level::level_enum> ParseLevel(std::string_view level) {
  if (level == "debug") return spdlog::level::debug;
  if (level == "info") return spdlog::level::info;
  if (level == "warn" || level == "warning") return spdlog::level::warn;
  if (level == "error") return spdlog::level::err;
  if (level == "off") return spdlog::level::off;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level '", std::string(level), "' (debug, info, warn, error or off)"));
}

}  // namespace

spdlog::logger& Logger() {
  std::lock_guard<std::mutex> lock(InitMutex());
  std::shared_ptr<spdlog::logger>& logger = Current();
  if (!logger) {
    logger = Make("moemesh");
    if (const char* env = std::getenv("MOEMESH_LOG_LEVEL")) {
      if (auto level = ParseLevel(env); level.ok()) logger->set_level(*level);
    }
  }
  return *logger;
}

absl::Status SetLogLevel(std::string_view level) {
  absl::StatusOr<spdlog::level::level_enum> parsed = ParseLevel(level);
  if (!parsed.ok()) return parsed.status();
  Logger().set_level(*parsed);
  return absl::OkStatus();
}

absl::Status InitLogging(std::string_view service, std::string_view level) {
  {
    std::lock_guard<std::mutex> lock(InitMutex());
    std::shared_ptr<spdlog::logger> logger = Make(service);
    if (const char* env = std::getenv("MOEMESH_LOG_LEVEL")) {
      if (auto parsed = ParseLevel(env); parsed.ok()) logger->set_level(*parsed);
    }
    // Loggers handed out earlier stay valid (references into a static shared_ptr's target
    // would not): the old one is kept alive for the process.
    static std::vector<std::shared_ptr<spdlog::logger>>* retired =
        new std::vector<std::shared_ptr<spdlog::logger>>();
    if (Current()) retired->push_back(Current());
    Current() = std::move(logger);
  }
  if (!level.empty()) return SetLogLevel(level);
  return absl::OkStatus();
}

}  // namespace moemesh::obs
