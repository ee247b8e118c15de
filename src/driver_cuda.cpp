#include "driver_cuda.hpp"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdint>
#include <mutex>

namespace kiln {
namespace {

// Each entry point at the ABI version whose signature kiln calls: cudaTypedefs.h names the
// version in each PFN type, and cuGetProcAddress is asked for exactly that version, so a newer
// driver that changed a signature (cuCtxGetDevice did in 13.0) still hands out the one we call.
struct Api {
  PFN_cuGetErrorName_v6000 cuGetErrorName = nullptr;
  PFN_cuGetErrorString_v6000 cuGetErrorString = nullptr;
  PFN_cuInit_v2000 cuInit = nullptr;
  PFN_cuDriverGetVersion_v2020 cuDriverGetVersion = nullptr;
  PFN_cuDeviceGetCount_v2000 cuDeviceGetCount = nullptr;
  PFN_cuDeviceGet_v2000 cuDeviceGet = nullptr;
  PFN_cuDeviceGetName_v2000 cuDeviceGetName = nullptr;
  PFN_cuDeviceGetAttribute_v2000 cuDeviceGetAttribute = nullptr;
  PFN_cuDevicePrimaryCtxRetain_v7000 cuDevicePrimaryCtxRetain = nullptr;
  PFN_cuCtxGetCurrent_v4000 cuCtxGetCurrent = nullptr;
  PFN_cuCtxSetCurrent_v4000 cuCtxSetCurrent = nullptr;
  PFN_cuCtxGetDevice_v2000 cuCtxGetDevice = nullptr;
  PFN_cuCtxPushCurrent_v4000 cuCtxPushCurrent = nullptr;
  PFN_cuCtxPopCurrent_v4000 cuCtxPopCurrent = nullptr;
  PFN_cuModuleLoadData_v2000 cuModuleLoadData = nullptr;
  PFN_cuModuleUnload_v2000 cuModuleUnload = nullptr;
  PFN_cuModuleGetFunction_v2000 cuModuleGetFunction = nullptr;
  PFN_cuFuncGetParamInfo_v12040 cuFuncGetParamInfo = nullptr;  // optional: CUDA 12.4+
  PFN_cuLinkCreate_v6050 cuLinkCreate = nullptr;
  PFN_cuLinkAddData_v6050 cuLinkAddData = nullptr;
  PFN_cuLinkComplete_v5050 cuLinkComplete = nullptr;
  PFN_cuLinkDestroy_v5050 cuLinkDestroy = nullptr;
  PFN_cuLaunchKernel_v4000 cuLaunchKernel = nullptr;
};

struct EntryPoint {
  const char* name;
  int version;  // the CUDA version of the ABI in the PFN type above
  void** slot;
  bool required;
};

std::vector<EntryPoint> entry_points(Api& api) {
  auto slot = [](auto& pointer) { return reinterpret_cast<void**>(&pointer); };
  return {
      {"cuGetErrorName", 6000, slot(api.cuGetErrorName), true},
      {"cuGetErrorString", 6000, slot(api.cuGetErrorString), true},
      {"cuInit", 2000, slot(api.cuInit), true},
      {"cuDriverGetVersion", 2020, slot(api.cuDriverGetVersion), true},
      {"cuDeviceGetCount", 2000, slot(api.cuDeviceGetCount), true},
      {"cuDeviceGet", 2000, slot(api.cuDeviceGet), true},
      {"cuDeviceGetName", 2000, slot(api.cuDeviceGetName), true},
      {"cuDeviceGetAttribute", 2000, slot(api.cuDeviceGetAttribute), true},
      {"cuDevicePrimaryCtxRetain", 7000, slot(api.cuDevicePrimaryCtxRetain), true},
      {"cuCtxGetCurrent", 4000, slot(api.cuCtxGetCurrent), true},
      {"cuCtxSetCurrent", 4000, slot(api.cuCtxSetCurrent), true},
      {"cuCtxGetDevice", 2000, slot(api.cuCtxGetDevice), true},
      {"cuCtxPushCurrent", 4000, slot(api.cuCtxPushCurrent), true},
      {"cuCtxPopCurrent", 4000, slot(api.cuCtxPopCurrent), true},
      {"cuModuleLoadData", 2000, slot(api.cuModuleLoadData), true},
      {"cuModuleUnload", 2000, slot(api.cuModuleUnload), true},
      {"cuModuleGetFunction", 2000, slot(api.cuModuleGetFunction), true},
      {"cuFuncGetParamInfo", 12040, slot(api.cuFuncGetParamInfo), false},
      {"cuLinkCreate", 6050, slot(api.cuLinkCreate), true},
      {"cuLinkAddData", 6050, slot(api.cuLinkAddData), true},
      {"cuLinkComplete", 5050, slot(api.cuLinkComplete), true},
      {"cuLinkDestroy", 5050, slot(api.cuLinkDestroy), true},
      {"cuLaunchKernel", 4000, slot(api.cuLaunchKernel), true},
  };
}

std::string version_text(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

// "CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected". The toolkit's stub libcuda
// cannot name its own error, so that one code is named here.
std::string result_text(const Api& api, CUresult result) {
  const char* name = nullptr;
  const char* description = nullptr;
  if (api.cuGetErrorName == nullptr || api.cuGetErrorName(result, &name) != CUDA_SUCCESS || name == nullptr) {
    if (result == CUDA_ERROR_STUB_LIBRARY) return "CUDA_ERROR_STUB_LIBRARY";
    return "CUresult " + std::to_string(static_cast<int>(result));
  }
  std::string text = name;
  if (api.cuGetErrorString != nullptr && api.cuGetErrorString(result, &description) == CUDA_SUCCESS &&
      description != nullptr) {
    text += std::string(": ") + description;
  }
  return text;
}

Error driver_error(const Api& api, CUresult result, std::string_view call, std::string context = {}) {
  Error error = make_error(Component::Driver, std::string(call) + " failed: " + result_text(api, result),
                           std::move(context));
  error.native_code = static_cast<int>(result);
  if (result == CUDA_ERROR_STUB_LIBRARY) {
    error.hint = "the CUDA toolkit's stub libcuda was loaded instead of the NVIDIA driver's: install the driver, "
                 "and keep .../lib64/stubs out of LD_LIBRARY_PATH";
  } else if (result == CUDA_ERROR_UNSUPPORTED_PTX_VERSION) {
    error.hint = "the PTX is newer than this driver understands: update the NVIDIA driver";
  }
  return error;
}

// Pushes a context for the lifetime of the scope and pops it after, so work done in a device's
// context leaves the calling thread's own current context as it was.
class ScopedContext {
 public:
  ScopedContext(const Api& api, CUcontext context) : api_(api), status_(api.cuCtxPushCurrent(context)) {}
  ~ScopedContext() {
    if (status_ == CUDA_SUCCESS) {
      CUcontext popped = nullptr;
      api_.cuCtxPopCurrent(&popped);
    }
  }
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;
  [[nodiscard]] CUresult status() const noexcept { return status_; }

 private:
  const Api& api_;
  CUresult status_;
};

CUjit_target jit_target(const Arch& arch) {
  int value = arch.cc.major * 10 + arch.cc.minor;
  if (arch.variant == ArchVariant::Specific) value += CU_COMPUTE_ACCELERATED_TARGET_BASE;
  if (arch.variant == ArchVariant::Family) value += CU_COMPUTE_FAMILY_TARGET_BASE;
  return static_cast<CUjit_target>(value);
}

class CudaDriver final : public Driver {
 public:
  CudaDriver(Api api, int version, std::vector<GpuInfo> gpus, std::vector<CUdevice> devices)
      : api_(api),
        version_(version),
        gpus_(std::move(gpus)),
        devices_(std::move(devices)),
        primaries_(std::make_unique<Primary[]>(gpus_.size())) {}

  // Primary contexts stay retained, and libcuda stays loaded, for the life of the process (as
  // cudart keeps them): releasing them from a static destructor would race the driver's teardown.
  ~CudaDriver() override = default;

  int version() const noexcept override { return version_; }
  // The loaded library with the size and modification time of the file it links to
  // (libcuda.so.1 -> libcuda.so.<driver version>): every driver build of one CUDA version reports
  // the same cuDriverGetVersion. One stat, not realpath's walk: a warm start computes this too.
  std::string build_identity() const override {
    std::call_once(identified_, [this] {
      Dl_info info{};
      if (dladdr(reinterpret_cast<void*>(api_.cuDriverGetVersion), &info) == 0 || info.dli_fname == nullptr) return;
      identity_ = info.dli_fname;
      struct stat status {};
      if (::stat(info.dli_fname, &status) == 0) {
        identity_ += " " + std::to_string(status.st_size) + " " + std::to_string(status.st_mtim.tv_sec);
      }
    });
    return identity_;
  }
  const std::vector<GpuInfo>& gpus() const noexcept override {
    std::call_once(named_, [this] {
      for (GpuInfo& gpu : gpus_) {
        char name[256] = {};
        const CUresult result = api_.cuDeviceGetName(name, sizeof name, devices_[static_cast<std::size_t>(gpu.ordinal)]);
        gpu.name = result == CUDA_SUCCESS ? name : "unnamed GPU (cuDeviceGetName: " + result_text(api_, result) + ")";
      }
    });
    return gpus_;
  }
  std::size_t gpu_count() const noexcept override { return gpus_.size(); }
  ComputeCapability compute_capability(int device) const noexcept override {
    return gpus_[static_cast<std::size_t>(device)].cc;
  }

  Result<std::optional<int>> current_device() const override {
    CUcontext current = nullptr;
    if (CUresult result = api_.cuCtxGetCurrent(&current); result != CUDA_SUCCESS) {
      return driver_error(api_, result, "cuCtxGetCurrent");
    }
    if (current == nullptr) return std::optional<int>{};
    CUdevice device = 0;
    if (CUresult result = api_.cuCtxGetDevice(&device); result != CUDA_SUCCESS) {
      return driver_error(api_, result, "cuCtxGetDevice");
    }
    for (std::size_t ordinal = 0; ordinal < devices_.size(); ++ordinal) {
      if (devices_[ordinal] == device) return std::optional<int>(static_cast<int>(ordinal));
    }
    return make_error(Component::Driver, "the current context belongs to a device the driver did not list");
  }

  Result<CUcontext> context(int device) override {
    if (device < 0 || static_cast<std::size_t>(device) >= gpus_.size()) {
      return make_error(Component::Driver, "GPU " + std::to_string(device) + " does not exist: this machine has " +
                                               std::to_string(gpus_.size()));
    }
    Primary& primary = primaries_[device];
    std::call_once(primary.once, [&] {
      primary.status = api_.cuDevicePrimaryCtxRetain(&primary.context, devices_[device]);
    });
    if (primary.status != CUDA_SUCCESS) {
      return driver_error(api_, primary.status, "cuDevicePrimaryCtxRetain", where(device));
    }
    return primary.context;
  }

  Result<void> make_current(int device) override {
    Result<CUcontext> context = this->context(device);
    if (!context) return context.error();
    return set_current(*context);
  }

  Result<CUmodule> load_module(int device, ByteView image) override {
    Result<CUcontext> context = this->context(device);
    if (!context) return context.error();
    ScopedContext scope(api_, *context);
    if (scope.status() != CUDA_SUCCESS) return driver_error(api_, scope.status(), "cuCtxPushCurrent", where(device));
    CUmodule module = nullptr;
    if (CUresult result = api_.cuModuleLoadData(&module, image.data()); result != CUDA_SUCCESS) {
      return driver_error(api_, result, "cuModuleLoadData", where(device));
    }
    return module;
  }

  void unload_module(int device, CUmodule module) noexcept override {
    Result<CUcontext> context = this->context(device);
    if (!context) return;
    ScopedContext scope(api_, *context);
    // Nothing to do about a failure here: it happens when the process tears the driver down first.
    api_.cuModuleUnload(module);
  }

  Result<CUfunction> function(CUmodule module, const std::string& mangled_name) override {
    CUfunction function = nullptr;
    if (CUresult result = api_.cuModuleGetFunction(&function, module, mangled_name.c_str()); result != CUDA_SUCCESS) {
      return driver_error(api_, result, "cuModuleGetFunction", "kernel " + mangled_name);
    }
    return function;
  }

  Result<std::optional<std::vector<std::size_t>>> parameter_sizes(CUfunction function) override {
    if (api_.cuFuncGetParamInfo == nullptr) return std::optional<std::vector<std::size_t>>{};
    std::vector<std::size_t> sizes;
    for (std::size_t index = 0;; ++index) {
      std::size_t offset = 0;
      std::size_t size = 0;
      CUresult result = api_.cuFuncGetParamInfo(function, index, &offset, &size);
      // The driver answers an index past the last parameter with CUDA_ERROR_INVALID_VALUE.
      if (result == CUDA_ERROR_INVALID_VALUE) break;
      // The sizes only feed an advisory launch check: a driver that cannot answer skips it
      // rather than making the kernel unusable.
      if (result != CUDA_SUCCESS) return std::optional<std::vector<std::size_t>>{};
      sizes.push_back(size);
    }
    return std::optional<std::vector<std::size_t>>(std::move(sizes));
  }

  Result<Bytes> link_ptx(int device, std::string_view ptx, Arch target, std::string_view label,
                         unsigned compile_threads) override {
    Result<CUcontext> context = this->context(device);
    if (!context) return context.error();
    ScopedContext scope(api_, *context);
    if (scope.status() != CUDA_SUCCESS) return driver_error(api_, scope.status(), "cuCtxPushCurrent", where(device));

    std::string error_log(std::size_t{64} << 10, '\0');
    CUjit_option options[] = {CU_JIT_TARGET, CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                              CU_JIT_SPLIT_COMPILE};
    void* values[] = {reinterpret_cast<void*>(static_cast<std::uintptr_t>(jit_target(target))), error_log.data(),
                      reinterpret_cast<void*>(error_log.size()),
                      reinterpret_cast<void*>(static_cast<std::uintptr_t>(compile_threads))};
    const std::string context_text = std::string(label) + " for " + target.sm_name() + " on " + where(device);
    auto failed = [&](CUresult result, std::string_view call) {
      Error error = driver_error(api_, result, call, context_text);
      error.log = error_log.c_str();  // the driver writes a NUL-terminated log into the buffer
      return error;
    };

    CUlinkState state = nullptr;
    const bool split = compile_threads != 1;
    CUresult created = api_.cuLinkCreate(split ? 4 : 3, options, values, &state);
    if (created == CUDA_ERROR_INVALID_VALUE && split) {
      created = api_.cuLinkCreate(3, options, values, &state);  // a driver before CU_JIT_SPLIT_COMPILE
    }
    if (created != CUDA_SUCCESS) return failed(created, "cuLinkCreate");
    // The linker reads PTX as a C string, so it gets the terminating NUL too.
    const std::string text(ptx);
    const std::string name(label);
    Result<Bytes> cubin = [&]() -> Result<Bytes> {
      if (CUresult result = api_.cuLinkAddData(state, CU_JIT_INPUT_PTX, const_cast<char*>(text.c_str()),
                                               text.size() + 1, name.c_str(), 0, nullptr, nullptr);
          result != CUDA_SUCCESS) {
        return failed(result, "cuLinkAddData (PTX)");
      }
      void* image = nullptr;
      std::size_t size = 0;
      if (CUresult result = api_.cuLinkComplete(state, &image, &size); result != CUDA_SUCCESS) {
        return failed(result, "cuLinkComplete");
      }
      const auto* bytes = static_cast<const std::uint8_t*>(image);
      return Bytes(bytes, bytes + size);  // the linker owns `image` until cuLinkDestroy
    }();
    api_.cuLinkDestroy(state);
    return cubin;
  }

  Result<void> launch(CUcontext context, CUfunction function, Dim3 grid, Dim3 block, unsigned shared_bytes,
                      CUstream stream, void** args) override {
    auto launch_once = [&] {
      return api_.cuLaunchKernel(function, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes, stream,
                                 args, nullptr);
    };
    // The launch is tried first and the kernel's context made current only when the driver
    // refuses it for want of the right context: checking the current context before every
    // launch would add a driver call to each one.
    CUresult result = launch_once();
    if (result == CUDA_ERROR_INVALID_CONTEXT || result == CUDA_ERROR_CONTEXT_IS_DESTROYED ||
        result == CUDA_ERROR_INVALID_HANDLE) {
      if (Result<void> current = set_current(context); !current) return current;
      result = launch_once();
    }
    if (result != CUDA_SUCCESS) return driver_error(api_, result, "cuLaunchKernel");
    return {};
  }

 private:
  struct Primary {
    std::once_flag once;
    CUcontext context = nullptr;
    CUresult status = CUDA_SUCCESS;
  };

  // cuCtxSetCurrent only when the context differs: reading the current one is a thread-local load.
  Result<void> set_current(CUcontext context) {
    CUcontext current = nullptr;
    if (CUresult result = api_.cuCtxGetCurrent(&current); result != CUDA_SUCCESS) {
      return driver_error(api_, result, "cuCtxGetCurrent");
    }
    if (current == context) return {};
    if (CUresult result = api_.cuCtxSetCurrent(context); result != CUDA_SUCCESS) {
      return driver_error(api_, result, "cuCtxSetCurrent");
    }
    return {};
  }

  std::string where(int device) const { return "GPU " + std::to_string(device) + " (" + gpus()[device].name + ")"; }

  Api api_;
  int version_;
  mutable std::once_flag named_;
  mutable std::once_flag identified_;
  mutable std::string identity_;
  mutable std::vector<GpuInfo> gpus_;  // names filled in on the first gpus()
  std::vector<CUdevice> devices_;
  std::unique_ptr<Primary[]> primaries_;
};

Error not_found(const char* library, const char* reason) {
  Error error = make_error(Component::Driver,
                           "the CUDA driver (libcuda.so.1) was not found: install the NVIDIA driver; AOT images need "
                           "nothing else");
  error.context = library;
  error.log = reason == nullptr ? "" : reason;  // dlerror(): what the loader tried
  return error;
}

}  // namespace

Result<std::shared_ptr<Driver>> load_cuda_driver_from(const char* library) {
  // RTLD_LOCAL keeps libcuda's symbols out of the global namespace the application sees.
  void* opened = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (opened == nullptr) return not_found(library, dlerror());
  // Closed again on every failure: a library left loaded would answer a later dlopen of its soname.
  std::unique_ptr<void, int (*)(void*)> handle(opened, &dlclose);

  Api api;
  using GetProcAddress = PFN_cuGetProcAddress_v12000;
  auto get_proc_address = reinterpret_cast<GetProcAddress>(dlsym(handle.get(), "cuGetProcAddress_v2"));
  if (get_proc_address == nullptr) {
    int version = 0;
    auto get_version = reinterpret_cast<PFN_cuDriverGetVersion_v2020>(dlsym(handle.get(), "cuDriverGetVersion"));
    if (get_version != nullptr) get_version(&version);
    Error error = make_error(Component::Driver,
                             "the CUDA driver is too old: have " + (version > 0 ? version_text(version) : "unknown") +
                                 ", need 12.0 or newer (it lacks cuGetProcAddress_v2)",
                             library, "update the NVIDIA driver");
    return error;
  }
  // Named before anything else is resolved, so later failures can name their CUresult.
  api.cuGetErrorName = reinterpret_cast<PFN_cuGetErrorName_v6000>(dlsym(handle.get(), "cuGetErrorName"));

  for (const EntryPoint& entry : entry_points(api)) {
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    *entry.slot = nullptr;
    CUresult result = get_proc_address(entry.name, entry.slot, entry.version, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status);
    if (result == CUDA_SUCCESS && status == CU_GET_PROC_ADDRESS_SUCCESS && *entry.slot != nullptr) continue;
    *entry.slot = nullptr;
    if (!entry.required) continue;
    if (result != CUDA_SUCCESS) return driver_error(api, result, std::string("cuGetProcAddress(") + entry.name + ")", library);
    return make_error(Component::Driver,
                      std::string("the CUDA driver is too old: it lacks ") + entry.name + " (CUDA " +
                          version_text(entry.version) + ")",
                      library, "update the NVIDIA driver");
  }

  // cuInit only where the process has not: an application that already uses CUDA (through
  // cudart, say) has initialized the driver, and a second cuInit costs every start 4 µs (H100
  // machine) to 13 µs (H200 machine).
  // Before cuInit, every call but cuInit and cuDriverGetVersion answers CUDA_ERROR_NOT_INITIALIZED.
  int count = 0;
  CUresult counted = api.cuDeviceGetCount(&count);
  if (counted == CUDA_ERROR_NOT_INITIALIZED) {
    if (CUresult result = api.cuInit(0); result != CUDA_SUCCESS) {
      Error error = driver_error(api, result, "cuInit", library);
      if (result == CUDA_ERROR_NO_DEVICE) error.hint = "no usable GPU: check nvidia-smi and CUDA_VISIBLE_DEVICES";
      return error;
    }
    counted = api.cuDeviceGetCount(&count);
  }
  if (counted != CUDA_SUCCESS) return driver_error(api, counted, "cuDeviceGetCount", library);
  int version = 0;
  if (CUresult result = api.cuDriverGetVersion(&version); result != CUDA_SUCCESS) {
    return driver_error(api, result, "cuDriverGetVersion", library);
  }
  if (count == 0) {
    return make_error(Component::Driver, "the CUDA driver found no GPU", library,
                      "check nvidia-smi and CUDA_VISIBLE_DEVICES");
  }

  std::vector<GpuInfo> gpus;
  std::vector<CUdevice> devices;
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    CUdevice device = 0;
    GpuInfo gpu;
    gpu.ordinal = ordinal;
    CUresult result = api.cuDeviceGet(&device, ordinal);
    if (result == CUDA_SUCCESS) {
      result = api.cuDeviceGetAttribute(&gpu.cc.major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device);
    }
    if (result == CUDA_SUCCESS) {
      result = api.cuDeviceGetAttribute(&gpu.cc.minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device);
    }
    if (result != CUDA_SUCCESS) {
      return driver_error(api, result, "querying GPU " + std::to_string(ordinal), library);
    }
    gpus.push_back(std::move(gpu));
    devices.push_back(device);
  }
  handle.release();  // libcuda stays loaded for the life of the process (see ~CudaDriver)
  return std::shared_ptr<Driver>(std::make_shared<CudaDriver>(api, version, std::move(gpus), std::move(devices)));
}

Result<std::shared_ptr<Driver>> load_cuda_driver() {
  // Once per process: the driver does not come or go while a process runs.
  static const Result<std::shared_ptr<Driver>> loaded = load_cuda_driver_from("libcuda.so.1");
  return loaded;
}

}  // namespace kiln
