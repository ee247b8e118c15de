// Test and fuzzer support: recompute a bundle's checksums after an edit, so that the edit gets
// past the checksum checks and reaches the structural checks behind them (without this, almost
// every mutation a fuzzer makes dies at "header checksum does not match").
#pragma once

#include <cstdint>
#include <span>

#include "kiln/bundle_format.hpp"
#include "kiln/hash.hpp"

namespace kiln::testing {

struct SealOptions {
  // Also recompute each image's stored-bytes checksum (leave false to test that check itself).
  bool image_checksums = true;
};

// Best effort on any bytes: whatever lies outside `bytes` is left alone, never read.
inline void seal(std::span<std::uint8_t> bytes, SealOptions options = {}) {
  namespace f = kiln::format;
  if (bytes.size() < f::kHeaderSize) return;
  f::Header header = f::decode<f::Header>(bytes.data());
  const std::uint64_t end = header.total_size <= bytes.size() && header.total_size >= f::kHeaderSize
                                ? header.total_size
                                : bytes.size();
  if (options.image_checksums) {
    for (std::uint64_t i = 0; i < header.image_count; ++i) {
      const std::uint64_t at = header.entries_offset + i * f::kEntrySize;
      if (header.entries_offset > end || i > (end - header.entries_offset) / f::kEntrySize ||
          !f::checked_range(at, f::kEntrySize, end)) {
        break;
      }
      f::Entry entry = f::decode<f::Entry>(bytes.data() + at);
      if (entry.duplicate_of != f::kNoImage || !f::checked_range(entry.data_offset, entry.stored_size, end)) continue;
      entry.stored_checksum = checksum64(ByteView(bytes).subspan(entry.data_offset, entry.stored_size));
      f::encode(entry, bytes.data() + at);
    }
  }
  if (header.format_version >= f::kFirstVersionWithTablesChecksum && header.data_offset >= f::kHeaderSize &&
      header.data_offset <= end) {
    header.tables_checksum = checksum64(ByteView(bytes).subspan(f::kHeaderSize, header.data_offset - f::kHeaderSize));
  }
  header.content_checksum = checksum64(ByteView(bytes).subspan(f::kHeaderSize, end - f::kHeaderSize));
  header.header_checksum = 0;
  f::encode(header, bytes.data());
  header.header_checksum = checksum64(ByteView(bytes).first(f::kHeaderSize));
  f::encode(header, bytes.data());
}

}  // namespace kiln::testing
