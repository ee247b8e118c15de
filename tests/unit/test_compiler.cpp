// The offline compiler: NVRTC loading, cubins and PTX per architecture, kernel names, compile
// errors, the compile cache, source images, determinism, and the ELF reader on bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "elf.hpp"
#include "kiln/cache.hpp"
#include "kiln/compiler.hpp"
#include "kiln/little_endian.hpp"
#include "nvrtc.hpp"
#include "source_image.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;

fs::path data_path(const std::string& name) { return fs::path(KILN_SOURCE_DIR) / "tests" / "data" / name; }

Arch arch(int major, int minor, ArchVariant variant = ArchVariant::Plain) { return Arch{{major, minor}, variant}; }

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const fs::path& path, std::string_view text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    std::string pattern = (fs::temp_directory_path() / "kiln-compiler-test-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// NVRTC ships with the toolkit these tests build against; without it there is nothing to test.
// Suite names start with "compiler" so that `ctest -R compiler` selects exactly these tests.
class CompilerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto info = nvrtc_info();
    if (!info) GTEST_SKIP() << info.error().describe();
  }
};

using compiler = CompilerFixture;

const std::vector<std::string> kTemplateKernels = {"_Z5scaleIdEvPT_S0_i", "_Z5scaleIfEvPT_S0_i",
                                                   "_Z5scaleIiEvPT_S0_i", "fill"};

TEST_F(compiler, NvrtcInfoReportsVersionPathAndArchitectures) {
  auto info = nvrtc_info();
  ASSERT_TRUE(info) << info.error().describe();
  EXPECT_GE(info->major, 13);
  EXPECT_TRUE(fs::exists(info->library_path)) << info->library_path;
  const auto& supported = info->supported;
  for (ComputeCapability cc : {ComputeCapability{7, 5}, {8, 0}, {8, 6}, {8, 9}, {9, 0}, {10, 0}, {12, 0}}) {
    EXPECT_NE(std::find(supported.begin(), supported.end(), cc), supported.end()) << cc.major << "." << cc.minor;
  }
  EXPECT_EQ(std::find(supported.begin(), supported.end(), ComputeCapability{7, 0}), supported.end());
  EXPECT_TRUE(std::is_sorted(supported.begin(), supported.end()));
}

TEST_F(compiler, CubinPerArchitectureAndPtxWithKernelNames) {
  CompileOptions options;
  options.cubin_archs = {arch(9, 0), arch(8, 0), arch(9, 0, ArchVariant::Specific),
                         arch(10, 0, ArchVariant::Family)};
  options.ptx_archs = {arch(8, 0)};
  auto output = compile({data_path("compiler_templates.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 5u);

  const std::vector<std::string> expected_targets = {"sm_80", "sm_90", "sm_90a", "sm_100f", "compute_80"};
  for (std::size_t index = 0; index < expected_targets.size(); ++index) {
    const Image& image = output->images[index];
    EXPECT_EQ(image.target.name(), expected_targets[index]);
    EXPECT_EQ(image.kernels, kTemplateKernels) << expected_targets[index];
  }
  for (std::size_t index = 0; index < 4; ++index) {
    auto info = elf::read_cubin(output->images[index].bytes);
    ASSERT_TRUE(info) << info.error().describe();
    EXPECT_EQ(info->sm, output->images[index].target.arch.cc.major * 10 + output->images[index].target.arch.cc.minor);
    EXPECT_EQ(info->kernels, kTemplateKernels);
  }
  const std::string ptx(as_text(output->images[4].bytes));
  EXPECT_NE(ptx.find("\n.target sm_80"), std::string::npos) << ptx.substr(0, 400);
  EXPECT_EQ(ptx.find('\0'), std::string::npos);
  EXPECT_EQ(output->dependencies, std::vector<fs::path>{fs::canonical(data_path("compiler_templates.cu"))});
  EXPECT_EQ(demangle("_Z5scaleIfEvPT_S0_i"), "void scale<float>(float*, float, int)");
}

// --split-kernels: per architecture, a cubin for each kernel alone (in the module's order), then
// the PTX as usual; the same inputs give the same bytes.
TEST_F(compiler, SplitKernelsGivesACubinPerKernel) {
  CompileOptions options;
  options.cubin_archs = {arch(8, 0), arch(9, 0)};
  options.ptx_archs = {arch(8, 0)};
  options.split_kernels = true;
  auto output = compile({data_path("compiler_templates.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 2 * kTemplateKernels.size() + 1);
  for (std::size_t a = 0; a < 2; ++a) {
    std::vector<std::string> kernels;
    for (std::size_t k = 0; k < kTemplateKernels.size(); ++k) {
      const Image& image = output->images[a * kTemplateKernels.size() + k];
      EXPECT_EQ(image.target.name(), a == 0 ? "sm_80" : "sm_90");
      ASSERT_EQ(image.kernels.size(), 1u);
      auto info = elf::read_cubin(image.bytes);
      ASSERT_TRUE(info) << info.error().describe();
      EXPECT_EQ(info->sm, a == 0 ? 80 : 90);
      EXPECT_EQ(info->kernels, image.kernels);  // the cubin holds that kernel and no other
      kernels.push_back(image.kernels.front());
    }
    std::sort(kernels.begin(), kernels.end());
    EXPECT_EQ(kernels, kTemplateKernels);
  }
  EXPECT_EQ(output->images.back().target.name(), "compute_80");
  EXPECT_EQ(output->images.back().kernels, kTemplateKernels);

  auto again = compile({data_path("compiler_templates.cu")}, options);
  ASSERT_TRUE(again) << again.error().describe();
  ASSERT_EQ(again->images.size(), output->images.size());
  for (std::size_t index = 0; index < output->images.size(); ++index) {
    EXPECT_EQ(again->images[index].bytes, output->images[index].bytes) << index;
  }
}

// Kernels that share a mutable module-scope variable must stay in one module: split, each would
// see its own copy of it.
TEST_F(compiler, SplitKernelsKeepsKernelsThatShareStateTogether) {
  TemporaryDirectory work;
  const fs::path source = work.path() / "shared_state.cu";
  write_file(source,
             "__device__ int counter;\n"
             "extern \"C\" __global__ void bump() { atomicAdd(&counter, 1); }\n"
             "extern \"C\" __global__ void read_counter(int* out) { *out = counter; }\n");
  CompileOptions options;
  options.cubin_archs = {arch(8, 0)};
  options.split_kernels = true;
  auto output = compile({source}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 1u);
  EXPECT_EQ(output->images[0].kernels, (std::vector<std::string>{"bump", "read_counter"}));
}

TEST_F(compiler, UserHeadersThroughIncludeDirectoriesAndDefines) {
  CompileOptions options;
  options.cubin_archs = {arch(8, 6)};
  options.include_dirs = {data_path("compiler_include")};
  options.defines = {"SCALE_BIAS=1.5f"};
  auto output = compile({data_path("compiler_user_header.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 1u);
  EXPECT_EQ(output->images[0].kernels, std::vector<std::string>{"biased_scale"});
  const std::vector<fs::path> dependencies = {
      fs::canonical(data_path("compiler_include/detail/factor.cuh")),
      fs::canonical(data_path("compiler_include/scale.cuh")),
      fs::canonical(data_path("compiler_user_header.cu")),
  };
  EXPECT_EQ(output->dependencies, dependencies);

  options.defines.clear();
  auto missing_define = compile({data_path("compiler_user_header.cu")}, options);
  ASSERT_FALSE(missing_define);
  EXPECT_NE(missing_define.error().log.find("SCALE_BIAS must be defined"), std::string::npos)
      << missing_define.error().log;
}

TEST_F(compiler, ToolkitHeadersNeedNoIncludeDirectory) {
  CompileOptions options;
  options.cubin_archs = {arch(9, 0)};
  auto output = compile({data_path("compiler_cub.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 1u);
  EXPECT_EQ(output->images[0].kernels.size(), 7u);
  for (const auto& kernel : output->images[0].kernels) {
    EXPECT_TRUE(kernel.starts_with("_Z9block_sum") || kernel.starts_with("_Z9block_max") ||
                kernel.starts_with("_Z20block_exclusive_scan"))
        << kernel;
  }
  // CCCL's headers are the toolkit's: not dependencies, not in the cache key's file list.
  EXPECT_EQ(output->dependencies, std::vector<fs::path>{fs::canonical(data_path("compiler_cub.cu"))});
  // Unused namespace-scope device variables from libcu++ do not bloat the cubin.
  EXPECT_LT(output->images[0].bytes.size(), 64u * 1024);
}

// Where nvJitLink is missing, outputs come from NVRTC alone: still correct, only larger.
TEST_F(compiler, WithoutNvJitLinkNvrtcAloneProducesTheImages) {
  auto loaded = nvrtc::load_toolchain();
  ASSERT_TRUE(loaded);
  nvrtc::Toolchain nvrtc_only = **loaded;
  nvrtc_only.has_linker = false;
  nvrtc::Unit unit;
  unit.program_name = "compiler_templates.cu";
  unit.text = read_file(data_path("compiler_templates.cu"));
  unit.options = {"-std=c++17"};
  for (bool want_cubin : {true, false}) {
    auto outputs = nvrtc::compile_unit(nvrtc_only, unit, arch(8, 6), want_cubin, true, "test");
    ASSERT_TRUE(outputs) << outputs.error().describe();
    EXPECT_NE(outputs->ptx.find(".target sm_86"), std::string::npos);
    EXPECT_EQ(elf::ptx_entry_names(outputs->ptx), kTemplateKernels);
    if (want_cubin) {
      auto info = elf::read_cubin(outputs->cubin);
      ASSERT_TRUE(info) << info.error().describe();
      EXPECT_EQ(info->sm, 86);
      EXPECT_EQ(info->kernels, kTemplateKernels);
    } else {
      EXPECT_TRUE(outputs->cubin.empty());
    }
  }
}

TEST_F(compiler, AKernelInTwoSourcesIsWarnedAbout) {
  TemporaryDirectory work;
  write_file(work.path() / "one.cu", "extern \"C\" __global__ void scale(float* x) { x[0] *= 2.0f; }\n");
  write_file(work.path() / "two.cu", "extern \"C\" __global__ void scale(float* x) { x[0] *= 3.0f; }\n");
  CompileOptions options;
  options.cubin_archs = {arch(9, 0)};
  auto output = compile({work.path() / "one.cu", work.path() / "two.cu"}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->warnings.size(), 1u);
  EXPECT_NE(output->warnings[0].find("kernel scale is in both"), std::string::npos) << output->warnings[0];
  EXPECT_NE(output->warnings[0].find("two.cu"), std::string::npos) << output->warnings[0];
}

TEST_F(compiler, NvrtcWarningsAreReportedOnce) {
  TemporaryDirectory work;
  write_file(work.path() / "warns.cu", "#warning \"kiln test warning\"\n__global__ void k() {}\n");
  CompileOptions options;
  options.cubin_archs = {arch(8, 0), arch(9, 0)};
  auto output = compile({work.path() / "warns.cu"}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->warnings.size(), 1u);
  EXPECT_NE(output->warnings[0].find("kiln test warning"), std::string::npos) << output->warnings[0];
  EXPECT_TRUE(output->warnings[0].starts_with("warns.cu: ")) << output->warnings[0];
}

TEST_F(compiler, CompileErrorCarriesFileLineAndArchitecture) {
  CompileOptions options;
  options.cubin_archs = {arch(8, 0), arch(9, 0)};
  auto output = compile({data_path("compiler_error.cu")}, options);
  ASSERT_FALSE(output);
  const Error& error = output.error();
  EXPECT_EQ(error.component, Component::Nvrtc);
  EXPECT_EQ(error.kind, ErrorKind::Failed);
  EXPECT_NE(error.context.find("compiler_error.cu"), std::string::npos) << error.context;
  EXPECT_NE(error.context.find("sm_80"), std::string::npos) << error.context;  // the first job, always
  EXPECT_NE(error.log.find("compiler_error.cu(5)"), std::string::npos) << error.log;
  EXPECT_NE(error.log.find("undeclared_value"), std::string::npos) << error.log;
  EXPECT_FALSE(error.hint.empty());
}

TEST_F(compiler, UnsupportedArchitectureIsAUsageError) {
  CompileOptions options;
  options.cubin_archs = {arch(7, 0)};
  auto output = compile({data_path("compiler_templates.cu")}, options);
  ASSERT_FALSE(output);
  EXPECT_EQ(output.error().kind, ErrorKind::Usage);
  EXPECT_NE(output.error().message.find("sm_70"), std::string::npos) << output.error().message;

  auto missing = compile({data_path("no_such_file.cu")}, CompileOptions{{arch(8, 0)}});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().component, Component::Io);
}

TEST_F(compiler, DeterministicOutput) {
  CompileOptions options;
  options.cubin_archs = {arch(8, 0), arch(12, 0)};
  options.ptx_archs = {arch(12, 0)};
  options.embed_source = true;
  options.include_dirs = {data_path("compiler_include")};
  options.defines = {"SCALE_BIAS=2.0f"};
  options.jobs = 2;
  const std::vector<fs::path> sources = {data_path("compiler_user_header.cu"), data_path("compiler_templates.cu")};
  auto first = compile(sources, options);
  auto second = compile(sources, options);
  ASSERT_TRUE(first) << first.error().describe();
  ASSERT_TRUE(second) << second.error().describe();
  ASSERT_EQ(first->images.size(), 8u);  // per source: 2 cubins, 1 PTX, 1 source image
  ASSERT_EQ(first->images.size(), second->images.size());
  for (std::size_t index = 0; index < first->images.size(); ++index) {
    EXPECT_EQ(first->images[index].target, second->images[index].target);
    EXPECT_EQ(first->images[index].bytes, second->images[index].bytes) << first->images[index].target.name();
  }
  EXPECT_EQ(first->images[0].kernels, std::vector<std::string>{"biased_scale"});
  EXPECT_EQ(first->images[3].target.kind, ImageKind::Source);
  EXPECT_EQ(first->images[7].kernels, kTemplateKernels);
  // No build-machine path in the images: the program is named by its file name.
  const std::string source_dir = KILN_SOURCE_DIR;
  for (const Image& image : first->images) {
    if (image.target.kind == ImageKind::Source) continue;
    EXPECT_EQ(std::string(as_text(image.bytes)).find(source_dir), std::string::npos) << image.target.name();
  }
}

class CompileCacheFixture : public CompilerFixture {
 protected:
  // A private copy of the user-header test, so that its header can be edited.
  void SetUp() override {
    CompilerFixture::SetUp();
    if (IsSkipped()) return;
    source_ = work_.path() / "src" / "kernel.cu";
    write_file(source_, read_file(data_path("compiler_user_header.cu")));
    write_file(work_.path() / "include" / "scale.cuh", read_file(data_path("compiler_include/scale.cuh")));
    write_file(work_.path() / "include" / "detail" / "factor.cuh",
               read_file(data_path("compiler_include/detail/factor.cuh")));
    options_.cubin_archs = {arch(8, 0), arch(9, 0)};
    options_.ptx_archs = {arch(9, 0)};
    options_.include_dirs = {work_.path() / "include"};
    options_.defines = {"SCALE_BIAS=0.5f"};
    options_.cache_dir = work_.path() / "cache" / "build";
    options_.on_progress = [this](const CompileProgress& progress) { steps_.push_back(progress); };
  }

  std::vector<CompileProgress> build() {
    steps_.clear();
    auto output = compile({source_}, options_);
    EXPECT_TRUE(output) << output.error().describe();
    if (output) last_ = std::move(*output);
    return steps_;
  }

  static std::size_t cached_count(const std::vector<CompileProgress>& steps) {
    return static_cast<std::size_t>(std::count_if(steps.begin(), steps.end(), [](auto& s) { return s.cached; }));
  }

  TemporaryDirectory work_;
  fs::path source_;
  CompileOptions options_;
  std::vector<CompileProgress> steps_;
  CompileOutput last_;
};

using compiler_cache = CompileCacheFixture;

TEST_F(compiler_cache, SecondBuildHitsAndHeaderEditMisses) {
  auto cold = build();
  ASSERT_EQ(cold.size(), 3u);
  EXPECT_EQ(cached_count(cold), 0u);
  for (std::size_t index = 0; index < cold.size(); ++index) {
    EXPECT_EQ(cold[index].total, 3u);
    EXPECT_EQ(cold[index].done, index + 1);
  }
  const std::vector<Image> first_images = last_.images;

  auto warm = build();
  EXPECT_EQ(cached_count(warm), 3u);
  ASSERT_EQ(last_.images.size(), first_images.size());
  for (std::size_t index = 0; index < first_images.size(); ++index) {
    EXPECT_EQ(last_.images[index].bytes, first_images[index].bytes);
    EXPECT_EQ(last_.images[index].kernels, first_images[index].kernels);
  }
  // A private directory of DiskCache entries ("kiln-<key>.bin"), one per compiled output.
  EXPECT_EQ(fs::status(*options_.cache_dir).permissions() & fs::perms::all, fs::perms::owner_all);
  std::size_t entries = 0;
  for (const auto& entry : fs::directory_iterator(*options_.cache_dir)) {
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(name.starts_with("kiln-") && name.ends_with(".bin")) << name;
    ++entries;
  }
  EXPECT_EQ(entries, 3u);
  Result<CacheStats> stats = DiskCache(*options_.cache_dir, CachePolicy{}).stats();
  ASSERT_TRUE(stats.ok()) << stats.error().describe();
  EXPECT_EQ(stats->entries, 3u) << "kiln cache sees the compile cache's entries";

  // A header two levels down changes: everything is compiled again.
  write_file(work_.path() / "include" / "detail" / "factor.cuh",
             "#pragma once\nnamespace kiln_test { constexpr float kFactor = 4.0f; }\n");
  auto edited = build();
  EXPECT_EQ(cached_count(edited), 0u);
  EXPECT_NE(last_.images[0].bytes, first_images[0].bytes);

  // A define changes: a miss too.
  options_.defines = {"SCALE_BIAS=0.25f"};
  EXPECT_EQ(cached_count(build()), 0u);
}

TEST_F(compiler_cache, WarningsAreShownWhenTheOutputComesFromTheCache) {
  // kiln build's helper processes fill the cache with their output going nowhere, and a later
  // build is all cache hits: NVRTC's warnings must come from the cache too.
  write_file(source_, read_file(source_) + "\n#warning \"kiln cached warning\"\n");
  build();
  ASSERT_EQ(last_.warnings.size(), 1u);
  auto warm = build();
  EXPECT_EQ(cached_count(warm), warm.size());
  ASSERT_EQ(last_.warnings.size(), 1u);
  EXPECT_NE(last_.warnings[0].find("kiln cached warning"), std::string::npos) << last_.warnings[0];
}

TEST_F(compiler_cache, SpellingsOfOneDirectoryShareTheCacheEntries) {
  build();
  options_.include_dirs = {work_.path() / "include" / "."};
  EXPECT_EQ(cached_count(build()), 3u) << "-I include/. is -I include";
  options_.include_dirs = {work_.path().string() + "/include/"};
  source_ = work_.path() / "src" / "." / "kernel.cu";
  EXPECT_EQ(cached_count(build()), 3u) << "-I include/ and src/./kernel.cu are the same inputs";
}

TEST_F(compiler_cache, ASourceWithAComputedIncludeIsCompiledEveryTime) {
  // The scan cannot see which header `#include MACRO` names, so a cached output could be stale.
  write_file(source_, "#define KILN_TEST_HEADER \"scale.cuh\"\n#include KILN_TEST_HEADER\n" + read_file(source_));
  build();
  auto again = build();
  EXPECT_EQ(cached_count(again), 0u);
  ASSERT_FALSE(last_.warnings.empty());
  EXPECT_NE(last_.warnings.back().find("#include KILN_TEST_HEADER is computed"), std::string::npos)
      << last_.warnings.back();
}

TEST_F(compiler_cache, AddingAPtxTargetKeepsTheCachedCubins) {
  options_.ptx_archs.clear();
  EXPECT_EQ(cached_count(build()), 0u);
  options_.ptx_archs = {arch(9, 0)};
  auto steps = build();
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(cached_count(steps), 2u);
  for (const auto& step : steps) {
    EXPECT_EQ(step.cached, step.current.find("compute_90") == std::string::npos) << step.current;
  }
}

TEST_F(compiler_cache, DamagedEntryIsCompiledAgain) {
  build();
  const std::vector<Image> first_images = last_.images;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(*options_.cache_dir)) entries.push_back(entry.path());
  ASSERT_EQ(entries.size(), 3u);
  std::sort(entries.begin(), entries.end());
  {  // flip one payload byte of the first, truncate the second
    std::fstream file(entries[0], std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(40);
    file.put('\x5a');
  }
  fs::resize_file(entries[1], 10);

  auto steps = build();
  EXPECT_EQ(cached_count(steps), 1u);
  for (std::size_t index = 0; index < first_images.size(); ++index) {
    EXPECT_EQ(last_.images[index].bytes, first_images[index].bytes);
  }
  EXPECT_EQ(cached_count(build()), 3u);  // repaired
}

TEST_F(compiler_cache, UnwritableCacheIsAWarningNotAFailure) {
  write_file(work_.path() / "cache", "a file where the cache directory should be");
  auto steps = build();
  EXPECT_EQ(steps.size(), 3u);
  EXPECT_EQ(last_.images.size(), 3u);
  ASSERT_FALSE(last_.warnings.empty());
  EXPECT_NE(last_.warnings.front().find("compile cache"), std::string::npos) << last_.warnings.front();
}

TEST_F(compiler, SourceImageRoundTrip) {
  CompileOptions options;
  options.cubin_archs = {arch(8, 0)};
  options.embed_source = true;
  options.include_dirs = {data_path("compiler_include")};
  options.defines = {"SCALE_BIAS=1.0f"};
  auto output = compile({data_path("compiler_user_header.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 2u);
  const Image& source_image = output->images[1];
  EXPECT_EQ(source_image.target.kind, ImageKind::Source);
  EXPECT_EQ(source_image.kernels, output->images[0].kernels);

  auto archive = source::decode_source_image(source_image.bytes);
  ASSERT_TRUE(archive) << archive.error().describe();
  EXPECT_EQ(archive->file_name, "compiler_user_header.cu");
  ASSERT_EQ(archive->headers.size(), 2u);
  EXPECT_EQ(archive->headers[0].first, "detail/factor.cuh");
  EXPECT_EQ(archive->headers[1].first, "scale.cuh");
  EXPECT_EQ(archive->defines, std::vector<std::string>{"SCALE_BIAS=1.0f"});

  // At run time, for an architecture the bundle has no cubin for, with none of the files.
  auto cubin = compile_source_image(source_image.bytes, arch(8, 9));
  ASSERT_TRUE(cubin) << cubin.error().describe();
  auto info = elf::read_cubin(*cubin);
  ASSERT_TRUE(info) << info.error().describe();
  EXPECT_EQ(info->sm, 89);
  EXPECT_EQ(info->kernels, source_image.kernels);
}

// In memory, NVRTC finds a header by the name the #include wrote: <x>, "x", "../x" alike.
TEST_F(compiler, SourceImageServesAngleAndRelativeIncludes) {
  TemporaryDirectory work;
  write_file(work.path() / "src" / "k.cu",
             "#include <mylib/api.cuh>\n__global__ void k(float* p) { p[0] = mylib::value() + shared_value; }\n");
  write_file(work.path() / "inc" / "mylib" / "api.cuh",
             "#pragma once\n#include \"detail/impl.cuh\"\n#include \"../shared.cuh\"\n"
             "namespace mylib { __device__ inline float value() { return detail::impl(); } }\n");
  write_file(work.path() / "inc" / "mylib" / "detail" / "impl.cuh",
             "#pragma once\nnamespace mylib::detail { __device__ inline float impl() { return 2.0f; } }\n");
  write_file(work.path() / "inc" / "shared.cuh", "#pragma once\n__device__ const float shared_value = 1.0f;\n");
  CompileOptions options;
  options.ptx_archs = {arch(8, 0)};
  options.embed_source = true;
  options.include_dirs = {work.path() / "inc"};
  auto output = compile({work.path() / "src" / "k.cu"}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 2u);
  fs::remove_all(work.path());  // the run-time machine has none of these files
  auto cubin = compile_source_image(output->images[1].bytes, arch(9, 0));
  ASSERT_TRUE(cubin) << cubin.error().describe();
  auto info = elf::read_cubin(*cubin);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kernels, std::vector<std::string>{"_Z1kPf"});
}

TEST_F(compiler, SourceImageAloneStillListsKernels) {
  CompileOptions options;
  options.embed_source = true;
  auto output = compile({data_path("compiler_cub.cu"), data_path("compiler_templates.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 2u);
  EXPECT_EQ(output->images[0].kernels.size(), 7u);
  EXPECT_EQ(output->images[1].kernels, kTemplateKernels);

  auto cubin = compile_source_image(output->images[0].bytes, arch(10, 0));
  ASSERT_TRUE(cubin) << cubin.error().describe();
  auto info = elf::read_cubin(*cubin);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kernels, output->images[0].kernels);
}

TEST_F(compiler, SourceImageCompileErrorNamesTheImage) {
  source::SourceImage image;
  image.file_name = "broken.cu";
  image.text = "__global__ void k() { nope(); }\n";
  auto compiled = compile_source_image(source::encode_source_image(image), arch(9, 0));
  ASSERT_FALSE(compiled);
  EXPECT_EQ(compiled.error().component, Component::Nvrtc);
  EXPECT_NE(compiled.error().context.find("broken.cu"), std::string::npos);
  EXPECT_NE(compiled.error().log.find("broken.cu(1)"), std::string::npos) << compiled.error().log;
}

TEST(compiler_source_image, RejectsDamagedOrHostileArchives) {
  source::SourceImage image;
  image.file_name = "k.cu";
  image.text = "__global__ void k() {}\n";
  image.headers = {{"a.cuh", "#pragma once\n"}, {"b/c.cuh", "int c;\n"}};
  image.defines = {"N=4", "FLAG", "MAX(a,b)=((a)>(b)?(a):(b))"};
  const Bytes bytes = source::encode_source_image(image);
  auto decoded = source::decode_source_image(bytes);
  ASSERT_TRUE(decoded) << decoded.error().describe();
  EXPECT_EQ(decoded->file_name, image.file_name);
  EXPECT_EQ(decoded->text, image.text);
  EXPECT_EQ(decoded->headers, image.headers);
  EXPECT_EQ(decoded->defines, image.defines);
  EXPECT_EQ(decoded->options().back(), "-std=c++17");

  for (std::size_t size = 0; size < bytes.size(); ++size) {
    EXPECT_FALSE(source::decode_source_image(ByteView(bytes).first(size))) << size;
  }
  std::mt19937 random(7);
  for (int trial = 0; trial < 2000; ++trial) {
    Bytes damaged = bytes;
    damaged[random() % damaged.size()] ^= static_cast<std::uint8_t>(1 + random() % 255);
    EXPECT_FALSE(source::decode_source_image(damaged));
  }
  Bytes garbage(4096);
  for (auto& byte : garbage) byte = static_cast<std::uint8_t>(random());
  EXPECT_FALSE(source::decode_source_image(garbage));

  // Well-formed and checksummed, but a "define" that would smuggle in an option.
  for (const std::string& hostile : {"X -I/etc", "-Xptxas=-v", "", "9X=1", "A(b=1"}) {
    source::SourceImage bad = image;
    bad.defines = {hostile};
    auto rejected = source::decode_source_image(source::encode_source_image(bad));
    ASSERT_FALSE(rejected) << hostile;
    EXPECT_NE(rejected.error().message.find("not a macro definition"), std::string::npos);
  }
  source::SourceImage bad_standard = image;
  bad_standard.language_standard = "c++17 -G";
  EXPECT_FALSE(source::decode_source_image(source::encode_source_image(bad_standard)));
}

TEST(compiler_source_image, HeadersWithOneNameAndTwoContentsAreRefused) {
  source::SourceClosure closure;
  closure.path = "/work/k.cu";
  closure.headers = {{"/a/config.h", {"config.h"}, "#define A 1\n"}, {"/b/config.h", {"config.h"}, "#define A 2\n"}};
  auto image = source::make_source_image(closure, {}, "c++17");
  ASSERT_FALSE(image);
  EXPECT_NE(image.error().message.find("config.h"), std::string::npos);
}

TEST(compiler_include_scan, FindsDirectivesAndSkipsCommentsAndStrings) {
  const std::string text = R"(#include "a.cuh"
  #  include   <b/c.h>  // trailing comment
// #include "commented.h"
/* #include "block.h"
   #include "still_block.h" */ #include "after_block.h"
const char* text = "#include \"in_string.h\"";
#include_next <next.h>
#include MACRO_HEADER
#if 0
#include "disabled.h"
#endif
#include"tight.h"
)";
  const std::vector<std::pair<std::string, bool>> expected = {
      {"a.cuh", true}, {"b/c.h", false}, {"after_block.h", true}, {"disabled.h", true}, {"tight.h", true}};
  EXPECT_EQ(source::include_directives(text), expected);
}

TEST(compiler_include_scan, ClosureFollowsNestedHeadersAndSkipsToolkitAndMissing) {
  TemporaryDirectory work;
  write_file(work.path() / "src" / "k.cu",
             "#include \"local.cuh\"\n#include <lib/api.cuh>\n#include <cub/cub.cuh>\n#include \"gone.h\"\n");
  write_file(work.path() / "src" / "local.cuh", "#include <lib/api.cuh>\n");
  write_file(work.path() / "inc" / "lib" / "api.cuh", "#include \"detail/impl.cuh\"\n#include <toolkit.h>\n");
  write_file(work.path() / "inc" / "lib" / "detail" / "impl.cuh", "#include \"../api.cuh\"\n");
  write_file(work.path() / "toolkit" / "toolkit.h", "");
  auto closure = source::read_closure(work.path() / "src" / "k.cu", {work.path() / "inc", work.path() / "toolkit"},
                                      work.path() / "toolkit");
  ASSERT_TRUE(closure) << closure.error().describe();
  ASSERT_EQ(closure->headers.size(), 3u);
  const fs::path root = fs::canonical(work.path());
  EXPECT_EQ(closure->headers[0].path, root / "src" / "local.cuh");
  EXPECT_EQ(closure->headers[1].path, root / "inc" / "lib" / "api.cuh");
  EXPECT_EQ(closure->headers[1].include_names, (std::vector<std::string>{"lib/api.cuh", "../api.cuh"}));
  EXPECT_EQ(closure->headers[2].path, root / "inc" / "lib" / "detail" / "impl.cuh");
}

// NVRTC knows the source by its bare file name, so it looks a quoted include of the source up in
// the working directory first: the scan must find the header NVRTC compiles.
TEST(compiler_include_scan, TheSourcesQuotedIncludesAreLookedUpInTheWorkingDirectoryFirst) {
  TemporaryDirectory work;
  write_file(work.path() / "src" / "k.cu", "#include \"z.cuh\"\n");
  write_file(work.path() / "src" / "z.cuh", "// beside the source\n");
  write_file(work.path() / "build" / "z.cuh", "// in the working directory\n");
  const fs::path before = fs::current_path();
  fs::current_path(work.path() / "build");
  auto closure = source::read_closure(work.path() / "src" / "k.cu", {work.path() / "src"}, {});
  fs::current_path(before);
  ASSERT_TRUE(closure) << closure.error().describe();
  ASSERT_EQ(closure->headers.size(), 1u);
  EXPECT_EQ(closure->headers[0].path, fs::canonical(work.path() / "build" / "z.cuh"));
}

TEST(compiler_include_scan, ALinkedSourceFindsTheHeadersNvrtcFinds) {
  // tree/a.cu links to real/a.cu; NVRTC is given tree/ on its search path, not real/.
  TemporaryDirectory work;
  write_file(work.path() / "real" / "a.cu", "#include \"h.cuh\"\n");
  write_file(work.path() / "real" / "h.cuh", "// real\n");
  write_file(work.path() / "tree" / "h.cuh", "// tree\n");
  fs::create_symlink(work.path() / "real" / "a.cu", work.path() / "tree" / "a.cu");
  const fs::path before = fs::current_path();
  fs::current_path(work.path());
  auto closure = source::read_closure(work.path() / "tree" / "a.cu", {work.path() / "tree"}, {});
  fs::current_path(before);
  ASSERT_TRUE(closure) << closure.error().describe();
  ASSERT_EQ(closure->headers.size(), 1u);
  EXPECT_EQ(closure->headers[0].text, "// tree\n");
}

TEST(compiler_include_scan, ComputedIncludesAreReported) {
  std::vector<std::string> computed;
  const auto includes = source::include_directives("#include \"a.h\"\n#  include HEADER_NAME  \n", &computed);
  EXPECT_EQ(includes.size(), 1u);
  EXPECT_EQ(computed, std::vector<std::string>{"HEADER_NAME"});
}

TEST(compiler_elf, ReadsPtxEntries) {
  const std::string ptx = R"(.version 9.0
.target sm_80
// .entry commented_out_is_still_text_but_harmless(
.visible .entry _Z3addPfS_(
	.param .u64 _Z3addPfS__param_0
)
.weak .entry _Z5scaleIfEvPT_(
.func helper(
.entry plain()";
  EXPECT_EQ(elf::ptx_entry_names(ptx),
            (std::vector<std::string>{"_Z3addPfS_", "_Z5scaleIfEvPT_", "commented_out_is_still_text_but_harmless",
                                      "plain"}));
}

// Sizes as cuFuncGetParamInfo reports them (the GPU test checks the two agree on a real device).
using ParameterSizes = std::map<std::string, std::vector<std::size_t>>;
const ParameterSizes kParameterSizes = {
    {"no_parameters", {}},
    {"scalars", {1, 2, 4, 8, 4, 8, 8}},
    {"by_value", {16, 1, 256, 8}},
    {"_Z4axpyIfEvPT_PKS0_S0_i", {8, 8, 4, 4}},
    {"_Z4axpyIdEvPT_PKS0_S0_i", {8, 8, 8, 4}},
};

// The tables that read, of the kernels in kParameterSizes.
ParameterSizes parameter_tables_that_read(ByteView cubin) {
  ParameterSizes read;
  for (const auto& [kernel, sizes] : kParameterSizes) {
    if (auto found = elf::parameter_sizes(cubin, kernel)) read.emplace(kernel, std::move(*found));
  }
  return read;
}

TEST_F(compiler, TheCubinRecordsEachKernelsParameterSizes) {
  CompileOptions options;
  options.cubin_archs = {arch(7, 5), arch(9, 0), arch(12, 0)};
  auto output = compile({data_path("compiler_parameters.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  ASSERT_EQ(output->images.size(), 3u);
  for (const Image& image : output->images) {
    EXPECT_EQ(parameter_tables_that_read(image.bytes), kParameterSizes) << image.target.name();
    EXPECT_EQ(elf::parameter_sizes(image.bytes, "scalar"), std::nullopt);  // a name's prefix is not the name
  }
}

TEST_F(compiler, AParameterTableThatDoesNotAddUpIsLeftToTheDriver) {
  CompileOptions options;
  options.cubin_archs = {arch(9, 0)};
  auto output = compile({data_path("compiler_parameters.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  const Bytes& cubin = output->images[0].bytes;
  // Each EIATTR_KPARAM_INFO record: format 4, attribute 0x17, size 12, then index, ordinal,
  // offset and the word whose bits 18.. hold the size. Doubling one parameter's size breaks
  // the table's agreement with EIATTR_CBANK_PARAM_SIZE, so that kernel is left out, and the
  // others still read.
  const std::array<std::uint8_t, 4> record = {4, 0x17, 12, 0};
  auto found = std::search(cubin.begin(), cubin.end(), record.begin(), record.end());
  ASSERT_NE(found, cubin.end());
  Bytes damaged = cubin;
  const std::size_t word = static_cast<std::size_t>(found - cubin.begin()) + 4 + 8;
  std::uint32_t flags = load_le<std::uint32_t>(damaged.data() + word);
  flags = (flags & ((1u << 18) - 1)) | ((((flags >> 18) & 0x3fff) * 2) << 18);
  store_le<std::uint32_t>(damaged.data() + word, flags);
  const ParameterSizes read = parameter_tables_that_read(damaged);
  EXPECT_EQ(read.size(), kParameterSizes.size() - 1);
  for (const auto& [kernel, sizes] : read) EXPECT_EQ(sizes, kParameterSizes.at(kernel)) << kernel;

  // Cut short: what still reads is right. Damaged anywhere: any answer, but no crash and no
  // out-of-bounds read (ASan); the runtime only reads cubins whose checksums it has verified.
  std::mt19937 random(5);
  for (int trial = 0; trial < 20000; ++trial) {
    Bytes bytes = cubin;
    if (trial % 2 == 0) {
      bytes.resize(random() % cubin.size());
      for (const auto& [kernel, sizes] : parameter_tables_that_read(bytes)) EXPECT_EQ(sizes, kParameterSizes.at(kernel));
    } else {
      for (int flips = 0; flips < 1 + trial % 4; ++flips) bytes[random() % bytes.size()] = static_cast<std::uint8_t>(random());
      (void)parameter_tables_that_read(bytes);
    }
  }
}

TEST_F(compiler, ElfReaderRejectsGarbageWithoutCrashing) {
  CompileOptions options;
  options.cubin_archs = {arch(8, 0)};
  auto output = compile({data_path("compiler_templates.cu")}, options);
  ASSERT_TRUE(output) << output.error().describe();
  const Bytes& cubin = output->images[0].bytes;
  ASSERT_TRUE(elf::read_cubin(cubin));

  EXPECT_FALSE(elf::read_cubin({}));
  std::size_t rejected = 0;
  for (std::size_t size = 0; size < cubin.size(); ++size) {
    auto truncated = elf::read_cubin(ByteView(cubin).first(size));
    // Only a cut through trailing bytes that no header points at may still read, and then
    // it reads the same.
    if (truncated) {
      EXPECT_EQ(truncated->kernels, kTemplateKernels) << size;
    } else {
      ++rejected;
    }
  }
  EXPECT_GE(rejected, cubin.size() - 64);
  std::mt19937 random(11);
  for (int trial = 0; trial < 20000; ++trial) {
    Bytes damaged = cubin;
    for (int flips = 0; flips < 1 + trial % 4; ++flips) {
      damaged[random() % damaged.size()] = static_cast<std::uint8_t>(random());
    }
    (void)elf::read_cubin(damaged);  // any answer, but no crash and no out-of-bounds read (ASan)
  }
  Bytes garbage(8192);
  for (auto& byte : garbage) byte = static_cast<std::uint8_t>(random());
  EXPECT_FALSE(elf::read_cubin(garbage));

  // Headers that point far outside the file, including offsets that overflow when added.
  Bytes header(cubin.begin(), cubin.begin() + 64);
  header[56] = header[57] = 0;  // no program headers: the section table is what is checked
  for (std::uint64_t offset : {std::uint64_t{1} << 40, ~std::uint64_t{0} - 10, std::uint64_t{64}}) {
    Bytes bad = header;
    for (int i = 0; i < 8; ++i) bad[40 + i] = static_cast<std::uint8_t>(offset >> (8 * i));
    auto result = elf::read_cubin(bad);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message.find("section table"), std::string::npos) << result.error().message;
  }
  Bytes wrong_machine = cubin;
  wrong_machine[18] = 62;  // EM_X86_64
  auto machine = elf::read_cubin(wrong_machine);
  ASSERT_FALSE(machine);
  EXPECT_NE(machine.error().message.find("EM_CUDA"), std::string::npos);
}

}  // namespace
}  // namespace kiln
