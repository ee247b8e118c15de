// Fuzz target: any bytes given to Bundle::open, then every image extracted. A malformed bundle
// must give an Error, never a crash, a hang, an out-of-bounds read or an unbounded allocation;
// whatever opens and extracts must be self-consistent and survive a rewrite.
//
// Input: one mode byte, then the bundle. Mode bit 0 re-seals the checksums first, so that the
// fuzzer's mutations reach the structural checks rather than all dying at "checksum mismatch";
// bit 1 then leaves each image's stored-bytes checksum as it is, to reach that check too. Bit 2
// opens as the runtime does (OpenCheck::TablesThenImagesOnUse), so that damage behind the tables
// reaches extract().
#include <cstdio>
#include <cstdlib>

#include "bundle_seal.hpp"
#include "kiln/bundle.hpp"

namespace {

// Keeps executions fast: extracting an image declared this large is left to the unit tests
// (decompression bombs), which also show the reader refuses anything over 1 GiB.
constexpr std::uint64_t kLargestExtracted = std::uint64_t{16} << 20;

void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_bundle: invariant broken: %s\n", what);
    std::abort();
  }
}

void require_bundle_error(const kiln::Error& error) {
  require(error.component == kiln::Component::Bundle, "a reader error comes from the bundle component");
  require(!error.message.empty() && !error.hint.empty(), "a reader error says what failed and what to do");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  kiln::Bytes bytes(data + 1, data + size);
  if (data[0] & 1) kiln::testing::seal(bytes, {.image_checksums = (data[0] & 2) == 0});

  const kiln::OpenCheck check = (data[0] & 4) ? kiln::OpenCheck::TablesThenImagesOnUse : kiln::OpenCheck::WholeFile;
  auto bundle = kiln::Bundle::open(bytes, "fuzz.kiln", check);
  if (!bundle) {
    require_bundle_error(bundle.error());
    return 0;
  }
  if (check == kiln::OpenCheck::WholeFile) {
    require(kiln::Bundle::open(bytes, "fuzz.kiln", kiln::OpenCheck::TablesThenImagesOnUse).ok(),
            "a bundle that opens whole opens by its tables too");
  }
  require(bundle->file_size() <= bytes.size() && bundle->file_size() % 8 == 0, "the bundle lies within the input");
  require(bundle->targets().size() == bundle->images().size(), "one target per image");
  const kiln::KernelIndex& index = bundle->kernel_index();
  require(index.set_of.size() == index.names.size() && !index.first_candidate.empty() &&
              index.first_candidate.back() == index.candidates.size(),
          "the kernel index gives every kernel a set and covers its candidates");
  for (std::size_t kernel = 0; kernel < index.names.size(); ++kernel) {
    require(index.find(index.names[kernel]) == kernel, "the kernel index finds each of its names where it is");
    require(index.set_of[kernel] + 1 < index.first_candidate.size(), "a kernel's candidate set is one of the index's");
    for (std::uint32_t image : index.candidates_of(kernel)) {
      require(image < bundle->images().size(), "a kernel's candidates are images of the bundle");
    }
  }

  std::vector<kiln::Image> images;
  bool all_extracted = true;
  for (std::size_t i = 0; i < bundle->images().size(); ++i) {
    const kiln::ImageInfo& info = bundle->images()[i];
    if (info.raw_size > kLargestExtracted) {
      all_extracted = false;
      continue;
    }
    auto raw = bundle->extract(i);
    if (!raw) {
      require_bundle_error(raw.error());
      all_extracted = false;
      continue;
    }
    require(raw->size() == info.raw_size, "an extracted image has its declared size");
    require(kiln::checksum64(*raw) == info.content_hash, "an extracted image has its declared hash");
    images.push_back(kiln::Image{info.target, info.mangled_kernels(), std::move(*raw)});
  }
  require(!bundle->extract(bundle->images().size()).ok(), "an index past the end is an error");
  if (!all_extracted) return 0;

  // What was read must write and read back the same.
  auto rewritten = kiln::write_bundle(images, bundle->metadata(), kiln::WriteOptions{.level = 1, .threads = 1});
  require(rewritten.ok(), "a bundle that reads also writes");
  auto reread = kiln::Bundle::open(*rewritten);
  require(reread.ok(), "a rewritten bundle opens");
  require(reread->images().size() == images.size(), "a rewritten bundle keeps every image");
  for (std::size_t i = 0; i < images.size(); ++i) {
    auto raw = reread->extract(i);
    require(raw.ok() && *raw == images[i].bytes, "a rewritten bundle extracts the same bytes");
    require(reread->images()[i].target == images[i].target, "a rewritten bundle keeps targets");
    require(reread->images()[i].mangled_kernels() == images[i].kernels, "a rewritten bundle keeps kernel names");
  }
  if (check == kiln::OpenCheck::WholeFile) {
    require(reread->kernel_index() == index, "a rewritten bundle has the kernel index that was checked against the lists");
  }
  return 0;
}
