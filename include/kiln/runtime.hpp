// The runtime: load a bundle, pick the right image for each GPU, JIT what has no cubin
// (lazily, in parallel, once, through the persistent cache), and launch kernels.
// The CUDA driver is loaded at run time; nothing CUDA is linked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/bundle.hpp"
#include "kiln/cache.hpp"
#include "kiln/catalog.hpp"
#include "kiln/driver.hpp"  // Dim3, GpuInfo, CUstream; the Driver and JitCompiler interfaces
#include "kiln/error.hpp"
#include "kiln/select.hpp"

namespace kiln {

enum class LogLevel { Off, Error, Warn, Info, Debug };
// Receives each log line at or below the runtime's level: one sentence, no "kiln: " prefix, no
// newline; called from any thread.
using LogSink = std::function<void(LogLevel level, std::string_view message)>;

struct RuntimeOptions {
  bool force_jit = false;      // KILN_FORCE_JIT=1
  bool disable_jit = false;    // KILN_DISABLE_JIT=1
  bool cache_disabled = false; // KILN_CACHE_DISABLE=1
  std::filesystem::path cache_dir = DiskCache::default_directory();  // KILN_CACHE_DIR
  CachePolicy cache_policy;                                           // KILN_CACHE_MAX_SIZE
  LogLevel log_level = LogLevel::Warn;                                // KILN_LOG
  unsigned jit_threads = 0;                                           // 0: one per hardware thread
  // After prepare_all has compiled kernels one by one from PTX, compile each such image whole into
  // the persistent cache on background threads, so that the next process's prepare_all loads one
  // module per image rather than one per kernel. KILN_BACKGROUND_COMPILE=0 turns it off.
  bool background_compile = true;
  LogSink log_sink;  // empty: "kiln: ..." lines on stderr

  // Reads the KILN_* variables above; a value it cannot read is warned about on stderr and
  // the default is kept.
  [[nodiscard]] static RuntimeOptions from_environment();
};

// How one kernel became ready on one device, and what it cost.
struct KernelRecord {
  std::string kernel;    // readable (demangled) name
  std::string mangled;
  int device = 0;
  std::string device_arch;  // "sm_90"
  std::string image;        // the image used: "sm_90", "compute_80", "source"
  Path path = Path::AotExact;
  double milliseconds = 0;  // load, or compile + load
};

// One image compiled whole into the persistent cache for one device (kiln prewarm's second step).
struct WholeImageRecord {
  std::string image;        // the image compiled: "compute_80"
  std::size_t kernels = 0;  // how many kernels it holds
  int device = 0;
  std::string device_arch;  // "sm_90"
  Path path = Path::JitPtx; // jit-ptx: compiled now; cache-hit: the cache had it already
  double milliseconds = 0;
};

class Kernel {
 public:
  // Checks the argument count and sizes against the kernel's parameters on first launch
  // (every launch in debug builds); errors name the kernel.
  template <class... Args>
  Result<void> launch(Dim3 grid, Dim3 block, unsigned shared_bytes, CUstream stream, const Args&... args) const {
    void* pointers[] = {const_cast<void*>(static_cast<const void*>(&args))..., nullptr};
    const std::size_t sizes[] = {sizeof(Args)..., 0};
    return launch_raw(grid, block, shared_bytes, stream, pointers, sizes, sizeof...(Args));
  }
  Result<void> launch_raw(Dim3 grid, Dim3 block, unsigned shared_bytes, CUstream stream, void** args,
                          const std::size_t* sizes, std::size_t count) const;

  [[nodiscard]] const KernelRecord& record() const;
  [[nodiscard]] void* native_handle() const noexcept;  // CUfunction

  struct State;
  explicit Kernel(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

class Module {
 public:
  // By readable ("add_kernel<float>") or mangled name. device -1: the calling thread's current
  // CUDA context's device, else device 0. Loads or compiles on first use only.
  [[nodiscard]] Result<Kernel> kernel(std::string_view name, int device = -1) const;
  // Every kernel ready on `device`, compiled in parallel: what `kiln prewarm` does. An image that
  // compile_whole_images() put in the persistent cache loads as one module for all its kernels.
  // Where it compiled kernels from PTX, it then starts compile_whole_images() for their images on
  // background threads (RuntimeOptions::background_compile); the Module's destructor, and the
  // process at exit, wait for them.
  Result<void> prepare_all(int device = -1) const;
  // Compiles each PTX image that `device` JITs kernels from, whole and in parallel, into the
  // persistent cache without loading it, so that a later prepare_all() loads one module per image
  // rather than one per kernel (kiln prewarm's second step; a lazy kernel() still prefers its
  // own small cubin). Nothing to do without a persistent cache. Returns what each image took.
  // An image that prepare_all is already compiling in the background is waited for, not compiled again.
  Result<std::vector<WholeImageRecord>> compile_whole_images(int device = -1) const;
  // Returns once the whole-image compiles that prepare_all started in the background are done.
  void wait_for_background_compiles() const;
  // Every kernel name the bundle lists (readable), sorted.
  [[nodiscard]] std::vector<std::string> kernel_names() const;
  [[nodiscard]] std::vector<KernelRecord> records() const;
  [[nodiscard]] const Bundle& bundle() const;

  struct State;
  explicit Module(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

class Runtime {
 public:
  // Fails with a clear error when libcuda.so.1 is missing or no device is usable.
  [[nodiscard]] static Result<Runtime> create(const RuntimeOptions& options = RuntimeOptions::from_environment());
  // Over a given driver and JIT compiler: how tests run the runtime without a GPU.
  [[nodiscard]] static Result<Runtime> create(std::shared_ptr<Driver> driver, std::shared_ptr<JitCompiler> jit,
                                              const RuntimeOptions& options = RuntimeOptions::from_environment());

  [[nodiscard]] Result<Module> load(ByteView bundle, std::string name = "bundle") const;
  [[nodiscard]] Result<Module> load_file(const std::filesystem::path& path) const;

  [[nodiscard]] const std::vector<GpuInfo>& gpus() const;
  [[nodiscard]] int driver_version() const;  // e.g. 13000
  [[nodiscard]] const RuntimeOptions& options() const;
  // The driver the runtime uses, e.g. to make a GPU's context current before allocating on it.
  [[nodiscard]] const std::shared_ptr<Driver>& driver() const;

  struct State;
  explicit Runtime(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

}  // namespace kiln
