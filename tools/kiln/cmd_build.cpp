// kiln build: device list -> targets -> compile jobs -> images -> bundle.
#include <fcntl.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "commands.hpp"
#include "kiln/bundle.hpp"
#include "kiln/cache.hpp"
#include "kiln/compiler.hpp"
#include "kiln/device_list.hpp"
#include "kiln/runtime.hpp"

extern char** environ;

namespace kiln::cli {
namespace {

// One NVRTC run of a parallel build: a source for one architecture, with its cubin, its PTX or both.
struct CompileUnit {
  std::size_t source = 0;
  Arch arch;
  bool cubin = false;
  bool ptx = false;
};

// Every (source, architecture) pair of the build, in a fixed order that helper processes
// recompute from the same arguments.
std::vector<CompileUnit> compile_units(std::size_t sources, const std::vector<Arch>& cubins, const std::vector<Arch>& ptx) {
  std::set<Arch> archs(cubins.begin(), cubins.end());
  archs.insert(ptx.begin(), ptx.end());
  std::vector<CompileUnit> units;
  for (std::size_t source = 0; source < sources; ++source) {
    for (const Arch& arch : archs) {
      units.push_back({source, arch, std::find(cubins.begin(), cubins.end(), arch) != cubins.end(),
                       std::find(ptx.begin(), ptx.end(), arch) != ptx.end()});
    }
  }
  return units;
}

// One of `slots` machine-wide compile slots, held while it lives: lock files in the compile
// cache's slots/, so that the helpers of several kiln builds at once (Ninja runs one per bundle)
// run at most one compile per core between them. flock() is released when a process dies.
class CompileSlot {
 public:
  CompileSlot(const std::filesystem::path& cache_directory, unsigned slots) {
    // Made as private as the cache itself; refused (a link, another user's): compile unthrottled.
    Result<std::filesystem::path> directory =
        compile_cache_at(cache_directory, DiskCache::policy_from_environment()).private_subdirectory("slots");
    if (!directory) return;
    for (bool wait : {false, true}) {
      // Without waiting, any free slot; then wait for one picked by process id, to spread the waiters.
      for (unsigned slot = 0; slot < slots; ++slot) {
        const unsigned pick = wait ? static_cast<unsigned>(getpid()) % slots : slot;
        const std::string path = (*directory / ("slot-" + std::to_string(pick))).string();
        const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) continue;
        if (::flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) == 0) {
          fd_ = fd;
          return;
        }
        ::close(fd);
        if (wait) break;
      }
    }
    // No slot could be had (an unwritable cache): compile anyway, unthrottled.
  }
  ~CompileSlot() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  CompileSlot(const CompileSlot&) = delete;
  CompileSlot& operator=(const CompileSlot&) = delete;

 private:
  int fd_ = -1;
};

// NVRTC holds a process-wide lock through much of nvrtcCompileProgram (CUDA 13.0: a second
// thread waits in pthread_mutex_lock inside it; two CUB-heavy compiles on two threads took as
// long as one after the other), so threads alone compile header-heavy sources one at a time.
// With more than one job and the compile cache on, `jobs` helper processes (this program
// again) first compile a share of the units each into the cache; the build itself then finds
// everything there, and reports any error itself, as a build without helpers would.
void fill_cache_in_helpers(const BuildArgs& args, std::size_t unit_count, unsigned jobs) {
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t helpers = std::min<std::size_t>(jobs == 0 ? hardware : jobs, unit_count);
  if (helpers < 2) return;
  std::error_code error;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", error).string();
  if (error) return;
  std::vector<pid_t> children;
  for (std::size_t helper = 0; helper < helpers; ++helper) {
    std::string units;
    for (std::size_t unit = helper; unit < unit_count; unit += helpers) units += (units.empty() ? "" : ",") + std::to_string(unit);
    std::vector<std::string> arguments{self, "build"};
    for (const auto& source : args.sources) arguments.push_back(source.string());
    arguments.insert(arguments.end(), {"-o", "/dev/null", "-j", "1", "--quiet", "--fill-cache-units", units});
    if (!args.devices.empty()) arguments.insert(arguments.end(), {"--devices", args.devices});
    if (!args.ptx.empty()) arguments.insert(arguments.end(), {"--ptx", args.ptx});
    if (args.split_kernels) arguments.push_back("--split-kernels");
    for (const auto& dir : args.include_dirs) arguments.insert(arguments.end(), {"-I", dir.string()});
    for (const auto& define : args.defines) arguments.insert(arguments.end(), {"-D", define});
    std::vector<char*> argv;
    for (std::string& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    // A helper's errors are the build's to report, once: its output goes nowhere.
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t child = 0;
    if (posix_spawn(&child, self.c_str(), &actions, nullptr, argv.data(), environ) == 0) children.push_back(child);
    posix_spawn_file_actions_destroy(&actions);
  }
  for (pid_t child : children) {
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

Result<std::vector<ComputeCapability>> local_gpus() {
  auto runtime = Runtime::create();
  if (!runtime) return runtime.error();
  std::vector<ComputeCapability> ccs;
  for (const GpuInfo& gpu : runtime->gpus()) ccs.push_back(gpu.cc);
  return ccs;
}

// The PTX to keep: by default that of the oldest listed architecture, so that every newer
// GPU can JIT it; plain (not a/f), since a/f PTX would run on only one device or family.
Result<std::vector<Arch>> ptx_archs(const std::string& request, const std::vector<Arch>& cubins) {
  if (request == "none") return std::vector<Arch>{};
  if (request.empty() || request == "newest") {
    if (cubins.empty()) return std::vector<Arch>{};
    const Arch& pick = request.empty() ? cubins.front() : cubins.back();
    return std::vector<Arch>{Arch{pick.cc, ArchVariant::Plain}};
  }
  if (const Device* device = find_device(request)) return std::vector<Arch>{Arch{device->cc, ArchVariant::Plain}};
  auto arch = parse_arch(request);
  if (!arch) {
    return usage_error("--ptx '" + request + "' is not an architecture", "use compute_80 (or sm_80, 80), 'newest' or 'none'");
  }
  return std::vector<Arch>{*arch};
}

std::string join_archs(const std::vector<Arch>& archs, bool compute) {
  std::string text;
  for (const Arch& arch : archs) text += (text.empty() ? "" : ",") + (compute ? arch.compute_name() : arch.sm_name());
  return text;
}

// Makefile syntax: spaces and '#' in paths are escaped with a backslash, '$' doubled.
std::string depfile_path(const std::filesystem::path& path) {
  std::string out;
  for (char c : std::filesystem::absolute(path).lexically_normal().string()) {
    if (c == ' ' || c == '#') out += '\\';
    if (c == '$') out += '$';
    out += c;
  }
  return out;
}

class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled && isatty(STDERR_FILENO)) {}
  void update(const CompileProgress& progress) {
    if (!enabled_) return;
    std::fprintf(stderr, "\r\033[K[%zu/%zu] %s%s", progress.done, progress.total, progress.current.c_str(),
                 progress.cached ? " (cached)" : "");
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  bool enabled_;
};

}  // namespace

static bool has_content(const std::filesystem::path& path, std::string_view bytes) {
  std::error_code ec;
  if (std::filesystem::file_size(path, ec) != bytes.size() || ec) return false;
  std::ifstream in(path, std::ios::binary);
  std::string existing(bytes.size(), '\0');
  return in.read(existing.data(), static_cast<std::streamsize>(existing.size())) && existing == bytes;
}

Result<void> write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  // An unchanged file keeps its timestamp, so build systems that restat outputs (Ninja with
  // kiln_add_kernels) skip re-embedding and relinking after a comment-only edit.
  if (has_content(path, bytes)) return {};
  const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : ".";
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  std::random_device random;
  const std::filesystem::path temporary =
      directory / ("." + path.filename().string() + ".tmp" + std::to_string(getpid()) + "-" + std::to_string(random()));
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::filesystem::remove(temporary, ec);
      return make_error(Component::Io, "could not write " + temporary.string(), path.string(),
                        "check that the directory exists, is writable and the disk is not full");
    }
  }
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    const std::string why = ec.message();  // before remove() reuses ec
    std::filesystem::remove(temporary, ec);
    return make_error(Component::Io, "could not move the new file into place: " + why, path.string(),
                      "check that the output path is not a directory and its directory is writable");
  }
  return {};
}

Result<void> run_build(const BuildArgs& args) {
  std::string list = args.devices;
  if (list.empty()) {
    if (const char* from_env = std::getenv(kDeviceListVariable)) list = from_env;
  }
  if (list.empty()) {
    return usage_error("no device list", "pass --devices h100,a100 (or sm_90,sm_80), or set KILN_AOT_DEVLIST");
  }
  auto nvrtc = nvrtc_info();
  if (!nvrtc) return nvrtc.error();

  DeviceListContext context{nvrtc->supported, local_gpus};
  auto cubins = parse_device_list(list, context);
  if (!cubins) return cubins.error();
  auto ptx = ptx_archs(args.ptx, *cubins);
  if (!ptx) return ptx.error();

  if (!args.fill_cache_units.empty()) {
    // A helper: each unit alone, into the cache (the default one, as the parent's); no bundle.
    const std::vector<CompileUnit> units = compile_units(args.sources.size(), *cubins, *ptx);
    std::size_t start = 0;
    while (start <= args.fill_cache_units.size()) {
      const std::size_t end = std::min(args.fill_cache_units.find(',', start), args.fill_cache_units.size());
      const std::size_t index = std::strtoul(args.fill_cache_units.substr(start, end - start).c_str(), nullptr, 10);
      start = end + 1;
      if (index >= units.size()) continue;
      const CompileUnit& unit = units[index];
      CompileOptions options;
      if (unit.cubin) options.cubin_archs = {unit.arch};
      if (unit.ptx) options.ptx_archs = {unit.arch};
      options.split_kernels = args.split_kernels;
      options.include_dirs = args.include_dirs;
      options.defines = args.defines;
      options.jobs = 1;
      options.cache_dir = default_compile_cache_directory();
      const CompileSlot slot(*options.cache_dir, std::max(1u, std::thread::hardware_concurrency()));
      (void)compile({args.sources[unit.source]}, options);  // the parent reports failures
    }
    return {};
  }

  CompileOptions options;
  options.cubin_archs = *cubins;
  options.ptx_archs = *ptx;
  options.embed_source = args.embed_source;
  options.split_kernels = args.split_kernels;
  options.include_dirs = args.include_dirs;
  options.defines = args.defines;
  options.jobs = args.jobs;
  if (!args.no_cache) options.cache_dir = default_compile_cache_directory();
  ProgressLine progress(!args.quiet);
  options.on_progress = [&progress](const CompileProgress& step) { progress.update(step); };
  // Helpers hand their work over through the compile cache; without a cache directory (the build
  // warns that its cache is off) they would compile everything for nothing.
  if (options.cache_dir && !options.cache_dir->empty()) {
    if (!args.quiet && isatty(STDERR_FILENO)) std::fprintf(stderr, "kiln: compiling in parallel processes...");
    fill_cache_in_helpers(args, compile_units(args.sources.size(), *cubins, *ptx).size(), args.jobs);
    progress.finish();
  }

  auto compiled = compile(args.sources, options);
  progress.finish();
  if (!compiled) return compiled.error();
  for (const std::string& warning : compiled->warnings) std::fprintf(stderr, "kiln: warning: %s\n", warning.c_str());

  BundleMetadata metadata;
  metadata.entries = {{"toolkit", "NVRTC " + std::to_string(nvrtc->major) + "." + std::to_string(nvrtc->minor)},
                      {"devices", list},
                      {"cubin-targets", join_archs(*cubins, false)},
                      {"ptx-targets", join_archs(*ptx, true)}};
  WriteOptions write_options;
  write_options.codec = args.compress == "none" ? Codec::None : args.compress == "lz4" ? Codec::Lz4 : Codec::Zstd;
  auto bundle = write_bundle(compiled->images, metadata, write_options);
  if (!bundle) return bundle.error();
  if (auto written = write_file_atomically(args.output, as_text(*bundle)); !written) return written;

  if (args.depfile) {
    std::string rule = depfile_path(args.output) + ":";
    for (const auto& dependency : compiled->dependencies) rule += " \\\n  " + depfile_path(dependency);
    rule += "\n";
    if (auto written = write_file_atomically(*args.depfile, rule); !written) return written;
  }
  if (!args.quiet) {
    std::fprintf(stderr, "kiln: wrote %s (%zu bytes: %zu images for %s%s%s)\n", args.output.string().c_str(),
                 bundle->size(), compiled->images.size(), join_archs(*cubins, false).c_str(),
                 ptx->empty() ? "" : ", PTX ", join_archs(*ptx, true).c_str());
  }
  return {};
}

}  // namespace kiln::cli
