// kiln build: device list -> targets -> compile jobs -> images -> bundle.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>

#include "commands.hpp"
#include "kiln/bundle.hpp"
#include "kiln/cache.hpp"
#include "kiln/compiler.hpp"
#include "kiln/device_list.hpp"
#include "kiln/runtime.hpp"

namespace kiln::cli {
namespace {

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
    std::filesystem::remove(temporary, ec);
    return make_error(Component::Io, "could not move the new file into place: " + ec.message(), path.string());
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

  CompileOptions options;
  options.cubin_archs = *cubins;
  options.ptx_archs = *ptx;
  options.embed_source = args.embed_source;
  options.split_kernels = args.split_kernels;
  options.include_dirs = args.include_dirs;
  options.defines = args.defines;
  options.jobs = args.jobs;
  if (!args.no_cache) options.cache_dir = DiskCache::default_directory() / "build";
  ProgressLine progress(!args.quiet);
  options.on_progress = [&progress](const CompileProgress& step) { progress.update(step); };

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
  write_options.codec = args.compress == "none" ? Codec::None : Codec::Zstd;
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
