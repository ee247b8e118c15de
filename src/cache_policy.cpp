// Where the cache lives and how big it may grow: sizes, directories and the environment.
#include <pwd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "kiln/cache.hpp"

namespace kiln {
namespace {

constexpr int kMaxFractionDigits = 18;  // 10^18 fits in 64 bits; further digits are below a byte anyway

bool is_digit(char c) { return c >= '0' && c <= '9'; }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view text) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

Error size_error(std::string_view text, std::string_view why) {
  return usage_error("invalid size '" + std::string(text) + "': " + std::string(why),
                     "give bytes or a number with a binary unit: 12345, 100k, 512M, 1.5G, 2T");
}

const char* environment(const char* name) {
  const char* value = std::getenv(name);
  return (value != nullptr && value[0] != '\0') ? value : nullptr;
}

}  // namespace

Result<std::uint64_t> parse_size(std::string_view original) {
  std::string_view text = trim(original);
  std::size_t position = 0;

  unsigned __int128 whole = 0;
  const std::size_t whole_start = position;
  while (position < text.size() && is_digit(text[position])) {
    whole = whole * 10 + static_cast<unsigned>(text[position] - '0');
    if (whole > UINT64_MAX) return size_error(original, "too large");
    ++position;
  }
  if (position == whole_start) return size_error(original, "expected a number");

  unsigned __int128 fraction = 0;
  unsigned __int128 fraction_scale = 1;
  bool has_fraction = false;
  if (position < text.size() && text[position] == '.') {
    has_fraction = true;
    ++position;
    const std::size_t fraction_start = position;
    for (int digits = 0; position < text.size() && is_digit(text[position]); ++position, ++digits) {
      if (digits < kMaxFractionDigits) {
        fraction = fraction * 10 + static_cast<unsigned>(text[position] - '0');
        fraction_scale *= 10;
      }
    }
    if (position == fraction_start) return size_error(original, "expected digits after '.'");
  }

  std::uint64_t multiplier = 1;
  bool has_unit = false;
  if (position < text.size()) {
    switch (lower(text[position])) {
      case 'k': multiplier = std::uint64_t{1} << 10; has_unit = true; break;
      case 'm': multiplier = std::uint64_t{1} << 20; has_unit = true; break;
      case 'g': multiplier = std::uint64_t{1} << 30; has_unit = true; break;
      case 't': multiplier = std::uint64_t{1} << 40; has_unit = true; break;
      default: break;
    }
    if (has_unit) ++position;
  }
  // Optional byte suffix: "B" after anything, "iB" only after a unit ("1GiB", "100kB", "100B").
  std::string_view rest = text.substr(position);
  if (has_unit && rest.size() == 2 && lower(rest[0]) == 'i' && lower(rest[1]) == 'b') rest = {};
  if (rest.size() == 1 && lower(rest[0]) == 'b') rest = {};
  if (!rest.empty()) return size_error(original, "unknown unit '" + std::string(rest) + "'");
  if (has_fraction && !has_unit) return size_error(original, "a fraction needs a unit (k, M, G, T)");

  const unsigned __int128 bytes = whole * multiplier + fraction * multiplier / fraction_scale;
  if (bytes > UINT64_MAX) return size_error(original, "too large");
  return static_cast<std::uint64_t>(bytes);
}

std::filesystem::path DiskCache::default_directory() {
  if (const char* explicit_directory = environment("KILN_CACHE_DIR")) return explicit_directory;
  // The XDG base directory spec says to ignore a relative XDG_CACHE_HOME.
  if (const char* xdg = environment("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] == '/') {
    return std::filesystem::path(xdg) / "kiln";
  }
  if (const char* home = environment("HOME")) return std::filesystem::path(home) / ".cache" / "kiln";
  // Services started without HOME still have a passwd entry.
  if (const passwd* entry = getpwuid(geteuid()); entry != nullptr && entry->pw_dir != nullptr && entry->pw_dir[0]) {
    return std::filesystem::path(entry->pw_dir) / ".cache" / "kiln";
  }
  // Empty: no place to keep a cache; a DiskCache over it refuses itself with one warning.
  return {};
}

CachePolicy DiskCache::policy_from_environment() { return policy_from_environment({}); }

CachePolicy DiskCache::policy_from_environment(const std::function<void(std::string_view)>& warn) {
  CachePolicy policy;
  const char* text = environment("KILN_CACHE_MAX_SIZE");
  if (text == nullptr) return policy;
  Result<std::uint64_t> size = parse_size(text);
  if (size) {
    policy.max_bytes = *size;
    return policy;
  }
  const std::string message = "KILN_CACHE_MAX_SIZE: " + size.error().message + "; using the default of 1G";
  if (warn) {
    warn(message);
  } else {
    std::fprintf(stderr, "kiln: warning: %s\n", message.c_str());
  }
  return policy;
}

}  // namespace kiln
