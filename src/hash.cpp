#include "kiln/hash.hpp"

#include <xxhash.h>

#include <cstdio>

namespace kiln {

std::uint64_t checksum64(ByteView bytes) noexcept { return XXH3_64bits(bytes.data(), bytes.size()); }

Hash128 hash128(ByteView bytes) noexcept {
  const XXH128_hash_t hash = XXH3_128bits(bytes.data(), bytes.size());
  return {hash.high64, hash.low64};
}

std::string Hash128::hex() const {
  char text[33];
  std::snprintf(text, sizeof text, "%016llx%016llx", static_cast<unsigned long long>(high),
                static_cast<unsigned long long>(low));
  return text;
}

KeyBuilder& KeyBuilder::add(std::string_view name, std::string_view value) {
  buffer_.append(name);
  buffer_.push_back('=');
  // Length-prefixed so that a value containing '\0' cannot forge the next field.
  buffer_.append(std::to_string(value.size()));
  buffer_.push_back(':');
  buffer_.append(value);
  buffer_.push_back('\0');
  return *this;
}

KeyBuilder& KeyBuilder::add(std::string_view name, ByteView value) { return add(name, as_text(value)); }

KeyBuilder& KeyBuilder::add(std::string_view name, std::uint64_t value) {
  return add(name, std::string_view(std::to_string(value)));
}

}  // namespace kiln
