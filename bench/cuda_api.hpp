// The CUDA driver API for the benchmarks and the GPU load test, loaded with dlopen as kiln's
// runtime loads it. Linking libcuda.so.1 would make these programs die in the dynamic loader on
// a machine without a driver; loaded at run time they build and start anywhere and say "no GPU".
// Entry points come from cuGetProcAddress at the toolkit's version, as kiln resolves its own, so
// a raw baseline calls the very function kiln calls.
#pragma once

#include <cuda.h>
#include <dlfcn.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace kiln_bench {

// Thrown when this machine cannot run CUDA at all; the programs turn it into "no GPU" and exit 77
// (CTest's SKIP_RETURN_CODE), unlike a CUDA call that fails on a working GPU.
class NoGpu : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr int kExitNoGpu = 77;

// Every driver function the benchmarks use. The member is the name with "_fn" appended: cuda.h
// maps several names to versioned symbols with macros (cuMemAlloc -> cuMemAlloc_v2), and the
// type follows the macro while cuGetProcAddress takes the base name.
#define KILN_BENCH_CUDA_FUNCTIONS(X)                                                                    \
  X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName)                 \
  X(cuDeviceGetAttribute) X(cuDevicePrimaryCtxRetain) X(cuCtxSetCurrent) X(cuCtxSynchronize)           \
  X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction) X(cuLaunchKernel) X(cuMemAlloc)          \
  X(cuMemFree) X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuStreamCreate) X(cuStreamDestroy)                     \
  X(cuStreamSynchronize) X(cuGetErrorName) X(cuLinkCreate) X(cuLinkAddData) X(cuLinkComplete) \
  X(cuLinkDestroy)

struct CudaApi {
#define KILN_BENCH_DECLARE(name) decltype(&::name) name##_fn = nullptr;
  KILN_BENCH_CUDA_FUNCTIONS(KILN_BENCH_DECLARE)
#undef KILN_BENCH_DECLARE

  // Throws std::runtime_error naming the call and the CUresult when `result` is an error.
  void check(CUresult result, const char* call) const {
    if (result == CUDA_SUCCESS) return;
    const char* name = nullptr;
    if (cuGetErrorName_fn == nullptr || cuGetErrorName_fn(result, &name) != CUDA_SUCCESS || name == nullptr) {
      name = "unknown CUresult";
    }
    throw std::runtime_error(std::string(call) + " failed: " + name + " (" + std::to_string(result) + ")");
  }
};

// Loads libcuda.so.1, resolves every function and runs cuInit(0). Throws NoGpu when there is no
// driver, no device or only the toolkit's stub; std::runtime_error for anything else.
inline CudaApi load_cuda_api() {
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) throw NoGpu(std::string("libcuda.so.1 cannot be loaded (no NVIDIA driver): ") + dlerror());
  // Deliberately never dlclosed: kiln's runtime holds the same library for the whole process.
  auto get_proc_address = reinterpret_cast<decltype(&::cuGetProcAddress)>(dlsym(library, "cuGetProcAddress_v2"));
  if (get_proc_address == nullptr) throw NoGpu("libcuda.so.1 is older than CUDA 12 (no cuGetProcAddress_v2)");

  CudaApi api;
  auto resolve = [&](const char* name, void** slot) {
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    // CUDA 13 gave cuCtxSynchronize a context argument (its v13000 entry point); the functions
    // here are called with the CUDA 2.0 signature that cuda.h still declares for it.
    const int version = std::string_view(name) == "cuCtxSynchronize" ? 2000 : CUDA_VERSION;
    const CUresult result = get_proc_address(name, slot, version, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status);
    if (result != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || *slot == nullptr) {
      throw NoGpu(std::string("the CUDA driver lacks ") + name + " at version " + std::to_string(CUDA_VERSION) +
                  " (driver too old for this toolkit)");
    }
  };
#define KILN_BENCH_RESOLVE(name) resolve(#name, reinterpret_cast<void**>(&api.name##_fn));
  KILN_BENCH_CUDA_FUNCTIONS(KILN_BENCH_RESOLVE)
#undef KILN_BENCH_RESOLVE

  if (const CUresult result = api.cuInit_fn(0); result != CUDA_SUCCESS) {
    const char* name = nullptr;
    if (api.cuGetErrorName_fn(result, &name) != CUDA_SUCCESS || name == nullptr) name = "unknown CUresult";
    throw NoGpu(std::string("cuInit failed: ") + name);
  }
  int devices = 0;
  api.check(api.cuDeviceGetCount_fn(&devices), "cuDeviceGetCount");
  if (devices == 0) throw NoGpu("the driver reports no CUDA device");
  return api;
}

// Retains device `ordinal`'s primary context (the one kiln's runtime and cudart use) and makes it
// current on the calling thread.
inline CUcontext make_primary_context_current(const CudaApi& api, int ordinal) {
  CUdevice device = 0;
  api.check(api.cuDeviceGet_fn(&device, ordinal), "cuDeviceGet");
  CUcontext context = nullptr;
  api.check(api.cuDevicePrimaryCtxRetain_fn(&context, device), "cuDevicePrimaryCtxRetain");
  api.check(api.cuCtxSetCurrent_fn(context), "cuCtxSetCurrent");
  return context;
}

struct DeviceDescription {
  std::string name;  // "NVIDIA H100 80GB HBM3"
  int major = 0;
  int minor = 0;
};

inline DeviceDescription describe_device(const CudaApi& api, int ordinal) {
  CUdevice device = 0;
  api.check(api.cuDeviceGet_fn(&device, ordinal), "cuDeviceGet");
  char name[256] = {};
  api.check(api.cuDeviceGetName_fn(name, sizeof name, device), "cuDeviceGetName");
  DeviceDescription description{name};
  api.check(api.cuDeviceGetAttribute_fn(&description.major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
            "cuDeviceGetAttribute(major)");
  api.check(api.cuDeviceGetAttribute_fn(&description.minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
            "cuDeviceGetAttribute(minor)");
  return description;
}

}  // namespace kiln_bench
