// Where cold-start time goes: one fresh process per call, printing the milliseconds since t0
// after each step, for docs/performance.md's breakdown. t0 is taken as in kiln_bench_coldstart
// (after cuInit, the primary context and the input upload, with the bundle's bytes in memory).
//
//   kiln_bench_phases kiln BUNDLE       Runtime::create, load, kernel(add<float>), launch, sync
//   kiln_bench_phases kiln-all BUNDLE   Runtime::create + load, then Module::prepare_all
//   kiln_bench_phases kiln-steps BUNDLE Runtime::create taken apart (the driver's entry points, the
//                                       environment, the runtime itself), then Bundle::open alone
//                                       and load, kernel, launch, sync as in `kiln`
//   kiln_bench_phases raw BUNDLE        cuModuleLoadData of the cubin holding add<float>,
//                                       cuModuleGetFunction, launch, sync
//   kiln_bench_phases raw-all BUNDLE    every sm_90 cubin loaded and every kernel looked up;
//                                       the time in loads and in lookups summed apart
//   kiln_bench_phases raw-split BUNDLE  as `raw`, for add<float>'s own cubin of a --split-kernels
//                                       bundle, and the parameter queries kiln's first launch makes
//   kiln_bench_phases driver-calls      each driver call kiln makes to start, timed apart
//   kiln_bench_phases extract BUNDLE    Bundle::open, then extracting add<float>'s cubin, twice
//   kiln_bench_phases link-empty        the driver's PTX JIT of an empty kernel, three times:
//                                       the fixed cost of one JIT compile
//   kiln_bench_phases jit-one BUNDLE driver|nvjitlink LEVEL
//                                       add<float>'s own PTX (split as kiln's JIT splits it)
//                                       compiled for this GPU by the driver's linker
//                                       (CU_JIT_OPTIMIZATION_LEVEL, 0-4, 4 the default) or by
//                                       nvJitLink (-O0 to -O3, 3 the default), then loaded,
//                                       launched and checked: what a JIT path costs at each level
//
// The environment decides kiln's path (KILN_FORCE_JIT, KILN_CACHE_DIR), as for any application.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nvJitLink.h>

#include "cuda_api.hpp"
#include "kiln/bundle.hpp"
#include "kiln/runtime.hpp"
#include "support.hpp"
#include "../src/ptx_split.hpp"  // the splitter kiln's JIT uses, so that the input is the same

using namespace kiln_bench;
using Clock = std::chrono::steady_clock;

namespace {

// What `nvcc -ptx -arch=compute_75` makes of `extern "C" __global__ void empty() {}`.
constexpr char kEmptyKernelPtx[] = R"(.version 9.0
.target sm_75
.address_size 64
.visible .entry empty()
{
	ret;
}
)";

class Timeline {
 public:
  Timeline() : start_(Clock::now()) {}
  void mark(const char* step) {
    char text[96];
    std::snprintf(text, sizeof text, " %s=%.4f", step,
                  std::chrono::duration<double, std::milli>(Clock::now() - start_).count());
    line_ += text;
  }
  void note(const std::string& text) { line_ += " " + text; }
  [[nodiscard]] const std::string& line() const { return line_; }

 private:
  Clock::time_point start_;
  std::string line_;
};

struct Cubin {
  kiln::Bytes bytes;
  std::vector<std::string> kernels;
};

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: kiln_bench_phases kiln|kiln-all|kiln-steps|raw|raw-split|raw-all|extract BUNDLE | "
                 "driver-calls | link-empty | jit-one BUNDLE driver|nvjitlink LEVEL\n");
    return 2;
  }
  const std::string mode = argv[1];
  const CudaApi api = load_cuda_api();
  make_primary_context_current(api, 0);
  const DeviceDescription device = describe_device(api, 0);
  const kiln::Bytes bundle_bytes = argc > 2 ? read_file(argv[2]) : kiln::Bytes{};
  ElementwiseProblem<float> problem(api, kAddFloat.op, 1 << 20);

  // The raw modes' cubins for this device, extracted before t0 as the cold-start benchmark does.
  std::vector<Cubin> cubins;
  std::size_t first = 0;
  if (mode == "raw" || mode == "raw-all" || mode == "raw-split") {  // before t0, as in kiln_bench_coldstart
    const kiln::Bundle bundle = unwrap(kiln::Bundle::open(bundle_bytes, "bundle"), "opening the bundle");
    const kiln::ImageTarget wanted{kiln::ImageKind::Cubin, kiln::Arch{{device.major, device.minor}}};
    for (std::size_t index = 0; index < bundle.images().size(); ++index) {
      if (!(bundle.images()[index].target == wanted)) continue;
      for (std::string_view kernel : bundle.images()[index].kernels) {
        if (kernel == kAddFloat.mangled) first = cubins.size();
      }
      cubins.push_back({unwrap(bundle.extract(index), "extracting a cubin"), bundle.images()[index].mangled_kernels()});
    }
    if (cubins.empty()) throw std::runtime_error("the bundle has no cubin for this GPU's own architecture");
  }

  // jit-one: add<float>'s own PTX, as kiln's JIT would compile it, prepared before t0.
  std::string kernel_ptx;
  if (mode == "jit-one") {
    if (argc != 5) throw std::runtime_error("usage: kiln_bench_phases jit-one BUNDLE driver|nvjitlink LEVEL");
    const kiln::Bundle bundle = unwrap(kiln::Bundle::open(bundle_bytes, "bundle"), "opening the bundle");
    for (std::size_t index = 0; index < bundle.images().size() && kernel_ptx.empty(); ++index) {
      const kiln::ImageInfo& image = bundle.images()[index];
      if (image.target.kind != kiln::ImageKind::Ptx ||
          std::find(image.kernels.begin(), image.kernels.end(), kAddFloat.mangled) == image.kernels.end()) {
        continue;
      }
      const kiln::Bytes text = unwrap(bundle.extract(index), "extracting the PTX");
      const kiln::PtxModule ptx =
          unwrap(kiln::PtxModule::parse(std::string(text.begin(), text.end())), "parsing the PTX");
      kernel_ptx = unwrap(ptx.kernel_ptx(kAddFloat.mangled), "splitting the PTX");
    }
    if (kernel_ptx.empty()) throw std::runtime_error("the bundle has no PTX holding add<float>");
  }

  Timeline timeline;
  bool launched = false;
  // kernel(add<float>), its launch and the wait for its result: the end of every kiln start.
  auto first_result = [&](const kiln::Module& module) {
    const kiln::Kernel kernel = unwrap(module.kernel(kAddFloat.mangled), "kiln::Module::kernel");
    timeline.mark("kernel");
    unwrap(problem.launch(kernel, nullptr), "kiln::Kernel::launch");
    timeline.mark("launch");
    api.check(api.cuCtxSynchronize_fn(), "cuCtxSynchronize");
    timeline.mark("sync");
    timeline.note(std::string("path=") + kiln::path_name(kernel.record().path));
    launched = true;
  };
  if (mode == "kiln" || mode == "kiln-all") {
    const kiln::Runtime runtime = unwrap(kiln::Runtime::create(), "kiln::Runtime::create");
    timeline.mark("create");
    const kiln::Module module = unwrap(runtime.load(bundle_bytes, "bundle"), "kiln::Runtime::load");
    timeline.mark("load");
    if (mode == "kiln") {
      first_result(module);
    } else {
      unwrap(module.prepare_all(), "kiln::Module::prepare_all");
      timeline.mark("all");
      timeline.note(std::string("path=") + kiln::path_name(module.records().front().path));
    }
  } else if (mode == "kiln-steps") {
    const std::shared_ptr<kiln::Driver> driver = unwrap(kiln::load_cuda_driver(), "kiln::load_cuda_driver");
    timeline.mark("driver");
    const kiln::RuntimeOptions options = kiln::RuntimeOptions::from_environment();
    timeline.mark("environment");
    const kiln::Runtime runtime =
        unwrap(kiln::Runtime::create(driver, kiln::make_jit_compiler(driver), options), "kiln::Runtime::create");
    timeline.mark("runtime");
    (void)unwrap(kiln::Bundle::open(bundle_bytes, "bundle"), "kiln::Bundle::open");
    timeline.mark("open");
    const kiln::Module module = unwrap(runtime.load(bundle_bytes, "bundle"), "kiln::Runtime::load");
    timeline.mark("load");
    first_result(module);
  } else if (mode == "raw" || mode == "raw-split") {
    CUmodule module = nullptr;
    api.check(api.cuModuleLoadData_fn(&module, cubins[first].bytes.data()), "cuModuleLoadData");
    timeline.mark("load");
    CUfunction function = nullptr;
    api.check(api.cuModuleGetFunction_fn(&function, module, kAddFloat.mangled), "cuModuleGetFunction");
    timeline.mark("function");
    if (mode == "raw-split") {  // the queries kiln's first launch makes for its argument check
      auto get_param_info = reinterpret_cast<decltype(&::cuFuncGetParamInfo)>(
          dlsym(dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD), "cuFuncGetParamInfo"));
      std::size_t offset = 0, size = 0, parameters = 0;
      while (get_param_info != nullptr && get_param_info(function, parameters, &offset, &size) == CUDA_SUCCESS) {
        if (++parameters == 1) timeline.mark("first-param");
      }
      timeline.mark("param-info");
      timeline.note("parameters=" + std::to_string(parameters) + " bytes=" + std::to_string(cubins[first].bytes.size()));
    }
    problem.launch_raw(function, nullptr);
    timeline.mark("launch");
    api.check(api.cuCtxSynchronize_fn(), "cuCtxSynchronize");
    timeline.mark("sync");
    launched = true;
  } else if (mode == "driver-calls") {
    // What kiln::load_cuda_driver does, a mark after each kind of call.
    void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    timeline.mark("dlopen");
    auto get_proc_address = reinterpret_cast<decltype(&::cuGetProcAddress)>(dlsym(library, "cuGetProcAddress_v2"));
    timeline.mark("dlsym");
    const char* names[] = {"cuGetErrorName", "cuGetErrorString", "cuInit", "cuDriverGetVersion", "cuDeviceGetCount",
                           "cuDeviceGet", "cuDeviceGetName", "cuDeviceGetAttribute", "cuDevicePrimaryCtxRetain",
                           "cuCtxGetCurrent", "cuCtxSetCurrent", "cuCtxGetDevice", "cuCtxPushCurrent", "cuCtxPopCurrent",
                           "cuModuleLoadData", "cuModuleUnload", "cuModuleGetFunction", "cuFuncGetParamInfo",
                           "cuLinkCreate", "cuLinkAddData", "cuLinkComplete", "cuLinkDestroy", "cuLaunchKernel"};
    void* resolved[std::size(names)] = {};
    for (std::size_t index = 0; index < std::size(names); ++index) {
      CUdriverProcAddressQueryResult status{};
      get_proc_address(names[index], &resolved[index], 2000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status);
      if (index == 0) timeline.mark("proc-address-1");
    }
    timeline.mark("proc-address-23");
    for (const char* name : names) resolved[0] = dlsym(library, name);
    timeline.mark("dlsym-23");
    int version = 0, count = 0, major = 0, minor = 0;
    api.check(api.cuDeviceGetCount_fn(&count), "cuDeviceGetCount");  // kiln's cuInit is only for a process without one
    timeline.mark("count");
    api.check(api.cuInit_fn(0), "cuInit");
    timeline.mark("cuInit-again");  // what a start paid before kiln asked the count first
    api.check(api.cuDriverGetVersion_fn(&version), "cuDriverGetVersion");
    timeline.mark("version");
    CUdevice device = 0;
    api.check(api.cuDeviceGet_fn(&device, 0), "cuDeviceGet");
    timeline.mark("device");
    char name[256] = {};
    api.check(api.cuDeviceGetName_fn(name, sizeof name, device), "cuDeviceGetName");
    timeline.mark("name");
    api.check(api.cuDeviceGetAttribute_fn(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device), "attribute");
    api.check(api.cuDeviceGetAttribute_fn(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device), "attribute");
    timeline.mark("capability");
    const kiln::RuntimeOptions options = kiln::RuntimeOptions::from_environment();
    timeline.mark("environment");
    const kiln::RuntimeOptions again = kiln::RuntimeOptions::from_environment();
    timeline.mark("environment-again");
  } else if (mode == "extract") {
    for (int round = 0; round < 2; ++round) {
      const kiln::Bundle bundle = unwrap(kiln::Bundle::open(bundle_bytes, "bundle"), "kiln::Bundle::open");
      timeline.mark("open");
      const kiln::ImageTarget wanted{kiln::ImageKind::Cubin, kiln::Arch{{device.major, device.minor}}};
      for (std::size_t index = 0; index < bundle.images().size(); ++index) {
        const kiln::ImageInfo& image = bundle.images()[index];
        if (!(image.target == wanted) ||
            std::find(image.kernels.begin(), image.kernels.end(), kAddFloat.mangled) == image.kernels.end()) {
          continue;
        }
        const kiln::Bytes cubin = unwrap(bundle.extract(index), "extracting add<float>'s cubin");
        timeline.mark("extract");
        timeline.note("bytes=" + std::to_string(cubin.size()));
        break;
      }
    }
  } else if (mode == "raw-all") {
    std::chrono::duration<double, std::milli> loads{}, lookups{};
    for (const Cubin& cubin : cubins) {
      const Clock::time_point before_load = Clock::now();
      CUmodule module = nullptr;
      api.check(api.cuModuleLoadData_fn(&module, cubin.bytes.data()), "cuModuleLoadData");
      const Clock::time_point before_lookups = Clock::now();
      for (const std::string& kernel : cubin.kernels) {
        CUfunction function = nullptr;
        api.check(api.cuModuleGetFunction_fn(&function, module, kernel.c_str()), "cuModuleGetFunction");
      }
      loads += before_lookups - before_load;
      lookups += Clock::now() - before_lookups;
    }
    timeline.mark("all");
    timeline.note("in-loads=" + std::to_string(loads.count()) + " in-lookups=" + std::to_string(lookups.count()));
  } else if (mode == "link-empty") {
    for (int round = 0; round < 3; ++round) {
      CUlinkState state = nullptr;
      CUjit_option options[] = {CU_JIT_TARGET};
      void* values[] = {reinterpret_cast<void*>(static_cast<std::uintptr_t>(device.major * 10 + device.minor))};
      api.check(api.cuLinkCreate_fn(1, options, values, &state), "cuLinkCreate");
      timeline.mark("create");
      api.check(api.cuLinkAddData_fn(state, CU_JIT_INPUT_PTX, const_cast<char*>(kEmptyKernelPtx), sizeof kEmptyKernelPtx,
                                     "empty", 0, nullptr, nullptr),
                "cuLinkAddData");
      timeline.mark("add-ptx");
      void* image = nullptr;
      std::size_t size = 0;
      api.check(api.cuLinkComplete_fn(state, &image, &size), "cuLinkComplete");
      timeline.mark("complete");
      api.cuLinkDestroy_fn(state);
    }
  } else if (mode == "jit-one") {
    const std::string compiler = argv[3];
    const int level = std::stoi(argv[4]);
    kiln::Bytes cubin;
    if (compiler == "driver") {
      CUlinkState state = nullptr;
      CUjit_option options[] = {CU_JIT_TARGET, CU_JIT_OPTIMIZATION_LEVEL};
      void* values[] = {reinterpret_cast<void*>(static_cast<std::uintptr_t>(device.major * 10 + device.minor)),
                        reinterpret_cast<void*>(static_cast<std::uintptr_t>(level))};
      api.check(api.cuLinkCreate_fn(2, options, values, &state), "cuLinkCreate");
      timeline.mark("create");
      api.check(api.cuLinkAddData_fn(state, CU_JIT_INPUT_PTX, kernel_ptx.data(), kernel_ptx.size() + 1, "add", 0,
                                     nullptr, nullptr),
                "cuLinkAddData");
      timeline.mark("add-ptx");
      void* image = nullptr;
      std::size_t size = 0;
      api.check(api.cuLinkComplete_fn(state, &image, &size), "cuLinkComplete");
      cubin.assign(static_cast<const std::uint8_t*>(image), static_cast<const std::uint8_t*>(image) + size);
      api.cuLinkDestroy_fn(state);
      timeline.mark("complete");
    } else if (compiler == "nvjitlink") {
      void* library = dlopen("libnvJitLink.so.13", RTLD_NOW | RTLD_LOCAL);
      if (library == nullptr) library = dlopen("/usr/local/cuda/lib64/libnvJitLink.so.13", RTLD_NOW | RTLD_LOCAL);
      if (library == nullptr) throw std::runtime_error("libnvJitLink.so.13 not found");
      auto create = reinterpret_cast<nvJitLinkResult (*)(nvJitLinkHandle*, std::uint32_t, const char**)>(
          dlsym(library, "nvJitLinkCreate"));
      auto add = reinterpret_cast<nvJitLinkResult (*)(nvJitLinkHandle, nvJitLinkInputType, const void*, std::size_t,
                                                      const char*)>(dlsym(library, "nvJitLinkAddData"));
      auto complete = reinterpret_cast<nvJitLinkResult (*)(nvJitLinkHandle)>(dlsym(library, "nvJitLinkComplete"));
      auto size_of = reinterpret_cast<nvJitLinkResult (*)(nvJitLinkHandle, std::size_t*)>(
          dlsym(library, "nvJitLinkGetLinkedCubinSize"));
      auto get = reinterpret_cast<nvJitLinkResult (*)(nvJitLinkHandle, void*)>(dlsym(library, "nvJitLinkGetLinkedCubin"));
      if (!create || !add || !complete || !size_of || !get) throw std::runtime_error("nvJitLink lacks an entry point");
      timeline.mark("dlopen");
      const std::string arch = "-arch=sm_" + std::to_string(device.major * 10 + device.minor);
      const std::string optimization = "-O" + std::to_string(level);
      const char* options[] = {arch.c_str(), optimization.c_str()};
      nvJitLinkHandle handle = nullptr;
      if (create(&handle, 2, options) != NVJITLINK_SUCCESS) throw std::runtime_error("nvJitLinkCreate failed");
      timeline.mark("create");
      if (add(handle, NVJITLINK_INPUT_PTX, kernel_ptx.data(), kernel_ptx.size(), "add") != NVJITLINK_SUCCESS) {
        throw std::runtime_error("nvJitLinkAddData failed");
      }
      timeline.mark("add-ptx");
      std::size_t size = 0;
      if (complete(handle) != NVJITLINK_SUCCESS || size_of(handle, &size) != NVJITLINK_SUCCESS) {
        throw std::runtime_error("nvJitLinkComplete failed");
      }
      cubin.resize(size);
      if (get(handle, cubin.data()) != NVJITLINK_SUCCESS) throw std::runtime_error("nvJitLinkGetLinkedCubin failed");
      timeline.mark("complete");
    } else {
      throw std::runtime_error("jit-one: the compiler is driver or nvjitlink, not " + compiler);
    }
    CUmodule module = nullptr;
    api.check(api.cuModuleLoadData_fn(&module, cubin.data()), "cuModuleLoadData");
    CUfunction function = nullptr;
    api.check(api.cuModuleGetFunction_fn(&function, module, kAddFloat.mangled), "cuModuleGetFunction");
    timeline.mark("load");
    problem.launch_raw(function, nullptr);
    api.check(api.cuCtxSynchronize_fn(), "cuCtxSynchronize");
    timeline.mark("sync");
    timeline.note("compiler=" + compiler + " level=" + std::to_string(level) + " cubin=" + std::to_string(cubin.size()));
    launched = true;
  } else {
    std::fprintf(stderr, "kiln_bench_phases: unknown mode %s\n", mode.c_str());
    return 2;
  }
  if (launched) problem.verify(mode);
  std::printf("%s%s\n", mode.c_str(), timeline.line().c_str());
  return 0;
} catch (const NoGpu& error) {
  std::printf("no GPU: %s\n", error.what());
  return kExitNoGpu;
} catch (const std::exception& error) {
  std::fprintf(stderr, "kiln_bench_phases: %s\n", error.what());
  return 1;
}
