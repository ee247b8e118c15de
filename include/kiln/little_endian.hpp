// Little-endian loads and stores of one unsigned value: every kiln file format (bundles, cache
// entries, source images) and the ELF reader use these. The caller has checked the range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace kiln {

template <class T>
  requires std::is_unsigned_v<T>
constexpr T load_le(const std::uint8_t* bytes) noexcept {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(static_cast<T>(bytes[i]) << (8 * i));
  return value;
}

template <class T>
  requires std::is_unsigned_v<T>
constexpr void store_le(std::uint8_t* bytes, T value) noexcept {
  for (std::size_t i = 0; i < sizeof(T); ++i) bytes[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

}  // namespace kiln
