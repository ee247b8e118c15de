#include "log.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>

namespace kiln {

const char* log_level_name(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::Off: return "off";
    case LogLevel::Error: return "error";
    case LogLevel::Warn: return "warn";
    case LogLevel::Info: return "info";
    case LogLevel::Debug: return "debug";
  }
  return "unknown";
}

std::optional<LogLevel> parse_log_level(std::string_view text) noexcept {
  for (LogLevel level : {LogLevel::Off, LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug}) {
    const std::string_view name = log_level_name(level);
    if (std::equal(text.begin(), text.end(), name.begin(), name.end(),
                   [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; })) {
      return level;
    }
  }
  return std::nullopt;
}

Logger::Logger(LogLevel level, LogSink sink) : level_(level), sink_(std::move(sink)) {}

void Logger::write(LogLevel level, std::string_view message) const {
  if (!enabled(level)) return;
  if (sink_) {
    sink_(level, message);
    return;
  }
  std::string line = "kiln: ";
  if (level == LogLevel::Error) line += "error: ";
  if (level == LogLevel::Warn) line += "warning: ";
  line += message;
  line += '\n';
  // One write per line, so lines from threads logging at once do not interleave.
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace kiln
