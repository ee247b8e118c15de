// The runtime's logger (KILN_LOG): one line per event, to stderr or to the application's sink.
// The cache's warnings come through here too, so KILN_LOG=off silences everything.
#pragma once

#include <optional>
#include <string_view>

#include "kiln/runtime.hpp"

namespace kiln {

[[nodiscard]] const char* log_level_name(LogLevel level) noexcept;  // "off", "error", ...
// "off|error|warn|info|debug", case-insensitive; nullopt for anything else.
[[nodiscard]] std::optional<LogLevel> parse_log_level(std::string_view text) noexcept;

class Logger {
 public:
  // An empty sink writes "kiln: <message>" (errors and warnings marked as such) to stderr.
  Logger(LogLevel level, LogSink sink);

  [[nodiscard]] bool enabled(LogLevel level) const noexcept {
    return level != LogLevel::Off && level <= level_;
  }
  // Callers test enabled() first where building the message costs anything.
  void write(LogLevel level, std::string_view message) const;

 private:
  LogLevel level_;
  LogSink sink_;
};

}  // namespace kiln
