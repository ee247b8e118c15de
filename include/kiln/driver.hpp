// The two narrow interfaces the runtime stands on: the CUDA driver (loaded with dlopen, never
// linked) and the JIT compiler (PTX through the driver's linker, source through NVRTC).
// Tests put doubles of both behind a Runtime; applications normally never see them.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/catalog.hpp"
#include "kiln/error.hpp"
#include "kiln/hash.hpp"

// The driver's own handle types, declared as cuda.h declares them so both headers can meet.
struct CUstream_st;
using CUstream = CUstream_st*;
struct CUctx_st;
using CUcontext = CUctx_st*;
struct CUmod_st;
using CUmodule = CUmod_st*;
struct CUfunc_st;
using CUfunction = CUfunc_st*;

namespace kiln {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct GpuInfo {
  int ordinal = 0;
  std::string name;
  ComputeCapability cc;
};

// Everything kiln asks of the CUDA driver. Implementations are safe to call from any thread.
// Device-bound work happens in the device's primary context, the one the CUDA runtime API
// (cudart) uses too, so memory from cudaMalloc and kernels from kiln meet.
class Driver {
 public:
  virtual ~Driver() = default;

  // cuDriverGetVersion: 13000 for CUDA 13.0.
  [[nodiscard]] virtual int version() const noexcept = 0;
  // What tells driver builds of one version() apart, for the JIT cache's key: the driver's
  // compiler changes with them. Empty where there is nothing more to tell.
  [[nodiscard]] virtual std::string build_identity() const { return {}; }
  // Every device, in ordinal order; never empty (loading fails without a device).
  [[nodiscard]] virtual const std::vector<GpuInfo>& gpus() const noexcept = 0;
  // What selection needs of the devices. The defaults read gpus(); the CUDA driver answers these
  // without the GPUs' names, which it looks up only when gpus() is first called
  // (cuDeviceGetName costs ~13 µs, a start that only launches kernels never shows a name).
  [[nodiscard]] virtual std::size_t gpu_count() const noexcept { return gpus().size(); }
  [[nodiscard]] virtual ComputeCapability compute_capability(int device) const noexcept {
    return gpus()[static_cast<std::size_t>(device)].cc;
  }
  // The device of the calling thread's current context; nullopt when no context is current.
  [[nodiscard]] virtual Result<std::optional<int>> current_device() const = 0;

  // The device's primary context, retained on first use.
  [[nodiscard]] virtual Result<CUcontext> context(int device) = 0;
  // Makes the device's primary context current on the calling thread (as cudaSetDevice does).
  virtual Result<void> make_current(int device) = 0;

  // cuModuleLoadData in the device's primary context; the calling thread's context is left as it was.
  [[nodiscard]] virtual Result<CUmodule> load_module(int device, ByteView image) = 0;
  virtual void unload_module(int device, CUmodule module) noexcept = 0;
  [[nodiscard]] virtual Result<CUfunction> function(CUmodule module, const std::string& mangled_name) = 0;
  // The byte size of each parameter, in order; nullopt where the driver cannot tell
  // (cuFuncGetParamInfo arrived in CUDA 12.4).
  [[nodiscard]] virtual Result<std::optional<std::vector<std::size_t>>> parameter_sizes(CUfunction function) = 0;

  // PTX -> cubin for `target` through the driver's own linker (cuLink*), in the device's
  // context: the result can be cached, and an application needs no nvJitLink.
  // `label` names the input in the linker's messages. `compile_threads` above 1 lets the compiler
  // optimize that many functions at once (CU_JIT_SPLIT_COMPILE; 0: one per CPU), which speeds up
  // a module of many kernels and does nothing for one; a driver without the option ignores it.
  [[nodiscard]] virtual Result<Bytes> link_ptx(int device, std::string_view ptx, Arch target,
                                               std::string_view label, unsigned compile_threads) = 0;

  // cuLaunchKernel; where the driver refuses it for want of the right context, makes `context`
  // current (cuCtxSetCurrent) and launches again. A null stream is the legacy default stream, as
  // with cuLaunchKernel.
  virtual Result<void> launch(CUcontext context, CUfunction function, Dim3 grid, Dim3 block, unsigned shared_bytes,
                              CUstream stream, void** args) = 0;
};

// dlopens libcuda.so.1 once per process and resolves every entry point at the ABI version kiln
// calls (cuGetProcAddress), then cuInit and device enumeration. Errors (Component::Driver) say
// whether the driver is missing, too old, or has no usable device, with the CUresult name.
[[nodiscard]] Result<std::shared_ptr<Driver>> load_cuda_driver();

// One JIT compile: a PTX or source image in, a cubin for one architecture out.
struct JitRequest {
  ImageKind kind = ImageKind::Ptx;  // Ptx or Source
  ByteView input;
  std::string kernel;  // the entry a per-kernel PTX holds ("" for a whole image); for messages
  Arch target;         // what the cubin is for: the device's architecture
  int device = 0;      // whose context the driver's linker runs in
  std::string label;   // names the input in messages: "ops.kiln compute_80"
};

class JitCompiler {
 public:
  virtual ~JitCompiler() = default;
  // What turns `kind` into a cubin, as the cache key records it: "cuda-driver 13000" for PTX,
  // "nvrtc 13.0" for source. A source compiler that cannot be loaded is an error here.
  [[nodiscard]] virtual Result<std::string> identity(ImageKind kind) = 0;
  [[nodiscard]] virtual Result<Bytes> compile(const JitRequest& request) = 0;
};

// PTX through `driver`'s linker; source through kiln::compile_source_image (NVRTC is loaded
// only when a source image is compiled, so its absence is an error only then).
[[nodiscard]] std::shared_ptr<JitCompiler> make_jit_compiler(std::shared_ptr<Driver> driver);

}  // namespace kiln
