// compile(): sources -> (source, architecture) jobs on a thread pool -> images.
#include "kiln/compiler.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "compiler_cache.hpp"
#include "elf.hpp"
#include "nvrtc.hpp"
#include "ptx_split.hpp"
#include "source_image.hpp"

namespace kiln {
namespace {

// Bump when the way kiln drives NVRTC changes its output without changing anything else in
// the key (so that old compile cache entries stop matching).
constexpr std::uint64_t kCompilePipelineVersion = 1;
constexpr std::string_view kLanguageStandard = "c++17";

struct PreparedSource {
  std::filesystem::path given;  // as the caller named it, for messages
  source::SourceClosure closure;
  nvrtc::Unit unit;
  Hash128 inputs_hash;  // the text of the source and of every header it includes, with their paths
};

// One NVRTC run: a source for one architecture, yielding its cubin, its PTX or both (one
// front-end pass serves both). `discard` marks the run that only lists the kernels of a
// source compiled for no architecture at all (a source image alone).
struct Job {
  std::size_t source = 0;
  Arch arch;
  bool cubin = false;
  bool ptx = false;
  bool discard = false;
};

struct JobResult {
  std::vector<Image> images;  // cubin first, then PTX
  std::string warnings;
  std::optional<Error> error;
};

// "ops.cu for sm_90": short, for progress lines.
std::string label(const PreparedSource& source, std::string_view target) {
  return source.given.filename().string() + " for " + std::string(target);
}

// "kernels/ops.cu for sm_90": the path as given, for errors.
std::string error_context(const PreparedSource& source, std::string_view target) {
  return source.given.string() + " for " + std::string(target);
}

Result<PreparedSource> prepare(const std::filesystem::path& path, const CompileOptions& options,
                               const nvrtc::Toolchain& toolchain) {
  PreparedSource prepared;
  prepared.given = path;
  // NVRTC knows the source only by its file name (so that no absolute path ends up in the
  // output), so its directory goes first on the search path, where nvcc would look.
  // Spelled without "." or a trailing separator, so that "a.cu" and "./a.cu", "-I dir" and
  // "-I dir/" give NVRTC the same options and so the same cache keys.
  std::error_code error;
  auto normal = [&error](const std::filesystem::path& given) {
    std::filesystem::path plain = std::filesystem::absolute(given, error).lexically_normal();
    if (!plain.has_filename() && plain.has_relative_path()) plain = plain.parent_path();
    return plain;
  };
  const std::filesystem::path directory = normal(path).parent_path();
  std::vector<std::filesystem::path> search_dirs{directory};
  for (const auto& dir : options.include_dirs) search_dirs.push_back(normal(dir));

  auto closure = source::read_closure(path, search_dirs, toolchain.toolkit_include_dir);
  if (!closure) return closure.error();
  prepared.closure = std::move(*closure);

  nvrtc::Unit& unit = prepared.unit;
  unit.program_name = prepared.closure.path.filename().string();
  unit.text = prepared.closure.text;
  unit.line_info = options.line_info;
  for (const auto& dir : search_dirs) unit.options.push_back("-I" + dir.string());
  for (const auto& option : toolchain.toolkit_include_options) unit.options.push_back(option);
  for (const auto& define : options.defines) unit.options.push_back("-D" + define);
  unit.options.push_back("-std=" + std::string(kLanguageStandard));

  KeyBuilder inputs;
  inputs.add("source", prepared.closure.text);
  for (const auto& header : prepared.closure.headers) {
    inputs.add("header", header.path.string()).add("text", header.text);
  }
  prepared.inputs_hash = inputs.finish();
  return prepared;
}

Hash128 output_key(const nvrtc::Toolchain& toolchain, const PreparedSource& source, const Job& job,
                   ImageKind kind) {
  std::string options;
  for (const auto& option : source.unit.options) options += option + '\n';
  return KeyBuilder()
      .add("kiln-compile", kCompilePipelineVersion)
      .add("toolchain", toolchain.identity)
      .add("program", source.unit.program_name)
      .add("inputs", source.inputs_hash.hex())
      .add("options", options)
      .add("target", nvrtc::output_options(toolchain, job.arch, job.cubin, kind == ImageKind::Cubin,
                                           source.unit.line_info))
      .add("output", kind_name(kind))
      .finish();
}

// The kernels of a cubin, after checking that it is one and is for the architecture asked.
Result<std::vector<std::string>> cubin_kernels(ByteView cubin, Arch arch, const std::string& context) {
  auto info = elf::read_cubin(cubin);
  if (!info) {
    Error error = info.error();
    error.context = context;
    return error;
  }
  const int expected = arch.cc.major * 10 + arch.cc.minor;
  if (info->sm != expected) {
    return make_error(Component::Compiler,
                      "the cubin is for sm_" + std::to_string(info->sm) + ", not " + arch.sm_name(), context,
                      "clear the compile cache; if that does not help, this is a toolkit problem");
  }
  return std::move(info->kernels);
}

JobResult run_split_job(const Job& job, const PreparedSource& source, const nvrtc::Toolchain& toolchain,
                        const std::optional<CompileCache>& cache,
                        const std::function<void(const std::string&, bool)>& report);

JobResult run_job(const Job& job, const PreparedSource& source, const nvrtc::Toolchain& toolchain,
                  const std::optional<CompileCache>& cache, bool split_kernels,
                  const std::function<void(const std::string&, bool)>& report) {
  if (split_kernels && job.cubin) return run_split_job(job, source, toolchain, cache, report);
  JobResult result;
  const std::string cubin_label = label(source, job.arch.sm_name());
  const std::string ptx_label = label(source, job.arch.compute_name());
  std::optional<Bytes> cubin;
  std::optional<Bytes> ptx;
  const Hash128 cubin_key = output_key(toolchain, source, job, ImageKind::Cubin);
  const Hash128 ptx_key = output_key(toolchain, source, job, ImageKind::Ptx);
  if (cache) {
    if (job.cubin) cubin = cache->load(cubin_key, "cubin");
    if (job.ptx) ptx = cache->load(ptx_key, "ptx");
  }
  const bool cubin_cached = cubin.has_value();
  const bool ptx_cached = ptx.has_value();
  const bool need_cubin = job.cubin && !cubin_cached;
  const bool need_ptx = job.ptx && !ptx_cached;
  if (need_cubin || need_ptx) {
    // Always the job's full set of outputs, so that each is made exactly as its key says
    // (NVRTC alone compiles for sm_XY when a cubin is wanted); a second link costs ~30 ms.
    auto compiled =
        nvrtc::compile_unit(toolchain, source.unit, job.arch, job.cubin, job.ptx,
                            error_context(source, job.cubin ? job.arch.sm_name() : job.arch.compute_name()));
    if (!compiled) {
      result.error = compiled.error();
      return result;
    }
    result.warnings = std::move(compiled->warnings);
    auto store = [&](const Hash128& key, std::string_view kind, ByteView bytes) {
      if (cache) cache->store(key, kind, bytes);
    };
    // Kept beside the outputs, so that a build served from the cache (or filled by the helper
    // processes, whose output goes nowhere) still shows NVRTC's warnings.
    if (!result.warnings.empty()) store(job.cubin ? cubin_key : ptx_key, "warnings", as_bytes(result.warnings));
    if (need_cubin) {
      store(cubin_key, "cubin", compiled->cubin);
      cubin = std::move(compiled->cubin);
    }
    if (need_ptx) {
      ptx = Bytes(compiled->ptx.begin(), compiled->ptx.end());
      store(ptx_key, "ptx", *ptx);
    }
  } else if (cache) {
    if (std::optional<Bytes> warnings = cache->load(job.cubin ? cubin_key : ptx_key, "warnings")) {
      result.warnings.assign(as_text(*warnings));
    }
  }

  if (job.cubin) {
    auto kernels = cubin_kernels(*cubin, job.arch, error_context(source, job.arch.sm_name()));
    if (!kernels) {
      result.error = kernels.error();
      return result;
    }
    result.images.push_back({{ImageKind::Cubin, job.arch}, std::move(*kernels), std::move(*cubin)});
    report(cubin_label, cubin_cached);
  }
  if (job.ptx) {
    std::vector<std::string> kernels = elf::ptx_entry_names(as_text(*ptx));
    result.images.push_back({{ImageKind::Ptx, job.arch}, std::move(kernels), std::move(*ptx)});
    if (!job.discard) report(ptx_label, ptx_cached);
  }
  return result;
}

// A cubin per kernel (CompileOptions::split_kernels): the source's PTX for the architecture, cut
// per kernel as the runtime's JIT cuts it, each piece compiled alone by nvJitLink. A runtime then
// decodes and loads only the kernels it uses. PTX that must stay whole (kernels sharing a
// mutable module-scope variable) gets the one cubin of an unsplit job.
JobResult run_split_job(const Job& job, const PreparedSource& source, const nvrtc::Toolchain& toolchain,
                        const std::optional<CompileCache>& cache,
                        const std::function<void(const std::string&, bool)>& report) {
  JobResult result;
  const std::string context = error_context(source, job.arch.sm_name());
  Job ptx_job = job;
  ptx_job.cubin = false;
  ptx_job.ptx = true;
  const Hash128 ptx_key = output_key(toolchain, source, ptx_job, ImageKind::Ptx);
  std::optional<Bytes> ptx = cache ? cache->load(ptx_key, "ptx") : std::nullopt;
  bool all_cached = ptx.has_value();
  auto store = [&](const Hash128& key, std::string_view kind, ByteView bytes) {
    if (cache) cache->store(key, kind, bytes);
  };
  if (!ptx) {
    auto compiled = nvrtc::compile_unit(toolchain, source.unit, job.arch, false, true, context);
    if (!compiled) {
      result.error = compiled.error();
      return result;
    }
    result.warnings = std::move(compiled->warnings);
    if (!result.warnings.empty()) store(ptx_key, "warnings", as_bytes(result.warnings));
    ptx = Bytes(compiled->ptx.begin(), compiled->ptx.end());
    store(ptx_key, "ptx", *ptx);
  } else if (cache) {
    if (std::optional<Bytes> warnings = cache->load(ptx_key, "warnings")) result.warnings.assign(as_text(*warnings));
  }
  Result<PtxModule> module = PtxModule::parse(std::string(as_text(*ptx)));
  if (!module || !module->splittable()) {
    Job whole = job;
    whole.ptx = false;
    JobResult whole_result = run_job(whole, source, toolchain, cache, false, report);
    if (whole_result.error) return whole_result;
    result.images = std::move(whole_result.images);
  } else {
    for (const std::string& kernel : module->entries()) {
      const Hash128 key = KeyBuilder()
                              .add("kiln-split-kernel", kCompilePipelineVersion)
                              .add("ptx", ptx_key.hex())
                              .add("kernel", kernel)
                              .add("target", job.arch.sm_name())
                              .add("line-info", source.unit.line_info ? "1" : "0")
                              .finish();
      std::optional<Bytes> cubin = cache ? cache->load(key, "cubin") : std::nullopt;
      if (!cubin) {
        all_cached = false;
        Result<std::string> piece = module->kernel_ptx(kernel);
        Result<Bytes> compiled = piece ? nvrtc::compile_ptx(toolchain, *piece, job.arch, source.unit.line_info, kernel,
                                                            context + ", kernel " + kernel)
                                       : Result<Bytes>(piece.error());
        if (!compiled) {
          result.error = compiled.error();
          return result;
        }
        store(key, "cubin", *compiled);
        cubin = std::move(*compiled);
      }
      auto kernels = cubin_kernels(*cubin, job.arch, context + ", kernel " + kernel);
      if (!kernels) {
        result.error = kernels.error();
        return result;
      }
      result.images.push_back({{ImageKind::Cubin, job.arch}, std::move(*kernels), std::move(*cubin)});
    }
    report(label(source, job.arch.sm_name()), all_cached);
  }
  if (job.ptx) {
    std::vector<std::string> kernels = elf::ptx_entry_names(as_text(*ptx));
    result.images.push_back({{ImageKind::Ptx, job.arch}, std::move(kernels), std::move(*ptx)});
    report(label(source, job.arch.compute_name()), all_cached);
  }
  return result;
}

Result<void> check_architectures(const CompileOptions& options, const nvrtc::Toolchain& toolchain) {
  const auto& supported = toolchain.nvrtc.supported;
  std::string supported_names;
  for (const auto& cc : supported) {
    if (!supported_names.empty()) supported_names += ' ';
    supported_names += Arch{cc}.sm_name();
  }
  for (const auto* list : {&options.cubin_archs, &options.ptx_archs}) {
    for (const Arch& arch : *list) {
      if (std::find(supported.begin(), supported.end(), arch.cc) != supported.end()) continue;
      const std::string name = list == &options.cubin_archs ? arch.sm_name() : arch.compute_name();
      return usage_error("NVRTC " + std::to_string(toolchain.nvrtc.major) + "." + std::to_string(toolchain.nvrtc.minor) +
                             " cannot compile for " + name,
                         "it supports " + supported_names);
    }
  }
  return {};
}

std::vector<Arch> sorted_unique(std::vector<Arch> archs) {
  std::sort(archs.begin(), archs.end());
  archs.erase(std::unique(archs.begin(), archs.end()), archs.end());
  return archs;
}

}  // namespace

Result<NvrtcInfo> nvrtc_info() {
  auto toolchain = nvrtc::load_toolchain();
  if (!toolchain) return toolchain.error();
  return (*toolchain)->nvrtc;
}

Result<CompileOutput> compile(const std::vector<std::filesystem::path>& sources, const CompileOptions& options) {
  if (sources.empty()) return usage_error("no sources to compile", "name one or more .cu files");
  const std::vector<Arch> cubin_archs = sorted_unique(options.cubin_archs);
  const std::vector<Arch> ptx_archs = sorted_unique(options.ptx_archs);
  if (cubin_archs.empty() && ptx_archs.empty() && !options.embed_source) {
    return usage_error("nothing to compile for: no cubin or PTX architecture and no source image",
                       "name devices or architectures to build for");
  }
  auto loaded = nvrtc::load_toolchain();
  if (!loaded) return loaded.error();
  const nvrtc::Toolchain& toolchain = **loaded;
  if (auto checked = check_architectures(options, toolchain); !checked) return checked.error();
  if (options.split_kernels && !toolchain.has_linker) {
    return make_error(Component::NvJitLink, "--split-kernels needs nvJitLink to compile each kernel, and it was not found",
                      {}, "install the CUDA toolkit's nvJitLink, or build without --split-kernels");
  }

  std::vector<PreparedSource> prepared;
  for (const auto& path : sources) {
    auto source = prepare(path, options, toolchain);
    if (!source) return source.error();
    prepared.push_back(std::move(*source));
  }

  // Jobs in output order: per source, its architectures ascending; a cubin and a PTX of the
  // same architecture share one NVRTC run.
  std::set<Arch> archs(cubin_archs.begin(), cubin_archs.end());
  archs.insert(ptx_archs.begin(), ptx_archs.end());
  std::vector<Job> jobs;
  std::size_t total = 0;
  for (std::size_t index = 0; index < prepared.size(); ++index) {
    for (const Arch& arch : archs) {
      Job job{index, arch, std::binary_search(cubin_archs.begin(), cubin_archs.end(), arch),
              std::binary_search(ptx_archs.begin(), ptx_archs.end(), arch)};
      total += (job.cubin ? 1 : 0) + (job.ptx ? 1 : 0);
      jobs.push_back(job);
    }
    if (archs.empty()) {
      // A source image alone still needs its kernel list, and a compile proves the source sound.
      jobs.push_back({index, Arch{toolchain.nvrtc.supported.front()}, false, true, true});
    }
    if (options.embed_source) ++total;
  }

  std::optional<CompileCache> cache;
  if (options.cache_dir) cache.emplace(*options.cache_dir);
  // A computed #include names a header the scan cannot see, so the cache key could miss a change
  // to it: such a source is compiled every time.
  const std::optional<CompileCache> no_cache;

  std::mutex progress_mutex;
  CompileProgress progress;
  progress.total = total;
  auto report = [&](const std::string& current, bool cached) {
    std::lock_guard lock(progress_mutex);
    ++progress.done;
    progress.current = current;
    progress.cached = cached;
    if (options.on_progress) options.on_progress(progress);
  };

  std::vector<JobResult> results(jobs.size());
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  auto worker = [&] {
    for (std::size_t index = next++; index < jobs.size() && !failed; index = next++) {
      const PreparedSource& source = prepared[jobs[index].source];
      results[index] = run_job(jobs[index], source, toolchain, source.closure.computed_includes.empty() ? cache : no_cache,
                               options.split_kernels, report);
      if (results[index].error) failed = true;
    }
  };
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t thread_count = std::min<std::size_t>(options.jobs == 0 ? hardware : options.jobs, jobs.size());
  {
    std::vector<std::jthread> threads;
    for (std::size_t i = 1; i < thread_count; ++i) threads.emplace_back(worker);
    worker();
  }
  // The first failure in job order, so that the same broken input reports the same error.
  for (const JobResult& result : results) {
    if (result.error) return *result.error;
  }

  CompileOutput output;
  std::set<std::string> seen_warnings;
  std::map<std::string, std::size_t> defined_in;  // kernel -> the first source that has it
  for (std::size_t index = 0; index < prepared.size(); ++index) {
    const PreparedSource& source = prepared[index];
    std::vector<Image> cubins;
    std::vector<Image> ptxs;
    std::set<std::string> kernels;
    for (std::size_t job = 0; job < jobs.size(); ++job) {
      if (jobs[job].source != index) continue;
      JobResult& result = results[job];
      if (!result.warnings.empty() && seen_warnings.insert(result.warnings).second) {
        output.warnings.push_back(source.given.filename().string() + ": " + result.warnings);
      }
      for (Image& image : result.images) {
        kernels.insert(image.kernels.begin(), image.kernels.end());
        if (jobs[job].discard) continue;
        (image.target.kind == ImageKind::Cubin ? cubins : ptxs).push_back(std::move(image));
      }
    }
    // A bundle finds kernels by name: of two sources with one kernel name, one is used. Identical
    // template instances from a shared header are harmless; two different kernels are not.
    for (const std::string& kernel : kernels) {
      auto [first, inserted] = defined_in.try_emplace(kernel, index);
      if (inserted) continue;
      output.warnings.push_back("kernel " + demangle(kernel) + " is in both " + prepared[first->second].given.string() +
                                " and " + source.given.string() + ": a bundle finds kernels by name, so only one of "
                                "them is used; if the two differ, rename one or build them into separate bundles");
    }
    for (auto& image : cubins) output.images.push_back(std::move(image));
    for (auto& image : ptxs) output.images.push_back(std::move(image));
    if (options.embed_source) {
      auto archive = source::make_source_image(source.closure, options.defines, std::string(kLanguageStandard));
      if (!archive) return archive.error();
      output.images.push_back({{ImageKind::Source, {}},
                               std::vector<std::string>(kernels.begin(), kernels.end()),
                               source::encode_source_image(*archive)});
      report(label(source, "source image"), false);
    }
    output.dependencies.push_back(source.closure.path);
    for (const auto& header : source.closure.headers) output.dependencies.push_back(header.path);
    if (!source.closure.computed_includes.empty()) {
      output.warnings.push_back(source.given.string() + ": #include " + source.closure.computed_includes.front() +
                                " is computed, so kiln cannot tell which header it names: this source is compiled "
                                "every time (no compile cache), and a depfile does not list that header; name the "
                                "header in the #include to have it tracked");
    }
  }
  std::sort(output.dependencies.begin(), output.dependencies.end());
  output.dependencies.erase(std::unique(output.dependencies.begin(), output.dependencies.end()),
                            output.dependencies.end());
  if (cache) {
    for (std::string& warning : cache->warnings()) output.warnings.push_back(std::move(warning));
  }
  return output;
}

Result<std::string> source_jit_identity() {
  auto loaded = nvrtc::load_toolchain();
  if (!loaded) return loaded.error();
  return (*loaded)->identity;
}

Result<Bytes> compile_source_image(ByteView source_image, Arch arch) {
  auto loaded = nvrtc::load_toolchain();
  if (!loaded) return loaded.error();
  const nvrtc::Toolchain& toolchain = **loaded;
  auto image = source::decode_source_image(source_image);
  if (!image) return image.error();
  const std::string context = "source image " + image->file_name + " for " + arch.sm_name();
  const auto& supported = toolchain.nvrtc.supported;
  if (std::find(supported.begin(), supported.end(), arch.cc) == supported.end()) {
    return make_error(Component::Nvrtc,
                      "NVRTC " + std::to_string(toolchain.nvrtc.major) + "." + std::to_string(toolchain.nvrtc.minor) +
                          " cannot compile for " + arch.sm_name(),
                      context, "install a CUDA toolkit whose NVRTC supports this GPU");
  }

  nvrtc::Unit unit;
  unit.program_name = image->file_name;
  unit.text = std::move(image->text);
  unit.headers = std::move(image->headers);
  // The user's headers come from memory; only the toolkit's are searched for.
  unit.options = toolchain.toolkit_include_options;
  for (auto& option : image->options()) unit.options.push_back(std::move(option));
  auto compiled = nvrtc::compile_unit(toolchain, unit, arch, true, false, context);
  if (!compiled) return compiled.error();
  if (auto kernels = cubin_kernels(compiled->cubin, arch, context); !kernels) return kernels.error();
  return std::move(compiled->cubin);
}

}  // namespace kiln
