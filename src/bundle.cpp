// Bundle reader and writer. The layout is in kiln/bundle_format.hpp; docs/bundle-format.md
// lists every check below in the order open() makes them.
#include "kiln/bundle.hpp"

#include <fcntl.h>
#include <lz4.h>
#include <lz4hc.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <array>
#include <limits>
#include <map>
#include <numeric>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "kiln/bundle_format.hpp"

#if __has_include(<cuda.h>)
#include <cuda.h>  // CUDA_VERSION only: the default "toolkit" metadata
#endif

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

namespace kiln {

namespace f = format;

const char* codec_name(Codec codec) noexcept {
  switch (codec) {
    case Codec::None: return "none";
    case Codec::Zstd: return "zstd";
    case Codec::Lz4: return "lz4";
  }
  return "unknown";
}

// The reader and writer convert between the two by value.
static_assert(static_cast<std::uint16_t>(Codec::None) == format::kCodecNone &&
              static_cast<std::uint16_t>(Codec::Zstd) == format::kCodecZstd &&
              static_cast<std::uint16_t>(Codec::Lz4) == format::kCodecLz4);

std::optional<std::string> BundleMetadata::get(std::string_view key) const {
  for (const auto& [name, value] : entries) {
    if (name == key) return value;
  }
  return std::nullopt;
}

namespace {

// Hints, one per kind of failure, so that a user knows what to do whatever check tripped.
constexpr const char* kHintTruncated = "the file is truncated or not a kiln bundle; rebuild it with kiln build";
constexpr const char* kHintCorrupt =
    "the bundle was damaged after it was written (disk, copy or embedding step); rebuild it with kiln build";
constexpr const char* kHintMalformed =
    "kiln build never writes this: the file was altered or made by another tool; rebuild it with kiln build";
constexpr const char* kHintNewer = "upgrade kiln to read it, or rebuild the bundle with this kiln";
constexpr const char* kHintWriter = "this is a bug in the caller of write_bundle; fix the images or options given";

std::string hex(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%" PRIx64, value);
  return text;
}

std::string plural(std::uint64_t count, const char* noun) {
  return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

// --- Mapping between the API's enums and their on-disk numbers. ---

std::uint8_t kind_to_disk(ImageKind kind) {
  switch (kind) {
    case ImageKind::Cubin: return f::kKindCubin;
    case ImageKind::Ptx: return f::kKindPtx;
    case ImageKind::Source: return f::kKindSource;
  }
  return f::kKindCubin;
}

std::optional<ImageKind> kind_from_disk(std::uint8_t kind) {
  switch (kind) {
    case f::kKindCubin: return ImageKind::Cubin;
    case f::kKindPtx: return ImageKind::Ptx;
    case f::kKindSource: return ImageKind::Source;
    default: return std::nullopt;
  }
}

std::uint8_t variant_to_disk(ArchVariant variant) {
  switch (variant) {
    case ArchVariant::Plain: return f::kVariantPlain;
    case ArchVariant::Specific: return f::kVariantSpecific;
    case ArchVariant::Family: return f::kVariantFamily;
  }
  return f::kVariantPlain;
}

std::optional<ArchVariant> variant_from_disk(std::uint8_t variant) {
  switch (variant) {
    case f::kVariantPlain: return ArchVariant::Plain;
    case f::kVariantSpecific: return ArchVariant::Specific;
    case f::kVariantFamily: return ArchVariant::Family;
    default: return std::nullopt;
  }
}

// Architectures are named sm_<major><minor> with one minor digit, so only these are unambiguous.
constexpr int kMaxArchMajor = 99;
constexpr int kMaxArchMinor = 9;

// zstd's window limits (its stable API leaves the constants out): the smallest window, and the
// largest the writer asks for, enough to span an image and its dictionary of up to 1 GiB each...
constexpr int kMinWindowLog = 10;
constexpr int kMaxWriterWindowLog = 30;
// ...which the reader must then accept (zstd's default limit, 2^27, would refuse such frames).
constexpr int kMaxReaderWindowLog = 31;

// Zstd-compresses `raw`, with `prefix` (possibly empty) as raw-content dictionary.
Result<Bytes> zstd_compress(ByteView raw, ByteView prefix, int level) {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> context(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!context) return make_error(Component::Bundle, "zstd could not allocate a compression context");
  // A match into the prefix reaches back up to prefix + raw bytes: the window must span both, or
  // a sibling's similar code (at about the same offset in its cubin) is out of reach.
  const std::uint64_t span = std::max<std::uint64_t>(raw.size() + prefix.size(), 1);
  const int window_log = std::clamp(static_cast<int>(std::bit_width(span - 1)), kMinWindowLog, kMaxWriterWindowLog);
  ZSTD_CCtx* c = context.get();
  const std::size_t setup_errors[] = {
      ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level),
      ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, window_log),
      ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1),  // the reader checks it against raw_size
      ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0),     // the entry carries content_hash instead
      ZSTD_CCtx_setParameter(c, ZSTD_c_dictIDFlag, 0),
      prefix.empty() ? std::size_t{0} : ZSTD_CCtx_refPrefix(c, prefix.data(), prefix.size()),
  };
  for (std::size_t code : setup_errors) {
    if (ZSTD_isError(code)) {
      return make_error(Component::Bundle, std::string("zstd rejected a compression setting: ") + ZSTD_getErrorName(code));
    }
  }
  Bytes out(ZSTD_compressBound(raw.size()));
  const std::size_t size = ZSTD_compress2(c, out.data(), out.size(), raw.data(), raw.size());
  if (ZSTD_isError(size)) {
    return make_error(Component::Bundle, std::string("zstd compression failed: ") + ZSTD_getErrorName(size));
  }
  out.resize(size);
  return out;
}

// One LZ4 block of `raw` (the caller keeps raw within kMaxImageRawSize, far below LZ4_MAX_INPUT_SIZE).
Result<Bytes> lz4_compress(ByteView raw) {
  Bytes out(static_cast<std::size_t>(LZ4_compressBound(static_cast<int>(raw.size()))));
  const int size = LZ4_compress_HC(reinterpret_cast<const char*>(raw.data()), reinterpret_cast<char*>(out.data()),
                                   static_cast<int>(raw.size()), static_cast<int>(out.size()), LZ4HC_CLEVEL_MAX);
  if (size <= 0) return make_error(Component::Bundle, "lz4 compression of " + plural(raw.size(), "byte") + " failed");
  out.resize(static_cast<std::size_t>(size));
  return out;
}

}  // namespace

// ============================================================================================
// Reader
// ============================================================================================

namespace {
// What an opened bundle holds. Bundle::State (private to Bundle) is this, named so that the parser
// and decoder below, which are not Bundle's members, can use it.
struct BundleData {
  Bytes owned;     // open_file's copy of the file; empty when the caller owns the bytes
  ByteView bytes;  // the bundle itself: total_size bytes
  std::string name;
  std::uint32_t version = 0;
  BundleMetadata metadata;
  std::vector<ImageInfo> images;
  std::vector<f::Entry> entries;
  std::vector<std::string_view> refs;  // the string table, viewing `bytes`; images' kernel lists are runs of it
  KernelIndex index;
};

// The kernel index of images whose kernel lists are `lists` (an empty list: the image may hold
// any kernel), or nullopt where it would spell out more than kMaxIndexPairs (kernel, image) pairs.
// Lists that view the same run of names (one source's images, one per architecture) are read once.
std::optional<KernelIndex> index_kernels(std::span<const std::span<const std::string_view>> lists) {
  constexpr std::uint32_t kUnlisted = std::numeric_limits<std::uint32_t>::max();
  std::vector<std::span<const std::string_view>> runs;
  std::vector<std::uint32_t> run_of_image(lists.size(), kUnlisted);
  std::map<std::pair<const std::string_view*, std::size_t>, std::uint32_t> run_numbers;
  for (std::size_t image = 0; image < lists.size(); ++image) {
    if (lists[image].empty()) continue;
    auto [found, added] = run_numbers.try_emplace(std::pair(lists[image].data(), lists[image].size()),
                                                  static_cast<std::uint32_t>(runs.size()));
    if (added) runs.push_back(lists[image]);
    run_of_image[image] = found->second;
  }
  // Every (name, run) pair sorted by name: the distinct names in order are the kernels, and each
  // run's kernel numbers come out ascending (one sort; no map of names).
  struct Listed {
    std::string_view name;
    std::uint32_t run;
  };
  std::vector<Listed> listed;
  for (std::size_t run = 0; run < runs.size(); ++run) {
    for (std::string_view name : runs[run]) listed.push_back({name, static_cast<std::uint32_t>(run)});
  }
  std::sort(listed.begin(), listed.end(), [](const Listed& a, const Listed& b) { return a.name < b.name; });
  KernelIndex index;
  std::vector<std::vector<std::uint32_t>> run_kernels(runs.size());
  for (const Listed& entry : listed) {
    if (index.names.empty() || index.names.back() != entry.name) index.names.push_back(entry.name);
    std::vector<std::uint32_t>& kernels_of_run = run_kernels[entry.run];
    const auto kernel = static_cast<std::uint32_t>(index.names.size() - 1);
    if (kernels_of_run.empty() || kernels_of_run.back() != kernel) kernels_of_run.push_back(kernel);  // a list may name a kernel twice
  }
  // Each kernel's candidates as compressed rows (count, then fill in image order: ascending), then
  // kernels with the same candidates given one set, numbered in kernel order.
  const std::size_t kernels = index.names.size();
  std::uint64_t pairs = 0;
  for (std::size_t image = 0; image < lists.size(); ++image) {
    pairs += run_of_image[image] == kUnlisted ? kernels : run_kernels[run_of_image[image]].size();
  }
  if (pairs > f::kMaxIndexPairs) return std::nullopt;
  auto each_candidate = [&](auto&& visit) {
    for (std::size_t image = 0; image < lists.size(); ++image) {
      if (run_of_image[image] == kUnlisted) {
        for (std::size_t kernel = 0; kernel < kernels; ++kernel) visit(kernel, image);
      } else {
        for (std::uint32_t kernel : run_kernels[run_of_image[image]]) visit(kernel, image);
      }
    }
  };
  std::vector<std::uint32_t> first(kernels + 1, 0);
  each_candidate([&](std::size_t kernel, std::size_t) { ++first[kernel + 1]; });
  for (std::size_t kernel = 0; kernel < kernels; ++kernel) first[kernel + 1] += first[kernel];
  std::vector<std::uint32_t> rows(first.back());
  std::vector<std::uint32_t> next(first.begin(), first.end() - 1);
  each_candidate([&](std::size_t kernel, std::size_t image) { rows[next[kernel]++] = static_cast<std::uint32_t>(image); });

  std::unordered_map<std::string_view, std::uint32_t> set_numbers;  // by the bytes of the set's image numbers
  index.first_candidate.push_back(0);
  std::string_view previous;
  for (std::size_t kernel = 0; kernel < kernels; ++kernel) {
    const std::span<const std::uint32_t> own = std::span<const std::uint32_t>(rows).subspan(first[kernel], first[kernel + 1] - first[kernel]);
    const std::string_view key(reinterpret_cast<const char*>(own.data()), own.size_bytes());
    if (kernel > 0 && key == previous) {  // a source's kernels mostly sort together: no lookup for them
      index.set_of.push_back(index.set_of.back());
      continue;
    }
    previous = key;
    auto [found, added] = set_numbers.try_emplace(key, static_cast<std::uint32_t>(index.first_candidate.size() - 1));
    if (added) {
      index.candidates.insert(index.candidates.end(), own.begin(), own.end());
      index.first_candidate.push_back(static_cast<std::uint32_t>(index.candidates.size()));
    }
    index.set_of.push_back(found->second);
  }
  return index;
}
}  // namespace

struct Bundle::State : BundleData {};

namespace {

// Validates a bundle's bytes into a BundleData. Each check has its own message; they run in
// the order of docs/bundle-format.md, so a damaged file reports the earliest thing wrong with it.
// "image 3 (sm_90)", for a message about one image: spelled only when a message is made, since
// a valid bundle of many images would otherwise format a label per image on every open.
struct ImageLabel {
  std::uint32_t index = 0;
  std::optional<ImageTarget> target;  // unknown until the entry's target is read
  std::string text() const {
    std::string label = "image " + std::to_string(index);
    return target ? label + " (" + target->name() + ")" : label;
  }
};
std::string operator+(const ImageLabel& label, std::string_view rest) { return label.text() + std::string(rest); }

// The first NUL at or after each offset asked for, the offsets asked in non-decreasing order:
// each byte is scanned at most once, however refs share or overlap the string bytes (scanning
// each ref's own text would cost refs x length).
class NulSweep {
 public:
  explicit NulSweep(ByteView strings) : strings_(strings) {}
  std::uint64_t at_or_after(std::uint64_t offset) {
    if (!nul_ || *nul_ < offset) {
      const void* found = std::memchr(strings_.data() + offset, 0, strings_.size() - offset);
      nul_ = found ? static_cast<std::uint64_t>(static_cast<const std::uint8_t*>(found) - strings_.data()) : strings_.size();
    }
    return *nul_;
  }

 private:
  ByteView strings_;
  std::optional<std::uint64_t> nul_;  // the first NUL at or after the previous offset
};

// For refs in any order: the sweep over them sorted by offset.
std::vector<std::uint64_t> first_nul_at_or_after(const std::vector<f::StringRef>& refs, ByteView strings) {
  std::vector<std::uint32_t> by_offset(refs.size());
  std::iota(by_offset.begin(), by_offset.end(), 0u);
  std::sort(by_offset.begin(), by_offset.end(),
            [&](std::uint32_t a, std::uint32_t b) { return refs[a].offset < refs[b].offset; });
  std::vector<std::uint64_t> first_nul(refs.size());
  NulSweep sweep(strings);
  for (const std::uint32_t i : by_offset) first_nul[i] = sweep.at_or_after(refs[i].offset);
  return first_nul;
}

class Parser {
 public:
  Parser(ByteView available, BundleData& state, OpenCheck check) : available_(available), state_(state), check_(check) {}

  Result<void> run() {
    for (auto step : {&Parser::check_header, &Parser::check_checksums, &Parser::check_sections, &Parser::read_refs,
                      &Parser::read_metadata, &Parser::read_entries, &Parser::check_overlaps, &Parser::read_kernel_index}) {
      if (auto done = (this->*step)(); !done) return done;
    }
    return {};
  }

 private:
  Error fail(std::string message, const char* hint) const {
    return make_error(Component::Bundle, std::move(message), state_.name, hint);
  }

  Result<void> check_header() {
    const std::uint64_t size = available_.size();
    const bool magic_matches =
        std::equal(available_.begin(), available_.begin() + std::min<std::size_t>(size, f::kMagic.size()), f::kMagic.begin());
    if (!magic_matches) {
      std::string seen;
      for (std::size_t i = 0; i < std::min<std::size_t>(size, f::kMagic.size()); ++i) {
        char byte[4];
        std::snprintf(byte, sizeof byte, "%02x", available_[i]);
        seen += (i ? " " : "") + std::string(byte);
      }
      return fail("not a kiln bundle: it starts with [" + seen + "], not the magic \"KILNBNDL\"", kHintTruncated);
    }
    if (size < f::kHeaderSize) {
      return fail("the file is " + plural(size, "byte") + ", shorter than the " + std::to_string(f::kHeaderSize) +
                      "-byte bundle header",
                  kHintTruncated);
    }
    header_ = f::decode<f::Header>(available_.data());
    state_.version = header_.format_version;
    if (header_.format_version > f::kFormatVersion) {
      return fail("format version " + std::to_string(header_.format_version) + " is newer than this reader, which reads " +
                      std::to_string(f::kOldestReadableVersion) + " to " + std::to_string(f::kFormatVersion),
                  kHintNewer);
    }
    if (header_.format_version < f::kOldestReadableVersion) {
      return fail("format version " + std::to_string(header_.format_version) + " does not exist (the first is " +
                      std::to_string(f::kOldestReadableVersion) + ")",
                  kHintCorrupt);
    }
    if (header_.header_size != f::kHeaderSize) {
      return fail("header size " + std::to_string(header_.header_size) + " is not the " +
                      std::to_string(f::kHeaderSize) + " bytes of a version " +
                      std::to_string(header_.format_version) + " header",
                  kHintCorrupt);
    }
    if (header_.total_size < f::kHeaderSize || !f::is_aligned(header_.total_size, f::kBundleAlignment)) {
      return fail("total size " + std::to_string(header_.total_size) + " is not a multiple of " +
                      std::to_string(f::kBundleAlignment) + " of at least the header's " +
                      std::to_string(f::kHeaderSize) + " bytes",
                  kHintCorrupt);
    }
    if (header_.total_size > size) {
      return fail("the header says the bundle is " + plural(header_.total_size, "byte") + " but only " +
                      plural(size, "byte") + " are there",
                  kHintTruncated);
    }
    state_.bytes = available_.first(header_.total_size);
    return {};
  }

  Result<void> check_checksums() {
    std::array<std::uint8_t, f::kHeaderSize> header_bytes;
    std::copy_n(state_.bytes.begin(), f::kHeaderSize, header_bytes.begin());
    f::store_le<std::uint64_t>(header_bytes.data() + offsetof(f::Header, header_checksum), 0);
    const std::uint64_t header_sum = checksum64(header_bytes);
    if (header_sum != header_.header_checksum) {
      return fail("header checksum " + hex(header_.header_checksum) + " does not match the header's bytes (" +
                      hex(header_sum) + ")",
                  kHintCorrupt);
    }
    const bool has_tables_checksum = header_.format_version >= f::kFirstVersionWithTablesChecksum;
    if (has_tables_checksum) {
      // The tables end where the image data starts; check_sections() has not vetted that offset yet.
      if (header_.data_offset < f::kHeaderSize || header_.data_offset > header_.total_size) {
        return fail("image data offset " + hex(header_.data_offset) + " lies outside the bundle (" +
                        plural(header_.total_size, "byte") + ")",
                    kHintMalformed);
      }
      const ByteView tables = state_.bytes.subspan(f::kHeaderSize, header_.data_offset - f::kHeaderSize);
      if (const std::uint64_t tables_sum = checksum64(tables); tables_sum != header_.tables_checksum) {
        return fail("tables checksum " + hex(header_.tables_checksum) + " does not match the bytes before the image data (" +
                        hex(tables_sum) + ")",
                    kHintCorrupt);
      }
    }
    if (check_ == OpenCheck::TablesThenImagesOnUse && has_tables_checksum) return {};
    const std::uint64_t content_sum = checksum64(state_.bytes.subspan(f::kHeaderSize));
    if (content_sum != header_.content_checksum) {
      return fail("content checksum " + hex(header_.content_checksum) + " does not match the bytes after the header (" +
                      hex(content_sum) + ")",
                  kHintCorrupt);
    }
    return {};
  }

  // Sections lie in a fixed order, each aligned and starting at or after the end of the one before,
  // inside the bundle: so no section overlaps another, and every later check is against these bounds.
  Result<void> check_sections() {
    const std::uint64_t total = header_.total_size;
    const bool v1_tables_checksum_set =
        header_.format_version < f::kFirstVersionWithTablesChecksum && header_.tables_checksum != 0;
    const bool has_index = header_.format_version >= f::kFirstVersionWithKernelIndex;
    if (v1_tables_checksum_set || (!has_index && (header_.kernel_count != 0 || header_.index_offset != 0))) {
      return fail("reserved header bytes are not zero", kHintMalformed);
    }
    if (header_.entry_size != f::kEntrySize) {
      return fail("entry size " + std::to_string(header_.entry_size) + " is not the " +
                      std::to_string(f::kEntrySize) + " bytes of a version " +
                      std::to_string(header_.format_version) + " entry",
                  kHintMalformed);
    }
    if (header_.image_count > f::kMaxImageCount) {
      return fail(plural(header_.image_count, "image") + " is more than the reader's limit of " +
                      std::to_string(f::kMaxImageCount),
                  kHintMalformed);
    }
    std::uint64_t entries_size = 0;
    std::uint64_t refs_size = 0;
    f::checked_multiply(header_.image_count, f::kEntrySize, entries_size);  // both factors are 32-bit: no overflow
    f::checked_multiply(header_.ref_count, f::kStringRefSize, refs_size);

    struct Section {
      const char* name;
      std::uint64_t offset;
      std::uint64_t size;
      std::uint64_t alignment;
    };
    std::vector<Section> sections = {
        {"entry table", header_.entries_offset, entries_size, f::kSectionAlignment},
        {"string refs", header_.refs_offset, refs_size, f::kSectionAlignment},
        {"string bytes", header_.strings_offset, header_.strings_size, f::kSectionAlignment},
    };
    if (has_index) {
      // The index's size depends on its head: the head must be there to be read.
      if (!f::checked_range(header_.index_offset, f::kIndexHeadSize, total)) {
        return fail("kernel index at " + hex(header_.index_offset) + " runs past the end of the bundle (" +
                        plural(total, "byte") + ")",
                    kHintMalformed);
      }
      index_head_ = f::decode<f::IndexHead>(state_.bytes.data() + header_.index_offset);
      const std::uint64_t index_size = f::kIndexHeadSize + std::uint64_t{header_.kernel_count} * f::kIndexEntrySize +
                                       std::uint64_t{index_head_.set_count} * f::kCandidateSetSize +
                                       std::uint64_t{index_head_.candidate_count} * f::kCandidateSize;
      sections.push_back({"kernel index", header_.index_offset, index_size, f::kSectionAlignment});
    }
    sections.push_back({"image data", header_.data_offset, header_.data_size, f::kImageAlignment});
    std::uint64_t previous_end = f::kHeaderSize;
    const char* previous_name = "header";
    for (const Section& section : sections) {
      if (!f::is_aligned(section.offset, section.alignment)) {
        return fail(std::string(section.name) + " offset " + hex(section.offset) + " is not a multiple of " +
                        std::to_string(section.alignment),
                    kHintMalformed);
      }
      if (section.offset < previous_end) {
        return fail(std::string(section.name) + " offset " + hex(section.offset) + " overlaps the " + previous_name +
                        ", which ends at " + hex(previous_end),
                    kHintMalformed);
      }
      if (!f::checked_range(section.offset, section.size, total)) {
        return fail(std::string(section.name) + " at " + hex(section.offset) + " + " + plural(section.size, "byte") +
                        " runs past the end of the bundle (" + plural(total, "byte") + ")",
                    kHintMalformed);
      }
      previous_end = section.offset + section.size;
      previous_name = section.name;
    }
    return {};
  }

  Result<void> read_refs() {
    state_.refs.reserve(header_.ref_count);
    bytes_before_ref_.reserve(std::size_t{header_.ref_count} + 1);
    empty_before_ref_.reserve(std::size_t{header_.ref_count} + 1);
    const std::uint8_t* table = state_.bytes.data() + header_.refs_offset;
    const ByteView strings = state_.bytes.subspan(header_.strings_offset, header_.strings_size);
    auto ref_at = [&](std::uint32_t i) { return f::decode<f::StringRef>(table + std::size_t{i} * f::kStringRefSize); };
    bool ascending = true;
    for (std::uint32_t i = 0; i < header_.ref_count; ++i) {
      const auto ref = ref_at(i);
      // The +1 is the NUL each string carries for tools that read the file as C strings.
      if (!f::checked_range(ref.offset, std::uint64_t{ref.length} + 1, strings.size())) {
        return fail("string ref " + std::to_string(i) + " (offset " + hex(ref.offset) + ", length " +
                        std::to_string(ref.length) + ") runs past the string bytes (" +
                        plural(strings.size(), "byte") + ")",
                    kHintMalformed);
      }
      if (i > 0 && ref.offset < ref_at(i - 1).offset) ascending = false;
    }
    // The writer stores each string once, in order of first use, so its refs ascend and take the
    // sweep as they come; others are sorted first.
    std::vector<std::uint64_t> sorted_first_nul;
    if (!ascending) {
      std::vector<f::StringRef> refs;
      refs.reserve(header_.ref_count);
      for (std::uint32_t i = 0; i < header_.ref_count; ++i) refs.push_back(ref_at(i));
      sorted_first_nul = first_nul_at_or_after(refs, strings);
    }
    NulSweep sweep(strings);
    for (std::uint32_t i = 0; i < header_.ref_count; ++i) {
      const auto ref = ref_at(i);
      const std::string_view text = as_text(strings.subspan(ref.offset, ref.length));
      if (strings[ref.offset + ref.length] != 0) {
        return fail("string ref " + std::to_string(i) + " is not followed by a NUL", kHintMalformed);
      }
      const std::uint64_t first_nul = ascending ? sweep.at_or_after(ref.offset) : sorted_first_nul[i];
      if (first_nul < std::uint64_t{ref.offset} + ref.length) {
        return fail("string ref " + std::to_string(i) + " contains a NUL byte", kHintMalformed);
      }
      state_.refs.push_back(text);
      bytes_before_ref_.push_back(bytes_before_ref_.back() + text.size());
      empty_before_ref_.push_back(empty_before_ref_.back() + (text.empty() ? 1 : 0));
    }
    return {};
  }

  // The strings of refs [first, first + count), or an error naming `what`.
  Result<std::span<const std::string_view>> ref_range(std::uint64_t first, std::uint64_t count,
                                                      std::string_view what, const ImageLabel* image = nullptr) const {
    if (!f::checked_range(first, count, state_.refs.size())) {
      return fail((image ? image->text() + " " : std::string()) + std::string(what) + ": refs " + std::to_string(first) + " + " + std::to_string(count) +
                      " run past the " + plural(state_.refs.size(), "string ref"),
                  kHintMalformed);
    }
    return std::span<const std::string_view>(state_.refs).subspan(first, count);
  }

  Result<void> read_metadata() {
    auto pairs = ref_range(header_.metadata_first_ref, std::uint64_t{header_.metadata_count} * 2, "metadata");
    if (!pairs) return pairs.error();
    std::uint64_t metadata_bytes = 0;
    for (const std::string_view text : *pairs) metadata_bytes += text.size();
    if (metadata_bytes > f::kMaxMetadataBytes) {
      return fail("the metadata's keys and values total " + plural(metadata_bytes, "byte") +
                      ", more than the reader's limit of " + plural(f::kMaxMetadataBytes, "byte"),
                  kHintMalformed);
    }
    std::set<std::string_view> keys;
    for (std::size_t i = 0; i < pairs->size(); i += 2) {
      const std::string_view key = (*pairs)[i];
      if (key.empty()) return fail("metadata entry " + std::to_string(i / 2) + " has an empty key", kHintMalformed);
      if (!keys.insert(key).second) return fail("metadata key '" + std::string(key) + "' appears twice", kHintMalformed);
      state_.metadata.entries.emplace_back(std::string(key), std::string((*pairs)[i + 1]));
    }
    return {};
  }

  Result<void> read_entries() {
    const std::uint32_t count = header_.image_count;
    state_.entries.reserve(count);
    state_.images.reserve(count);
    depth_.assign(count, 0);
    for (std::uint32_t i = 0; i < count; ++i) {
      const auto entry =
          f::decode<f::Entry>(state_.bytes.data() + header_.entries_offset + std::size_t{i} * f::kEntrySize);
      ImageInfo info;
      if (auto target = read_target(i, entry); target) {
        info.target = *target;
      } else {
        return target.error();
      }
      const ImageLabel where{i, info.target};
      if (entry.reserved0 != 0) return fail(where + ": reserved entry bytes are not zero", kHintMalformed);

      auto stored = entry.duplicate_of == f::kNoImage ? check_stored(i, entry, where) : check_duplicate(i, entry, where);
      if (!stored) return stored;

      if (auto names = read_names(entry, where); names) {
        info.kernels = *names;
      } else {
        return names.error();
      }
      const f::Entry& owner = entry.duplicate_of == f::kNoImage ? entry : state_.entries[entry.duplicate_of];
      info.codec = static_cast<Codec>(owner.codec);
      info.raw_size = entry.raw_size;
      info.stored_size = entry.stored_size;
      info.content_hash = entry.content_hash;
      if (entry.duplicate_of != f::kNoImage) info.duplicate_of = entry.duplicate_of;
      if (entry.dictionary != f::kNoImage) info.dictionary = entry.dictionary;
      state_.entries.push_back(entry);
      state_.images.push_back(std::move(info));
    }
    return {};
  }

  Result<ImageTarget> read_target(std::uint32_t index, const f::Entry& entry) const {
    const ImageLabel where{index, std::nullopt};
    const auto kind = kind_from_disk(entry.kind);
    if (!kind) return fail(where + ": kind " + std::to_string(entry.kind) + " is not cubin (0), ptx (1) or source (2)", kHintMalformed);
    const auto variant = variant_from_disk(entry.arch_variant);
    if (!variant) {
      return fail(where + ": architecture variant " + std::to_string(entry.arch_variant) +
                      " is not plain (0), specific 'a' (1) or family 'f' (2)",
                  kHintMalformed);
    }
    ImageTarget target{*kind, Arch{{entry.arch_major, entry.arch_minor}, *variant}};
    if (*kind == ImageKind::Source) {
      if (entry.arch_major != 0 || entry.arch_minor != 0 || *variant != ArchVariant::Plain) {
        return fail(where + ": a source image has an architecture (" + std::to_string(entry.arch_major) + "." +
                        std::to_string(entry.arch_minor) + "); source images have none",
                    kHintMalformed);
      }
    } else if (entry.arch_major < 1 || entry.arch_major > kMaxArchMajor || entry.arch_minor > kMaxArchMinor) {
      return fail(where + ": architecture " + std::to_string(entry.arch_major) + "." + std::to_string(entry.arch_minor) +
                      " is not a compute capability (major 1-99, minor 0-9)",
                  kHintMalformed);
    }
    return target;
  }

  // An image whose stored bytes are its own.
  Result<void> check_stored(std::uint32_t index, const f::Entry& entry, const ImageLabel& where) {
    if (entry.codec != f::kCodecNone && entry.codec != f::kCodecZstd && entry.codec != f::kCodecLz4) {
      // A new codec comes with a new format version, so an unknown one in a version this reader
      // knows is damage, not a newer writer.
      return fail(where + ": codec " + std::to_string(entry.codec) + " is not none (0), zstd (1) or lz4 (2)", kHintMalformed);
    }
    if (entry.codec == f::kCodecLz4 && header_.format_version < f::kFirstVersionWithLz4) {
      return fail(where + ": codec lz4 (2) needs format version " + std::to_string(f::kFirstVersionWithLz4) +
                      ", but the bundle is version " + std::to_string(header_.format_version),
                  kHintMalformed);
    }
    if (entry.raw_size == 0 || entry.raw_size > f::kMaxImageRawSize) {
      return fail(where + ": raw size " + std::to_string(entry.raw_size) + " is not between 1 byte and the reader's limit of " +
                      plural(f::kMaxImageRawSize, "byte"),
                  kHintMalformed);
    }
    if (entry.stored_size == 0) return fail(where + ": stored size is 0", kHintMalformed);
    if (!f::is_aligned(entry.data_offset, f::kImageAlignment)) {
      return fail(where + ": data offset " + hex(entry.data_offset) + " is not a multiple of " +
                      std::to_string(f::kImageAlignment),
                  kHintMalformed);
    }
    if (entry.data_offset < header_.data_offset ||
        !f::checked_range(entry.data_offset - header_.data_offset, entry.stored_size, header_.data_size)) {
      return fail(where + ": data offset " + hex(entry.data_offset) + " + stored size " +
                      std::to_string(entry.stored_size) + " lies outside the image data area (" +
                      hex(header_.data_offset) + " + " + plural(header_.data_size, "byte") + ")",
                  kHintMalformed);
    }
    if (entry.codec == f::kCodecNone) {
      if (entry.stored_size != entry.raw_size) {
        return fail(where + ": stored uncompressed, yet stored size " + std::to_string(entry.stored_size) +
                        " differs from raw size " + std::to_string(entry.raw_size),
                    kHintMalformed);
      }
    } else {
      const bool lz4 = entry.codec == f::kCodecLz4;
      const std::uint64_t expansion = lz4 ? f::kLz4MaxExpansion : f::kZstdMaxExpansion;
      if ((entry.raw_size + expansion - 1) / expansion > entry.stored_size) {
        return fail(where + ": raw size " + std::to_string(entry.raw_size) + " cannot come from " +
                        plural(entry.stored_size, lz4 ? "lz4 byte" : "zstd byte") +
                        (lz4 ? " (an LZ4 block yields at most 255 bytes per byte)"
                             : " (a zstd block yields at most 128 KiB from 4 bytes)"),
                    kHintMalformed);
      }
    }
    if (entry.codec != f::kCodecZstd && entry.dictionary != f::kNoImage) {
      return fail(where + (entry.codec == f::kCodecNone ? ": stored uncompressed" : ": stored as lz4") +
                      ", yet names image " + std::to_string(entry.dictionary) +
                      " as its dictionary (only zstd images have one)",
                  kHintMalformed);
    }
    if (entry.dictionary != f::kNoImage) {
      if (entry.dictionary >= index) {
        return fail(where + ": dictionary image " + std::to_string(entry.dictionary) +
                        " is not an earlier image (dictionaries must come first, which also rules out cycles)",
                    kHintMalformed);
      }
      const f::Entry& dictionary = state_.entries[entry.dictionary];
      if (dictionary.duplicate_of != f::kNoImage) {
        return fail(where + ": dictionary image " + std::to_string(entry.dictionary) +
                        " is a duplicate; a dictionary must be the image that holds the bytes",
                    kHintMalformed);
      }
      depth_[index] = depth_[entry.dictionary] + 1;
      if (depth_[index] > f::kMaxDictionaryDepth) {
        return fail(where + ": its dictionary chain is longer than the reader's limit of " +
                        std::to_string(f::kMaxDictionaryDepth),
                    kHintMalformed);
      }
    }
    stored_ranges_.push_back({entry.data_offset, entry.stored_size, index});
    return {};
  }

  // An image that shares the stored bytes of an earlier, identical one.
  Result<void> check_duplicate(std::uint32_t index, const f::Entry& entry, const ImageLabel& where) const {
    if (entry.duplicate_of >= index) {
      return fail(where + ": duplicate of image " + std::to_string(entry.duplicate_of) + ", which is not an earlier image",
                  kHintMalformed);
    }
    const f::Entry& original = state_.entries[entry.duplicate_of];
    if (original.duplicate_of != f::kNoImage) {
      return fail(where + ": duplicate of image " + std::to_string(entry.duplicate_of) +
                      ", itself a duplicate; a duplicate must name the image that holds the bytes",
                  kHintMalformed);
    }
    if (entry.codec != 0 || entry.dictionary != f::kNoImage || entry.data_offset != 0 || entry.stored_size != 0 ||
        entry.stored_checksum != 0) {
      return fail(where + ": a duplicate must have zero codec, data offset, stored size and checksum and no dictionary",
                  kHintMalformed);
    }
    if (entry.raw_size != original.raw_size || entry.content_hash != original.content_hash) {
      return fail(where + ": duplicate of image " + std::to_string(entry.duplicate_of) +
                      ", yet its raw size or content hash differs from that image's",
                  kHintMalformed);
    }
    return {};
  }

  Result<std::span<const std::string_view>> read_names(const f::Entry& entry, const ImageLabel& where) {
    auto names = ref_range(entry.names_first_ref, entry.names_count, "kernel names", &where);
    if (!names) return names.error();
    // Lists may be shared, so a small file could name billions of strings; bound what readers walk.
    // (Counted from the refs' running totals: a list shared by every architecture is not walked again.)
    const std::size_t end = std::size_t{entry.names_first_ref} + entry.names_count;
    name_references_ += names->size();
    name_bytes_ += bytes_before_ref_[end] - bytes_before_ref_[entry.names_first_ref];
    if (name_references_ > f::kMaxNameReferences || name_bytes_ > f::kMaxNameBytes) {
      return fail(where + ": the kernel names of the images so far (" + plural(name_references_, "name") + ", " +
                      plural(name_bytes_, "byte") + ") exceed the reader's limit of " +
                      std::to_string(f::kMaxNameReferences) + " names or " + plural(f::kMaxNameBytes, "byte"),
                  kHintMalformed);
    }
    if (empty_before_ref_[end] != empty_before_ref_[entry.names_first_ref]) {
      const auto empty = std::find(names->begin(), names->end(), std::string_view());
      return fail(where + ": kernel name " + std::to_string(empty - names->begin()) + " is empty", kHintMalformed);
    }
    return names;
  }

  Result<void> check_overlaps() {
    std::sort(stored_ranges_.begin(), stored_ranges_.end(), [](const StoredRange& a, const StoredRange& b) {
      return std::pair(a.offset, a.image) < std::pair(b.offset, b.image);
    });
    for (std::size_t i = 1; i < stored_ranges_.size(); ++i) {
      const StoredRange& before = stored_ranges_[i - 1];
      const StoredRange& after = stored_ranges_[i];
      if (after.offset < before.offset + before.size) {
        return fail("image " + std::to_string(after.image) + ": stored bytes at " + hex(after.offset) +
                        " overlap those of image " + std::to_string(before.image) + " (" + hex(before.offset) + " + " +
                        plural(before.size, "byte") + ")",
                    kHintMalformed);
      }
    }
    return {};
  }

  // Version 4 carries the index: each entry and candidate is checked, and a tool's whole-file check
  // also compares it with the images' lists. Older versions: worked out from the lists.
  Result<void> read_kernel_index() {
    std::vector<std::span<const std::string_view>> lists;
    lists.reserve(state_.images.size());
    for (const ImageInfo& image : state_.images) lists.push_back(image.kernels);
    std::optional<KernelIndex> from_lists;
    if (header_.format_version < f::kFirstVersionWithKernelIndex || check_ == OpenCheck::WholeFile) {
      from_lists = index_kernels(lists);
      if (!from_lists) {
        // kiln before format 4 wrote such bundles without a bound, so the file need not be damaged.
        const auto listing_none = std::count_if(state_.images.begin(), state_.images.end(),
                                                [](const ImageInfo& image) { return image.kernels.empty(); });
        return fail("the images' kernel lists name more (kernel, image) pairs than the reader's limit of " +
                        std::to_string(f::kMaxIndexPairs) + ": " + plural(static_cast<std::uint64_t>(listing_none), "image") +
                        " list no kernels, and each of those may hold every kernel",
                    "rebuild the bundle from its sources with kiln build, which lists each image's kernels");
      }
    }
    if (header_.format_version < f::kFirstVersionWithKernelIndex) {
      state_.index = std::move(*from_lists);
      return {};
    }
    KernelIndex& index = state_.index;
    const std::uint8_t* entries = state_.bytes.data() + header_.index_offset + f::kIndexHeadSize;
    const std::uint8_t* sets = entries + std::size_t{header_.kernel_count} * f::kIndexEntrySize;
    const std::uint8_t* candidates = sets + std::size_t{index_head_.set_count} * f::kCandidateSetSize;
    // Spelled only for a message: a valid index of many kernels formats nothing.
    auto entry_label = [&](std::uint32_t k) { return "kernel index entry " + std::to_string(k); };
    index.names.reserve(header_.kernel_count);
    index.set_of.reserve(header_.kernel_count);
    for (std::uint32_t k = 0; k < header_.kernel_count; ++k) {
      const auto entry = f::decode<f::IndexEntry>(entries + std::size_t{k} * f::kIndexEntrySize);
      if (entry.name_ref >= state_.refs.size() || state_.refs[entry.name_ref].empty()) {
        return fail(entry_label(k) + ": its name, string ref " + std::to_string(entry.name_ref) + ", is empty or past the " +
                        plural(state_.refs.size(), "string ref"),
                    kHintMalformed);
      }
      const std::string_view name = state_.refs[entry.name_ref];
      if (k > 0 && !(index.names.back() < name)) {
        return fail(entry_label(k) + " (" + std::string(name) + ") does not sort after the entry before it (" +
                        std::string(index.names.back()) + "): the index lists each name once, in order",
                    kHintMalformed);
      }
      if (entry.set >= index_head_.set_count) {
        return fail(entry_label(k) + " (" + std::string(name) + "): candidate set " + std::to_string(entry.set) +
                        " is past the index's " + std::to_string(index_head_.set_count),
                    kHintMalformed);
      }
      index.names.push_back(name);
      index.set_of.push_back(entry.set);
    }
    index.first_candidate.reserve(std::size_t{index_head_.set_count} + 1);
    index.first_candidate.push_back(0);
    std::uint64_t used = 0;
    for (std::uint32_t set = 0; set < index_head_.set_count; ++set) {
      const auto range = f::decode<f::CandidateSet>(sets + std::size_t{set} * f::kCandidateSetSize);
      if (range.first_candidate != used || range.candidates > index_head_.candidate_count - used) {
        return fail("kernel index candidate set " + std::to_string(set) + ": candidates " +
                        std::to_string(range.first_candidate) + " + " + std::to_string(range.candidates) +
                        " do not follow the set before it's (which end at " + std::to_string(used) + ") within the index's " +
                        std::to_string(index_head_.candidate_count),
                    kHintMalformed);
      }
      used += range.candidates;
      index.first_candidate.push_back(static_cast<std::uint32_t>(used));
    }
    if (used != index_head_.candidate_count) {
      return fail("kernel index: its candidate sets use " + std::to_string(used) + " of its " +
                      std::to_string(index_head_.candidate_count) + " candidates",
                  kHintMalformed);
    }
    index.candidates.resize(index_head_.candidate_count);
    for (std::uint32_t set = 0; set < index_head_.set_count; ++set) {
      for (std::uint32_t i = index.first_candidate[set]; i < index.first_candidate[set + 1]; ++i) {
        const std::uint32_t image = f::load_le<std::uint32_t>(candidates + std::size_t{i} * f::kCandidateSize);
        if (image >= header_.image_count || (i > index.first_candidate[set] && image <= index.candidates[i - 1])) {
          return fail("kernel index candidate set " + std::to_string(set) + ": image " + std::to_string(image) +
                          " is not an image or not after the one before it",
                      kHintMalformed);
        }
        index.candidates[i] = image;
      }
    }
    if (from_lists && index != *from_lists) {
      return fail("the kernel index does not match the images' lists of kernel names", kHintMalformed);
    }
    return {};
  }

  struct StoredRange {
    std::uint64_t offset;
    std::uint64_t size;
    std::uint32_t image;
  };

  ByteView available_;
  BundleData& state_;
  OpenCheck check_;
  f::Header header_{};
  f::IndexHead index_head_{};  // version 4
  std::vector<std::uint32_t> depth_;  // dictionary chain length of each image
  std::vector<StoredRange> stored_ranges_;
  std::uint64_t name_references_ = 0;
  std::uint64_t name_bytes_ = 0;
  // Over refs [0, i): the bytes of their strings, and how many are empty (i = 0 .. ref_count).
  std::vector<std::uint64_t> bytes_before_ref_{0};
  std::vector<std::uint32_t> empty_before_ref_{0};
};

const BundleData& empty_state() {
  static const BundleData state;
  return state;
}

}  // namespace

Result<Bundle> Bundle::open(ByteView bytes, std::string name, OpenCheck check) {
  auto state = std::make_shared<State>();
  state->name = std::move(name);
  Parser parser(bytes, *state, check);
  if (auto parsed = parser.run(); !parsed) return std::move(parsed).error();
  Bundle bundle;
  bundle.state_ = std::move(state);
  return bundle;
}

Result<Bundle> Bundle::open_file(const std::filesystem::path& path, OpenCheck check) {
  const std::string name = path.string();
  auto io_error = [&](std::string message, int code, const char* hint) {
    Error error = make_error(Component::Io, std::move(message) + ": " + std::strerror(code), name, hint);
    error.native_code = code;
    return error;
  };
  // O_NONBLOCK: a FIFO under the name must not hang the open.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return io_error("cannot open the bundle", errno, "check the path and its permissions");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat status {};
  if (::fstat(fd, &status) != 0) return io_error("cannot tell the bundle's size", errno, "check the path");
  // A directory reports a size of its own and a device or FIFO none that means anything.
  if (S_ISDIR(status.st_mode)) {
    return make_error(Component::Io, "is a directory, not a bundle file", name, "name the .kiln file itself");
  }
  if (!S_ISREG(status.st_mode)) {
    return make_error(Component::Io, "is not a regular file (a FIFO, socket or device), so not a bundle", name,
                      "name the .kiln file itself");
  }
  const auto size = static_cast<std::uint64_t>(status.st_size);
  auto state = std::make_shared<State>();
  state->name = name;
  // The header first: a file that is not a bundle (or a huge sparse one) is refused without
  // reading or allocating the rest.
  auto read_at = [&](std::uint8_t* out, std::uint64_t count, std::uint64_t offset) -> Result<void> {
    std::uint64_t done = 0;
    while (done < count) {
      const ssize_t got = ::pread(fd, out + done, count - done, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return io_error("reading the bundle failed", errno, "check the disk and the file");
      if (got == 0) {
        return make_error(Component::Io,
                          "the file shrank while it was read: " + plural(offset + done, "byte") + " of " +
                              plural(size, "byte"),
                          name, "check that the file is not being written while it is read");
      }
      done += static_cast<std::uint64_t>(got);
    }
    return {};
  };
  const std::uint64_t head_size = std::min<std::uint64_t>(size, f::kHeaderSize);
  std::array<std::uint8_t, f::kHeaderSize> head{};
  if (Result<void> read = read_at(head.data(), head_size, 0); !read) return read.error();
  if (head_size < f::kMagic.size() || !std::equal(f::kMagic.begin(), f::kMagic.end(), head.begin())) {
    Parser parser(ByteView(head.data(), head_size), *state, check);
    if (auto parsed = parser.run(); !parsed) return std::move(parsed).error();
  }
  try {
    state->owned.resize(static_cast<std::size_t>(size));
  } catch (const std::bad_alloc&) {
    return make_error(Component::Io, "cannot allocate " + plural(size, "byte") + " to read the bundle into", name,
                      "free memory, or check that this is the bundle you meant");
  }
  std::copy_n(head.begin(), head_size, state->owned.begin());
  if (Result<void> read = read_at(state->owned.data() + head_size, size - head_size, head_size); !read) {
    return read.error();
  }
  Parser parser(state->owned, *state, check);
  if (auto parsed = parser.run(); !parsed) return std::move(parsed).error();
  Bundle bundle;
  bundle.state_ = std::move(state);
  return bundle;
}

namespace {
// A default-constructed Bundle behaves as an empty one rather than dereferencing null.
const BundleData& state_of(const BundleData* state) { return state ? *state : empty_state(); }
}  // namespace

const std::string& Bundle::name() const noexcept { return state_of(state_.get()).name; }
std::uint32_t Bundle::format_version() const noexcept { return state_of(state_.get()).version; }
const BundleMetadata& Bundle::metadata() const noexcept { return state_of(state_.get()).metadata; }
const std::vector<ImageInfo>& Bundle::images() const noexcept { return state_of(state_.get()).images; }
const KernelIndex& Bundle::kernel_index() const noexcept { return state_of(state_.get()).index; }

std::optional<std::size_t> KernelIndex::find(std::string_view mangled) const {
  const auto at = std::lower_bound(names.begin(), names.end(), mangled);
  if (at == names.end() || *at != mangled) return std::nullopt;
  return static_cast<std::size_t>(at - names.begin());
}
std::uint64_t Bundle::file_size() const noexcept { return state_of(state_.get()).bytes.size(); }

std::vector<ImageTarget> Bundle::targets() const {
  std::vector<ImageTarget> targets;
  for (const ImageInfo& image : images()) targets.push_back(image.target);
  return targets;
}

namespace {

// One LZ4 block into exactly `raw_size` bytes (checked against kMaxImageRawSize and the stored
// size at open): a block that would write past them, read past its end or end short fails.
template <class Fail>
Result<Bytes> decode_lz4(ByteView stored, std::uint64_t raw_size, const Fail& fail) {
  // liblz4 takes sizes as int; open() bounded the raw size, not the stored one.
  if (stored.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return fail("the stored bytes (" + plural(stored.size(), "byte") + ") are more than an LZ4 block of " +
                    plural(raw_size, "byte") + " can be",
                kHintMalformed);
  }
  Bytes raw(raw_size);
  const int size = LZ4_decompress_safe(reinterpret_cast<const char*>(stored.data()), reinterpret_cast<char*>(raw.data()),
                                       static_cast<int>(stored.size()), static_cast<int>(raw.size()));
  if (size < 0) {
    return fail("lz4 decompression failed: the stored bytes are not an LZ4 block of at most " + plural(raw_size, "byte"),
                kHintCorrupt);
  }
  if (static_cast<std::uint64_t>(size) != raw_size) {
    return fail("the LZ4 block inflated to " + plural(static_cast<std::uint64_t>(size), "byte") + ", not the declared " +
                    std::to_string(raw_size),
                kHintCorrupt);
  }
  return raw;
}

// Decodes the stored bytes of one image (validated by open()) given its dictionary's raw bytes.
Result<Bytes> decode_image(const BundleData& state, std::size_t index, ByteView dictionary) {
  const f::Entry& entry = state.entries[index];
  auto fail = [&](std::string message, const char* hint) {
    const std::string where = "image " + std::to_string(index) + " (" + state.images[index].target.name() + ")";
    return make_error(Component::Bundle, where + ": " + std::move(message), state.name, hint);
  };
  const ByteView stored = state.bytes.subspan(entry.data_offset, entry.stored_size);
  if (const std::uint64_t sum = checksum64(stored); sum != entry.stored_checksum) {
    return fail("stored-bytes checksum " + hex(entry.stored_checksum) + " does not match the stored bytes (" + hex(sum) + ")",
                kHintCorrupt);
  }
  if (entry.codec == f::kCodecNone) return Bytes(stored.begin(), stored.end());
  if (entry.codec == f::kCodecLz4) return decode_lz4(stored, entry.raw_size, fail);

  const unsigned long long declared = ZSTD_getFrameContentSize(stored.data(), stored.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) return fail("the stored bytes are not a zstd frame", kHintMalformed);
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) return fail("the zstd frame does not declare its size", kHintMalformed);
  if (declared != entry.raw_size) {
    return fail("the zstd frame declares " + plural(declared, "byte") + ", the entry " +
                    plural(entry.raw_size, "raw byte"),
                kHintMalformed);
  }
  const std::size_t frame_size = ZSTD_findFrameCompressedSize(stored.data(), stored.size());
  if (ZSTD_isError(frame_size) || frame_size != stored.size()) {
    return fail("the stored bytes are not exactly one zstd frame (" +
                    (ZSTD_isError(frame_size) ? std::string(ZSTD_getErrorName(frame_size))
                                              : "the frame ends at byte " + std::to_string(frame_size)) +
                    ")",
                kHintMalformed);
  }
  // One context per thread, kept: creating one allocates and clears its window and tables,
  // which costs about as much as decoding a small image.
  thread_local std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> context(nullptr, ZSTD_freeDCtx);
  if (!context) {
    context.reset(ZSTD_createDCtx());
    if (!context) return fail("zstd could not allocate a decompression context", kHintCorrupt);
  }
  // Parameters survive a session reset; the prefix below is used by one frame only.
  ZSTD_DCtx_reset(context.get(), ZSTD_reset_session_and_parameters);
  ZSTD_DCtx_setParameter(context.get(), ZSTD_d_windowLogMax, kMaxReaderWindowLog);
  if (!dictionary.empty()) {
    if (const std::size_t code = ZSTD_DCtx_refPrefix(context.get(), dictionary.data(), dictionary.size());
        ZSTD_isError(code)) {
      return fail(std::string("zstd rejected the dictionary: ") + ZSTD_getErrorName(code), kHintCorrupt);
    }
  }
  // Bounded by the declared raw size (checked against kMaxImageRawSize and the frame at open):
  // a frame that would inflate further fails with "destination buffer is too small".
  Bytes raw(entry.raw_size);
  const std::size_t size = ZSTD_decompressDCtx(context.get(), raw.data(), raw.size(), stored.data(), stored.size());
  if (ZSTD_isError(size)) return fail(std::string("zstd decompression failed: ") + ZSTD_getErrorName(size), kHintCorrupt);
  if (size != raw.size()) {
    return fail("the zstd frame inflated to " + plural(size, "byte") + ", not the declared " + std::to_string(raw.size()),
                kHintCorrupt);
  }
  return raw;
}

// decode_image, then the raw bytes checked against the entry's content hash.
Result<Bytes> decode_verified(const BundleData& state, std::size_t index, ByteView dictionary) {
  Result<Bytes> raw = decode_image(state, index, dictionary);
  if (!raw) return raw;
  const ImageInfo& info = state.images[index];
  if (const std::uint64_t hash = checksum64(*raw); hash != info.content_hash) {
    return make_error(Component::Bundle,
                      "image " + std::to_string(index) + " (" + info.target.name() + "): content hash " +
                          hex(info.content_hash) + " does not match the decompressed bytes (" + hex(hash) + ")",
                      state.name, kHintCorrupt);
  }
  return raw;
}

Error out_of_range(const BundleData& state, std::size_t index) {
  return make_error(Component::Bundle,
                    "image index " + std::to_string(index) + " is out of range: the bundle holds " +
                        plural(state.images.size(), "image"),
                    state.name, "use an index below images().size()");
}

}  // namespace

Result<Bytes> Bundle::extract(std::size_t index) const {
  const BundleData& state = state_of(state_.get());
  if (index >= state.images.size()) return out_of_range(state, index);
  const std::size_t owner = state.images[index].duplicate_of.value_or(index);
  // Decode the dictionary chain from its root down to `owner`, each image verified against its
  // content hash before it primes the next. open() bounded the chain and ruled out cycles.
  std::vector<std::size_t> chain{owner};
  while (const auto dictionary = state.images[chain.back()].dictionary) chain.push_back(*dictionary);
  Bytes previous;
  for (auto link = chain.rbegin(); link != chain.rend(); ++link) {
    auto raw = decode_verified(state, *link, previous);
    if (!raw) return raw;
    previous = std::move(*raw);
  }
  return previous;
}

Result<Bytes> Bundle::extract(std::size_t index, ByteView dictionary) const {
  const BundleData& state = state_of(state_.get());
  if (index >= state.images.size()) return out_of_range(state, index);
  return decode_verified(state, state.images[index].duplicate_of.value_or(index), dictionary);
}

// ============================================================================================
// Writer
// ============================================================================================

namespace {

Error writer_error(std::string message) { return make_error(Component::Bundle, std::move(message), {}, kHintWriter); }

std::string default_toolkit() {
  // The headers kiln was built with; the compiler passes the NVRTC that made the images instead.
#ifdef CUDA_VERSION
  return "CUDA " + std::to_string(CUDA_VERSION / 1000) + "." + std::to_string(CUDA_VERSION % 1000 / 10);
#else
  return "CUDA unknown";
#endif
}

Result<void> check_string(const std::string& text, const std::string& what) {
  if (text.find('\0') != std::string::npos) return writer_error(what + " contains a NUL byte");
  if (text.size() > std::numeric_limits<std::uint32_t>::max()) return writer_error(what + " is longer than 4 GiB");
  return {};
}

Result<void> check_images(const std::vector<Image>& images) {
  if (images.size() > f::kMaxImageCount) {
    return writer_error(plural(images.size(), "image") + " is more than a bundle holds (" +
                        std::to_string(f::kMaxImageCount) + ")");
  }
  std::uint64_t name_references = 0;
  std::uint64_t name_bytes = 0;
  for (std::size_t i = 0; i < images.size(); ++i) {
    const Image& image = images[i];
    const std::string where = "image " + std::to_string(i) + " (" + image.target.name() + ")";
    if (image.bytes.empty()) return writer_error(where + " is empty");
    if (image.bytes.size() > f::kMaxImageRawSize) {
      return writer_error(where + " is " + plural(image.bytes.size(), "byte") + ", more than a bundle holds per image (" +
                          plural(f::kMaxImageRawSize, "byte") + ")");
    }
    const Arch& arch = image.target.arch;
    if (image.target.kind == ImageKind::Source) {
      if (arch != Arch{}) return writer_error(where + " has an architecture (" + arch.sm_name() + "); source images have none");
    } else if (arch.cc.major < 1 || arch.cc.major > kMaxArchMajor || arch.cc.minor < 0 || arch.cc.minor > kMaxArchMinor) {
      return writer_error(where + ": compute capability " + std::to_string(arch.cc.major) + "." +
                          std::to_string(arch.cc.minor) + " is outside major 1-99, minor 0-9");
    }
    for (std::size_t k = 0; k < image.kernels.size(); ++k) {
      if (image.kernels[k].empty()) return writer_error(where + ": kernel name " + std::to_string(k) + " is empty");
      if (auto valid = check_string(image.kernels[k], where + ": kernel name " + std::to_string(k)); !valid) return valid;
      name_bytes += image.kernels[k].size();
    }
    name_references += image.kernels.size();
  }
  // The reader's bound on what open() copies; kiln never writes a bundle that it cannot read.
  if (name_references > f::kMaxNameReferences || name_bytes > f::kMaxNameBytes) {
    return writer_error("the images name " + plural(name_references, "kernel") + " in " + plural(name_bytes, "byte") +
                        " in all, more than a bundle holds (" + std::to_string(f::kMaxNameReferences) + " names, " +
                        plural(f::kMaxNameBytes, "byte") + ")");
  }
  return {};
}

// "producer" and "toolkit" first, the caller's if given (a golden file pins them), else this
// kiln and the CUDA headers it was built with; then the caller's other entries in their order.
Result<std::vector<std::pair<std::string, std::string>>> final_metadata(const BundleMetadata& metadata) {
  std::vector<std::pair<std::string, std::string>> entries = {
      {"producer", metadata.get("producer").value_or("kiln " KILN_VERSION)},
      {"toolkit", metadata.get("toolkit").value_or(default_toolkit())},
  };
  std::set<std::string> keys = {"producer", "toolkit"};
  std::set<std::string> seen;
  for (const auto& [key, value] : metadata.entries) {
    if (key.empty()) return writer_error("a metadata key is empty");
    if (!seen.insert(key).second) return writer_error("metadata key '" + key + "' appears twice");
    if (auto valid = check_string(key, "metadata key '" + key + "'"); !valid) return valid.error();
    if (auto valid = check_string(value, "metadata value of '" + key + "'"); !valid) return valid.error();
    if (keys.insert(key).second) entries.emplace_back(key, value);
  }
  std::uint64_t metadata_bytes = 0;
  for (const auto& [key, value] : entries) metadata_bytes += key.size() + value.size();
  if (metadata_bytes > f::kMaxMetadataBytes) {
    return writer_error("the metadata's keys and values total " + plural(metadata_bytes, "byte") +
                        ", more than a reader accepts (" + plural(f::kMaxMetadataBytes, "byte") + ")");
  }
  return entries;
}

// Strings stored once each, in order of first use; refs and name lists likewise.
class StringTable {
 public:
  std::uint32_t ref(const std::string& text) {
    const auto number = static_cast<std::uint32_t>(refs_.size());
    auto [it, inserted] = stored_.try_emplace(text, Stored{static_cast<std::uint32_t>(bytes_.size()), number});
    if (inserted) {
      bytes_.insert(bytes_.end(), text.begin(), text.end());
      bytes_.push_back(0);
    }
    refs_.push_back({it->second.offset, static_cast<std::uint32_t>(text.size())});
    return number;
  }
  // The first ref made of `text`, which must have been made.
  [[nodiscard]] std::uint32_t first_ref(std::string_view text) const { return stored_.find(text)->second.first_ref; }

  // The first ref of a contiguous run naming `names`; identical lists share one run.
  std::uint32_t list(const std::vector<std::string>& names) {
    if (names.empty()) return 0;
    auto [it, inserted] = lists_.try_emplace(names, 0);
    if (inserted) {
      it->second = static_cast<std::uint32_t>(refs_.size());
      for (const std::string& name : names) ref(name);
    }
    return it->second;
  }

  [[nodiscard]] const std::vector<f::StringRef>& refs() const { return refs_; }
  [[nodiscard]] const Bytes& bytes() const { return bytes_; }

 private:
  struct Stored {
    std::uint32_t offset;     // in bytes_
    std::uint32_t first_ref;
  };
  std::map<std::string, Stored, std::less<>> stored_;
  std::map<std::vector<std::string>, std::uint32_t> lists_;
  std::vector<f::StringRef> refs_;
  Bytes bytes_;
};

struct StoredImage {
  std::uint16_t codec = f::kCodecNone;
  std::uint32_t dictionary = f::kNoImage;
  Bytes bytes;  // empty when stored uncompressed: the image's own bytes are copied in
};

// Each image's dictionary candidate: the earlier unique image of the same kind with the nearest
// architecture (a lower one first), whose chain has room left; among equals the one with the
// shortest chain (images split per kernel share boilerplate, not code: a star around the first
// decodes faster than a chain), then the latest. Cubins of neighbouring architectures share most
// of their bytes; a PTX or a source shares little with a cubin, so kinds never mix.
std::vector<std::uint32_t> plan_dictionaries(const std::vector<Image>& images, const std::vector<std::uint32_t>& duplicate_of,
                                             unsigned max_depth) {
  std::vector<std::uint32_t> dictionary(images.size(), f::kNoImage);
  std::vector<std::uint32_t> depth(images.size(), 0);
  auto distance = [](const Arch& from, const Arch& to) {
    const int a = from.cc.major * 10 + from.cc.minor;
    const int b = to.cc.major * 10 + to.cc.minor;
    // Lower architectures first: a newer cubin is usually a superset of an older one's features.
    return b <= a ? 2 * (a - b) : 2 * (b - a) + 1;
  };
  // The same code compiled for a sibling architecture shares the most bytes, so the kernels an
  // image holds weigh before the architecture: in a bundle of several sources, layernorm's sm_80
  // cubin is primed by layernorm's sm_75 rather than by elementwise's sm_80.
  std::vector<std::vector<std::string>> kernel_sets(images.size());
  for (std::size_t i = 0; i < images.size(); ++i) {
    kernel_sets[i] = images[i].kernels;
    std::sort(kernel_sets[i].begin(), kernel_sets[i].end());
  }
  auto kernels_apart = [&](std::size_t a, std::size_t b) {
    if (kernel_sets[a] == kernel_sets[b]) return 0;
    for (const std::string& kernel : kernel_sets[a]) {
      if (std::binary_search(kernel_sets[b].begin(), kernel_sets[b].end(), kernel)) return 1;
    }
    return 2;
  };
  for (std::size_t i = 0; i < images.size(); ++i) {
    if (duplicate_of[i] != f::kNoImage) continue;
    std::optional<std::size_t> best;
    for (std::size_t j = 0; j < i; ++j) {
      if (duplicate_of[j] != f::kNoImage || images[j].target.kind != images[i].target.kind) continue;
      if (depth[j] >= max_depth) continue;
      auto rank = [&](std::size_t k) {
        return std::tuple(kernels_apart(i, k), distance(images[i].target.arch, images[k].target.arch), depth[k]);
      };
      if (!best || rank(j) <= rank(*best)) best = j;
    }
    if (best) {
      dictionary[i] = static_cast<std::uint32_t>(*best);
      // Counted as if the dictionary is used: it may not be, which only shortens the real chain.
      depth[i] = depth[*best] + 1;
    }
  }
  return dictionary;
}

// Compresses every unique image, in parallel: each job depends only on raw bytes, so the result
// is the same whatever the thread count or timing.
Result<std::vector<StoredImage>> compress_images(const std::vector<Image>& images,
                                                 const std::vector<std::uint32_t>& duplicate_of,
                                                 const std::vector<std::uint32_t>& dictionary, const WriteOptions& options) {
  std::vector<StoredImage> stored(images.size());
  if (options.codec == Codec::None) return stored;

  struct Job {
    std::size_t image;
    bool with_dictionary;
  };
  std::vector<Job> jobs;
  for (std::size_t i = 0; i < images.size(); ++i) {
    if (duplicate_of[i] != f::kNoImage) continue;
    jobs.push_back({i, false});
    if (dictionary[i] != f::kNoImage) jobs.push_back({i, true});
  }
  std::vector<std::optional<Result<Bytes>>> results(jobs.size());
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t job = next++; job < jobs.size(); job = next++) {
      const Image& image = images[jobs[job].image];
      const ByteView prefix = jobs[job].with_dictionary ? ByteView(images[dictionary[jobs[job].image]].bytes) : ByteView();
      results[job] = options.codec == Codec::Lz4 ? lz4_compress(image.bytes) : zstd_compress(image.bytes, prefix, options.level);
    }
  };
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t thread_count = std::min<std::size_t>(options.threads ? options.threads : cores, jobs.size());
  std::vector<std::jthread> threads;
  for (std::size_t t = 1; t < thread_count; ++t) threads.emplace_back(work);
  work();
  threads.clear();  // joins

  // Keep the smallest of: the raw bytes, the codec alone, zstd primed with the dictionary.
  for (std::size_t job = 0; job < jobs.size(); ++job) {
    Result<Bytes>& result = *results[job];
    if (!result) return result.error();
    StoredImage& choice = stored[jobs[job].image];
    const std::size_t best = choice.codec == f::kCodecNone ? images[jobs[job].image].bytes.size() : choice.bytes.size();
    if (result->size() < best) {
      choice.codec = static_cast<std::uint16_t>(options.codec);
      choice.dictionary = jobs[job].with_dictionary ? dictionary[jobs[job].image] : f::kNoImage;
      choice.bytes = std::move(*result);
    }
  }
  return stored;
}

// The kernel index section's bytes (bundle_format.hpp: IndexHead, entries, sets, candidates).
Bytes encode_kernel_index(const KernelIndex& index, const StringTable& strings) {
  const std::size_t sets = index.first_candidate.size() - 1;
  Bytes bytes(f::kIndexHeadSize + index.names.size() * f::kIndexEntrySize + sets * f::kCandidateSetSize +
              index.candidates.size() * f::kCandidateSize);
  f::encode(f::IndexHead{static_cast<std::uint32_t>(sets), static_cast<std::uint32_t>(index.candidates.size())}, bytes.data());
  std::uint8_t* at = bytes.data() + f::kIndexHeadSize;
  for (std::size_t k = 0; k < index.names.size(); ++k, at += f::kIndexEntrySize) {
    f::encode(f::IndexEntry{strings.first_ref(index.names[k]), index.set_of[k]}, at);
  }
  for (std::size_t set = 0; set < sets; ++set, at += f::kCandidateSetSize) {
    f::encode(f::CandidateSet{index.first_candidate[set], index.first_candidate[set + 1] - index.first_candidate[set]}, at);
  }
  for (std::uint32_t image : index.candidates) {
    f::store_le<std::uint32_t>(at, image);
    at += f::kCandidateSize;
  }
  return bytes;
}

}  // namespace

Result<Bytes> write_bundle(const std::vector<Image>& images, const BundleMetadata& metadata, const WriteOptions& options) {
  if (options.codec != Codec::None && options.codec != Codec::Zstd && options.codec != Codec::Lz4) {
    return writer_error("codec " + std::to_string(static_cast<int>(options.codec)) + " is not none, zstd or lz4");
  }
  if (options.codec == Codec::Zstd && (options.level < ZSTD_minCLevel() || options.level > ZSTD_maxCLevel())) {
    return writer_error("zstd level " + std::to_string(options.level) + " is outside " + std::to_string(ZSTD_minCLevel()) +
                        ".." + std::to_string(ZSTD_maxCLevel()));
  }
  if (auto valid = check_images(images); !valid) return valid.error();
  auto pairs = final_metadata(metadata);
  if (!pairs) return pairs.error();

  // Identical images are stored once: later copies name the first.
  std::vector<std::uint64_t> hashes(images.size());
  std::vector<std::uint32_t> duplicate_of(images.size(), f::kNoImage);
  std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> by_hash;
  for (std::uint32_t i = 0; i < images.size(); ++i) {
    hashes[i] = checksum64(images[i].bytes);
    auto& same_hash = by_hash[hashes[i]];
    for (std::uint32_t j : same_hash) {
      if (images[j].bytes == images[i].bytes) {
        duplicate_of[i] = j;
        break;
      }
    }
    if (duplicate_of[i] == f::kNoImage) same_hash.push_back(i);
  }

  // Zstd only: an lz4 image decodes on its own, which keeps the fast codec simple and fast.
  const std::vector<std::uint32_t> dictionary =
      options.dictionaries && options.codec == Codec::Zstd ? plan_dictionaries(images, duplicate_of, std::min<unsigned>(options.max_dictionary_depth, f::kMaxDictionaryDepth))
                                                           : std::vector<std::uint32_t>(images.size(), f::kNoImage);
  auto stored = compress_images(images, duplicate_of, dictionary, options);
  if (!stored) return stored.error();

  StringTable strings;
  f::Header header{};
  std::copy(f::kMagic.begin(), f::kMagic.end(), header.magic);
  header.header_size = f::kHeaderSize;
  header.image_count = static_cast<std::uint32_t>(images.size());
  header.entry_size = f::kEntrySize;
  header.metadata_count = static_cast<std::uint32_t>(pairs->size());
  header.metadata_first_ref = 0;
  for (const auto& [key, value] : *pairs) {
    strings.ref(key);
    strings.ref(value);
  }
  std::vector<f::Entry> entries(images.size());
  for (std::size_t i = 0; i < images.size(); ++i) {
    f::Entry& entry = entries[i];
    entry.kind = kind_to_disk(images[i].target.kind);
    entry.arch_variant = variant_to_disk(images[i].target.arch.variant);
    entry.arch_major = static_cast<std::uint8_t>(images[i].target.arch.cc.major);
    entry.arch_minor = static_cast<std::uint8_t>(images[i].target.arch.cc.minor);
    entry.duplicate_of = duplicate_of[i];
    entry.dictionary = (*stored)[i].dictionary;
    entry.codec = duplicate_of[i] == f::kNoImage ? (*stored)[i].codec : f::kCodecNone;
    entry.raw_size = images[i].bytes.size();
    entry.content_hash = hashes[i];
    entry.names_first_ref = strings.list(images[i].kernels);
    entry.names_count = static_cast<std::uint32_t>(images[i].kernels.size());
  }
  header.format_version = f::kFormatVersion;
  if (strings.bytes().size() > std::numeric_limits<std::uint32_t>::max()) {
    return writer_error("the kernel names and metadata total more than 4 GiB");
  }
  std::vector<std::vector<std::string_view>> name_views(images.size());
  std::vector<std::span<const std::string_view>> lists(images.size());
  for (std::size_t i = 0; i < images.size(); ++i) {
    name_views[i].assign(images[i].kernels.begin(), images[i].kernels.end());
    lists[i] = name_views[i];
  }
  const std::optional<KernelIndex> index = index_kernels(lists);
  if (!index) {
    return writer_error("the images' kernel lists name more (kernel, image) pairs than a reader takes (" +
                        std::to_string(f::kMaxIndexPairs) + "); each image that lists no kernels counts for every kernel");
  }
  const Bytes index_bytes = encode_kernel_index(*index, strings);
  header.kernel_count = static_cast<std::uint32_t>(index->names.size());

  header.entries_offset = f::kHeaderSize;
  header.refs_offset = header.entries_offset + std::uint64_t{f::kEntrySize} * images.size();
  header.ref_count = static_cast<std::uint32_t>(strings.refs().size());
  header.strings_offset = header.refs_offset + std::uint64_t{f::kStringRefSize} * strings.refs().size();
  header.strings_size = strings.bytes().size();
  header.index_offset = f::align_up(header.strings_offset + header.strings_size, f::kSectionAlignment);
  header.data_offset = f::align_up(header.index_offset + index_bytes.size(), f::kImageAlignment);
  std::uint64_t data_end = header.data_offset;
  for (std::size_t i = 0; i < images.size(); ++i) {
    if (duplicate_of[i] != f::kNoImage) continue;
    const StoredImage& image = (*stored)[i];
    entries[i].data_offset = f::align_up(data_end, f::kImageAlignment);
    entries[i].stored_size = image.codec == f::kCodecNone ? images[i].bytes.size() : image.bytes.size();
    data_end = entries[i].data_offset + entries[i].stored_size;
  }
  header.data_size = data_end - header.data_offset;
  header.total_size = f::align_up(data_end, f::kBundleAlignment);

  Bytes out(header.total_size, 0);
  for (std::size_t i = 0; i < images.size(); ++i) {
    if (duplicate_of[i] != f::kNoImage) continue;
    const StoredImage& image = (*stored)[i];
    const Bytes& bytes = image.codec == f::kCodecNone ? images[i].bytes : image.bytes;
    std::copy(bytes.begin(), bytes.end(), out.begin() + static_cast<std::ptrdiff_t>(entries[i].data_offset));
    entries[i].stored_checksum = checksum64(bytes);
  }
  for (std::size_t i = 0; i < entries.size(); ++i) {
    f::encode(entries[i], out.data() + header.entries_offset + i * f::kEntrySize);
  }
  for (std::size_t i = 0; i < strings.refs().size(); ++i) {
    f::encode(strings.refs()[i], out.data() + header.refs_offset + i * f::kStringRefSize);
  }
  std::copy(strings.bytes().begin(), strings.bytes().end(), out.begin() + static_cast<std::ptrdiff_t>(header.strings_offset));
  std::copy(index_bytes.begin(), index_bytes.end(), out.begin() + static_cast<std::ptrdiff_t>(header.index_offset));

  header.tables_checksum = checksum64(ByteView(out).subspan(f::kHeaderSize, header.data_offset - f::kHeaderSize));
  header.content_checksum = checksum64(ByteView(out).subspan(f::kHeaderSize));
  header.header_checksum = 0;
  f::encode(header, out.data());
  header.header_checksum = checksum64(ByteView(out).first(f::kHeaderSize));
  f::encode(header, out.data());
  return out;
}

}  // namespace kiln
