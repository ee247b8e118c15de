// The disk cache in one process: keys, sizes, the entry format, corruption, faults, refusal,
// LRU pruning and the housekeeping commands. Processes racing: test_cache_concurrency.cpp.
#include <fcntl.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kiln/cache.hpp"
#include "kiln/compiler.hpp"
#include "unit/child_process.hpp"
#include "unit/temp_directory.hpp"

namespace fs = std::filesystem;
using namespace kiln;

namespace {


// Collects the cache's warnings (the logger hook).
struct WarningLog {
  std::shared_ptr<std::mutex> mutex = std::make_shared<std::mutex>();
  std::shared_ptr<std::vector<std::string>> messages = std::make_shared<std::vector<std::string>>();

  [[nodiscard]] std::function<void(std::string_view)> sink() const {
    return [mutex = mutex, messages = messages](std::string_view message) {
      std::lock_guard lock(*mutex);
      messages->emplace_back(message);
    };
  }
  [[nodiscard]] std::size_t count() const {
    std::lock_guard lock(*mutex);
    return messages->size();
  }
  [[nodiscard]] std::string first() const {
    std::lock_guard lock(*mutex);
    return messages->empty() ? std::string() : messages->front();
  }
};

CacheFaults faults_with(WarningLog& warnings, std::function<int(std::string_view)> inject = {}) {
  CacheFaults faults;
  faults.inject = std::move(inject);
  faults.warn = warnings.sink();
  return faults;
}

// Fails `operation` with `error` every time.
std::function<int(std::string_view)> fail(std::string operation, int error) {
  return [operation = std::move(operation), error](std::string_view asked) { return asked == operation ? error : 0; };
}

Hash128 key_for(std::uint64_t index) {
  CacheKeyInputs inputs;
  inputs.input_hash = index;
  inputs.input_kind = "ptx";
  inputs.target_arch = "sm_90";
  inputs.compiler = "driver 13000";
  return make_cache_key(inputs);
}

Bytes value_for(std::uint64_t index, std::size_t size = 1000) {
  Bytes value(size);
  for (std::size_t i = 0; i < size; ++i) value[i] = static_cast<std::uint8_t>((i * 131 + index * 17 + i / 7) & 0xff);
  return value;
}

Bytes read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, ByteView bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void set_mtime(const fs::path& path, std::time_t seconds) {
  const timespec times[2] = {{seconds, 0}, {seconds, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

std::vector<std::string> file_names(const fs::path& directory) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& item : fs::directory_iterator(directory, error)) names.push_back(item.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A compute function that counts its calls.
struct CountingCompute {
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  std::function<Result<Bytes>()> of(std::uint64_t index) const {
    return [calls = calls, index]() -> Result<Bytes> {
      ++*calls;
      return value_for(index);
    };
  }
};

std::uint32_t mode_of(const fs::path& path) {
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) return 0xFFFFFFFFu;
  return status.st_mode & 07777;
}


// ---------------------------------------------------------------------------------------------
// Keys

TEST(CacheKey, ChangesWhenAnyInputChanges) {
  const CacheKeyInputs base{0x1234, "ptx", "vector_add", "sm_90", "driver 13000", "-O3"};
  std::vector<CacheKeyInputs> variants(7, base);
  variants[1].input_hash = 0x1235;
  variants[2].input_kind = "source";
  variants[3].kernel = "vector_sub";
  variants[4].target_arch = "sm_90a";
  variants[5].compiler = "driver 13010";
  variants[6].options = "-O2";
  std::set<std::string> keys;
  for (const CacheKeyInputs& inputs : variants) keys.insert(make_cache_key(inputs).hex());
  EXPECT_EQ(keys.size(), variants.size());
}

TEST(CacheKey, FieldBoundariesCannotBeShifted) {
  CacheKeyInputs a{1, "ptx", "ab", "sm_90", "", ""};
  CacheKeyInputs b{1, "ptx", "a", "sm_90", "", ""};
  b.options = "b";
  EXPECT_NE(make_cache_key(a), make_cache_key(b));
  CacheKeyInputs c{1, "", "", "", "ptx", ""};
  CacheKeyInputs d{1, "ptx", "", "", "", ""};
  EXPECT_NE(make_cache_key(c), make_cache_key(d));
}

TEST(CacheKey, IsStableAndThirtyTwoHexDigits) {
  const CacheKeyInputs inputs{42, "ptx", "k", "sm_80", "nvrtc 13.0", "-lineinfo"};
  EXPECT_EQ(make_cache_key(inputs), make_cache_key(inputs));
  const std::string hex = make_cache_key(inputs).hex();
  EXPECT_EQ(hex.size(), 32u);
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(cache_entry_file_name(make_cache_key(inputs)), "kiln-" + hex + ".bin");
}

// ---------------------------------------------------------------------------------------------
// Sizes

TEST(CacheParseSize, AcceptsBytesAndBinaryUnits) {
  const std::vector<std::pair<std::string, std::uint64_t>> cases = {
      {"12345", 12345},          {"0", 0},
      {"100k", 100 * 1024},      {"100K", 100 * 1024},
      {"512M", 512ull << 20},    {"1G", 1ull << 30},
      {"1g", 1ull << 30},        {"2T", 2ull << 40},
      {"1.5G", 3ull << 29},      {"0.5k", 512},
      {"1GiB", 1ull << 30},      {"100kB", 100 * 1024},
      {"64B", 64},               {" 1G\n", 1ull << 30},
      {"1.0009765625k", 1025},   {"18446744073709551615", UINT64_MAX},
      {"15.9999999999999999999T", 17592186044415ull},
  };
  for (const auto& [text, expected] : cases) {
    Result<std::uint64_t> size = parse_size(text);
    ASSERT_TRUE(size.ok()) << "'" << text << "': " << size.error().describe();
    EXPECT_EQ(*size, expected) << text;
  }
}

TEST(CacheParseSize, RejectsEverythingElseAsUsageError) {
  for (const char* text : {"", " ", "G", "-1", "+1", "1.5", "1X", "1GB2", "1.G", ".5G", "1 G", "1iB", "1e9",
                           "18446744073709551616", "16777216T", "99999999999999999999999", "1,5G", "0x10"}) {
    Result<std::uint64_t> size = parse_size(text);
    ASSERT_FALSE(size.ok()) << "'" << text << "' parsed as " << *size;
    EXPECT_EQ(size.error().kind, ErrorKind::Usage) << text;
    EXPECT_NE(size.error().message.find("invalid size"), std::string::npos) << size.error().message;
  }
}

// ---------------------------------------------------------------------------------------------
// The entry format (the pure parser; the fuzzer covers it further)

TEST(CacheEntry, RoundTripsPayloadsOfAnySize) {
  for (std::size_t size : {0u, 1u, 47u, 48u, 1000u, 70000u}) {
    const Bytes payload = value_for(size, size);
    const Bytes file = encode_cache_entry(key_for(1), payload);
    EXPECT_EQ(file.size(), kCacheEntryHeaderBytes + size);
    Result<Bytes> parsed = parse_cache_entry(file, key_for(1));
    ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
    EXPECT_EQ(*parsed, payload);
  }
}

TEST(CacheEntry, EveryTruncationIsRejected) {
  const Bytes file = encode_cache_entry(key_for(1), value_for(1, 100));
  for (std::size_t length = 0; length < file.size(); ++length) {
    EXPECT_FALSE(parse_cache_entry(ByteView(file).first(length), key_for(1)).ok()) << length;
  }
  Bytes longer = file;
  longer.push_back(0);
  EXPECT_FALSE(parse_cache_entry(longer, key_for(1)).ok());
}

TEST(CacheEntry, EverySingleBitFlipIsRejected) {
  const Bytes file = encode_cache_entry(key_for(1), value_for(1, 100));
  for (std::size_t bit = 0; bit < file.size() * 8; ++bit) {
    Bytes flipped = file;
    flipped[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    EXPECT_FALSE(parse_cache_entry(flipped, key_for(1)).ok()) << "bit " << bit;
  }
}

TEST(CacheEntry, ErrorsNameTheCheckThatFailed) {
  const Bytes file = encode_cache_entry(key_for(1), value_for(1, 100));
  const auto message_for = [](const Bytes& bytes, const Hash128& key) {
    Result<Bytes> parsed = parse_cache_entry(bytes, key);
    EXPECT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.ok() ? Component::Usage : parsed.error().component, Component::Cache);
    return parsed.ok() ? std::string() : parsed.error().message;
  };
  EXPECT_NE(message_for(Bytes(file.begin(), file.begin() + 10), key_for(1)).find("shorter than"), std::string::npos);
  Bytes bad_magic = file;
  bad_magic[0] = 'X';
  EXPECT_NE(message_for(bad_magic, key_for(1)).find("magic"), std::string::npos);
  Bytes other_version = file;
  other_version[8] = static_cast<std::uint8_t>(kCacheFormatVersion + 1);
  EXPECT_NE(message_for(other_version, key_for(1)).find("format version"), std::string::npos);
  EXPECT_NE(message_for(file, key_for(2)).find("under the name of key"), std::string::npos);
  Bytes bad_payload = file;
  bad_payload.back() ^= 1;
  EXPECT_NE(message_for(bad_payload, key_for(1)).find("checksum"), std::string::npos);
  Bytes bad_size = file;
  bad_size[32] ^= 1;
  EXPECT_NE(message_for(bad_size, key_for(1)).find("payload size"), std::string::npos);
}

TEST(CacheEntry, FuzzSeedCorpusStillParses) {
  // The key fuzz_cache_entry.cpp expects its seeds under; a format change must regenerate them.
  constexpr Hash128 kSeedKey{0x6b696c6e2d636163ull, 0x68652d666f757a7aull};
  const fs::path corpus = fs::path(KILN_SOURCE_DIR) / "tests" / "fuzz" / "corpus" / "fuzz_cache_entry";
  int seeds = 0;
  for (const auto& item : fs::directory_iterator(corpus)) {
    if (!item.path().filename().string().starts_with("valid-")) continue;
    Result<Bytes> payload = parse_cache_entry(read_file(item.path()), kSeedKey);
    EXPECT_TRUE(payload.ok()) << item.path() << ": " << (payload.ok() ? "" : payload.error().describe());
    ++seeds;
  }
  EXPECT_GE(seeds, 3);
}

// ---------------------------------------------------------------------------------------------
// Round trips and the directory

TEST(DiskCache, DirectoryIsCreatedLazilyAndPrivately) {
  TempDirectory temp;
  const fs::path directory = temp.root() / "a" / "b" / "kiln";
  DiskCache cache(directory, {});
  EXPECT_FALSE(fs::exists(temp.root() / "a"));
  EXPECT_FALSE(cache.get(key_for(1)).has_value());
  EXPECT_FALSE(fs::exists(temp.root() / "a"));  // reading creates nothing
  ASSERT_TRUE(cache.stats().ok());
  EXPECT_EQ(cache.stats()->entries, 0u);
  ASSERT_TRUE(cache.put(key_for(1), value_for(1)).ok());
  for (const fs::path& created : {temp.root() / "a", temp.root() / "a" / "b", directory}) {
    struct stat status {};
    ASSERT_EQ(::stat(created.c_str(), &status), 0) << created;
    EXPECT_EQ(status.st_mode & 07777, 0700u) << created;
  }
  struct stat entry {};
  ASSERT_EQ(::stat((directory / cache_entry_file_name(key_for(1))).c_str(), &entry), 0);
  EXPECT_EQ(entry.st_mode & 07777, 0600u);
}

TEST(DiskCache, PutThenGetRoundTrips) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  EXPECT_FALSE(cache.get(key_for(1)).has_value());
  for (std::uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(cache.put(key_for(i), value_for(i, 100 * i)).ok());
  for (std::uint64_t i = 0; i < 5; ++i) {
    std::optional<Bytes> value = cache.get(key_for(i));
    ASSERT_TRUE(value.has_value()) << i;
    EXPECT_EQ(*value, value_for(i, 100 * i));
  }
  // Another DiskCache (another process, in effect) sees the same entries.
  DiskCache other(temp.cache(), {});
  EXPECT_EQ(other.get(key_for(3)), value_for(3, 300));
  Result<CacheStats> stats = cache.stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->directory, temp.cache());
  EXPECT_EQ(stats->entries, 5u);
  EXPECT_EQ(stats->bytes, 5 * kCacheEntryHeaderBytes + 1000);
  EXPECT_EQ(stats->hits, 5u);
  EXPECT_EQ(stats->misses, 1u);
  EXPECT_EQ(stats->writes, 5u);
  EXPECT_TRUE(stats->writable);
  // Only entries: no temp or lock files are left behind.
  for (const std::string& name : file_names(temp.cache())) EXPECT_TRUE(name.ends_with(".bin")) << name;
}

TEST(DiskCache, GetOrComputeComputesOnceThenHits) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  CountingCompute compute;
  bool hit = true;
  Result<Bytes> first = cache.get_or_compute(key_for(7), compute.of(7), &hit);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, value_for(7));
  EXPECT_FALSE(hit);
  for (int round = 0; round < 3; ++round) {
    DiskCache fresh(temp.cache(), {});  // a later process: the value comes from disk
    Result<Bytes> again = fresh.get_or_compute(key_for(7), compute.of(7), &hit);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, value_for(7));
    EXPECT_TRUE(hit);
  }
  EXPECT_EQ(*compute.calls, 1);
}

TEST(DiskCache, ComputeErrorsAreReturnedAndNotCached) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  int calls = 0;
  const auto failing = [&]() -> Result<Bytes> {
    ++calls;
    return make_error(Component::Compiler, "ptxas failed");
  };
  for (int round = 0; round < 2; ++round) {
    bool hit = true;
    Result<Bytes> value = cache.get_or_compute(key_for(1), failing, &hit);
    ASSERT_FALSE(value.ok());
    EXPECT_EQ(value.error().message, "ptxas failed");
    EXPECT_FALSE(hit);
  }
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cache.stats()->entries, 0u);
}

TEST(DiskCache, ComputeThatThrowsLeavesNoStuckFlight) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  EXPECT_THROW((void)cache.get_or_compute(key_for(1), []() -> Result<Bytes> { throw std::runtime_error("boom"); }),
               std::runtime_error);
  CountingCompute compute;
  Result<Bytes> value = cache.get_or_compute(key_for(1), compute.of(1));
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, value_for(1));
  EXPECT_EQ(*compute.calls, 1);
  EXPECT_EQ(file_names(temp.cache()), std::vector<std::string>{cache_entry_file_name(key_for(1))});
}

TEST(DiskCache, ThreadsOfOneProcessComputeOnce) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  std::atomic<int> calls{0};
  const auto slow = [&]() -> Result<Bytes> {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return value_for(3);
  };
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      Result<Bytes> value = cache.get_or_compute(key_for(3), slow);
      if (!value.ok() || *value != value_for(3)) ++wrong;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(wrong, 0);
}

TEST(DiskCache, DirectoryRemovedUnderUsIsMadeAgain) {
  TempDirectory temp;
  WarningLog warnings;
  DiskCache cache(temp.cache(), {}, faults_with(warnings));
  ASSERT_TRUE(cache.put(key_for(1), value_for(1)).ok());
  fs::remove_all(temp.cache());
  ASSERT_TRUE(cache.put(key_for(2), value_for(2)).ok());
  EXPECT_EQ(cache.get(key_for(2)), value_for(2));
  EXPECT_EQ(warnings.count(), 0u);
  EXPECT_TRUE(cache.writable());
}

// ---------------------------------------------------------------------------------------------
// Corruption: always a miss, the file deleted, the value recomputed; never a wrong value.

class CacheCorruptEntry : public ::testing::Test {
 protected:
  // Writes a good entry for key 1, lets `mutate` damage the file, then expects a miss that deletes
  // it and a get_or_compute that recomputes the right value.
  void expect_discarded(const std::function<void(const fs::path& entry)>& mutate, const std::string& what) {
    TempDirectory temp;
    DiskCache cache(temp.cache(), {});
    ASSERT_TRUE(cache.put(key_for(1), value_for(1, 100)).ok());
    const fs::path entry = temp.cache() / cache_entry_file_name(key_for(1));
    mutate(entry);
    const std::uint64_t removed_before = cache.stats()->corrupt_removed;
    EXPECT_FALSE(cache.get(key_for(1)).has_value()) << what;
    EXPECT_FALSE(fs::exists(fs::symlink_status(entry))) << what;
    EXPECT_EQ(cache.stats()->corrupt_removed, removed_before + 1) << what;
    CountingCompute compute;
    bool hit = true;
    Result<Bytes> value = cache.get_or_compute(key_for(1), compute.of(1), &hit);
    ASSERT_TRUE(value.ok()) << what;
    EXPECT_NE(*value, value_for(1, 100)) << what;  // the compute function's value, not the old one
    EXPECT_EQ(*value, value_for(1)) << what;
    EXPECT_FALSE(hit) << what;
    EXPECT_EQ(*compute.calls, 1) << what;
    EXPECT_EQ(cache.get(key_for(1)), value_for(1)) << what;
  }
};

TEST_F(CacheCorruptEntry, BitFlipAnywhereInTheHeader) {
  for (std::size_t bit = 0; bit < kCacheEntryHeaderBytes * 8; ++bit) {
    expect_discarded(
        [bit](const fs::path& entry) {
          Bytes file = read_file(entry);
          file[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
          write_file(entry, file);
        },
        "header bit " + std::to_string(bit));
    if (HasFailure()) return;
  }
}

TEST_F(CacheCorruptEntry, BitFlipInThePayload) {
  for (std::size_t offset : {std::size_t{0}, std::size_t{1}, std::size_t{50}, std::size_t{99}}) {
    expect_discarded(
        [offset](const fs::path& entry) {
          Bytes file = read_file(entry);
          file[kCacheEntryHeaderBytes + offset] ^= 0x10;
          write_file(entry, file);
        },
        "payload byte " + std::to_string(offset));
  }
}

TEST_F(CacheCorruptEntry, TruncatedAtEveryLength) {
  const std::size_t full = kCacheEntryHeaderBytes + 100;
  for (std::size_t length = 0; length < full; ++length) {
    expect_discarded([length](const fs::path& entry) { fs::resize_file(entry, length); },
                     "truncated to " + std::to_string(length));
    if (HasFailure()) return;
  }
}

TEST_F(CacheCorruptEntry, AnotherKeysEntryUnderThisName) {
  expect_discarded(
      [](const fs::path& entry) { write_file(entry, encode_cache_entry(key_for(2), value_for(2, 100))); },
      "entry of key 2 under key 1's name");
}

TEST_F(CacheCorruptEntry, AnotherFormatVersion) {
  expect_discarded(
      [](const fs::path& entry) {
        Bytes file = read_file(entry);
        file[8] = static_cast<std::uint8_t>(kCacheFormatVersion + 1);  // little-endian u32 at offset 8
        write_file(entry, file);
      },
      "format version");
}

TEST_F(CacheCorruptEntry, SymbolicLinkUnderAnEntryName) {
  expect_discarded(
      [](const fs::path& entry) {
        // A valid entry elsewhere, linked in: O_NOFOLLOW refuses it and only the link is removed.
        const fs::path elsewhere = entry.parent_path().parent_path() / "elsewhere.bin";
        write_file(elsewhere, read_file(entry));
        fs::remove(entry);
        fs::create_symlink(elsewhere, entry);
      },
      "symbolic link");
}

TEST_F(CacheCorruptEntry, DanglingSymbolicLinkUnderAnEntryName) {
  expect_discarded(
      [](const fs::path& entry) {
        fs::remove(entry);
        fs::create_symlink(entry.parent_path() / "nowhere.bin", entry);
      },
      "dangling symbolic link");
}

TEST_F(CacheCorruptEntry, EntryFileOwnedByAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give an entry file to another user";
  // A well-formed entry of the right key: only its owner is wrong.
  expect_discarded([](const fs::path& entry) { ASSERT_EQ(::chown(entry.c_str(), 12345, 12345), 0) << entry; },
                   "entry owned by uid 12345");
}

TEST(DiskCache, EntryThatCannotBeOpenedForWantOfDescriptorsIsAMissButIsKept) {
  TempDirectory temp;
  ASSERT_TRUE(DiskCache(temp.cache(), {}).put(key_for(1), value_for(1)).ok());
  const fs::path entry = temp.cache() / cache_entry_file_name(key_for(1));
  // In a child whose every descriptor is taken (the limit lowered to the lowest free one), open()
  // fails with EMFILE: that says nothing about the entry, which must stay for everyone else.
  const int status = exit_status_in_child([&]() {
    DiskCache cache(temp.cache(), {});
    const int lowest_free = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (lowest_free < 0) return 20;
    ::close(lowest_free);
    const rlimit limit{static_cast<rlim_t>(lowest_free), static_cast<rlim_t>(lowest_free)};
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 21;
    const int probe = ::open(entry.c_str(), O_RDONLY | O_CLOEXEC);
    if (probe >= 0 || errno != EMFILE) return 22;  // the premise: no descriptor is free
    if (cache.get(key_for(1)).has_value()) return 23;
    return 0;
  });
  ASSERT_EQ(status, 0) << "20-22: the child could not run out of descriptors; 23: it read the entry anyway";
  EXPECT_TRUE(fs::exists(fs::symlink_status(entry))) << "an entry deleted because this process ran out of descriptors";
  DiskCache cache(temp.cache(), {});
  EXPECT_EQ(cache.get(key_for(1)), value_for(1));
  EXPECT_EQ(cache.stats()->corrupt_removed, 0u);
}

TEST(DiskCache, UnreadableEntryIsAMissAndDeleted) {
  TempDirectory temp;
  ASSERT_TRUE(DiskCache(temp.cache(), {}).put(key_for(1), value_for(1)).ok());
  WarningLog warnings;
  DiskCache cache(temp.cache(), {}, faults_with(warnings, fail("read", EIO)));
  EXPECT_FALSE(cache.get(key_for(1)).has_value());
  EXPECT_FALSE(fs::exists(temp.cache() / cache_entry_file_name(key_for(1))));
  EXPECT_EQ(cache.stats()->corrupt_removed, 1u);
  EXPECT_EQ(warnings.count(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Faults: one warning, the cache off for writes, values still right, no partial files.

void expect_degrades_once(const std::string& operation, int error) {
  SCOPED_TRACE(operation + " fails with " + std::to_string(error));
  TempDirectory temp;
  WarningLog warnings;
  DiskCache cache(temp.cache(), {}, faults_with(warnings, fail(operation, error)));
  CountingCompute compute;
  for (std::uint64_t i = 0; i < 4; ++i) {
    bool hit = true;
    Result<Bytes> value = cache.get_or_compute(key_for(i), compute.of(i), &hit);
    ASSERT_TRUE(value.ok()) << value.error().describe();
    EXPECT_EQ(*value, value_for(i));
    EXPECT_FALSE(hit);
  }
  EXPECT_EQ(*compute.calls, 4);
  ASSERT_EQ(warnings.count(), 1u);
  EXPECT_NE(warnings.first().find(temp.cache().string()), std::string::npos) << warnings.first();
  EXPECT_NE(warnings.first().find("off for writes"), std::string::npos) << warnings.first();
  EXPECT_FALSE(cache.writable());
  EXPECT_FALSE(cache.stats()->writable);
  EXPECT_FALSE(cache.put(key_for(9), value_for(9)).ok());
  EXPECT_EQ(warnings.count(), 1u);
  EXPECT_EQ(file_names(temp.cache()), std::vector<std::string>{});  // no entry, temp or lock file
}

TEST(CacheFaults, ReadOnlyDirectory) { expect_degrades_once("open-temp", EROFS); }
TEST(CacheFaults, PermissionDenied) { expect_degrades_once("open-temp", EACCES); }
TEST(CacheFaults, DirectoryCannotBeCreated) { expect_degrades_once("mkdir", EACCES); }
TEST(CacheFaults, DiskFullWhileWriting) { expect_degrades_once("write", ENOSPC); }
TEST(CacheFaults, QuotaExceededAtClose) { expect_degrades_once("close", EDQUOT); }
TEST(CacheFaults, RenameFails) { expect_degrades_once("rename", EIO); }

TEST(CacheFaults, ReadsStillWorkAfterWritesTurnOff) {
  TempDirectory temp;
  ASSERT_TRUE(DiskCache(temp.cache(), {}).put(key_for(1), value_for(1)).ok());
  WarningLog warnings;
  DiskCache cache(temp.cache(), {}, faults_with(warnings, fail("open-temp", EROFS)));
  CountingCompute compute;
  ASSERT_TRUE(cache.get_or_compute(key_for(2), compute.of(2)).ok());
  EXPECT_FALSE(cache.writable());
  bool hit = false;
  Result<Bytes> value = cache.get_or_compute(key_for(1), compute.of(1), &hit);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, value_for(1));
  EXPECT_TRUE(hit);
  EXPECT_EQ(*compute.calls, 1);
  EXPECT_EQ(warnings.count(), 1u);
}

TEST(CacheFaults, InterruptedWritesAreRetried) {
  TempDirectory temp;
  WarningLog warnings;
  int interruptions = 3;
  DiskCache cache(temp.cache(), {}, faults_with(warnings, [&](std::string_view operation) {
                    return (operation == "write" && interruptions-- > 0) ? EINTR : 0;
                  }));
  ASSERT_TRUE(cache.put(key_for(1), value_for(1)).ok());
  EXPECT_LT(interruptions, 0);
  EXPECT_EQ(cache.get(key_for(1)), value_for(1));
  EXPECT_EQ(warnings.count(), 0u);
}

TEST(CacheFaults, LockFailureStillComputesAndStores) {
  TempDirectory temp;
  WarningLog warnings;
  DiskCache cache(temp.cache(), {}, faults_with(warnings, fail("lock", ENOLCK)));
  CountingCompute compute;
  Result<Bytes> value = cache.get_or_compute(key_for(1), compute.of(1));
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, value_for(1));
  EXPECT_EQ(DiskCache(temp.cache(), {}).get(key_for(1)), value_for(1));
  EXPECT_EQ(warnings.count(), 0u);
  EXPECT_TRUE(cache.writable());
}

TEST(CacheFaults, RealReadOnlyDirectoryWhenNotRoot) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes through permission bits; the fault seam covers this";
  TempDirectory temp;
  fs::create_directory(temp.cache());
  ASSERT_EQ(::chmod(temp.cache().c_str(), 0500), 0);
  WarningLog warnings;
  DiskCache cache(temp.cache(), {}, faults_with(warnings));
  CountingCompute compute;
  for (std::uint64_t i = 0; i < 3; ++i) EXPECT_EQ(*cache.get_or_compute(key_for(i), compute.of(i)), value_for(i));
  EXPECT_EQ(warnings.count(), 1u);
  EXPECT_EQ(file_names(temp.cache()), std::vector<std::string>{});
  ASSERT_EQ(::chmod(temp.cache().c_str(), 0700), 0);
}

TEST(CacheFaults, EntryLargerThanTheLimitIsNotKeptButDoesNotTurnTheCacheOff) {
  TempDirectory temp;
  WarningLog warnings;
  DiskCache cache(temp.cache(), CachePolicy{500}, faults_with(warnings));
  Result<void> stored = cache.put(key_for(1), value_for(1, 1000));
  ASSERT_FALSE(stored.ok());
  EXPECT_NE(stored.error().message.find("size limit"), std::string::npos);
  EXPECT_TRUE(cache.writable());
  EXPECT_TRUE(cache.put(key_for(2), value_for(2, 100)).ok());
  EXPECT_EQ(warnings.count(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Refused directories: a link or another user's directory is never read or written.

void expect_refused(const fs::path& directory, const fs::path& must_stay_untouched,
                    const std::vector<std::string>& names_there) {
  WarningLog warnings;
  DiskCache cache(directory, {}, faults_with(warnings));
  CountingCompute compute;
  for (std::uint64_t i = 0; i < 3; ++i) {
    bool hit = true;
    Result<Bytes> value = cache.get_or_compute(key_for(i), compute.of(i), &hit);
    ASSERT_TRUE(value.ok());
    EXPECT_EQ(*value, value_for(i));
    EXPECT_FALSE(hit);
  }
  EXPECT_FALSE(cache.get(key_for(0)).has_value());
  EXPECT_EQ(*compute.calls, 3);
  ASSERT_EQ(warnings.count(), 1u);
  EXPECT_NE(warnings.first().find("the disk cache is off"), std::string::npos) << warnings.first();
  EXPECT_FALSE(cache.writable());
  EXPECT_FALSE(cache.put(key_for(0), value_for(0)).ok());
  EXPECT_FALSE(cache.stats().ok());
  EXPECT_FALSE(cache.list().ok());
  EXPECT_FALSE(cache.prune({}).ok());
  EXPECT_FALSE(cache.clear().ok());
  EXPECT_EQ(file_names(must_stay_untouched), names_there);
  EXPECT_EQ(warnings.count(), 1u);
}

TEST(CacheRefusal, SymbolicLinkDirectory) {
  TempDirectory temp;
  const fs::path real = temp.root() / "real";
  fs::create_directory(real);
  write_file(real / "planted.txt", as_bytes("x"));
  // An entry planted in the link's target must not be read through the link.
  write_file(real / cache_entry_file_name(key_for(0)), encode_cache_entry(key_for(0), value_for(99)));
  fs::create_directory_symlink(real, temp.cache());
  expect_refused(temp.cache(), real, {cache_entry_file_name(key_for(0)), "planted.txt"});
}

TEST(CacheRefusal, DirectoryOwnedByAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  TempDirectory temp;
  fs::create_directory(temp.cache());
  write_file(temp.cache() / "planted.txt", as_bytes("x"));
  ASSERT_EQ(::chown(temp.cache().c_str(), 65534, 65534), 0);
  expect_refused(temp.cache(), temp.cache(), {"planted.txt"});
}

TEST(CacheRefusal, FileWhereTheDirectoryShouldBe) {
  TempDirectory temp;
  write_file(temp.cache(), as_bytes("not a directory"));
  WarningLog warnings;
  DiskCache cache(temp.cache(), {}, faults_with(warnings));
  CountingCompute compute;
  EXPECT_EQ(*cache.get_or_compute(key_for(1), compute.of(1)), value_for(1));
  EXPECT_EQ(warnings.count(), 1u);
  EXPECT_NE(warnings.first().find("not a directory"), std::string::npos);
}

TEST(CacheRefusal, NoDirectoryAtAll) {
  WarningLog warnings;
  DiskCache cache(fs::path(), {}, faults_with(warnings));
  CountingCompute compute;
  EXPECT_EQ(*cache.get_or_compute(key_for(1), compute.of(1)), value_for(1));
  EXPECT_EQ(warnings.count(), 1u);
  EXPECT_FALSE(cache.writable());
}

// "link/" and "link/." name the link's target, which lstat and O_NOFOLLOW would follow: the
// cache must see the link through them, as it sees "link".
TEST(CacheRefusal, ALinkNamedWithATrailingSlashOrDotIsRefused) {
  for (const std::string suffix : {"/", "/.", "/./", "//"}) {
    SCOPED_TRACE("cache directory named link" + suffix);
    TempDirectory temp;
    const fs::path real = temp.root() / "real";
    fs::create_directory(real);
    ASSERT_EQ(::chmod(real.c_str(), 0700), 0);
    write_file(real / "planted.txt", as_bytes("x"));
    write_file(real / cache_entry_file_name(key_for(0)), encode_cache_entry(key_for(0), value_for(99)));
    fs::create_directory_symlink(real, temp.cache());
    const fs::path spelled = temp.cache().string() + suffix;
    expect_refused(spelled, real, {cache_entry_file_name(key_for(0)), "planted.txt"});
    WarningLog warnings;
    DiskCache cache(spelled, {}, faults_with(warnings));
    EXPECT_FALSE(cache.put(key_for(1), value_for(1)).ok());
    EXPECT_FALSE(cache.get(key_for(0)).has_value());
    Result<CacheStats> stats = cache.stats();
    ASSERT_FALSE(stats.ok());
    EXPECT_NE(stats.error().message.find("symbolic link"), std::string::npos) << stats.error().message;
    EXPECT_EQ(file_names(real), (std::vector<std::string>{cache_entry_file_name(key_for(0)), "planted.txt"}));
  }
}

TEST(CacheRefusal, TheCurrentDirectoryNamedDotIsCheckedAsItself) {
  // "." loses nothing to the trailing-separator rule: it is the current directory, checked as such.
  TempDirectory temp;
  fs::create_directory(temp.cache());
  ASSERT_EQ(::chmod(temp.cache().c_str(), 0777), 0);
  const fs::path before = fs::current_path();
  fs::current_path(temp.cache());
  for (const std::string spelled : {".", "./"}) {
    SCOPED_TRACE("cache directory named " + spelled);
    WarningLog warnings;
    DiskCache cache(spelled, {}, faults_with(warnings));
    Result<CacheStats> stats = cache.stats();
    EXPECT_FALSE(stats.ok());
    if (!stats.ok()) {
      EXPECT_NE(stats.error().message.find("may be written by other users"), std::string::npos) << stats.error().message;
    }
  }
  ASSERT_EQ(::chmod(temp.cache().c_str(), 0700), 0);
  DiskCache private_here(".", {});
  EXPECT_TRUE(private_here.put(key_for(1), value_for(1)).ok());
  EXPECT_EQ(private_here.get(key_for(1)), value_for(1));
  fs::current_path(before);
}

// A directory with one of the checked modes, holding someone else's planted entry for key 0.
void make_planted_directory(const fs::path& directory, mode_t mode) {
  fs::create_directory(directory);
  write_file(directory / "planted.txt", as_bytes("x"));
  write_file(directory / cache_entry_file_name(key_for(0)), encode_cache_entry(key_for(0), value_for(99)));
  ASSERT_EQ(::chmod(directory.c_str(), mode), 0);
}

void expect_refused_as_writable_by_others(const fs::path& directory) {
  expect_refused(directory, directory, {cache_entry_file_name(key_for(0)), "planted.txt"});
  WarningLog warnings;
  DiskCache cache(directory, {}, faults_with(warnings));
  Result<CacheStats> stats = cache.stats();
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("may be written by other users"), std::string::npos) << stats.error().message;
}

TEST(CacheRefusal, DirectoryWritableByOthers) {
  for (const mode_t mode : {0777, 0702, 0757, 01777}) {
    SCOPED_TRACE("mode " + std::to_string(mode));
    TempDirectory temp;
    make_planted_directory(temp.cache(), mode);
    expect_refused_as_writable_by_others(temp.cache());
  }
}

TEST(CacheRefusal, DirectoryWritableByAGroupNotTheProcesssOwn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to a group this process is not in";
  for (const mode_t mode : {0770, 0720, 0775}) {
    SCOPED_TRACE("mode " + std::to_string(mode));
    TempDirectory temp;
    make_planted_directory(temp.cache(), mode);
    ASSERT_NE(::getegid(), gid_t{12345});
    ASSERT_EQ(::chown(temp.cache().c_str(), ::geteuid(), 12345), 0);
    expect_refused_as_writable_by_others(temp.cache());
  }
}

TEST(CacheRefusal, DirectoryNotWritableByOthersIsUsed) {
  // Group write by the process's own group is allowed (a group per user, umask 002).
  for (const mode_t mode : {0755, 0750, 0700, 0775, 0770}) {
    SCOPED_TRACE("mode " + std::to_string(mode));
    TempDirectory temp;
    fs::create_directory(temp.cache());
    ASSERT_EQ(::chown(temp.cache().c_str(), ::geteuid(), ::getegid()), 0);
    ASSERT_EQ(::chmod(temp.cache().c_str(), mode), 0);
    WarningLog warnings;
    DiskCache cache(temp.cache(), {}, faults_with(warnings));
    ASSERT_TRUE(cache.put(key_for(1), value_for(1)).ok());
    EXPECT_EQ(cache.get(key_for(1)), value_for(1));
    ASSERT_TRUE(cache.stats().ok());
    EXPECT_EQ(cache.stats()->entries, 1u);
    EXPECT_EQ(warnings.count(), 0u) << warnings.first();
    EXPECT_EQ(mode_of(temp.cache()), mode);  // the cache does not change a mode it accepts
  }
}

// ---------------------------------------------------------------------------------------------
// LRU pruning by bytes and the housekeeping commands

constexpr std::uint64_t kEntryBytes = kCacheEntryHeaderBytes + 1000;

TEST(CachePrune, EvictsLeastRecentlyUsedByBytes) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  const std::time_t base = std::time(nullptr) - 1000;
  for (std::uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(cache.put(key_for(i), value_for(i)).ok());
    set_mtime(temp.cache() / cache_entry_file_name(key_for(i)), base + static_cast<std::time_t>(i));
  }
  // Using entry 0 makes it the most recent, whatever its age on disk (atime is never consulted).
  ASSERT_TRUE(cache.get(key_for(0)).has_value());
  Result<std::uint64_t> removed = cache.prune(CachePolicy{2 * kEntryBytes});
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 2u);
  EXPECT_TRUE(cache.get(key_for(0)).has_value());
  EXPECT_FALSE(cache.get(key_for(1)).has_value());
  EXPECT_FALSE(cache.get(key_for(2)).has_value());
  EXPECT_TRUE(cache.get(key_for(3)).has_value());
  EXPECT_EQ(cache.stats()->bytes, 2 * kEntryBytes);
  // Within the limit already: nothing more to do.
  EXPECT_EQ(*cache.prune(CachePolicy{2 * kEntryBytes}), 0u);
}

TEST(CachePrune, CountsBytesNotEntries) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  const std::time_t base = std::time(nullptr) - 1000;
  ASSERT_TRUE(cache.put(key_for(0), value_for(0, 10000)).ok());  // oldest and big
  set_mtime(temp.cache() / cache_entry_file_name(key_for(0)), base);
  for (std::uint64_t i = 1; i < 6; ++i) {
    ASSERT_TRUE(cache.put(key_for(i), value_for(i, 100)).ok());
    set_mtime(temp.cache() / cache_entry_file_name(key_for(i)), base + static_cast<std::time_t>(i));
  }
  EXPECT_EQ(*cache.prune(CachePolicy{5 * (kCacheEntryHeaderBytes + 100)}), 1u);
  EXPECT_EQ(cache.stats()->entries, 5u);
}

TEST(CachePrune, PutKeepsTheTotalUnderTheLimit) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), CachePolicy{4 * kEntryBytes});
  const std::time_t base = std::time(nullptr) - 1000;
  for (std::uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(cache.put(key_for(i), value_for(i)).ok());
    set_mtime(temp.cache() / cache_entry_file_name(key_for(i)), base + static_cast<std::time_t>(i));
    Result<CacheStats> stats = cache.stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_LE(stats->bytes, 4 * kEntryBytes) << "after put " << i;
  }
  EXPECT_TRUE(cache.get(key_for(9)).has_value());  // the newest survive
  EXPECT_TRUE(cache.get(key_for(8)).has_value());
  EXPECT_FALSE(cache.get(key_for(0)).has_value());
  EXPECT_TRUE(cache.writable());
}

TEST(CachePrune, PutNeverEvictsTheEntryItJustWrote) {
  // Cap 1000 bytes, so an automatic prune aims at 875. A 400-byte entry, then a 948-byte one:
  // 1348 bytes, over the cap; evicting the older entry leaves 948, still above 875, and the prune
  // must stop there rather than take the entry just written (which fits the cap by itself).
  TempDirectory temp;
  DiskCache cache(temp.cache(), CachePolicy{1000});
  const Bytes small = value_for(1, 400 - kCacheEntryHeaderBytes);
  const Bytes large = value_for(2, 948 - kCacheEntryHeaderBytes);
  ASSERT_TRUE(cache.put(key_for(1), small).ok());
  set_mtime(temp.cache() / cache_entry_file_name(key_for(1)), std::time(nullptr) - 1000);
  ASSERT_TRUE(cache.put(key_for(2), large).ok());
  EXPECT_EQ(cache.get(key_for(2)), large);
  EXPECT_FALSE(cache.get(key_for(1)).has_value());
  Result<CacheStats> stats = cache.stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->entries, 1u);
  EXPECT_EQ(stats->bytes, 948u);
  EXPECT_TRUE(cache.writable());
  // The same through get_or_compute: the computed value is there for whoever asks next.
  CountingCompute compute;
  TempDirectory other;
  DiskCache computing(other.cache(), CachePolicy{1000});
  ASSERT_TRUE(computing.put(key_for(3), small).ok());
  set_mtime(other.cache() / cache_entry_file_name(key_for(3)), std::time(nullptr) - 1000);
  const auto large_compute = [&]() -> Result<Bytes> {
    (void)compute.of(4)();
    return large;
  };
  ASSERT_TRUE(computing.get_or_compute(key_for(4), large_compute).ok());
  EXPECT_EQ(DiskCache(other.cache(), {}).get(key_for(4)), large);
  EXPECT_EQ(*compute.calls, 1);
}

TEST(CachePrune, RemovesStaleTempFilesAndUnheldLockFilesOnly) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  ASSERT_TRUE(cache.put(key_for(1), value_for(1)).ok());
  const fs::path stale = temp.cache() / "kiln-tmp-4242-00000000deadbeef";
  const fs::path fresh = temp.cache() / "kiln-tmp-4243-00000000feedface";
  const fs::path left_lock = temp.cache() / ("kiln-" + key_for(5).hex() + ".lock");
  write_file(stale, as_bytes("half an entry"));
  write_file(fresh, as_bytes("a write in progress"));
  write_file(left_lock, {});
  set_mtime(stale, std::time(nullptr) - 2 * 60 * 60);
  EXPECT_EQ(*cache.prune({}), 0u);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(fresh));
  EXPECT_FALSE(fs::exists(left_lock));
  EXPECT_TRUE(cache.get(key_for(1)).has_value());
}

TEST(CachePrune, ClearRemovesOnlyKilnFiles) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(cache.put(key_for(i), value_for(i)).ok());
  write_file(temp.cache() / "notes.txt", as_bytes("mine"));
  write_file(temp.cache() / "kiln-notes.txt", as_bytes("also mine: kiln's prefix but not a name kiln makes"));
  fs::create_directory(temp.cache() / ("kiln-" + key_for(7).hex() + ".bin"));  // a directory, not an entry
  Result<std::uint64_t> removed = cache.clear();
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 3u);
  EXPECT_EQ(file_names(temp.cache()),
            (std::vector<std::string>{"kiln-" + key_for(7).hex() + ".bin", "kiln-notes.txt", "notes.txt"}));
  EXPECT_EQ(cache.stats()->entries, 0u);
  EXPECT_EQ(*cache.clear(), 0u);
}

TEST(CachePrune, ListIsSortedByLastUseMostRecentFirst) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  const std::time_t base = std::time(nullptr) - 1000;
  const std::vector<std::uint64_t> use_order = {2, 0, 3, 1};
  for (std::size_t position = 0; position < use_order.size(); ++position) {
    const std::uint64_t index = use_order[position];
    ASSERT_TRUE(cache.put(key_for(index), value_for(index, 10 * (index + 1))).ok());
    set_mtime(temp.cache() / cache_entry_file_name(key_for(index)), base + static_cast<std::time_t>(position));
  }
  Result<std::vector<CacheEntryInfo>> entries = cache.list();
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    const std::uint64_t index = use_order[3 - i];
    EXPECT_EQ((*entries)[i].key, key_for(index).hex());
    EXPECT_EQ((*entries)[i].bytes, kCacheEntryHeaderBytes + 10 * (index + 1));
    EXPECT_EQ(std::chrono::system_clock::to_time_t((*entries)[i].last_used), base + static_cast<std::time_t>(3 - i));
  }
}

TEST(CachePrune, MissingDirectoryIsEmptyAndStaysMissing) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  EXPECT_EQ(cache.stats()->entries, 0u);
  EXPECT_TRUE(cache.list()->empty());
  EXPECT_EQ(*cache.prune({}), 0u);
  EXPECT_EQ(*cache.clear(), 0u);
  EXPECT_FALSE(fs::exists(temp.cache()));
}

// ---------------------------------------------------------------------------------------------
// The environment

class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnvironment() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST(CacheEnvironment, DefaultDirectoryPrecedence) {
  ScopedEnvironment home("HOME", "/home/someone");
  {
    ScopedEnvironment explicit_directory("KILN_CACHE_DIR", "/srv/kiln-cache");
    ScopedEnvironment xdg("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(DiskCache::default_directory(), fs::path("/srv/kiln-cache"));
  }
  {
    ScopedEnvironment explicit_directory("KILN_CACHE_DIR", nullptr);
    ScopedEnvironment xdg("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(DiskCache::default_directory(), fs::path("/xdg/kiln"));
  }
  {
    ScopedEnvironment explicit_directory("KILN_CACHE_DIR", "");
    ScopedEnvironment xdg("XDG_CACHE_HOME", "relative/is/ignored");
    EXPECT_EQ(DiskCache::default_directory(), fs::path("/home/someone/.cache/kiln"));
  }
}

TEST(CacheEnvironment, PolicyFromEnvironment) {
  std::vector<std::string> warnings;
  const auto warn = [&](std::string_view message) { warnings.emplace_back(message); };
  {
    ScopedEnvironment size("KILN_CACHE_MAX_SIZE", nullptr);
    EXPECT_EQ(DiskCache::policy_from_environment(warn).max_bytes, 1ull << 30);
  }
  {
    ScopedEnvironment size("KILN_CACHE_MAX_SIZE", "256M");
    EXPECT_EQ(DiskCache::policy_from_environment(warn).max_bytes, 256ull << 20);
    EXPECT_EQ(DiskCache::policy_from_environment().max_bytes, 256ull << 20);
  }
  EXPECT_TRUE(warnings.empty());
  {
    ScopedEnvironment size("KILN_CACHE_MAX_SIZE", "lots");
    EXPECT_EQ(DiskCache::policy_from_environment(warn).max_bytes, 1ull << 30);
  }
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("KILN_CACHE_MAX_SIZE"), std::string::npos);
  EXPECT_NE(warnings[0].find("lots"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// A private subdirectory for the caller's own files (kiln build's compile slots)

TEST(CachePrivateSubdirectory, IsMadeWithTheCacheDirectoryAndIsPrivate) {
  TempDirectory temp;
  const fs::path directory = temp.root() / "a" / "cache";
  DiskCache cache(directory, {});
  for (int round = 0; round < 2; ++round) {  // the second finds both made
    Result<fs::path> slots = cache.private_subdirectory("slots");
    ASSERT_TRUE(slots.ok()) << slots.error().describe();
    EXPECT_EQ(*slots, directory / "slots");
  }
  for (const fs::path& made : {temp.root() / "a", directory, directory / "slots"}) {
    EXPECT_EQ(mode_of(made), 0700u) << made;
  }
  // The cache still works beside it, and does not count it.
  ASSERT_TRUE(cache.put(key_for(1), value_for(1)).ok());
  EXPECT_EQ(cache.stats()->entries, 1u);
}

TEST(CachePrivateSubdirectory, RefusesASubdirectoryThatIsASymbolicLink) {
  TempDirectory temp;
  fs::create_directory(temp.cache());
  ASSERT_EQ(::chmod(temp.cache().c_str(), 0700), 0);
  const fs::path elsewhere = temp.root() / "elsewhere";
  fs::create_directory(elsewhere);
  ASSERT_EQ(::chmod(elsewhere.c_str(), 0700), 0);
  fs::create_directory_symlink(elsewhere, temp.cache() / "slots");
  Result<fs::path> slots = DiskCache(temp.cache(), {}).private_subdirectory("slots");
  ASSERT_FALSE(slots.ok()) << "accepted " << *slots;
  EXPECT_NE(slots.error().message.find("not a private directory"), std::string::npos) << slots.error().message;
  EXPECT_TRUE(fs::is_symlink(temp.cache() / "slots"));
  EXPECT_EQ(file_names(elsewhere), std::vector<std::string>{});
}

TEST(CachePrivateSubdirectory, RefusesASubdirectoryOthersMayWriteOrAFile) {
  TempDirectory temp;
  DiskCache cache(temp.cache(), {});
  ASSERT_TRUE(cache.private_subdirectory("slots").ok());
  ASSERT_EQ(::chmod((temp.cache() / "slots").c_str(), 0777), 0);
  Result<fs::path> open_to_all = cache.private_subdirectory("slots");
  ASSERT_FALSE(open_to_all.ok());
  EXPECT_NE(open_to_all.error().message.find("not a private directory"), std::string::npos);
  write_file(temp.cache() / "file", as_bytes("x"));
  EXPECT_FALSE(cache.private_subdirectory("file").ok());
}

TEST(CachePrivateSubdirectory, RefusesWhenTheCacheDirectoryIsRefused) {
  TempDirectory temp;
  const fs::path real = temp.root() / "real";
  fs::create_directory(real);
  ASSERT_EQ(::chmod(real.c_str(), 0700), 0);
  fs::create_directory_symlink(real, temp.cache());
  for (const fs::path& spelled : {temp.cache(), fs::path(temp.cache().string() + "/")}) {
    WarningLog warnings;
    Result<fs::path> slots = DiskCache(spelled, {}, faults_with(warnings)).private_subdirectory("slots");
    ASSERT_FALSE(slots.ok()) << spelled << " accepted: " << *slots;
    EXPECT_NE(slots.error().message.find("symbolic link"), std::string::npos) << slots.error().message;
  }
  EXPECT_EQ(file_names(real), std::vector<std::string>{});
  // A cache directory others may write to is refused too, and gets no subdirectory.
  const fs::path shared = temp.root() / "shared";
  fs::create_directory(shared);
  ASSERT_EQ(::chmod(shared.c_str(), 0777), 0);
  WarningLog warnings;
  EXPECT_FALSE(DiskCache(shared, {}, faults_with(warnings)).private_subdirectory("slots").ok());
  EXPECT_EQ(file_names(shared), std::vector<std::string>{});
}

// ---------------------------------------------------------------------------------------------
// The compile cache in its default place: build/ under the cache directory, held to its checks

TEST(CompileCacheDirectory, IsBuildUnderTheCacheDirectory) {
  ScopedEnvironment explicit_directory("KILN_CACHE_DIR", "/srv/kiln-cache");
  EXPECT_EQ(default_compile_cache_directory(), fs::path("/srv/kiln-cache/build"));
}

TEST(CompileCacheDirectory, InTheDefaultPlaceRefusesACacheDirectoryThatIsALink) {
  TempDirectory temp;
  const fs::path real = temp.root() / "real";
  fs::create_directory(real);
  ASSERT_EQ(::chmod(real.c_str(), 0700), 0);
  const fs::path link = temp.root() / "link";
  fs::create_directory_symlink(real, link);
  for (const std::string& spelled : {link.string(), link.string() + "/"}) {
    SCOPED_TRACE("KILN_CACHE_DIR=" + spelled);
    ScopedEnvironment explicit_directory("KILN_CACHE_DIR", spelled.c_str());
    WarningLog warnings;
    DiskCache cache = compile_cache_at(default_compile_cache_directory(), {}, faults_with(warnings));
    EXPECT_FALSE(cache.put(key_for(1), value_for(1)).ok());
    EXPECT_FALSE(cache.get(key_for(1)).has_value());
    Result<CacheStats> stats = cache.stats();
    ASSERT_FALSE(stats.ok());
    EXPECT_NE(stats.error().message.find("symbolic link"), std::string::npos) << stats.error().message;
    EXPECT_EQ(warnings.count(), 1u);
    EXPECT_EQ(file_names(real), std::vector<std::string>{}) << "build/ was made through the link";
  }
}

TEST(CompileCacheDirectory, InTheDefaultPlaceRefusesACacheDirectoryOthersMayWrite) {
  TempDirectory temp;
  fs::create_directory(temp.cache());
  ASSERT_EQ(::chmod(temp.cache().c_str(), 0777), 0);
  ScopedEnvironment explicit_directory("KILN_CACHE_DIR", temp.cache().c_str());
  WarningLog warnings;
  DiskCache cache = compile_cache_at(default_compile_cache_directory(), {}, faults_with(warnings));
  EXPECT_FALSE(cache.put(key_for(1), value_for(1)).ok());
  Result<CacheStats> stats = cache.stats();
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("may be written by other users"), std::string::npos) << stats.error().message;
  EXPECT_EQ(file_names(temp.cache()), std::vector<std::string>{});
}

TEST(CompileCacheDirectory, InTheDefaultPlaceWorksUnderARealPrivateCacheDirectory) {
  TempDirectory temp;
  fs::create_directory(temp.cache());
  ASSERT_EQ(::chmod(temp.cache().c_str(), 0755), 0);
  ScopedEnvironment explicit_directory("KILN_CACHE_DIR", temp.cache().c_str());
  WarningLog warnings;
  DiskCache cache = compile_cache_at(default_compile_cache_directory(), {}, faults_with(warnings));
  ASSERT_TRUE(cache.put(key_for(1), value_for(1)).ok());
  EXPECT_EQ(cache.get(key_for(1)), value_for(1));
  EXPECT_EQ(warnings.count(), 0u) << warnings.first();
  EXPECT_TRUE(fs::exists(temp.cache() / "build" / cache_entry_file_name(key_for(1))));
  EXPECT_EQ(mode_of(temp.cache() / "build"), 0700u);
  // A compile cache made before KILN_CACHE_DIR is missing entirely: both are made, privately.
  TempDirectory fresh;
  ScopedEnvironment fresh_directory("KILN_CACHE_DIR", fresh.cache().c_str());
  DiskCache made = compile_cache_at(default_compile_cache_directory(), {}, faults_with(warnings));
  ASSERT_TRUE(made.put(key_for(2), value_for(2)).ok());
  EXPECT_EQ(mode_of(fresh.cache()), 0700u);
  EXPECT_EQ(mode_of(fresh.cache() / "build"), 0700u);
}

TEST(CompileCacheDirectory, OutsideTheDefaultPlaceOnlyTheDirectoryItselfIsChecked) {
  // A compile cache given its own directory is held to the directory's checks alone: only the
  // default place has a cache directory above it to check (here one that others may write).
  TempDirectory temp;
  const fs::path shared = temp.root() / "shared";
  fs::create_directory(shared);
  ASSERT_EQ(::chmod(shared.c_str(), 01777), 0);
  ScopedEnvironment explicit_directory("KILN_CACHE_DIR", shared.c_str());
  WarningLog warnings;
  DiskCache cache = compile_cache_at(temp.root() / "mine", {}, faults_with(warnings));
  ASSERT_TRUE(cache.put(key_for(1), value_for(1)).ok());
  EXPECT_EQ(cache.get(key_for(1)), value_for(1));
}

TEST(CompileCacheDirectory, IsEmptyNotARelativeBuildWhenThereIsNoCacheDirectory) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become a user with no passwd entry";
  constexpr uid_t kNobodyKnown = 54321;
  if (::getpwuid(kNobodyKnown) != nullptr) GTEST_SKIP() << "uid " << kNobodyKnown << " has a passwd entry here";
  // In a child: no KILN_CACHE_DIR, XDG_CACHE_HOME or HOME, and a uid with no home to fall back on.
  const int status = exit_status_in_child([]() {
    ::unsetenv("KILN_CACHE_DIR");
    ::unsetenv("XDG_CACHE_HOME");
    ::unsetenv("HOME");
    if (::setgid(kNobodyKnown) != 0 || ::setuid(kNobodyKnown) != 0) return 20;
    if (!DiskCache::default_directory().empty()) return 21;
    if (!default_compile_cache_directory().empty()) return 22;  // "build", relative to the working directory, before
    // A compile cache there has no directory: refused, and nothing is written anywhere.
    CacheFaults quiet;
    quiet.warn = [](std::string_view) {};
    DiskCache cache = compile_cache_at(default_compile_cache_directory(), {}, quiet);
    if (cache.put(key_for(1), value_for(1)).ok()) return 23;
    return 0;
  });
  EXPECT_EQ(status, 0) << "20: could not become uid " << kNobodyKnown
                       << "; 21: DiskCache::default_directory() not empty; 22: default_compile_cache_directory() "
                          "not empty; 23: a compile cache with no directory stored an entry";
}

}  // namespace
