// Bundles: many images (cubins, PTX, source) of one kernel library in one validated file.
// The on-disk layout lives in kiln/bundle_format.hpp and docs/bundle-format.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/catalog.hpp"
#include "kiln/error.hpp"
#include "kiln/hash.hpp"

namespace kiln {

// Zstd gives the smallest bundles (with dictionaries); Lz4 decodes several times faster, for
// programs that favour start-up time over size (docs/bundle-format.md has both).
enum class Codec : std::uint16_t { None = 0, Zstd = 1, Lz4 = 2 };
[[nodiscard]] const char* codec_name(Codec codec) noexcept;  // "none", "zstd", "lz4"

// One image as the compiler produces it and the runtime consumes it (bytes uncompressed).
struct Image {
  ImageTarget target;
  std::vector<std::string> kernels;  // mangled names of every __global__ in it
  Bytes bytes;
};

// Free-form key/value metadata; the writer always sets "producer" and "toolkit".
struct BundleMetadata {
  std::vector<std::pair<std::string, std::string>> entries;
  [[nodiscard]] std::optional<std::string> get(std::string_view key) const;
};

struct WriteOptions {
  Codec codec = Codec::Zstd;
  // The zstd level; lz4 is always written at LZ4HC's highest level (the cost is at build time only).
  int level = 19;
  // Let an image name a sibling (same kind and kernels, nearest architecture) as its zstd
  // dictionary. Zstd only: lz4 images never name one.
  bool dictionaries = true;
  // The longest chain image -> dictionary -> ... the writer makes: extracting an image decodes
  // its whole chain first, so this bounds the work of a start (at most depth + 1 images) at
  // some cost in size (docs/performance.md). At most the format's kMaxDictionaryDepth.
  unsigned max_dictionary_depth = 2;
  // Threads compressing images at once; 0: one per core. The output does not depend on it.
  unsigned threads = 0;
};

// Serializes images into a bundle of format version 4 (with its kernel index). Identical images
// are stored once. Deterministic: the same images, metadata and options give byte-identical output.
[[nodiscard]] Result<Bytes> write_bundle(const std::vector<Image>& images, const BundleMetadata& metadata,
                                         const WriteOptions& options = {});

// What the table says about one image, validated but not yet decompressed.
struct ImageInfo {
  ImageTarget target;
  Codec codec = Codec::None;
  std::uint64_t raw_size = 0;
  std::uint64_t stored_size = 0;  // 0 for an image that shares the bytes of an identical one
  std::uint64_t content_hash = 0; // checksum64 of the raw bytes
  // Mangled names, viewing the bundle's string table: valid while a Bundle with this state
  // lives (and the bytes it was opened from). Views, so that opening a bundle of many kernels
  // and architectures copies no name (identical lists share one run of the table).
  std::span<const std::string_view> kernels;
  // A copy of `kernels` (mangled names): for an Image to write, or a caller that outlives the Bundle.
  [[nodiscard]] std::vector<std::string> mangled_kernels() const { return {kernels.begin(), kernels.end()}; }
  std::optional<std::size_t> duplicate_of;  // the earlier identical image whose bytes this one shares
  std::optional<std::size_t> dictionary;    // the earlier image whose raw bytes prime this one's zstd frame
};

// Every kernel of a bundle once, sorted by mangled name, with its candidates: the images that list
// it and those that list no kernels (which may hold any), in bundle order. Kernels with the same
// candidates (one source file's) share a candidate set. Version 4 bundles carry the index, so
// open() only checks and decodes it; for older ones open() works it out from the lists.
struct KernelIndex {
  std::vector<std::string_view> names;         // sorted, distinct; views of the bundle's string table
  std::vector<std::uint32_t> set_of;           // each kernel's candidate set
  std::vector<std::uint32_t> first_candidate;  // set s: candidates[first_candidate[s], first_candidate[s + 1])
  std::vector<std::uint32_t> candidates;       // image numbers

  [[nodiscard]] std::span<const std::uint32_t> candidates_of(std::size_t kernel) const {
    const std::uint32_t set = set_of[kernel];
    return std::span<const std::uint32_t>(candidates).subspan(first_candidate[set], first_candidate[set + 1] - first_candidate[set]);
  }
  [[nodiscard]] std::optional<std::size_t> find(std::string_view mangled) const;  // a binary search
  friend bool operator==(const KernelIndex&, const KernelIndex&) = default;
};

// How much of a bundle open() reads to check it. Every header field, table entry, offset and
// size is checked either way; the difference is what the checksums cover at open.
enum class OpenCheck {
  // The header, the tables and every byte after them (content_checksum): what tools do.
  WholeFile,
  // The header and the tables (tables_checksum) only; each image is still checked against its own
  // checksums when it is extracted. What the runtime does, so that a start reads what it uses,
  // not every image of every architecture. Version 1 bundles have no tables checksum: for them
  // this is WholeFile.
  TablesThenImagesOnUse,
};

// A validated bundle. open() checks every header field, offset and size before anything is
// used; extract() bounds decompression by the declared raw size and verifies the content hash.
class Bundle {
 public:
  // `bytes` must outlive the Bundle (embedded bundles are static data, so nothing is copied).
  [[nodiscard]] static Result<Bundle> open(ByteView bytes, std::string name = "bundle",
                                           OpenCheck check = OpenCheck::WholeFile);
  [[nodiscard]] static Result<Bundle> open_file(const std::filesystem::path& path,
                                                OpenCheck check = OpenCheck::WholeFile);

  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] std::uint32_t format_version() const noexcept;
  [[nodiscard]] const BundleMetadata& metadata() const noexcept;
  [[nodiscard]] const std::vector<ImageInfo>& images() const noexcept;
  [[nodiscard]] const KernelIndex& kernel_index() const noexcept;
  [[nodiscard]] std::vector<ImageTarget> targets() const;
  [[nodiscard]] std::uint64_t file_size() const noexcept;

  // The image's raw bytes: its dictionary chain is decoded from the root down.
  [[nodiscard]] Result<Bytes> extract(std::size_t index) const;
  // The same for a caller that keeps the images it extracted, so that a chain is decoded once
  // rather than once per image: `dictionary` is the raw bytes of the image named by
  // images()[owner].dictionary, where owner is images()[index].duplicate_of or else index
  // (empty where it names none). A wrong dictionary fails the content-hash check or the decode, and the
  // error then says the image is damaged: the bundle cannot tell a caller's wrong dictionary from damage.
  [[nodiscard]] Result<Bytes> extract(std::size_t index, ByteView dictionary) const;

 private:
  struct State;
  std::shared_ptr<const State> state_;
};

}  // namespace kiln
