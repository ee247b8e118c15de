// RuntimeOptions::from_environment: the KILN_* variables of the runtime (SPEC, "Environment").
#include <cctype>
#include <cstdlib>
#include <string>

#include "kiln/runtime.hpp"
#include "log.hpp"

namespace kiln {
namespace {

// Written straight to stderr: no runtime, and so no configured logger, exists yet.
void warn_environment(std::string_view message) {
  Logger(LogLevel::Warn, {}).write(LogLevel::Warn, message);
}

// KILN_X=1 (or true/yes/on) sets a switch, 0/false/no/off clears it; unset keeps `unset`.
bool switch_from_environment(const char* variable, bool unset = false) {
  const char* value = std::getenv(variable);
  if (value == nullptr) return unset;
  std::string text(value);
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (text == "1" || text == "true" || text == "yes" || text == "on") return true;
  if (!(text.empty() || text == "0" || text == "false" || text == "no" || text == "off")) {
    warn_environment(std::string(variable) + "=" + value + " is not 1 or 0; taken as " + (unset ? "1" : "0"));
    return unset;
  }
  return false;
}

}  // namespace

RuntimeOptions RuntimeOptions::from_environment() {
  RuntimeOptions options;
  options.force_jit = switch_from_environment("KILN_FORCE_JIT");
  options.disable_jit = switch_from_environment("KILN_DISABLE_JIT");
  options.cache_disabled = switch_from_environment("KILN_CACHE_DISABLE");
  options.background_compile = switch_from_environment("KILN_BACKGROUND_COMPILE", true);
  options.cache_policy = DiskCache::policy_from_environment(warn_environment);
  if (const char* level = std::getenv("KILN_LOG"); level != nullptr) {
    if (std::optional<LogLevel> parsed = parse_log_level(level)) {
      options.log_level = *parsed;
    } else {
      warn_environment(std::string("KILN_LOG=") + level + " is not one of off, error, warn, info, debug; using warn");
    }
  }
  return options;
}

}  // namespace kiln
