// libFuzzer target for the cache entry parser: cache files are untrusted input (any process of
// the user can write them, and a crash can leave them torn). The parser must never crash or
// read out of bounds, and whatever it accepts must be exactly the encoding of its payload.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kiln/cache.hpp"

namespace {

// The key the seed corpus (corpus/fuzz_cache_entry/) was written under; test_cache.cpp checks
// that the seeds still parse with it, so a format change that forgets the corpus fails a test.
constexpr kiln::Hash128 kSeedKey{0x6b696c6e2d636163ull, 0x68652d666f757a7aull};

std::uint64_t load_le64(const std::uint8_t* in) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  return value;
}

void check(kiln::ByteView file, const kiln::Hash128& key) {
  const kiln::Result<kiln::Bytes> payload = kiln::parse_cache_entry(file, key);
  if (!payload.ok()) {
    if (payload.error().message.empty()) __builtin_trap();  // every rejection says which check failed
    return;
  }
  const kiln::Bytes encoded = kiln::encode_cache_entry(key, *payload);
  if (!std::equal(encoded.begin(), encoded.end(), file.begin(), file.end())) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const kiln::ByteView file(data, size);
  check(file, kSeedKey);
  // Also under the key the file claims (bytes 16..31), so mutations reach the checks past the
  // key comparison without having to guess 128 bits.
  if (size >= 32) check(file, kiln::Hash128{load_le64(data + 16), load_le64(data + 24)});
  return 0;
}
