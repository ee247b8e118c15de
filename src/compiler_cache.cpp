#include "compiler_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

namespace kiln {
namespace {

constexpr std::string_view kMagic = "KILNBLD1";
constexpr std::size_t kHeaderSize = 24;  // magic, payload size, payload checksum

void put64(Bytes& out, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}

std::uint64_t get64(const std::uint8_t* at) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value |= std::uint64_t{at[i]} << (8 * i);
  return value;
}

Error io_error(std::string what, const std::filesystem::path& path, int error_number) {
  Error error = make_error(Component::Cache, std::move(what) + ": " + std::strerror(error_number), path.string(),
                           "the build still succeeds; check the compile cache directory's permissions and free space");
  error.native_code = error_number;
  return error;
}

// mkdir -p with mode 0700 for every directory it creates (existing ones are left as they are).
int make_private_directories(const std::filesystem::path& directory) {
  std::filesystem::path prefix;
  for (const auto& component : directory) {
    prefix /= component;
    struct stat existing {};
    if (::stat(prefix.c_str(), &existing) == 0 && S_ISDIR(existing.st_mode)) continue;
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) return errno;
  }
  return 0;
}

int write_all(int fd, const std::uint8_t* data, std::size_t size) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += written;
    size -= static_cast<std::size_t>(written);
  }
  return 0;
}

}  // namespace

std::filesystem::path CompileCache::entry_path(const Hash128& key, std::string_view kind) const {
  return directory_ / (key.hex() + "." + std::string(kind));
}

std::optional<Bytes> CompileCache::load(const Hash128& key, std::string_view kind) const {
  const std::filesystem::path path = entry_path(key, kind);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat status {};
  Bytes entry;
  bool read_ok = ::fstat(fd, &status) == 0 && S_ISREG(status.st_mode);
  if (read_ok) {
    entry.resize(static_cast<std::size_t>(status.st_size));
    std::size_t filled = 0;
    while (filled < entry.size()) {
      const ssize_t got = ::read(fd, entry.data() + filled, entry.size() - filled);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      filled += static_cast<std::size_t>(got);
    }
    read_ok = filled == entry.size();
  }
  ::close(fd);
  const bool intact = read_ok && entry.size() >= kHeaderSize &&
                      std::memcmp(entry.data(), kMagic.data(), kMagic.size()) == 0 &&
                      get64(entry.data() + 8) == entry.size() - kHeaderSize &&
                      get64(entry.data() + 16) == checksum64(ByteView(entry).subspan(kHeaderSize));
  if (!intact) {
    // Damaged (a crash mid-write on a file system without atomic rename, a disk error, a
    // stray edit): remove it so that the fresh compile's store replaces it.
    if (read_ok) ::unlink(path.c_str());
    return std::nullopt;
  }
  return Bytes(entry.begin() + kHeaderSize, entry.end());
}

Result<void> CompileCache::store(const Hash128& key, std::string_view kind, ByteView payload) const {
  if (int error = make_private_directories(directory_); error != 0) {
    return io_error("cannot create the compile cache directory", directory_, error);
  }
  Bytes entry(kMagic.begin(), kMagic.end());
  put64(entry, payload.size());
  put64(entry, checksum64(payload));
  entry.insert(entry.end(), payload.begin(), payload.end());

  static std::atomic<std::uint64_t> sequence{0};
  const std::filesystem::path final_path = entry_path(key, kind);
  const std::filesystem::path temporary =
      final_path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(sequence++);
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot create a compile cache entry", temporary, errno);
  int error = write_all(fd, entry.data(), entry.size());
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error == 0 && ::rename(temporary.c_str(), final_path.c_str()) != 0) error = errno;
  if (error != 0) {
    ::unlink(temporary.c_str());
    return io_error("cannot write a compile cache entry", final_path, error);
  }
  return {};
}

}  // namespace kiln
