#include "compiler_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "cache_files.hpp"
#include "kiln/little_endian.hpp"

namespace kiln {
namespace {

constexpr std::string_view kMagic = "KILNBLD1";
constexpr std::size_t kHeaderSize = 24;  // magic, payload size, payload checksum

Error io_error(std::string what, const std::filesystem::path& path, int error_number) {
  Error error = make_error(Component::Cache, std::move(what) + ": " + std::strerror(error_number), path.string(),
                           "the build still succeeds; check the compile cache directory's permissions and free space");
  error.native_code = error_number;
  return error;
}

}  // namespace

std::filesystem::path CompileCache::entry_path(const Hash128& key, std::string_view kind) const {
  return directory_ / (key.hex() + "." + std::string(kind));
}

std::optional<Bytes> CompileCache::load(const Hash128& key, std::string_view kind) const {
  const std::filesystem::path path = entry_path(key, kind);
  const cache_files::FileDescriptor file(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!file.valid()) return std::nullopt;
  struct stat status {};
  Bytes entry;
  // One byte past the size seen, so a file that grew is caught by the size check below.
  const bool read_ok = ::fstat(file.get(), &status) == 0 && S_ISREG(status.st_mode) &&
                       cache_files::read_all(file.get(), static_cast<std::uint64_t>(status.st_size) + 1, entry, {}) == 0 &&
                       entry.size() == static_cast<std::uint64_t>(status.st_size);
  const bool intact = read_ok && entry.size() >= kHeaderSize &&
                      std::memcmp(entry.data(), kMagic.data(), kMagic.size()) == 0 &&
                      load_le<std::uint64_t>(entry.data() + 8) == entry.size() - kHeaderSize &&
                      load_le<std::uint64_t>(entry.data() + 16) == checksum64(ByteView(entry).subspan(kHeaderSize));
  if (!intact) {
    // Damaged (a crash mid-write on a file system without atomic rename, a disk error, a
    // stray edit): remove it so that the fresh compile's store replaces it.
    if (read_ok) ::unlink(path.c_str());
    return std::nullopt;
  }
  return Bytes(entry.begin() + kHeaderSize, entry.end());
}

Result<void> CompileCache::store(const Hash128& key, std::string_view kind, ByteView payload) const {
  if (int error = cache_files::make_private_directories(directory_, {}); error != 0) {
    return io_error("cannot create the compile cache directory", directory_, error);
  }
  Bytes entry(kHeaderSize);
  std::memcpy(entry.data(), kMagic.data(), kMagic.size());
  store_le<std::uint64_t>(entry.data() + 8, payload.size());
  store_le<std::uint64_t>(entry.data() + 16, checksum64(payload));
  entry.insert(entry.end(), payload.begin(), payload.end());

  static std::atomic<std::uint64_t> sequence{0};
  const std::filesystem::path final_path = entry_path(key, kind);
  const std::filesystem::path temporary =
      final_path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(sequence++);
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot create a compile cache entry", temporary, errno);
  int error = cache_files::write_all(fd, entry, {});
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error == 0 && ::rename(temporary.c_str(), final_path.c_str()) != 0) error = errno;
  if (error != 0) {
    ::unlink(temporary.c_str());
    return io_error("cannot write a compile cache entry", final_path, error);
  }
  return {};
}

}  // namespace kiln
