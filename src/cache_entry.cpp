// The cache's pure parts: the key and the entry file format (docs/cache.md).
#include <algorithm>
#include <cstring>

#include "kiln/cache.hpp"
#include "kiln/little_endian.hpp"

namespace kiln {
namespace {

// "KILNJITC": distinguishes a kiln cache entry from anything else that might sit in the directory.
constexpr std::uint8_t kEntryMagic[8] = {'K', 'I', 'L', 'N', 'J', 'I', 'T', 'C'};

// Header field offsets; the layout is documented in docs/cache.md. Changing it means bumping
// kCacheFormatVersion (which also changes every key, so old entries are never even opened).
constexpr std::size_t kMagicOffset = 0;
constexpr std::size_t kVersionOffset = 8;
constexpr std::size_t kHeaderSizeOffset = 12;
constexpr std::size_t kKeyHighOffset = 16;
constexpr std::size_t kKeyLowOffset = 24;
constexpr std::size_t kPayloadSizeOffset = 32;
constexpr std::size_t kPayloadChecksumOffset = 40;
static_assert(kPayloadChecksumOffset + 8 == kCacheEntryHeaderBytes);

Error corrupt(std::string message) {
  return make_error(Component::Cache, std::move(message), "cache entry",
                    "the entry is discarded and rebuilt");
}

}  // namespace

Hash128 make_cache_key(const CacheKeyInputs& inputs) {
  // Fields in sorted order, after a domain tag so that no other kiln hash can collide with a key.
  return KeyBuilder()
      .add("kiln-cache-key", std::string_view("jit"))
      .add("compiler", inputs.compiler)
      .add("format", std::uint64_t{kCacheFormatVersion})
      .add("input_hash", inputs.input_hash)
      .add("input_kind", inputs.input_kind)
      .add("kernel", inputs.kernel)
      .add("options", inputs.options)
      .add("target_arch", inputs.target_arch)
      .finish();
}

std::string cache_entry_file_name(const Hash128& key) { return "kiln-" + key.hex() + ".bin"; }

Bytes encode_cache_entry(const Hash128& key, ByteView payload) {
  Bytes file(kCacheEntryHeaderBytes + payload.size());
  std::uint8_t* header = file.data();
  std::memcpy(header + kMagicOffset, kEntryMagic, sizeof kEntryMagic);
  store_le<std::uint32_t>(header + kVersionOffset, kCacheFormatVersion);
  store_le<std::uint32_t>(header + kHeaderSizeOffset, static_cast<std::uint32_t>(kCacheEntryHeaderBytes));
  store_le<std::uint64_t>(header + kKeyHighOffset, key.high);
  store_le<std::uint64_t>(header + kKeyLowOffset, key.low);
  store_le<std::uint64_t>(header + kPayloadSizeOffset, payload.size());
  store_le<std::uint64_t>(header + kPayloadChecksumOffset, checksum64(payload));
  if (!payload.empty()) std::memcpy(header + kCacheEntryHeaderBytes, payload.data(), payload.size());
  return file;
}

Result<CacheEntryHeader> parse_cache_entry_header(ByteView header_bytes, const Hash128& expected_key,
                                                  std::uint64_t file_size) {
  if (file_size < kCacheEntryHeaderBytes || header_bytes.size() < kCacheEntryHeaderBytes) {
    return corrupt("file of " + std::to_string(std::min<std::uint64_t>(file_size, header_bytes.size())) +
                   " bytes is shorter than the " + std::to_string(kCacheEntryHeaderBytes) + "-byte header");
  }
  const std::uint8_t* header = header_bytes.data();
  if (std::memcmp(header + kMagicOffset, kEntryMagic, sizeof kEntryMagic) != 0) {
    return corrupt("bad magic: not a kiln cache entry");
  }
  const std::uint32_t version = load_le<std::uint32_t>(header + kVersionOffset);
  if (version != kCacheFormatVersion) {
    return corrupt("format version " + std::to_string(version) + ", this kiln reads version " +
                   std::to_string(kCacheFormatVersion));
  }
  const std::uint32_t header_size = load_le<std::uint32_t>(header + kHeaderSizeOffset);
  if (header_size != kCacheEntryHeaderBytes) {
    return corrupt("header size " + std::to_string(header_size) + ", expected " +
                   std::to_string(kCacheEntryHeaderBytes));
  }
  const Hash128 stored_key{load_le<std::uint64_t>(header + kKeyHighOffset), load_le<std::uint64_t>(header + kKeyLowOffset)};
  if (stored_key != expected_key) {
    return corrupt("holds key " + stored_key.hex() + " under the name of key " + expected_key.hex());
  }
  // Compared against what follows the header, never added to anything, so no overflow.
  CacheEntryHeader parsed{load_le<std::uint64_t>(header + kPayloadSizeOffset),
                          load_le<std::uint64_t>(header + kPayloadChecksumOffset)};
  const std::uint64_t bytes_after_header = file_size - kCacheEntryHeaderBytes;
  if (parsed.payload_size != bytes_after_header) {
    return corrupt("payload size " + std::to_string(parsed.payload_size) + " does not match the " +
                   std::to_string(bytes_after_header) + " bytes after the header");
  }
  return parsed;
}

Result<void> check_cache_entry_payload(const CacheEntryHeader& header, ByteView payload) {
  if (payload.size() != header.payload_size || checksum64(payload) != header.payload_checksum) {
    return corrupt("payload checksum mismatch");
  }
  return {};
}

Result<Bytes> parse_cache_entry(ByteView file, const Hash128& expected_key) {
  Result<CacheEntryHeader> header = parse_cache_entry_header(file, expected_key, file.size());
  if (!header) return header.error();
  const ByteView payload = file.subspan(kCacheEntryHeaderBytes);
  if (Result<void> checked = check_cache_entry_payload(*header, payload); !checked) return checked.error();
  return Bytes(payload.begin(), payload.end());
}

}  // namespace kiln
