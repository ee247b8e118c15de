// Bundle writer and reader: round trips, deduplication, dictionary chains, determinism, and a
// rejection with a specific message for every way the bytes can be wrong.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include "fuzz/bundle_seal.hpp"
#include "kiln/bundle.hpp"
#include "kiln/bundle_format.hpp"
#include "unit/child_process.hpp"
#include "unit/temp_directory.hpp"

namespace kiln {
namespace {

namespace f = format;

Image make_image(ImageKind kind, Arch arch, Bytes bytes, std::vector<std::string> kernels = {}) {
  return Image{ImageTarget{kind, arch}, std::move(kernels), std::move(bytes)};
}
Arch sm(int major, int minor, ArchVariant variant = ArchVariant::Plain) { return Arch{{major, minor}, variant}; }

// Bytes that compress somewhat, like machine code: runs of a small alphabet with random breaks.
Bytes code_like(std::mt19937_64& random, std::size_t size) {
  Bytes bytes(size);
  std::uniform_int_distribution<int> alphabet(0, 15);
  std::uniform_int_distribution<int> any(0, 255);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(i % 7 == 0 ? any(random) : alphabet(random) * 16);
  return bytes;
}

// A sibling architecture's image: the same bytes with a few changes, as sm_86 is to sm_80.
Bytes mutated(std::mt19937_64& random, Bytes bytes, std::size_t changes) {
  std::uniform_int_distribution<std::size_t> where(0, bytes.size() - 1);
  for (std::size_t i = 0; i < changes; ++i) bytes[where(random)] ^= 0x5A;
  return bytes;
}

Bytes text_bytes(std::string_view text) { return Bytes(text.begin(), text.end()); }

// A small bundle that uses every feature: dictionary, duplicate, every kind, variants, metadata.
std::vector<Image> feature_images() {
  std::mt19937_64 random(42);
  const Bytes base = code_like(random, 3000);
  const Bytes sibling = mutated(random, base, 20);
  const std::vector<std::string> kernels = {"_Z10add_kernelIfEvPKT_S2_PS0_i", "_Z10sum_kernelIfEvPKT_Pfi"};
  return {
      make_image(ImageKind::Cubin, sm(8, 0), base, kernels),
      make_image(ImageKind::Cubin, sm(8, 6), sibling, kernels),
      make_image(ImageKind::Cubin, sm(8, 9), sibling, kernels),  // identical to sm_86: stored once
      make_image(ImageKind::Cubin, sm(9, 0, ArchVariant::Specific), mutated(random, base, 40), {"_Z4wgmmav"}),
      make_image(ImageKind::Ptx, sm(10, 0, ArchVariant::Family), text_bytes(".version 9.0\n.target sm_100f\n"), kernels),
      make_image(ImageKind::Source, Arch{}, text_bytes("__global__ void add_kernel() {}\n"), kernels),
  };
}

BundleMetadata feature_metadata() { return BundleMetadata{{{"toolkit", "CUDA 13.0"}, {"project", "kiln tests"}}}; }

Bytes feature_bundle() {
  auto bytes = write_bundle(feature_images(), feature_metadata());
  EXPECT_TRUE(bytes.ok()) << bytes.error().describe();
  return std::move(bytes).value();
}

void expect_same_images(const Bundle& bundle, const std::vector<Image>& images) {
  ASSERT_EQ(bundle.images().size(), images.size());
  for (std::size_t i = 0; i < images.size(); ++i) {
    const ImageInfo& info = bundle.images()[i];
    EXPECT_EQ(info.target, images[i].target) << "image " << i;
    EXPECT_EQ(info.mangled_kernels(), images[i].kernels) << "image " << i;
    EXPECT_EQ(info.raw_size, images[i].bytes.size()) << "image " << i;
    EXPECT_EQ(info.content_hash, checksum64(images[i].bytes)) << "image " << i;
    auto bytes = bundle.extract(i);
    ASSERT_TRUE(bytes.ok()) << "image " << i << ": " << bytes.error().describe();
    EXPECT_EQ(*bytes, images[i].bytes) << "image " << i;
  }
}

// --- Editing a written bundle: decode a record, change it, encode it back, re-seal the checksums. ---

f::Header header_of(const Bytes& bytes) { return f::decode<f::Header>(bytes.data()); }

// Recomputes the header checksum alone, so that a check behind it sees the edit.
void reseal_header(Bytes& bytes) {
  f::Header header = header_of(bytes);
  header.header_checksum = 0;
  f::encode(header, bytes.data());
  header.header_checksum = checksum64(ByteView(bytes).first(f::kHeaderSize));
  f::encode(header, bytes.data());
}

Bytes with_header(Bytes bytes, const std::function<void(f::Header&)>& edit, bool seal = true) {
  f::Header header = header_of(bytes);
  edit(header);
  f::encode(header, bytes.data());
  if (seal) testing::seal(bytes);
  return bytes;
}

// The same bundle told it is an older version: the fields that version reserved are zeroed (the
// kernel index's bytes stay, as padding that reader skips).
Bytes as_version(Bytes bytes, std::uint32_t version) {
  return with_header(std::move(bytes), [&](f::Header& h) {
    h.format_version = version;
    if (version < f::kFirstVersionWithKernelIndex) {
      h.kernel_count = 0;
      h.index_offset = 0;
    }
    if (version < f::kFirstVersionWithTablesChecksum) h.tables_checksum = 0;
  });
}

std::size_t entry_at(const Bytes& bytes, std::size_t index) {
  return header_of(bytes).entries_offset + index * f::kEntrySize;
}

f::Entry entry_of(const Bytes& bytes, std::size_t index) { return f::decode<f::Entry>(bytes.data() + entry_at(bytes, index)); }

Bytes with_entry(Bytes bytes, std::size_t index, const std::function<void(f::Entry&)>& edit,
                 testing::SealOptions seal = {}) {
  f::Entry entry = entry_of(bytes, index);
  edit(entry);
  f::encode(entry, bytes.data() + entry_at(bytes, index));
  testing::seal(bytes, seal);
  return bytes;
}

Bytes with_ref(Bytes bytes, std::size_t index, const std::function<void(f::StringRef&)>& edit) {
  const std::size_t at = header_of(bytes).refs_offset + index * f::kStringRefSize;
  f::StringRef ref = f::decode<f::StringRef>(bytes.data() + at);
  edit(ref);
  f::encode(ref, bytes.data() + at);
  testing::seal(bytes);
  return bytes;
}

std::string open_error(const Bytes& bytes) {
  auto bundle = Bundle::open(bytes, "test.kiln");
  if (bundle.ok()) return "(opened)";
  EXPECT_EQ(bundle.error().component, Component::Bundle);
  EXPECT_EQ(bundle.error().context, "test.kiln");
  EXPECT_FALSE(bundle.error().hint.empty());
  return bundle.error().message;
}

std::string extract_error(const Bytes& bytes, std::size_t index) {
  auto bundle = Bundle::open(bytes, "test.kiln");
  if (!bundle.ok()) return "(not opened) " + bundle.error().message;
  auto image = bundle->extract(index);
  if (image.ok()) return "(extracted)";
  EXPECT_EQ(image.error().component, Component::Bundle);
  EXPECT_FALSE(image.error().hint.empty());
  return image.error().message;
}

#define EXPECT_MESSAGE(text, part)                                                          \
  do {                                                                                     \
    const std::string message_ = (text);                                                   \
    EXPECT_NE(message_.find(part), std::string::npos) << "message: " << message_;           \
  } while (false)

// A message with its numbers (decimal, 0x hex, [byte list]) blanked: one line per check in the
// corruption summaries.
std::string check_of(const std::string& message) {
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  auto is_hex = [&](char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); };
  std::string check;
  for (std::size_t i = 0; i < message.size();) {
    if (message.compare(i, 2, "0x") == 0) {
      for (i += 2; i < message.size() && is_hex(message[i]);) ++i;
    } else if (is_digit(message[i])) {
      while (i < message.size() && is_digit(message[i])) ++i;
    } else if (message[i] == '[') {
      i = std::min(message.find(']', i), message.size() - 1) + 1;
    } else {
      check += message[i++];
      continue;
    }
    check += '#';
  }
  return check;
}

// =============================================================================================
// Round trips
// =============================================================================================

TEST(Bundle, RoundTripsEveryFeature) {
  const std::vector<Image> images = feature_images();
  const Bytes bytes = feature_bundle();
  auto bundle = Bundle::open(bytes, "features.kiln");
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  EXPECT_EQ(bundle->name(), "features.kiln");
  EXPECT_EQ(bundle->format_version(), f::kFormatVersion);
  EXPECT_EQ(bundle->file_size(), bytes.size());
  EXPECT_EQ(bytes.size() % f::kBundleAlignment, 0u);
  expect_same_images(*bundle, images);

  EXPECT_EQ(bundle->metadata().get("toolkit"), "CUDA 13.0");
  EXPECT_EQ(bundle->metadata().get("project"), "kiln tests");
  ASSERT_TRUE(bundle->metadata().get("producer").has_value());
  EXPECT_TRUE(bundle->metadata().get("producer")->starts_with("kiln ")) << *bundle->metadata().get("producer");
  EXPECT_EQ(bundle->metadata().entries.front().first, "producer");

  const std::vector<ImageTarget> targets = bundle->targets();
  ASSERT_EQ(targets.size(), images.size());
  for (std::size_t i = 0; i < images.size(); ++i) EXPECT_EQ(targets[i], images[i].target);
}

TEST(Bundle, RandomizedRoundTrips) {
  const std::vector<Arch> archs = {sm(7, 5), sm(8, 0), sm(8, 6), sm(8, 9), sm(9, 0), sm(9, 0, ArchVariant::Specific),
                                   sm(10, 0), sm(10, 0, ArchVariant::Family), sm(12, 0)};
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 random(seed);
    auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(random); };
    std::vector<Image> images;
    const std::size_t count = pick(9);
    for (std::size_t i = 0; i < count; ++i) {
      const auto kind = static_cast<ImageKind>(pick(3));
      const Arch arch = kind == ImageKind::Source ? Arch{} : archs[pick(archs.size())];
      Bytes bytes;
      switch (images.empty() ? 0 : pick(4)) {
        case 0: bytes = code_like(random, 1 + pick(20000)); break;
        case 1: bytes = mutated(random, images[pick(images.size())].bytes, pick(50)); break;  // a sibling
        case 2: bytes = images[pick(images.size())].bytes; break;                             // a duplicate
        default: {
          bytes.resize(1 + pick(3000));  // incompressible: stored raw
          for (auto& byte : bytes) byte = static_cast<std::uint8_t>(random());
        }
      }
      std::vector<std::string> kernels;
      for (std::size_t k = pick(4); k > 0; --k) kernels.push_back("_Z" + std::to_string(pick(100)) + "kernel");
      images.push_back(make_image(kind, arch, std::move(bytes), std::move(kernels)));
    }
    BundleMetadata metadata;
    for (std::size_t m = pick(4); m > 0; --m) metadata.entries.emplace_back("key" + std::to_string(m), std::string(pick(40), 'v'));
    WriteOptions options;
    options.codec = std::array{Codec::None, Codec::Zstd, Codec::Zstd, Codec::Lz4}[pick(4)];
    options.level = std::array{1, 3, 19}[pick(3)];
    options.dictionaries = pick(3) != 0;
    options.threads = static_cast<unsigned>(pick(4));

    auto bytes = write_bundle(images, metadata, options);
    ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
    auto bundle = Bundle::open(*bytes);
    ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
    expect_same_images(*bundle, images);
    for (const auto& [key, value] : metadata.entries) EXPECT_EQ(bundle->metadata().get(key), value);
    for (const ImageInfo& info : bundle->images()) {
      if (options.codec == Codec::None) {
        EXPECT_EQ(info.codec, Codec::None);
      }
      if (!options.dictionaries || options.codec != Codec::Zstd) {
        EXPECT_FALSE(info.dictionary.has_value());
      }
      if (info.codec != Codec::None) {
        EXPECT_EQ(info.codec, options.codec);
      }
    }
  }
}

TEST(Bundle, EmptyBundleRoundTrips) {
  auto bytes = write_bundle({}, {});
  ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
  auto bundle = Bundle::open(*bytes);
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  EXPECT_TRUE(bundle->images().empty());
  EXPECT_TRUE(bundle->metadata().get("producer").has_value());
  EXPECT_TRUE(bundle->metadata().get("toolkit").has_value());
  EXPECT_MESSAGE(bundle->extract(0).error().message, "out of range");
}

TEST(Bundle, DefaultConstructedBundleIsEmpty) {
  const Bundle bundle;
  EXPECT_TRUE(bundle.images().empty());
  EXPECT_EQ(bundle.file_size(), 0u);
  EXPECT_FALSE(bundle.extract(0).ok());
}

TEST(Bundle, IdenticalImagesAreStoredOnce) {
  std::mt19937_64 random(7);
  const Bytes bytes = code_like(random, 50000);
  const Bytes other = code_like(random, 50000);
  auto twice = write_bundle({make_image(ImageKind::Cubin, sm(8, 0), bytes), make_image(ImageKind::Cubin, sm(8, 6), bytes)}, {});
  auto distinct = write_bundle({make_image(ImageKind::Cubin, sm(8, 0), bytes), make_image(ImageKind::Cubin, sm(8, 6), other)},
                               {}, WriteOptions{.dictionaries = false});
  ASSERT_TRUE(twice.ok() && distinct.ok());
  auto bundle = Bundle::open(*twice);
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  const ImageInfo& copy = bundle->images()[1];
  EXPECT_EQ(copy.duplicate_of, 0u);
  EXPECT_EQ(copy.stored_size, 0u);
  EXPECT_EQ(copy.codec, Codec::Zstd);  // how the shared bytes are stored
  EXPECT_LT(twice->size() + bundle->images()[0].stored_size / 2, distinct->size());
  EXPECT_EQ(*bundle->extract(0), bytes);
  EXPECT_EQ(*bundle->extract(1), bytes);
}

TEST(Bundle, SiblingsUseTheNearestLowerArchitectureAsDictionary) {
  std::mt19937_64 random(11);
  const Bytes sm80 = code_like(random, 40000);
  const Bytes sm86 = mutated(random, sm80, 100);
  const Bytes sm90 = mutated(random, sm86, 100);
  const Bytes ptx = text_bytes(std::string(5000, 'p'));
  // Out of order on purpose: each image may only name an earlier one.
  const std::vector<Image> images = {
      make_image(ImageKind::Cubin, sm(8, 6), sm86), make_image(ImageKind::Ptx, sm(8, 0), ptx),
      make_image(ImageKind::Cubin, sm(8, 0), sm80), make_image(ImageKind::Cubin, sm(9, 0), sm90)};
  auto chained = write_bundle(images, {});
  auto alone = write_bundle(images, {}, WriteOptions{.dictionaries = false});
  ASSERT_TRUE(chained.ok() && alone.ok());
  auto bundle = Bundle::open(*chained);
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  EXPECT_FALSE(bundle->images()[0].dictionary.has_value());  // nothing earlier
  EXPECT_FALSE(bundle->images()[1].dictionary.has_value());  // no other PTX: kinds never mix
  EXPECT_EQ(bundle->images()[2].dictionary, 0u);             // sm_80 <- sm_86, the only earlier cubin
  EXPECT_EQ(bundle->images()[3].dictionary, 0u);             // sm_90 <- sm_86, nearer than sm_80
  expect_same_images(*bundle, images);
  EXPECT_LT(chained->size() * 3, alone->size() * 2) << "chained " << chained->size() << ", alone " << alone->size();
}

// Two sources in one bundle: each source's sm_80 cubin is primed by its own sm_75 cubin, which
// holds the same kernels, not by the other source's sm_80 cubin, which is nearer in architecture.
TEST(Bundle, ImagesOfTheSameKernelsPrimeEachOtherBeforeANearerArchitecture) {
  std::mt19937_64 random(5);
  const Bytes layernorm75 = code_like(random, 30000);
  const Bytes layernorm80 = mutated(random, layernorm75, 60);
  const Bytes elementwise80 = code_like(random, 30000);
  const std::vector<Image> images = {
      make_image(ImageKind::Cubin, sm(7, 5), layernorm75, {"layernorm"}),
      make_image(ImageKind::Cubin, sm(8, 0), elementwise80, {"add", "mul"}),
      make_image(ImageKind::Cubin, sm(8, 0), layernorm80, {"layernorm"})};
  auto written = write_bundle(images, {});
  ASSERT_TRUE(written.ok()) << written.error().describe();
  auto bundle = Bundle::open(*written);
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  EXPECT_EQ(bundle->images()[2].dictionary, 0u);
  EXPECT_LT(bundle->images()[2].stored_size * 4, bundle->images()[0].stored_size);
  expect_same_images(*bundle, images);
}

TEST(Bundle, DictionaryChainsStayWithinTheReadersDepthLimit) {
  std::mt19937_64 random(3);
  std::vector<Image> images;
  Bytes bytes = code_like(random, 4000);
  for (int i = 0; i < 40; ++i) {  // sm_10, sm_11, ... sm_49: each one's nearest lower is the one before
    bytes = mutated(random, bytes, 3);
    images.push_back(make_image(ImageKind::Cubin, sm(1 + i / 10, i % 10), bytes, {"k" + std::to_string(i)}));
  }
  // The writer's default keeps chains short (a start decodes a whole chain); asked for more, it
  // still stops at the reader's limit.
  for (const auto& [asked, expected] : {std::pair{WriteOptions{}.max_dictionary_depth, WriteOptions{}.max_dictionary_depth},
                                        std::pair{100u, f::kMaxDictionaryDepth}}) {
    auto written = write_bundle(images, {}, WriteOptions{.max_dictionary_depth = asked});
    ASSERT_TRUE(written.ok());
    auto bundle = Bundle::open(*written);
    ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
    std::size_t longest = 0;
    for (std::size_t i = 0; i < images.size(); ++i) {
      std::size_t depth = 0;
      for (auto link = bundle->images()[i].dictionary; link; link = bundle->images()[*link].dictionary) ++depth;
      longest = std::max(longest, depth);
    }
    EXPECT_EQ(longest, expected) << "asked for " << asked;
    expect_same_images(*bundle, images);
  }
}

TEST(Bundle, WriterIsDeterministic) {
  const std::vector<Image> images = feature_images();
  auto first = write_bundle(images, feature_metadata(), WriteOptions{.threads = 1});
  auto second = write_bundle(images, feature_metadata(), WriteOptions{.threads = 4});
  auto third = write_bundle(images, feature_metadata());
  ASSERT_TRUE(first.ok() && second.ok() && third.ok());
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(*first, *third);
}

TEST(Bundle, LayoutIsAlignedAndPadded) {
  const Bytes bytes = feature_bundle();
  const f::Header header = header_of(bytes);
  EXPECT_TRUE(std::equal(f::kMagic.begin(), f::kMagic.end(), bytes.begin()));
  EXPECT_EQ(header.header_size, f::kHeaderSize);
  EXPECT_EQ(header.total_size, bytes.size());
  EXPECT_EQ(header.data_offset % f::kImageAlignment, 0u);
  for (std::size_t i = 0; i < header.image_count; ++i) {
    const f::Entry entry = entry_of(bytes, i);
    if (entry.duplicate_of == f::kNoImage) {
      EXPECT_EQ(entry.data_offset % f::kImageAlignment, 0u) << "image " << i;
    }
  }
  // Little-endian whatever the host: the version's low byte comes first.
  EXPECT_EQ(bytes[8], f::kFormatVersion);
  EXPECT_EQ(bytes[11], 0);
}

TEST(Bundle, ConcatenatedBundlesOpenOneAfterAnother) {
  Bytes both = feature_bundle();
  auto second = write_bundle({make_image(ImageKind::Ptx, sm(7, 5), text_bytes("ptx"))}, {});
  ASSERT_TRUE(second.ok());
  both.insert(both.end(), second->begin(), second->end());
  auto first_bundle = Bundle::open(both);
  ASSERT_TRUE(first_bundle.ok()) << first_bundle.error().describe();
  EXPECT_EQ(first_bundle->images().size(), feature_images().size());
  auto second_bundle = Bundle::open(ByteView(both).subspan(first_bundle->file_size()));
  ASSERT_TRUE(second_bundle.ok()) << second_bundle.error().describe();
  EXPECT_EQ(*second_bundle->extract(0), text_bytes("ptx"));
}

TEST(Bundle, OpenFileReadsAndReportsMissingFiles) {
  const std::filesystem::path path = std::filesystem::path(::testing::TempDir()) / "kiln-test-bundle.kiln";
  const Bytes bytes = feature_bundle();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  auto bundle = Bundle::open_file(path);
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  EXPECT_EQ(bundle->name(), path.string());
  expect_same_images(*bundle, feature_images());
  std::filesystem::remove(path);
  auto missing = Bundle::open_file(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().component, Component::Io);
  EXPECT_EQ(missing.error().context, path.string());
}

void write_bytes(const std::filesystem::path& path, ByteView bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}


bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

TEST(BundleFile, ADirectoryIsRefusedAsADirectory) {
  TempDirectory temp;
  for (const std::filesystem::path& path : {temp.root(), temp.root() / "ops.kiln"}) {
    std::filesystem::create_directories(path);
    auto bundle = Bundle::open_file(path);
    ASSERT_FALSE(bundle.ok()) << path;
    EXPECT_EQ(bundle.error().component, Component::Io);
    EXPECT_EQ(bundle.error().context, path.string());
    EXPECT_MESSAGE(bundle.error().message, "is a directory");
  }
}

TEST(BundleFile, AFifoIsRefusedWithoutWaitingForAWriter) {
  TempDirectory temp;
  const std::filesystem::path fifo = temp.root() / "ops.kiln";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // In a child, so that an open() waiting for a writer that never comes fails the test.
  const int status = exit_status_in_child([&]() {
    auto bundle = Bundle::open_file(fifo);
    if (bundle.ok()) return 1;
    if (bundle.error().component != Component::Io) return 2;
    if (!contains(bundle.error().message, "not a regular file")) return 3;
    return 0;
  }, std::chrono::seconds(10));
  EXPECT_EQ(status, 0) << "-1: open_file waited on the FIFO; 1: it opened; 2: not an I/O error; 3: the message "
                          "does not say 'not a regular file'";
}

TEST(BundleFile, AHugeSparseFileThatIsNotABundleIsRefusedFromItsHead) {
  TempDirectory temp;
  const std::filesystem::path path = temp.root() / "huge.kiln";
  write_bytes(path, text_bytes("\x7f" "ELF and a terabyte of holes"));
  if (::truncate(path.c_str(), std::int64_t{1} << 40) != 0) GTEST_SKIP() << "this file system has no 1 TiB sparse files";
  // In a child with its address space capped: reading the whole file first would need 1 TiB.
  const int status = exit_status_in_child([&]() {
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    const rlimit cap{rlim_t{16} << 30, rlim_t{16} << 30};
    if (::setrlimit(RLIMIT_AS, &cap) != 0) return 10;
#endif
    auto bundle = Bundle::open_file(path);
    if (bundle.ok()) return 1;
    if (!contains(bundle.error().message, "not a kiln bundle: it starts with [7f 45 4c 46")) return 2;
    return 0;
  });
  EXPECT_EQ(status, 0) << "101: it threw (bad_alloc?); 1: it opened; 2: not the not-a-bundle error; -1: it did not finish";
}

TEST(BundleFile, ShortAndTruncatedFilesGetTheReadersMessages) {
  TempDirectory temp;
  const Bytes bytes = feature_bundle();
  const auto error_of = [&](ByteView contents) {
    const std::filesystem::path path = temp.root() / "cut.kiln";
    write_bytes(path, contents);
    auto bundle = Bundle::open_file(path);
    return bundle.ok() ? std::string("(opened)") : bundle.error().message;
  };
  EXPECT_MESSAGE(error_of({}), "0 bytes, shorter than the 128-byte bundle header");
  EXPECT_MESSAGE(error_of(ByteView(bytes).first(40)), "shorter than the 128-byte bundle header");
  EXPECT_MESSAGE(error_of(ByteView(bytes).first(200)), "the header says the bundle is " + std::to_string(bytes.size()) +
                                                           " bytes but only 200");
  EXPECT_MESSAGE(error_of(text_bytes("KIL")), "shorter than the 128-byte bundle header");
  // The whole file opens, whatever its size relative to the header read first.
  const std::filesystem::path path = temp.root() / "ops.kiln";
  write_bytes(path, bytes);
  auto bundle = Bundle::open_file(path);
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  expect_same_images(*bundle, feature_images());
  EXPECT_EQ(bundle->metadata().get("project"), "kiln tests");
}

TEST(Bundle, ExtractIsSafeFromManyThreads) {
  const Bytes bytes = feature_bundle();
  auto bundle = Bundle::open(bytes);
  ASSERT_TRUE(bundle.ok());
  const std::vector<Image> images = feature_images();
  std::atomic<int> failures{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 20; ++round) {
        for (std::size_t i = 0; i < images.size(); ++i) {
          auto image = bundle->extract(i);
          if (!image.ok() || *image != images[i].bytes) ++failures;
        }
      }
    });
  }
  threads.clear();
  EXPECT_EQ(failures.load(), 0);
}

// =============================================================================================
// The writer refuses what it cannot store faithfully
// =============================================================================================

TEST(BundleWriter, RejectsBadInput) {
  auto message = [](std::vector<Image> images, BundleMetadata metadata = {}, WriteOptions options = {}) {
    auto bytes = write_bundle(images, metadata, options);
    EXPECT_FALSE(bytes.ok());
    if (bytes.ok()) return std::string();
    EXPECT_EQ(bytes.error().component, Component::Bundle);
    return bytes.error().message;
  };
  const Bytes some = text_bytes("some bytes");
  EXPECT_MESSAGE(message({make_image(ImageKind::Cubin, sm(8, 0), {})}), "image 0 (sm_80) is empty");
  EXPECT_MESSAGE(message({make_image(ImageKind::Source, sm(8, 0), some)}), "source images have none");
  EXPECT_MESSAGE(message({make_image(ImageKind::Cubin, sm(0, 0), some)}), "outside major 1-99");
  EXPECT_MESSAGE(message({make_image(ImageKind::Cubin, sm(8, 10), some)}), "outside major 1-99");
  EXPECT_MESSAGE(message({make_image(ImageKind::Cubin, sm(8, 0), some, {""})}), "kernel name 0 is empty");
  EXPECT_MESSAGE(message({make_image(ImageKind::Cubin, sm(8, 0), some, {std::string("a\0b", 3)})}), "NUL");
  EXPECT_MESSAGE(message({}, BundleMetadata{{{"", "x"}}}), "key is empty");
  EXPECT_MESSAGE(message({}, BundleMetadata{{{"k", "1"}, {"k", "2"}}}), "'k' appears twice");
  EXPECT_MESSAGE(message({}, BundleMetadata{{{"k", std::string("\0", 1)}}}), "NUL");
  EXPECT_MESSAGE(message({}, {}, WriteOptions{.level = 99}), "zstd level 99");
  EXPECT_MESSAGE(message({}, {}, WriteOptions{.codec = static_cast<Codec>(7)}), "codec 7");
}

TEST(BundleWriter, RejectsMoreKernelNamesThanTheReaderAccepts) {
  std::vector<std::string> names(2000, std::string(10, 'k'));
  std::vector<Image> images(f::kMaxNameReferences / names.size() + 1,
                            make_image(ImageKind::Ptx, sm(8, 0), text_bytes("ptx"), names));
  auto bytes = write_bundle(images, {});
  ASSERT_FALSE(bytes.ok());
  EXPECT_MESSAGE(bytes.error().message, "more than a bundle holds");
}

TEST(BundleWriter, RefusesMetadataOverTheReadersLimit) {
  // producer and toolkit given, so that every byte is counted here: keys and values together.
  const auto metadata_of = [](std::size_t value_bytes) {
    return BundleMetadata{{{"producer", "p"}, {"toolkit", "t"}, {"big", std::string(value_bytes, 'x')}}};
  };
  const std::uint64_t others = std::string("producer").size() + 1 + std::string("toolkit").size() + 1 + 3;
  auto at_limit = write_bundle({}, metadata_of(f::kMaxMetadataBytes - others));
  ASSERT_TRUE(at_limit.ok()) << at_limit.error().describe();
  auto read_back = Bundle::open(*at_limit);
  ASSERT_TRUE(read_back.ok()) << read_back.error().describe();  // kiln never writes what it cannot read
  EXPECT_EQ(read_back->metadata().get("big")->size(), f::kMaxMetadataBytes - others);

  auto over = write_bundle({}, metadata_of(f::kMaxMetadataBytes - others + 1));
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().component, Component::Bundle);
  EXPECT_MESSAGE(over.error().message, "total " + std::to_string(f::kMaxMetadataBytes + 1) + " bytes");
  EXPECT_MESSAGE(over.error().message, "more than a reader accepts (1048576 bytes)");

  // Equal values are stored once, but the reader copies each: they count once per key.
  BundleMetadata shared;
  for (int i = 0; i < 20; ++i) shared.entries.emplace_back("key" + std::to_string(i), std::string(100 << 10, 'v'));
  auto written = write_bundle({}, shared);
  ASSERT_FALSE(written.ok());
  EXPECT_MESSAGE(written.error().message, "more than a reader accepts");
}

// =============================================================================================
// Corruption: every byte, every length, every field
// =============================================================================================

TEST(BundleReader, EveryFlippedByteIsRejected) {
  const Bytes original = feature_bundle();
  std::map<std::string, int> reasons;
  for (std::size_t at = 0; at < original.size(); ++at) {
    for (std::uint8_t flip : {0x01, 0x80, 0xFF}) {
      Bytes bytes = original;
      bytes[at] ^= flip;
      auto bundle = Bundle::open(bytes, "test.kiln");
      ASSERT_FALSE(bundle.ok()) << "byte " << at << " ^ " << int(flip) << " went unnoticed";
      EXPECT_EQ(bundle.error().component, Component::Bundle);
      reasons[check_of(bundle.error().message)]++;
    }
  }
  for (const auto& [reason, count] : reasons) std::printf("  %6d x %s\n", count, reason.c_str());
}

// With the checksums re-sealed, a flipped byte in the header, table or strings must still be
// caught by a structural check, or else leave every image extracting to its true bytes.
TEST(BundleReader, EveryFlippedTableByteBehindValidChecksumsIsCaughtOrHarmless) {
  const Bytes original = feature_bundle();
  const std::vector<Image> images = feature_images();
  const std::uint64_t table_end = header_of(original).data_offset;
  std::map<std::string, int> reasons;
  for (std::size_t at = 0; at < table_end; ++at) {
    for (std::uint8_t flip : {0x01, 0x10, 0x80, 0xFF}) {
      Bytes bytes = original;
      bytes[at] ^= flip;
      testing::seal(bytes, {.image_checksums = false});
      auto bundle = Bundle::open(bytes, "test.kiln");
      std::string reason;
      if (!bundle.ok()) {
        reason = "open: " + bundle.error().message;
      } else {
        ASSERT_EQ(bundle->images().size(), images.size()) << "byte " << at;
        for (std::size_t i = 0; i < images.size(); ++i) {
          auto image = bundle->extract(i);
          if (image.ok()) {
            EXPECT_EQ(*image, images[i].bytes) << "byte " << at << " ^ " << int(flip) << ": image " << i << " changed";
          } else if (reason.empty()) {
            reason = "extract: " + image.error().message;
          }
        }
        if (reason.empty()) reason = "harmless (a name, target or metadata changed)";
      }
      reasons[check_of(reason)]++;
    }
  }
  for (const auto& [reason, count] : reasons) std::printf("  %6d x %s\n", count, reason.c_str());
  EXPECT_GE(reasons.size(), 20u) << "the checks should name many different problems";
}

TEST(BundleReader, EveryTruncationIsRejected) {
  const Bytes bytes = feature_bundle();
  const f::Header header = header_of(bytes);
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    const std::string message = open_error(Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size)));
    if (size < f::kHeaderSize) {
      EXPECT_MESSAGE(message, "shorter than the 128-byte bundle header");
    } else {
      EXPECT_MESSAGE(message, "only " + std::to_string(size) + " byte");
    }
  }
  // At each section boundary the message names both sizes.
  for (std::uint64_t boundary : {header.entries_offset, header.refs_offset, header.strings_offset, header.data_offset}) {
    EXPECT_MESSAGE(open_error(Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(boundary))),
                   "the header says the bundle is " + std::to_string(bytes.size()) + " bytes but only " +
                       std::to_string(boundary));
  }
}

TEST(BundleReader, RejectsWhatIsNotABundle) {
  EXPECT_MESSAGE(open_error(text_bytes("\x7f" "ELF and so on")), "not a kiln bundle: it starts with [7f 45 4c 46");
  EXPECT_MESSAGE(open_error(text_bytes("KILN")), "shorter than the 128-byte bundle header");
  EXPECT_MESSAGE(open_error({}), "0 bytes, shorter than");
}

TEST(BundleReader, RejectsEachBadHeaderField) {
  const Bytes bytes = feature_bundle();
  const f::Header good = header_of(bytes);
  auto header_error = [&](const std::function<void(f::Header&)>& edit) { return open_error(with_header(bytes, edit)); };

  EXPECT_MESSAGE(header_error([](f::Header& h) { h.magic[7] = 'X'; }), "not a kiln bundle");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.format_version = f::kFormatVersion + 1; }),
                 "format version " + std::to_string(f::kFormatVersion + 1) + " is newer than this reader");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.format_version = 0; }), "format version 0 does not exist");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.header_size = 136; }), "header size 136 is not the 128 bytes");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.total_size -= 4; }), "is not a multiple of 8");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.total_size = 64; }), "total size 64");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.total_size += 8; }), "but only");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.total_size = ~std::uint64_t{7}; }), "but only");
  EXPECT_MESSAGE(open_error(with_header(bytes, [](f::Header& h) { h.header_checksum ^= 1; }, false)),
                 "header checksum");
  Bytes content_changed = bytes;
  content_changed.back() ^= 1;  // padding: covered by the content checksum all the same
  reseal_header(content_changed);
  EXPECT_MESSAGE(open_error(content_changed), "content checksum");
  // Versions 1 to 3 reserved the bytes that version 4 gives the kernel index.
  for (const std::function<void(f::Header&)>& index_field :
       {std::function<void(f::Header&)>([](f::Header& h) { h.kernel_count = 0; }),
        std::function<void(f::Header&)>([](f::Header& h) { h.index_offset = 0; })}) {
    EXPECT_MESSAGE(header_error([&](f::Header& h) {
                     h.format_version = 3;
                     index_field(h);
                   }),
                   "reserved header bytes are not zero");
  }
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.index_offset = h.total_size; }), "kernel index at 0x");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.index_offset += 4; }), "kernel index offset 0x");
  EXPECT_MESSAGE(header_error([&](f::Header& h) { h.index_offset = good.refs_offset; }), "kernel index offset");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.kernel_count += 100; }), "image data offset");
  // Version 1 reserved the bytes that version 2 gives the tables checksum.
  EXPECT_MESSAGE(open_error(with_header(as_version(bytes, 1), [](f::Header& h) { h.tables_checksum = 1; })),
                 "reserved header bytes are not zero");
  Bytes tables_checksum_wrong = with_header(bytes, [](f::Header& h) { h.tables_checksum ^= 1; }, false);
  reseal_header(tables_checksum_wrong);
  EXPECT_MESSAGE(open_error(tables_checksum_wrong), "tables checksum");
  EXPECT_MESSAGE(header_error([&](f::Header& h) { h.data_offset = h.total_size + 64; }),
                 "image data offset 0x");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.entry_size = 72; }), "entry size 72 is not the 64 bytes");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.image_count = 0xFFFFFFFF; }), "reader's limit");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.image_count += 1; }), "string refs offset");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.entries_offset = 120; }), "entry table offset 0x78 overlaps the header");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.entries_offset += 4; }), "entry table offset 0x84 is not a multiple of 8");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.refs_offset = ~std::uint64_t{7}; }), "runs past the end of the bundle");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.ref_count = 0xFFFFFFFF; }), "string refs at");
  EXPECT_MESSAGE(header_error([&](f::Header& h) { h.strings_offset = good.refs_offset; }), "string bytes offset");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.strings_size = ~std::uint64_t{0}; }), "runs past the end");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.data_offset += 8; }), "image data offset");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.data_size += 64; }), "image data at");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.data_size = 0; }), "lies outside the image data area");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.metadata_count = 1000; }), "metadata: refs 0 + 2000 run past");
  EXPECT_MESSAGE(header_error([](f::Header& h) { h.metadata_first_ref = 0xFFFFFFFF; }), "metadata: refs");
}

// =============================================================================================
// The kernel index (format version 4)
// =============================================================================================

f::IndexHead index_head_of(const Bytes& bytes) { return f::decode<f::IndexHead>(bytes.data() + header_of(bytes).index_offset); }
std::size_t index_entry_at(const Bytes& bytes, std::size_t kernel) {
  return header_of(bytes).index_offset + f::kIndexHeadSize + kernel * f::kIndexEntrySize;
}
std::size_t candidate_set_at(const Bytes& bytes, std::size_t set) {
  return index_entry_at(bytes, header_of(bytes).kernel_count) + set * f::kCandidateSetSize;
}
std::size_t candidate_at(const Bytes& bytes, std::size_t candidate) {
  return candidate_set_at(bytes, index_head_of(bytes).set_count) + candidate * f::kCandidateSize;
}

// The bundle with the record at `at` edited, checksums resealed.
template <class Record>
Bytes with_record(Bytes bytes, std::size_t at, const std::function<void(Record&)>& edit) {
  Record record = f::decode<Record>(bytes.data() + at);
  edit(record);
  f::encode(record, bytes.data() + at);
  testing::seal(bytes);
  return bytes;
}
Bytes with_index_entry(const Bytes& bytes, std::size_t kernel, const std::function<void(f::IndexEntry&)>& edit) {
  return with_record(bytes, index_entry_at(bytes, kernel), edit);
}
Bytes with_candidate_set(const Bytes& bytes, std::size_t set, const std::function<void(f::CandidateSet&)>& edit) {
  return with_record(bytes, candidate_set_at(bytes, set), edit);
}

Bytes with_candidate(Bytes bytes, std::size_t candidate, std::uint32_t image) {
  f::store_le<std::uint32_t>(bytes.data() + candidate_at(bytes, candidate), image);
  testing::seal(bytes);
  return bytes;
}

std::vector<std::vector<std::uint32_t>> candidates_by_kernel(const KernelIndex& index) {
  std::vector<std::vector<std::uint32_t>> all;
  for (std::size_t kernel = 0; kernel < index.names.size(); ++kernel) {
    const auto candidates = index.candidates_of(kernel);
    all.emplace_back(candidates.begin(), candidates.end());
  }
  return all;
}

TEST(BundleIndex, ListsEachKernelOnceWithTheImagesThatMayHoldIt) {
  std::vector<Image> images = feature_images();
  images.push_back(make_image(ImageKind::Cubin, sm(12, 0), text_bytes("a cubin whose kernels are not known"), {}));
  auto bytes = write_bundle(images, feature_metadata());
  ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
  EXPECT_EQ(header_of(*bytes).kernel_count, 3u);
  auto bundle = Bundle::open(*bytes, "index.kiln");
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();

  const KernelIndex& index = bundle->kernel_index();
  const std::vector<std::string_view> names = {"_Z10add_kernelIfEvPKT_S2_PS0_i", "_Z10sum_kernelIfEvPKT_Pfi", "_Z4wgmmav"};
  EXPECT_EQ(index.names, names);
  // Image 6 lists no kernels, so it may hold any; image 3 holds only wgmma.
  const std::vector<std::vector<std::uint32_t>> candidates = {{0, 1, 2, 4, 5, 6}, {0, 1, 2, 4, 5, 6}, {3, 6}};
  EXPECT_EQ(candidates_by_kernel(index), candidates);
  // The two kernels of one source share a set: the index stores it once.
  EXPECT_EQ(index.set_of, (std::vector<std::uint32_t>{0, 0, 1}));
  EXPECT_EQ(index_head_of(*bytes).set_count, 2u);
  EXPECT_EQ(index_head_of(*bytes).candidate_count, 8u);
  EXPECT_EQ(index.find("_Z10sum_kernelIfEvPKT_Pfi"), std::optional<std::size_t>(1));
  EXPECT_EQ(index.find("_Z4wgmmav"), std::optional<std::size_t>(2));
  EXPECT_EQ(index.find("_Z4wgmma"), std::nullopt);  // a prefix of a name is not the name
  EXPECT_EQ(index.find("_Z4wgmmavv"), std::nullopt);
  EXPECT_EQ(index.find(""), std::nullopt);
}

TEST(BundleIndex, OlderVersionsGetTheSameIndexFromTheirLists) {
  const Bytes v4 = feature_bundle();
  const Bytes v3 = as_version(v4, 3);
  auto new_bundle = Bundle::open(v4, "v4.kiln");
  auto old_bundle = Bundle::open(v3, "v3.kiln");
  ASSERT_TRUE(new_bundle.ok() && old_bundle.ok()) << old_bundle.error().describe();
  EXPECT_EQ(old_bundle->format_version(), 3u);
  EXPECT_EQ(old_bundle->kernel_index(), new_bundle->kernel_index());
  EXPECT_EQ(old_bundle->kernel_index().names.size(), 3u);
}

// Every image that lists no kernels may hold each kernel, so an index worked out from the lists
// has (kernels x such images) pairs before kernels share sets: bounded, before anything is spelled
// out, in the writer and in the reader of a bundle from before the index.
TEST(BundleIndex, PairsOfKernelsAndImagesThatListNoneAreBounded) {
  std::vector<std::string> many;
  for (int k = 0; k < 4097; ++k) many.push_back("_Z1k" + std::to_string(k));
  std::vector<Image> images = {make_image(ImageKind::Cubin, sm(8, 0), text_bytes("lists many"), many)};
  for (int i = 0; i < 4096; ++i) {
    images.push_back(make_image(ImageKind::Cubin, sm(9, 0), text_bytes("image " + std::to_string(i)), {"_Z1k0"}));
  }
  auto listed = write_bundle(images, {}, WriteOptions{.codec = Codec::None});
  ASSERT_TRUE(listed.ok()) << listed.error().describe();  // 4,097 + 4,096 pairs
  ASSERT_GT(std::uint64_t{4096} * 4097, f::kMaxIndexPairs);

  std::vector<Image> unlisted = images;
  for (std::size_t i = 1; i < unlisted.size(); ++i) unlisted[i].kernels.clear();
  auto refused = write_bundle(unlisted, {}, WriteOptions{.codec = Codec::None});
  ASSERT_FALSE(refused.ok());
  EXPECT_MESSAGE(refused.error().message, "(kernel, image) pairs than a reader takes");

  // The same as a version 3 bundle, which carries no index: the reader refuses to spell it out.
  Bytes old = *listed;
  for (std::size_t i = 1; i < images.size(); ++i) {
    f::Entry entry = entry_of(old, i);
    entry.names_first_ref = 0;
    entry.names_count = 0;
    f::encode(entry, old.data() + entry_at(old, i));
  }
  old = as_version(std::move(old), 3);
  EXPECT_MESSAGE(open_error(old), "kernel lists name more (kernel, image) pairs than the reader's limit");
  // kiln wrote such bundles before format 4: the error counts the images that list no kernels and
  // asks for a rebuild from the sources, not a file damaged after it was written.
  Result<Bundle> refused_old = Bundle::open(old);
  ASSERT_FALSE(refused_old.ok());
  EXPECT_MESSAGE(refused_old.error().message, std::to_string(images.size() - 1) + " images list no kernels");
  EXPECT_MESSAGE(refused_old.error().hint, "rebuild the bundle from its sources");
}

TEST(BundleReader, RejectsEachBadKernelIndexEntry) {
  // The feature bundle's index: add_kernel and sum_kernel share set 0 (images 0 1 2 4 5), wgmma
  // has set 1 (image 3).
  const Bytes bytes = feature_bundle();
  auto entry_error = [&](std::size_t kernel, const std::function<void(f::IndexEntry&)>& edit) {
    return open_error(with_index_entry(bytes, kernel, edit));
  };
  EXPECT_MESSAGE(entry_error(0, [](f::IndexEntry& e) { e.name_ref = 0xFFFFFFFF; }), "kernel index entry 0: its name, string ref 4294967295");
  EXPECT_MESSAGE(entry_error(2, [&](f::IndexEntry& e) {
                   e.name_ref = f::decode<f::IndexEntry>(bytes.data() + index_entry_at(bytes, 0)).name_ref;
                 }),
                 "kernel index entry 2 (_Z10add_kernelIfEvPKT_S2_PS0_i) does not sort after the entry before it");
  EXPECT_MESSAGE(entry_error(1, [](f::IndexEntry& e) { e.set = 2; }), "kernel index entry 1 (_Z10sum_kernelIfEvPKT_Pfi): candidate set 2 is past the index's 2");
  EXPECT_MESSAGE(open_error(with_candidate_set(bytes, 1, [](f::CandidateSet& c) { c.first_candidate += 1; })),
                 "kernel index candidate set 1: candidates 6 + 1 do not follow the set before it's (which end at 5)");
  EXPECT_MESSAGE(open_error(with_candidate_set(bytes, 1, [](f::CandidateSet& c) { c.candidates = 0xFFFFFFFF; })),
                 "kernel index candidate set 1: candidates");
  EXPECT_MESSAGE(open_error(with_candidate_set(bytes, 1, [](f::CandidateSet& c) { c.candidates = 0; })),
                 "its candidate sets use 5 of its 6 candidates");
  EXPECT_MESSAGE(open_error(with_candidate(bytes, 5, 6)), "kernel index candidate set 1: image 6 is not an image or not after the one before it");
  EXPECT_MESSAGE(open_error(with_candidate(bytes, 1, 0)), "kernel index candidate set 0: image 0 is not an image or not after the one before it");

  // Well formed but not what the lists say (add_kernel's set holding image 3, which lists only
  // wgmma): tools check that, and the runtime, which reads only the tables, finds that image's
  // module without the kernel when it asks the driver.
  const Bytes inconsistent = with_candidate(bytes, 3, 3);
  EXPECT_MESSAGE(open_error(inconsistent), "the kernel index does not match the images' lists of kernel names");
  EXPECT_TRUE(Bundle::open(inconsistent, "test.kiln", OpenCheck::TablesThenImagesOnUse).ok());
}

TEST(BundleReader, RejectsEachBadStringRef) {
  const Bytes bytes = feature_bundle();
  const f::Header header = header_of(bytes);
  EXPECT_MESSAGE(open_error(with_ref(bytes, 0, [&](f::StringRef& r) { r.offset = static_cast<std::uint32_t>(header.strings_size); })),
                 "string ref 0 (offset");
  EXPECT_MESSAGE(open_error(with_ref(bytes, 0, [](f::StringRef& r) { r.length = 0xFFFFFFFF; })), "runs past the string bytes");
  EXPECT_MESSAGE(open_error(with_ref(bytes, 0, [](f::StringRef& r) { r.length -= 1; })), "string ref 0 is not followed by a NUL");
  // Point "producer"'s value at "producer" too, then at a key again: a duplicate key.
  EXPECT_MESSAGE(open_error(with_ref(bytes, 2, [](f::StringRef& r) { r = {0, 8}; })), "'producer' appears twice");
  // A key made empty: point it at the NUL that ends "producer".
  EXPECT_MESSAGE(open_error(with_ref(bytes, 0, [](f::StringRef& r) { r = {8, 0}; })), "metadata entry 0 has an empty key");
  // A key that swallows its NUL and its value ("producer\0kiln ..."), up to the value's NUL.
  const auto value = f::decode<f::StringRef>(bytes.data() + header.refs_offset + f::kStringRefSize);
  Bytes swallowing = with_ref(bytes, 0, [&](f::StringRef& r) { r.length = value.offset + value.length; });
  EXPECT_MESSAGE(open_error(swallowing), "string ref 0 contains a NUL byte");
}

TEST(BundleReader, RejectsEachBadEntryField) {
  const Bytes bytes = feature_bundle();
  // feature_images(): 0 sm_80, 1 sm_86 (dictionary 0), 2 sm_89 (duplicate of 1), 3 sm_90a, 4 ptx, 5 source.
  ASSERT_EQ(entry_of(bytes, 1).dictionary, 0u);
  ASSERT_EQ(entry_of(bytes, 2).duplicate_of, 1u);
  auto entry_error = [&](std::size_t index, const std::function<void(f::Entry&)>& edit) {
    return open_error(with_entry(bytes, index, edit));
  };
  const f::Header header = header_of(bytes);
  const f::Entry first = entry_of(bytes, 0);

  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.kind = 7; }), "image 0: kind 7 is not cubin (0), ptx (1) or source (2)");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.arch_variant = 3; }), "image 0: architecture variant 3");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.arch_major = 0; }), "image 0: architecture 0.0 is not a compute capability");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.arch_major = 100; }), "architecture 100.0");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.arch_minor = 10; }), "architecture 8.10");
  EXPECT_MESSAGE(entry_error(5, [](f::Entry& e) { e.arch_major = 8; }), "image 5: a source image has an architecture");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.reserved0 = 1; }), "image 0 (sm_80): reserved entry bytes");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.codec = 9; }), "image 0 (sm_80): codec 9 is not none (0), zstd (1) or lz4 (2)");
  // A new codec would come with a new format version: in a known version it is damage, not news.
  Result<Bundle> unknown_codec = Bundle::open(with_entry(bytes, 0, [](f::Entry& e) { e.codec = 9; }));
  ASSERT_FALSE(unknown_codec.ok());
  EXPECT_EQ(unknown_codec.error().hint.find("upgrade"), std::string::npos) << unknown_codec.error().hint;
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.raw_size = 0; }), "raw size 0 is not between 1 byte");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.raw_size = f::kMaxImageRawSize + 1; }), "reader's limit of 1073741824 bytes");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.raw_size = e.stored_size * f::kZstdMaxExpansion + 1; }),
                 "cannot come from");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.stored_size = 0; }), "image 0 (sm_80): stored size is 0");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.data_offset += 8; }), "is not a multiple of 64");
  EXPECT_MESSAGE(entry_error(0, [&](f::Entry& e) { e.data_offset = header.data_offset - 64; }),
                 "lies outside the image data area");
  EXPECT_MESSAGE(entry_error(0, [&](f::Entry& e) { e.stored_size = header.data_size + 1; }),
                 "lies outside the image data area");
  // Offsets near 2^64 must not wrap around into range.
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.data_offset = ~std::uint64_t{63}; }), "lies outside the image data area");
  EXPECT_MESSAGE(entry_error(0, [](f::Entry& e) { e.stored_size = ~std::uint64_t{0}; }), "lies outside the image data area");
  EXPECT_MESSAGE(entry_error(1, [&](f::Entry& e) { e.data_offset = first.data_offset; }),
                 "image 1: stored bytes at " );
  EXPECT_MESSAGE(entry_error(1, [&](f::Entry& e) { e.data_offset = first.data_offset; }), "overlap those of image 0");
  EXPECT_MESSAGE(entry_error(5, [](f::Entry& e) { e.codec = f::kCodecNone; e.raw_size = e.stored_size + 1; }),
                 "differs from raw size");
  EXPECT_MESSAGE(entry_error(5, [](f::Entry& e) { e.codec = f::kCodecNone; e.raw_size = e.stored_size; e.dictionary = 0; }),
                 "stored uncompressed, yet names image 0 as its dictionary");
  EXPECT_MESSAGE(entry_error(1, [](f::Entry& e) { e.dictionary = 1; }), "dictionary image 1 is not an earlier image");
  EXPECT_MESSAGE(entry_error(1, [](f::Entry& e) { e.dictionary = 4; }), "dictionary image 4 is not an earlier image");
  EXPECT_MESSAGE(entry_error(3, [](f::Entry& e) { e.dictionary = 2; }), "dictionary image 2 is a duplicate");
  EXPECT_MESSAGE(entry_error(2, [](f::Entry& e) { e.duplicate_of = 2; }), "duplicate of image 2, which is not an earlier image");
  EXPECT_MESSAGE(entry_error(2, [](f::Entry& e) { e.duplicate_of = 0xFFFFFFF0; }), "which is not an earlier image");
  EXPECT_MESSAGE(entry_error(2, [](f::Entry& e) { e.codec = 1; }), "a duplicate must have zero codec");
  EXPECT_MESSAGE(entry_error(2, [](f::Entry& e) { e.dictionary = 0; }), "a duplicate must have zero codec");
  EXPECT_MESSAGE(entry_error(2, [](f::Entry& e) { e.stored_size = 8; }), "a duplicate must have zero codec");
  EXPECT_MESSAGE(entry_error(2, [](f::Entry& e) { e.raw_size += 1; }), "its raw size or content hash differs");
  EXPECT_MESSAGE(entry_error(2, [](f::Entry& e) { e.content_hash += 1; }), "its raw size or content hash differs");
  EXPECT_MESSAGE(entry_error(2, [](f::Entry& e) { e.duplicate_of = 0; }), "its raw size or content hash differs");
  EXPECT_MESSAGE(entry_error(0, [&](f::Entry& e) { e.names_first_ref = header.ref_count; }),
                 "image 0 (sm_80) kernel names: refs");
  EXPECT_MESSAGE(entry_error(0, [&](f::Entry& e) { e.names_count = 0xFFFFFFFF; }), "run past the");
}

TEST(BundleReader, RejectsDuplicatesOfDuplicates) {
  const Bytes some = text_bytes("same bytes");
  auto written = write_bundle({make_image(ImageKind::Ptx, sm(8, 0), some), make_image(ImageKind::Ptx, sm(8, 6), some),
                               make_image(ImageKind::Ptx, sm(8, 9), some)},
                              {});
  ASSERT_TRUE(written.ok());
  EXPECT_MESSAGE(open_error(with_entry(*written, 2, [](f::Entry& e) { e.duplicate_of = 1; })),
                 "duplicate of image 1, itself a duplicate");
}

TEST(BundleReader, RejectsEmptyKernelNames) {
  auto written = write_bundle({make_image(ImageKind::Ptx, sm(8, 0), text_bytes("ptx"), {"k"})}, BundleMetadata{{{"empty", ""}}});
  ASSERT_TRUE(written.ok());
  // Refs: producer, value, toolkit, value, "empty", "" (ref 5), then the kernel name.
  EXPECT_MESSAGE(open_error(with_entry(*written, 0, [](f::Entry& e) { e.names_first_ref = 5; })),
                 "kernel name 0 is empty");
}

TEST(BundleReader, RejectsDictionaryChainsLongerThanTheLimit) {
  std::vector<Image> images;
  for (std::uint32_t i = 0; i < f::kMaxDictionaryDepth + 2; ++i) {
    images.push_back(make_image(ImageKind::Ptx, sm(8, 0), text_bytes("image " + std::to_string(i) + std::string(200, 'x'))));
  }
  auto written = write_bundle(images, {}, WriteOptions{.dictionaries = false});
  ASSERT_TRUE(written.ok());
  Bytes bytes = *written;
  for (std::uint32_t i = 1; i < images.size(); ++i) {
    bytes = with_entry(bytes, i, [i](f::Entry& e) { e.dictionary = i - 1; });
  }
  EXPECT_MESSAGE(open_error(bytes), "image 17 (compute_80): its dictionary chain is longer than the reader's limit of 16");
}

TEST(BundleReader, BoundsTheKernelNamesItCopies) {
  // Shared name lists let a small file name millions of strings; the reader stops at its limit.
  const std::vector<std::string> names(300, "kernel");
  const std::vector<Image> images(1800, make_image(ImageKind::Ptx, sm(8, 0), text_bytes("ptx"), names));
  BundleMetadata metadata;  // refs that every image's list can be stretched over
  for (int i = 0; i < 300; ++i) metadata.entries.emplace_back("key" + std::to_string(i), "value");
  auto written = write_bundle(images, metadata);
  ASSERT_TRUE(written.ok()) << written.error().describe();
  Bytes bytes = *written;
  const std::uint32_t refs = header_of(bytes).ref_count;
  for (std::size_t i = 0; i < images.size(); ++i) {
    const std::size_t at = entry_at(bytes, i);
    f::Entry entry = f::decode<f::Entry>(bytes.data() + at);
    entry.names_first_ref = 0;
    entry.names_count = refs;
    f::encode(entry, bytes.data() + at);
  }
  testing::seal(bytes);
  EXPECT_MESSAGE(open_error(bytes), "exceed the reader's limit of 1048576 names");
}

// --- Refs that share string bytes: many refs into one long string ---

f::StringRef ref_of(const Bytes& bytes, std::size_t index) {
  return f::decode<f::StringRef>(bytes.data() + header_of(bytes).refs_offset + index * f::kStringRefSize);
}

// Sets a ref without re-sealing (seal once after a batch of edits).
void set_ref(Bytes& bytes, std::size_t index, f::StringRef ref) {
  f::encode(ref, bytes.data() + header_of(bytes).refs_offset + index * f::kStringRefSize);
}

// A written bundle with a long kernel name (`long_length` 'k's, then the name "short") and
// `spare_pairs` metadata pairs after producer and toolkit, which are then cut from the metadata:
// their refs, 4 to 4 + 2 * spare_pairs, stay in the table for a test to point anywhere.
struct SharedStringBundle {
  Bytes bytes;
  f::StringRef long_name;   // the long kernel name's ref
  f::StringRef short_name;  // "short", stored right after the long name's NUL
  std::uint32_t first_spare = 4;
  std::uint32_t spare_count = 0;
};

SharedStringBundle shared_string_bundle(std::size_t spare_pairs, std::size_t long_length) {
  SharedStringBundle made;
  BundleMetadata metadata;
  for (std::size_t i = 0; i < spare_pairs; ++i) {
    char key[16];
    std::snprintf(key, sizeof key, "k%05zu", i);
    metadata.entries.emplace_back(key, "v");
  }
  const std::vector<Image> images = {
      make_image(ImageKind::Ptx, sm(8, 0), text_bytes(".version 9.0"), {std::string(long_length, 'k'), "short"})};
  auto written = write_bundle(images, metadata);
  EXPECT_TRUE(written.ok()) << written.error().describe();
  if (!written.ok()) return made;
  made.bytes = *written;
  const f::Entry entry = entry_of(made.bytes, 0);
  made.long_name = ref_of(made.bytes, entry.names_first_ref);
  made.short_name = ref_of(made.bytes, entry.names_first_ref + 1);
  EXPECT_EQ(made.long_name.length, long_length);
  EXPECT_EQ(made.short_name.offset, made.long_name.offset + made.long_name.length + 1);
  made.spare_count = static_cast<std::uint32_t>(2 * spare_pairs);
  EXPECT_EQ(made.first_spare + made.spare_count, entry.names_first_ref);
  made.bytes = with_header(made.bytes, [](f::Header& h) { h.metadata_count = 2; }, false);
  return made;
}

TEST(BundleReader, RefusesMetadataThatSharesOneValueOverTheLimit) {
  // Stored once (200 KiB), the shared value is copied once per key when the bundle is read.
  BundleMetadata metadata;
  for (int i = 0; i < 20; ++i) metadata.entries.emplace_back("key" + std::to_string(i), "v" + std::to_string(i));
  metadata.entries.emplace_back("long", std::string(200 << 10, 'x'));
  auto written = write_bundle({}, metadata);
  ASSERT_TRUE(written.ok()) << written.error().describe();
  Bytes bytes = *written;
  ASSERT_TRUE(Bundle::open(bytes).ok());
  const f::Header header = header_of(bytes);
  const std::uint32_t pairs = header.metadata_count;
  ASSERT_EQ(pairs, 23u);  // producer, toolkit and ours
  const f::StringRef long_value = ref_of(bytes, header.metadata_first_ref + 2 * (pairs - 1) + 1);
  ASSERT_EQ(long_value.length, 200u << 10);
  std::uint64_t total = 0;
  for (std::uint32_t pair = 0; pair < pairs; ++pair) {
    total += ref_of(bytes, header.metadata_first_ref + 2 * pair).length + long_value.length;
    set_ref(bytes, header.metadata_first_ref + 2 * pair + 1, long_value);
  }
  testing::seal(bytes);
  ASSERT_GT(total, f::kMaxMetadataBytes);
  const std::string message = open_error(bytes);
  EXPECT_MESSAGE(message, "the metadata's keys and values total " + std::to_string(total) + " bytes");
  EXPECT_MESSAGE(message, "more than the reader's limit of 1048576 bytes");
  // Under the limit, the same sharing is only an odd file: four keys share the value.
  Bytes few = *written;
  for (std::uint32_t pair = pairs - 4; pair < pairs; ++pair) set_ref(few, header.metadata_first_ref + 2 * pair + 1, long_value);
  testing::seal(few);
  auto bundle = Bundle::open(few);
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  EXPECT_EQ(bundle->metadata().get("key19"), std::string(200 << 10, 'x'));
}

TEST(BundleReader, AcceptsRefsThatShareAndOverlapOneStringEachEndingAtItsNul) {
  SharedStringBundle made = shared_string_bundle(200, 4096);
  ASSERT_FALSE(made.bytes.empty());
  ASSERT_TRUE(Bundle::open(with_header(made.bytes, [](f::Header&) {})).ok());
  const f::StringRef whole = made.long_name;
  // Suffixes of the long name, in no order of offset, some the same: each ends at its NUL.
  for (std::uint32_t i = 0; i < made.spare_count; ++i) {
    const std::uint32_t skip = (i * 977u) % whole.length;
    set_ref(made.bytes, made.first_spare + i, {whole.offset + skip, whole.length - skip});
  }
  set_ref(made.bytes, made.first_spare, whole);
  set_ref(made.bytes, made.first_spare + 1, {whole.offset + whole.length, 0});  // the empty string at its NUL
  set_ref(made.bytes, made.first_spare + 2, made.short_name);
  testing::seal(made.bytes);
  auto bundle = Bundle::open(made.bytes, "test.kiln");
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  EXPECT_EQ(bundle->images()[0].mangled_kernels(), (std::vector<std::string>{std::string(4096, 'k'), "short"}));
  EXPECT_EQ(bundle->metadata().entries.size(), 2u);
}

TEST(BundleReader, RefusesTheLowestNumberedRefOfThoseThatShareBytesWrongly) {
  SharedStringBundle made = shared_string_bundle(30, 4096);
  ASSERT_FALSE(made.bytes.empty());
  const f::StringRef whole = made.long_name;
  for (std::uint32_t i = 0; i < made.spare_count; ++i) {
    const std::uint32_t skip = (i * 131u) % whole.length;
    set_ref(made.bytes, made.first_spare + i, {whole.offset + skip, whole.length - skip});
  }
  ASSERT_TRUE(Bundle::open(with_header(made.bytes, [](f::Header&) {})).ok());
  // Wrong refs: one stops short of its NUL; one runs over the long name's NUL into "short".
  const f::StringRef stops_short{whole.offset + 3000, whole.length - 3000 - 1};
  const f::StringRef runs_over{whole.offset + 10, whole.length - 10 + 1 + made.short_name.length};
  // A wrong ref with a lower offset than the first wrong one, at a higher number.
  const f::StringRef low_stops_short{0, 7};                   // "produce", followed by 'r'
  const f::StringRef low_runs_over{0, 8 + 1 + ref_of(made.bytes, 1).length};  // "producer\0<value>"
  ASSERT_EQ(ref_of(made.bytes, 0).length, 8u);
  const std::uint32_t a = made.first_spare + 20;
  const std::uint32_t b = made.first_spare + 40;
  const auto error_with = [&](std::vector<std::pair<std::uint32_t, f::StringRef>> edits) {
    Bytes bytes = made.bytes;
    for (const auto& [index, ref] : edits) set_ref(bytes, index, ref);
    testing::seal(bytes);
    return open_error(bytes);
  };
  EXPECT_MESSAGE(error_with({{a, stops_short}}), "string ref " + std::to_string(a) + " is not followed by a NUL");
  EXPECT_MESSAGE(error_with({{a, runs_over}}), "string ref " + std::to_string(a) + " contains a NUL byte");
  EXPECT_MESSAGE(error_with({{a, stops_short}, {b, low_runs_over}}), "string ref " + std::to_string(a) + " is not followed by a NUL");
  EXPECT_MESSAGE(error_with({{a, runs_over}, {b, low_stops_short}}), "string ref " + std::to_string(a) + " contains a NUL byte");
  EXPECT_MESSAGE(error_with({{a, runs_over}, {b, low_runs_over}}), "string ref " + std::to_string(a) + " contains a NUL byte");
  // A good ref and a wrong one at the same offset, in both orders of number.
  EXPECT_MESSAGE(error_with({{a, {whole.offset + 10, whole.length - 10}}, {b, runs_over}}),
                 "string ref " + std::to_string(b) + " contains a NUL byte");
  EXPECT_MESSAGE(error_with({{a, runs_over}, {b, {whole.offset + 10, whole.length - 10}}}),
                 "string ref " + std::to_string(a) + " contains a NUL byte");
  // A ref that starts on the long name's NUL and runs into "short".
  EXPECT_MESSAGE(error_with({{b, {whole.offset + whole.length, 1 + made.short_name.length}}}),
                 "string ref " + std::to_string(b) + " contains a NUL byte");
}

TEST(BundleReader, SixtyFiveThousandRefsToOneMebibyteStringOpen) {
  // Checked ref by ref, these would scan 64 GiB; taken in order of offset, each byte is scanned
  // once. Only the result is asserted (the refs are spare: neither metadata nor kernel names).
  constexpr std::uint32_t kRefs = 65536;
  SharedStringBundle made = shared_string_bundle(kRefs / 2, std::size_t{1} << 20);
  ASSERT_FALSE(made.bytes.empty());
  ASSERT_EQ(made.spare_count, kRefs);
  for (std::uint32_t i = 0; i < made.spare_count; ++i) set_ref(made.bytes, made.first_spare + i, made.long_name);
  testing::seal(made.bytes);
  auto bundle = Bundle::open(made.bytes, "test.kiln");
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  ASSERT_EQ(bundle->images().size(), 1u);
  EXPECT_EQ(bundle->images()[0].mangled_kernels().front().size(), std::size_t{1} << 20);
  EXPECT_EQ(bundle->metadata().entries.size(), 2u);
  auto image = bundle->extract(0);
  ASSERT_TRUE(image.ok()) << image.error().describe();
  EXPECT_EQ(*image, text_bytes(".version 9.0"));
}

// =============================================================================================
// Extraction: checksums, hashes and hostile zstd frames
// =============================================================================================

TEST(BundleReader, ExtractRejectsStoredBytesThatDoNotMatchTheirChecksum) {
  const Bytes original = feature_bundle();
  Bytes bytes = original;
  bytes[entry_of(bytes, 0).data_offset + 10] ^= 0x40;
  testing::seal(bytes, {.image_checksums = false});
  EXPECT_MESSAGE(extract_error(bytes, 0), "image 0 (sm_80): stored-bytes checksum");
  // Images that need image 0 as their dictionary fail too; the others still extract.
  EXPECT_MESSAGE(extract_error(bytes, 1), "image 0 (sm_80): stored-bytes checksum");
  EXPECT_MESSAGE(extract_error(bytes, 2), "image 0 (sm_80): stored-bytes checksum");
  EXPECT_EQ(extract_error(bytes, 4), "(extracted)");
}

// What the runtime opens with: the header and tables are checked at open, each image when extracted.
TEST(BundleReader, TablesThenImagesOnUseChecksTheTablesAtOpenAndEachImageWhenExtracted) {
  const Bytes original = feature_bundle();
  const f::Header header = header_of(original);

  Bytes damaged_image = original;
  damaged_image[entry_of(damaged_image, 4).data_offset + 3] ^= 0x40;  // no checksum resealed
  EXPECT_MESSAGE(open_error(damaged_image), "content checksum");
  auto light = Bundle::open(damaged_image, "test.kiln", OpenCheck::TablesThenImagesOnUse);
  ASSERT_TRUE(light.ok()) << light.error().describe();
  auto damaged = light->extract(4);
  ASSERT_FALSE(damaged.ok());
  EXPECT_MESSAGE(damaged.error().message, "image 4 (compute_100f): stored-bytes checksum");
  // The others extract to their true bytes, unless image 4 primes them (then they fail the same way).
  const std::vector<Image> images = feature_images();
  for (std::size_t i = 0; i < images.size(); ++i) {
    if (i == 4) continue;
    auto image = light->extract(i);
    if (image.ok()) {
      EXPECT_EQ(*image, images[i].bytes) << "image " << i;
    } else {
      EXPECT_MESSAGE(image.error().message, "image 4 (compute_100f): stored-bytes checksum");
    }
  }
  EXPECT_TRUE(light->extract(0).ok()) << "image 0 has no dictionary";

  // Every byte of the tables is covered at open, even with the content checksum resealed.
  for (std::uint64_t at = f::kHeaderSize; at < header.data_offset; ++at) {
    Bytes bytes = original;
    bytes[at] ^= 0x01;
    f::Header resealed = header_of(bytes);
    resealed.content_checksum = checksum64(ByteView(bytes).subspan(f::kHeaderSize));
    f::encode(resealed, bytes.data());
    reseal_header(bytes);
    auto opened = Bundle::open(bytes, "test.kiln", OpenCheck::TablesThenImagesOnUse);
    ASSERT_FALSE(opened.ok()) << "table byte " << at << " went unnoticed";
    EXPECT_MESSAGE(opened.error().message, "tables checksum");
  }
}

TEST(BundleReader, ExtractRejectsContentThatDoesNotMatchItsHash) {
  const Bytes original = feature_bundle();
  EXPECT_MESSAGE(extract_error(with_entry(original, 4, [](f::Entry& e) { e.content_hash ^= 1; }), 4),
                 "image 4 (compute_100f): content hash");
  // Stored bytes changed, their checksum re-sealed: the content hash still catches it.
  Bytes bytes = original;
  const f::Entry source = entry_of(bytes, 5);
  ASSERT_EQ(source.codec, f::kCodecNone);
  bytes[source.data_offset] ^= 0x01;
  testing::seal(bytes);
  EXPECT_MESSAGE(extract_error(bytes, 5), "image 5 (source): content hash");
  // The wrong dictionary: decodes to something else, or not at all.
  ASSERT_EQ(entry_of(original, 3).dictionary, 1u);
  EXPECT_NE(extract_error(with_entry(original, 3, [](f::Entry& e) { e.dictionary = 0; }), 3), "(extracted)");
}

// Hand-made zstd frames (RFC 8878), to reach the decoder with what the writer never makes.
struct Frame {
  std::optional<std::uint64_t> declared{};  // Frame_Content_Size; none: a window descriptor instead
  std::uint64_t rle_bytes = 0;            // produced by RLE blocks of 'z'
  std::uint64_t raw_bytes = 0;            // produced by one raw block first
};

Bytes zstd_frame(const Frame& frame) {
  Bytes bytes = {0x28, 0xB5, 0x2F, 0xFD};
  if (frame.declared) {
    bytes.push_back(0xE0);  // 8-byte content size, single segment
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<std::uint8_t>(*frame.declared >> (8 * i)));
  } else {
    bytes.push_back(0x00);
    bytes.push_back(10 << 3);  // window 2^20
  }
  auto block = [&](std::uint32_t type, std::uint64_t size, bool last) {
    const std::uint32_t header = (last ? 1u : 0u) | (type << 1) | static_cast<std::uint32_t>(size << 3);
    for (int i = 0; i < 3; ++i) bytes.push_back(static_cast<std::uint8_t>(header >> (8 * i)));
  };
  if (frame.raw_bytes) {
    block(0, frame.raw_bytes, frame.rle_bytes == 0);
    bytes.insert(bytes.end(), frame.raw_bytes, 'r');
  }
  for (std::uint64_t left = frame.rle_bytes; left > 0;) {
    const std::uint64_t size = std::min<std::uint64_t>(left, 128 << 10);
    left -= size;
    block(1, size, left == 0);
    bytes.push_back('z');
  }
  if (!frame.raw_bytes && !frame.rle_bytes) block(0, 0, true);
  return bytes;
}

// A one-image bundle whose stored bytes are `stored`, declared as `codec` (zstd unless named) with
// `raw_size` raw bytes, in the oldest version that has the codec.
Bytes bundle_storing(const Bytes& stored, std::uint64_t raw_size, std::uint16_t codec = f::kCodecZstd) {
  auto written = write_bundle({make_image(ImageKind::Cubin, sm(8, 0), stored)}, {}, WriteOptions{.codec = Codec::None});
  EXPECT_TRUE(written.ok());
  Bytes bytes = with_entry(*written, 0, [&](f::Entry& e) {
    e.codec = codec;
    e.raw_size = raw_size;
  });
  return bytes;
}

TEST(BundleReader, HandMadeFramesDecodeWhenHonest) {
  // The frame helper itself: an honest frame must extract.
  const Bytes bytes = bundle_storing(zstd_frame({.declared = 300000, .rle_bytes = 300000}), 300000);
  auto bundle = Bundle::open(bytes);
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  // The content hash was the stored bytes'; fix it to the raw bytes' to see a full success.
  const Bytes fixed = with_entry(bytes, 0, [](f::Entry& e) { e.content_hash = checksum64(Bytes(300000, 'z')); });
  auto image = Bundle::open(fixed)->extract(0);
  ASSERT_TRUE(image.ok()) << image.error().describe();
  EXPECT_EQ(*image, Bytes(300000, 'z'));
}

TEST(BundleReader, DecompressionBombsAreBoundedByTheDeclaredSize) {
  // Declared small, inflates to 64 MiB: stops at the declared 1000 bytes.
  EXPECT_MESSAGE(extract_error(bundle_storing(zstd_frame({.declared = 1000, .rle_bytes = 64 << 20}), 1000), 0),
                 "zstd decompression failed");
  // The frame says 64 MiB, the entry 1000 bytes: refused before anything is allocated.
  EXPECT_MESSAGE(extract_error(bundle_storing(zstd_frame({.declared = 64 << 20, .rle_bytes = 64 << 20}), 1000), 0),
                 "the zstd frame declares 67108864 bytes, the entry 1000 raw bytes");
  // Declared huge, but too few stored bytes to ever make it: refused at open.
  EXPECT_MESSAGE(open_error(bundle_storing(zstd_frame({.declared = 1 << 30, .rle_bytes = 100}), 1 << 30)),
                 "raw size 1073741824 cannot come from");
  // Declared over the reader's limit.
  EXPECT_MESSAGE(open_error(bundle_storing(zstd_frame({.declared = 1 << 30, .rle_bytes = 100}), (1ull << 30) + 1)),
                 "reader's limit");
  // Declared 64 MiB (plausible for its stored size), but the frame ends long before.
  EXPECT_MESSAGE(extract_error(bundle_storing(zstd_frame({.declared = 64 << 20, .raw_bytes = 4096}), 64 << 20), 0),
                 "zstd decompression failed");
}

TEST(BundleReader, RejectsMalformedFrames) {
  EXPECT_MESSAGE(extract_error(bundle_storing(text_bytes("not a zstd frame at all"), 10), 0),
                 "image 0 (sm_80): the stored bytes are not a zstd frame");
  EXPECT_MESSAGE(extract_error(bundle_storing(zstd_frame({.rle_bytes = 1000}), 1000), 0),
                 "the zstd frame does not declare its size");
  Bytes two_frames = zstd_frame({.declared = 500, .rle_bytes = 500});
  const Bytes second = zstd_frame({.declared = 500, .rle_bytes = 500});
  two_frames.insert(two_frames.end(), second.begin(), second.end());
  EXPECT_MESSAGE(extract_error(bundle_storing(two_frames, 500), 0), "not exactly one zstd frame (the frame ends at byte");
  Bytes cut = zstd_frame({.declared = 300000, .rle_bytes = 300000});
  cut.pop_back();
  EXPECT_MESSAGE(extract_error(bundle_storing(cut, 300000), 0), "not exactly one zstd frame");
}

// =============================================================================================
// The lz4 codec: one LZ4 block per image, no dictionary, format version 3
// =============================================================================================

// Machine code as LZ4 sees it: 16-byte instructions, each a few fixed opcode bytes from a small
// set and random operands (code_like() compresses only by entropy coding, which LZ4 lacks).
Bytes instruction_like(std::mt19937_64& random, std::size_t count) {
  std::array<std::array<std::uint8_t, 10>, 24> opcodes;
  for (auto& opcode : opcodes) {
    for (auto& byte : opcode) byte = static_cast<std::uint8_t>(random());
  }
  Bytes bytes;
  for (std::size_t i = 0; i < count; ++i) {
    const auto& opcode = opcodes[random() % opcodes.size()];
    bytes.insert(bytes.end(), opcode.begin(), opcode.end());
    for (int operand = 0; operand < 6; ++operand) bytes.push_back(static_cast<std::uint8_t>(random() % 8));
  }
  return bytes;
}

// Images of every kind and variant that LZ4 compresses, with a duplicate.
std::vector<Image> lz4_images() {
  std::mt19937_64 random(17);
  const Bytes cubin = instruction_like(random, 400);
  std::string ptx = ".version 9.0\n.target sm_100f\n";
  std::string source;
  for (int i = 0; i < 40; ++i) {
    ptx += "\tld.global.f32 %f" + std::to_string(i) + ", [%rd" + std::to_string(i % 4) + "];\n";
    source += "__global__ void kernel" + std::to_string(i) + "(float* x) { x[threadIdx.x] += 1.0f; }\n";
  }
  const std::vector<std::string> kernels = {"_Z10add_kernelIfEvPKT_S2_PS0_i", "_Z10sum_kernelIfEvPKT_Pfi"};
  return {
      make_image(ImageKind::Cubin, sm(8, 0), cubin, kernels),
      make_image(ImageKind::Cubin, sm(8, 6), mutated(random, cubin, 20), kernels),
      make_image(ImageKind::Cubin, sm(8, 9), cubin, kernels),  // identical to sm_80: stored once
      make_image(ImageKind::Cubin, sm(9, 0, ArchVariant::Specific), mutated(random, cubin, 40), {"_Z4wgmmav"}),
      make_image(ImageKind::Ptx, sm(10, 0, ArchVariant::Family), text_bytes(ptx), kernels),
      make_image(ImageKind::Source, Arch{}, text_bytes(source), kernels),
  };
}

Bytes lz4_bundle() {
  auto bytes = write_bundle(lz4_images(), feature_metadata(), WriteOptions{.codec = Codec::Lz4});
  EXPECT_TRUE(bytes.ok()) << bytes.error().describe();
  return std::move(bytes).value();
}

// The stored bytes of a (non-duplicate) image, as they lie in the bundle.
Bytes stored_bytes_of(const Bytes& bundle, std::size_t index) {
  const f::Entry entry = entry_of(bundle, index);
  const auto begin = bundle.begin() + static_cast<std::ptrdiff_t>(entry.data_offset);
  return Bytes(begin, begin + static_cast<std::ptrdiff_t>(entry.stored_size));
}

TEST(BundleLz4, RoundTripsEveryImageKind) {
  const std::vector<Image> images = lz4_images();
  const Bytes bytes = lz4_bundle();
  for (OpenCheck check : {OpenCheck::WholeFile, OpenCheck::TablesThenImagesOnUse}) {
    auto bundle = Bundle::open(bytes, "lz4.kiln", check);
    ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
    EXPECT_EQ(bundle->format_version(), f::kFormatVersion);
    expect_same_images(*bundle, images);
    std::uint64_t raw = 0;
    std::uint64_t stored = 0;
    for (const ImageInfo& info : bundle->images()) {
      EXPECT_EQ(info.codec, Codec::Lz4) << info.target.name();
      EXPECT_FALSE(info.dictionary.has_value()) << "dictionaries are zstd's alone";
      if (!info.duplicate_of) raw += info.raw_size;
      stored += info.stored_size;
    }
    EXPECT_EQ(bundle->images()[2].duplicate_of, 0u);
    EXPECT_LT(stored * 3, raw * 2) << "lz4 should make these images much smaller";
  }
  auto again = write_bundle(images, feature_metadata(), WriteOptions{.codec = Codec::Lz4, .threads = 1});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, bytes) << "the lz4 writer is deterministic too";
}

TEST(BundleLz4, WriterWritesTheNewestVersionWhateverTheCodec) {
  auto version_of = [](const std::vector<Image>& images, Codec codec) {
    auto bytes = write_bundle(images, {}, WriteOptions{.codec = codec});
    EXPECT_TRUE(bytes.ok());
    return bytes.ok() ? header_of(*bytes).format_version : 0;
  };
  for (Codec codec : {Codec::Lz4, Codec::Zstd, Codec::None}) {
    EXPECT_EQ(version_of(lz4_images(), codec), f::kFormatVersion);
    EXPECT_EQ(version_of({}, codec), f::kFormatVersion);
  }
}

TEST(BundleLz4, ReaderTakesEachImagesOwnCodec) {
  // kiln build writes one codec per bundle, but the codec is the entry's: a bundle that mixes them reads.
  std::mt19937_64 random(21);
  const Bytes zstd_raw = code_like(random, 5000);
  const Bytes lz4_raw = instruction_like(random, 300);
  const Bytes none_raw = text_bytes("stored as is");
  auto zstd = write_bundle({make_image(ImageKind::Cubin, sm(8, 0), zstd_raw)}, {}, WriteOptions{.codec = Codec::Zstd});
  auto lz4 = write_bundle({make_image(ImageKind::Cubin, sm(9, 0), lz4_raw)}, {}, WriteOptions{.codec = Codec::Lz4});
  ASSERT_TRUE(zstd.ok() && lz4.ok());
  ASSERT_EQ(entry_of(*zstd, 0).codec, f::kCodecZstd);
  ASSERT_EQ(entry_of(*lz4, 0).codec, f::kCodecLz4);
  // A bundle that stores those compressed bytes as is, then told what they are.
  auto mixed = write_bundle({make_image(ImageKind::Cubin, sm(8, 0), stored_bytes_of(*zstd, 0)),
                             make_image(ImageKind::Cubin, sm(9, 0), stored_bytes_of(*lz4, 0)),
                             make_image(ImageKind::Ptx, sm(8, 0), none_raw)},
                            {}, WriteOptions{.codec = Codec::None});
  ASSERT_TRUE(mixed.ok());
  Bytes bytes = with_entry(*mixed, 0, [&](f::Entry& e) {
    e.codec = f::kCodecZstd;
    e.raw_size = zstd_raw.size();
    e.content_hash = checksum64(zstd_raw);
  });
  bytes = with_entry(bytes, 1, [&](f::Entry& e) {
    e.codec = f::kCodecLz4;
    e.raw_size = lz4_raw.size();
    e.content_hash = checksum64(lz4_raw);
  });
  auto bundle = Bundle::open(bytes, "mixed.kiln");
  ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
  EXPECT_EQ(bundle->images()[0].codec, Codec::Zstd);
  EXPECT_EQ(bundle->images()[1].codec, Codec::Lz4);
  EXPECT_EQ(bundle->images()[2].codec, Codec::None);
  EXPECT_EQ(*bundle->extract(0), zstd_raw);
  EXPECT_EQ(*bundle->extract(1), lz4_raw);
  EXPECT_EQ(*bundle->extract(2), none_raw);
}

TEST(BundleLz4, RejectsLz4InABundleOlderThanVersion3) {
  const Bytes bytes = lz4_bundle();
  EXPECT_MESSAGE(open_error(as_version(bytes, 2)),
                 "image 0 (sm_80): codec lz4 (2) needs format version 3, but the bundle is version 2");
  EXPECT_MESSAGE(open_error(as_version(bytes, 1)),
                 "image 0 (sm_80): codec lz4 (2) needs format version 3, but the bundle is version 1");
}

TEST(BundleLz4, RejectsADictionaryOnAnLz4Image) {
  EXPECT_MESSAGE(open_error(with_entry(lz4_bundle(), 1, [](f::Entry& e) { e.dictionary = 0; })),
                 "image 1 (sm_86): stored as lz4, yet names image 0 as its dictionary (only zstd images have one)");
}

// Every byte of a stored LZ4 block changed, its checksum re-sealed so that the decoder sees it: an
// error that names the image, or (a changed offset that points at the same bytes) the true bytes.
TEST(BundleLz4, EveryDamagedByteOfABlockIsCaughtOrHarmless) {
  const Bytes original = lz4_bundle();
  const Bytes expected = lz4_images()[0].bytes;
  const f::Entry entry = entry_of(original, 0);
  ASSERT_EQ(entry.codec, f::kCodecLz4);
  std::map<std::string, int> reasons;
  for (std::uint64_t at = 0; at < entry.stored_size; ++at) {
    for (std::uint8_t flip : {0x01, 0x80, 0xFF}) {
      Bytes bytes = original;
      bytes[entry.data_offset + at] ^= flip;
      testing::seal(bytes);
      auto bundle = Bundle::open(bytes, "test.kiln");
      ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
      auto image = bundle->extract(0);
      if (image.ok()) {
        EXPECT_EQ(*image, expected) << "stored byte " << at << " ^ " << int(flip) << " gave other bytes";
        reasons["harmless"]++;
        continue;
      }
      EXPECT_EQ(image.error().component, Component::Bundle);
      EXPECT_FALSE(image.error().hint.empty());
      EXPECT_TRUE(image.error().message.starts_with("image 0 (sm_80): ")) << image.error().message;
      reasons[check_of(image.error().message)]++;
    }
  }
  for (const auto& [reason, count] : reasons) std::printf("  %6d x %s\n", count, reason.c_str());
  auto seen = [&](std::string_view part) {
    return std::any_of(reasons.begin(), reasons.end(), [&](const auto& reason) { return reason.first.find(part) != std::string::npos; });
  };
  EXPECT_TRUE(seen("decompression failed"));  // check_of() blanks digits: "lz#"
  EXPECT_TRUE(seen("inflated to"));
  EXPECT_TRUE(seen("content hash"));

  // Not re-sealed, the stored-bytes checksum catches the same damage first.
  Bytes unsealed = original;
  unsealed[entry.data_offset + 5] ^= 0x01;
  testing::seal(unsealed, {.image_checksums = false});
  EXPECT_MESSAGE(extract_error(unsealed, 0), "image 0 (sm_80): stored-bytes checksum");
  // A block cut short.
  EXPECT_MESSAGE(extract_error(with_entry(original, 0, [](f::Entry& e) { e.stored_size -= 1; }), 0),
                 "image 0 (sm_80): lz4 decompression failed");
}

// Hand-made LZ4 blocks (lz4's doc/lz4_Block_format.md), to reach the decoder with what the writer
// never makes. A sequence: its literals, then a match of `match` bytes (4 or more) at `offset`
// back; the last sequence of a block has literals only (match 0).
struct Lz4Sequence {
  std::string literals;
  std::uint16_t offset = 0;
  std::uint64_t match = 0;
};

Bytes lz4_block(const std::vector<Lz4Sequence>& sequences) {
  Bytes bytes;
  auto length_bytes = [&](std::uint64_t rest) {  // what a length's 4-bit field (at 15) leaves over
    for (; rest >= 255; rest -= 255) bytes.push_back(255);
    bytes.push_back(static_cast<std::uint8_t>(rest));
  };
  for (const Lz4Sequence& sequence : sequences) {
    const std::uint64_t literals = sequence.literals.size();
    const std::uint64_t match = sequence.match ? sequence.match - 4 : 0;
    bytes.push_back(static_cast<std::uint8_t>(std::min<std::uint64_t>(literals, 15) << 4 | std::min<std::uint64_t>(match, 15)));
    if (literals >= 15) length_bytes(literals - 15);
    bytes.insert(bytes.end(), sequence.literals.begin(), sequence.literals.end());
    if (sequence.match == 0) continue;
    bytes.push_back(static_cast<std::uint8_t>(sequence.offset));
    bytes.push_back(static_cast<std::uint8_t>(sequence.offset >> 8));
    if (match >= 15) length_bytes(match - 15);
  }
  return bytes;
}

// 'z', then a million more copied from it, then five literals: close to LZ4's 255:1 limit.
const Bytes kLz4Bomb = lz4_block({{"z", 1, 1'000'000}, {"zzzzz"}});
constexpr std::uint64_t kLz4BombRawSize = 1 + 1'000'000 + 5;

TEST(BundleLz4, HandMadeBlocksDecodeWhenHonest) {
  const Bytes bytes = bundle_storing(kLz4Bomb, kLz4BombRawSize, f::kCodecLz4);
  const Bytes raw(kLz4BombRawSize, 'z');
  auto image = Bundle::open(with_entry(bytes, 0, [&](f::Entry& e) { e.content_hash = checksum64(raw); }))->extract(0);
  ASSERT_TRUE(image.ok()) << image.error().describe();
  EXPECT_EQ(*image, raw);
  EXPECT_GT(kLz4BombRawSize, kLz4Bomb.size() * 254) << "the block should come near the bound it tests";
}

TEST(BundleLz4, DecompressionBombsAreBoundedByTheDeclaredSize) {
  // Declared small, inflates to a megabyte: stops at the declared 1000 bytes.
  EXPECT_MESSAGE(extract_error(bundle_storing(kLz4Bomb, 1000, f::kCodecLz4), 0),
                 "image 0 (sm_80): lz4 decompression failed: the stored bytes are not an LZ4 block of at most 1000 bytes");
  // Declared more than the block makes.
  EXPECT_MESSAGE(extract_error(bundle_storing(kLz4Bomb, kLz4BombRawSize + 100, f::kCodecLz4), 0),
                 "the LZ4 block inflated to 1000006 bytes, not the declared 1000106");
  // Declared more than 255 bytes per stored byte: refused at open, before anything is allocated.
  const std::uint64_t bound = kLz4Bomb.size() * f::kLz4MaxExpansion;
  EXPECT_EQ(open_error(bundle_storing(kLz4Bomb, bound, f::kCodecLz4)), "(opened)");
  EXPECT_MESSAGE(open_error(bundle_storing(kLz4Bomb, bound + 1, f::kCodecLz4)),
                 "raw size " + std::to_string(bound + 1) + " cannot come from " + std::to_string(kLz4Bomb.size()) +
                     " lz4 bytes (an LZ4 block yields at most 255 bytes per byte)");
  EXPECT_MESSAGE(open_error(bundle_storing(kLz4Bomb, f::kMaxImageRawSize + 1, f::kCodecLz4)), "reader's limit");
}

TEST(BundleLz4, RejectsWhatIsNotAnLz4Block) {
  // 'n' (0x6e): 6 literals, then an offset ("lz") reaching before the start of the block.
  EXPECT_MESSAGE(extract_error(bundle_storing(text_bytes("not an lz4 block at all"), 100, f::kCodecLz4), 0),
                 "image 0 (sm_80): lz4 decompression failed");
  // Offset 0 is invalid, yet liblz4 1.9 decodes it (copying bytes onto themselves): wrong bytes,
  // which the content hash stops.
  EXPECT_MESSAGE(extract_error(bundle_storing(lz4_block({{"abcd", 0, 8}, {"zzzzz"}}), 17, f::kCodecLz4), 0),
                 "image 0 (sm_80): ");
  EXPECT_NE(extract_error(bundle_storing(lz4_block({{"abcd", 0, 8}, {"zzzzz"}}), 17, f::kCodecLz4), 0), "(extracted)");
  EXPECT_MESSAGE(extract_error(bundle_storing(lz4_block({{"abcd", 9, 8}, {"zzzzz"}}), 17, f::kCodecLz4), 0),
                 "lz4 decompression failed");  // reaches before the first byte
}

}  // namespace
}  // namespace kiln
