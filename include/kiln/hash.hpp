// Byte buffers and the content hashes used across kiln (bundle checks, cache keys, compile cache).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline ByteView as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}
inline std::string_view as_text(ByteView bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// XXH3-64: integrity checks (bundle header and images, cache entries).
[[nodiscard]] std::uint64_t checksum64(ByteView bytes) noexcept;

// XXH3-128 as 32 lower-case hex digits: content addresses (cache keys, compile cache).
struct Hash128 {
  std::uint64_t high = 0;
  std::uint64_t low = 0;
  friend bool operator==(const Hash128&, const Hash128&) = default;
  [[nodiscard]] std::string hex() const;
};
[[nodiscard]] Hash128 hash128(ByteView bytes) noexcept;

// Canonical serialization for keys: each field is "name=value\0", fed in a fixed order by the caller.
class KeyBuilder {
 public:
  KeyBuilder& add(std::string_view name, std::string_view value);
  KeyBuilder& add(std::string_view name, ByteView value);
  KeyBuilder& add(std::string_view name, std::uint64_t value);
  [[nodiscard]] Hash128 finish() const noexcept { return hash128(as_bytes(buffer_)); }

 private:
  std::string buffer_;
};

}  // namespace kiln
