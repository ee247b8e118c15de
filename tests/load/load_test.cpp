// Load test: many processes x many threads load the same bundle against one empty cache directory
// and ask for every kernel at once. Every kernel must be compiled exactly once on the machine, the
// other processes must read it from the cache, and every launch must give the right result.
//
//   kiln_load_test [--gpu] [--processes 16] [--threads 8] [--report FILE]
//
// Each worker process runs the real runtime with KILN_FORCE_JIT=1 (PTX split per kernel and
// compiled, through the persistent cache) on the example op library (sm_90 cubins + compute_80
// PTX, embedded by kiln_add_kernels). Each of its threads loads the bundle itself (a Module of
// its own) and asks for every kernel, starting at a different one.
//
// Without --gpu the runtime stands on a fake GPU of compute capability 9.0: its "compiler" turns
// PTX into a fake cubin (slowly, as a real one is slow) and its launches write a value derived
// from the kernel's name, so a cubin loaded for the wrong kernel shows. With --gpu it stands on
// the real driver; threads launch the element-wise kernels that have a reference here and check
// them, and make every other kernel ready. In both, the driver is wrapped by one that logs each
// PTX compile to a file shared by all processes: the exact count the test asserts on.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cuda_api.hpp"
#include "kiln/bundle.hpp"
#include "kiln/bundles/load_ops.hpp"
#include "kiln/cache.hpp"
#include "kiln/driver.hpp"
#include "kiln/runtime.hpp"
#include "support.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace kiln_bench;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// The compile log: one line "<pid> <entry>" per PTX compile, appended by every process.

// The .entry a per-kernel PTX piece defines (the runtime splits PTX per kernel before compiling).
std::string entry_of(std::string_view ptx) {
  const std::size_t at = ptx.find(".entry ");
  if (at == std::string_view::npos) return "(whole module)";
  std::size_t begin = at + std::strlen(".entry ");
  while (begin < ptx.size() && ptx[begin] == ' ') ++begin;
  std::size_t end = begin;
  while (end < ptx.size() && ptx[end] != '(' && ptx[end] != ' ' && ptx[end] != '\n') ++end;
  return std::string(ptx.substr(begin, end - begin));
}

void append_compile_record(const fs::path& log, const std::string& entry) {
  // O_APPEND writes of one short line land whole, however many processes append at once.
  const int fd = open(log.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open " + log.string() + ": " + std::strerror(errno));
  const std::string line = std::to_string(getpid()) + " " + entry + "\n";
  const ssize_t written = write(fd, line.data(), line.size());
  const int write_errno = errno;
  close(fd);
  if (written != static_cast<ssize_t>(line.size())) {
    throw std::runtime_error("append to " + log.string() + ": " + std::strerror(write_errno));
  }
}

// Passes everything to `inner`, logging each PTX compile first.
class CompileCountingDriver final : public kiln::Driver {
 public:
  CompileCountingDriver(std::shared_ptr<kiln::Driver> inner, fs::path log)
      : inner_(std::move(inner)), log_(std::move(log)) {}

  int version() const noexcept override { return inner_->version(); }
  const std::vector<kiln::GpuInfo>& gpus() const noexcept override { return inner_->gpus(); }
  kiln::Result<std::optional<int>> current_device() const override { return inner_->current_device(); }
  kiln::Result<CUcontext> context(int device) override { return inner_->context(device); }
  kiln::Result<void> make_current(int device) override { return inner_->make_current(device); }
  kiln::Result<CUmodule> load_module(int device, kiln::ByteView image) override {
    return inner_->load_module(device, image);
  }
  void unload_module(int device, CUmodule module) noexcept override { inner_->unload_module(device, module); }
  kiln::Result<CUfunction> function(CUmodule module, const std::string& mangled_name) override {
    return inner_->function(module, mangled_name);
  }
  kiln::Result<std::optional<std::vector<std::size_t>>> parameter_sizes(CUfunction function) override {
    return inner_->parameter_sizes(function);
  }
  kiln::Result<kiln::Bytes> link_ptx(int device, std::string_view ptx, kiln::Arch target, std::string_view label,
                                     unsigned compile_threads) override {
    append_compile_record(log_, entry_of(ptx));
    return inner_->link_ptx(device, ptx, target, label, compile_threads);
  }
  kiln::Result<void> launch(CUcontext context, CUfunction function, kiln::Dim3 grid, kiln::Dim3 block,
                            unsigned shared_bytes, CUstream stream, void** args) override {
    return inner_->launch(context, function, grid, block, shared_bytes, stream, args);
  }

 private:
  std::shared_ptr<kiln::Driver> inner_;
  fs::path log_;
};

// ---------------------------------------------------------------------------------------------
// The fake GPU (CPU mode).

constexpr std::string_view kFakeCubinMagic = "kiln-load-test fake cubin\n";
// A real per-kernel ptxas run takes tens of milliseconds: long enough for the threads and
// processes that want the same kernel to pile up behind the one compiling it.
constexpr auto kFakeCompileTime = std::chrono::milliseconds(20);

// What a fake kernel "computes": its own name, hashed, mixed with the launch's argument.
std::uint64_t fake_kernel_result(std::string_view kernel, std::uint64_t seed) {
  return kiln::checksum64(kiln::as_bytes(kernel)) ^ seed;
}

class FakeGpuDriver final : public kiln::Driver {
 public:
  int version() const noexcept override { return 13000; }
  const std::vector<kiln::GpuInfo>& gpus() const noexcept override { return gpus_; }
  kiln::Result<std::optional<int>> current_device() const override { return std::optional<int>(); }
  kiln::Result<CUcontext> context(int) override { return reinterpret_cast<CUcontext>(&context_token_); }
  kiln::Result<void> make_current(int) override { return {}; }

  // A fake cubin is the magic line and the PTX it was "compiled" from; its functions are the
  // PTX's entries.
  kiln::Result<CUmodule> load_module(int, kiln::ByteView image) override {
    const std::string_view text = kiln::as_text(image);
    if (!text.starts_with(kFakeCubinMagic)) {
      return kiln::make_error(kiln::Component::Driver, "not a fake cubin (a real one reached the fake GPU)");
    }
    std::lock_guard lock(mutex_);
    FakeModule& module = modules_.emplace_back();
    for (std::size_t at = text.find(".entry "); at != std::string_view::npos; at = text.find(".entry ", at + 1)) {
      module.entries.push_back(entry_of(text.substr(at)));
    }
    return reinterpret_cast<CUmodule>(&module);
  }
  void unload_module(int, CUmodule module) noexcept override {
    std::lock_guard lock(mutex_);
    modules_.remove_if([module](const FakeModule& loaded) { return &loaded == reinterpret_cast<FakeModule*>(module); });
  }
  kiln::Result<CUfunction> function(CUmodule module, const std::string& mangled_name) override {
    std::lock_guard lock(mutex_);
    for (const std::string& entry : reinterpret_cast<FakeModule*>(module)->entries) {
      if (entry == mangled_name) return reinterpret_cast<CUfunction>(const_cast<std::string*>(&entry));
    }
    return kiln::make_error(kiln::Component::Driver, "the fake module has no function " + mangled_name);
  }
  kiln::Result<std::optional<std::vector<std::size_t>>> parameter_sizes(CUfunction) override {
    return std::optional<std::vector<std::size_t>>();  // as a driver older than CUDA 12.4: unknown
  }
  kiln::Result<kiln::Bytes> link_ptx(int, std::string_view ptx, kiln::Arch target, std::string_view, unsigned) override {
    std::this_thread::sleep_for(kFakeCompileTime);
    std::string cubin(kFakeCubinMagic);
    cubin += target.sm_name() + "\n";
    cubin += ptx;
    const kiln::ByteView bytes = kiln::as_bytes(cubin);
    return kiln::Bytes(bytes.begin(), bytes.end());
  }
  // Fake kernels take (std::uint64_t* out, std::uint64_t seed).
  kiln::Result<void> launch(CUcontext, CUfunction function, kiln::Dim3, kiln::Dim3, unsigned, CUstream,
                            void** args) override {
    const std::string& kernel = *reinterpret_cast<const std::string*>(function);
    std::uint64_t* out = *static_cast<std::uint64_t**>(args[0]);
    *out = fake_kernel_result(kernel, *static_cast<const std::uint64_t*>(args[1]));
    return {};
  }

 private:
  struct FakeModule {
    std::vector<std::string> entries;
  };
  std::vector<kiln::GpuInfo> gpus_{kiln::GpuInfo{0, "fake GPU", kiln::ComputeCapability{9, 0}}};
  char context_token_ = 0;
  std::mutex mutex_;
  std::list<FakeModule> modules_;  // a list: addresses stay valid as modules come and go
};

// ---------------------------------------------------------------------------------------------
// The worker: one process, `threads` threads.

// Every kernel of the bundle (mangled), in bundle order.
std::vector<std::string> bundle_kernels(const kiln::Bundle& bundle) {
  std::vector<std::string> kernels;
  std::set<std::string_view> seen;
  for (const kiln::ImageInfo& image : bundle.images()) {
    for (std::string_view kernel : image.kernels) {
      if (seen.insert(kernel).second) kernels.emplace_back(kernel);
    }
  }
  return kernels;
}

const ElementwiseKernel* checked_kernel(const std::string& mangled) {
  for (const ElementwiseKernel& kernel : kCheckedElementwiseKernels) {
    if (mangled == kernel.mangled) return &kernel;
  }
  return nullptr;
}

template <class T>
void run_and_verify(const CudaApi& api, const ElementwiseKernel& which, const kiln::Kernel& kernel, CUstream stream) {
  const ElementwiseProblem<T> problem(api, which.op, 1 << 16);
  unwrap(problem.launch(kernel, stream), std::string("launching ") + which.mangled);
  api.check(api.cuStreamSynchronize_fn(stream), "cuStreamSynchronize");
  problem.verify(which.mangled);
}

struct WorkerOptions {
  int index = 0;
  int threads = 8;
  bool gpu = false;
  fs::path directory;
};

// One thread: its own Module of the bundle, every kernel from `first` on, each checked.
void worker_thread(const WorkerOptions& options, int thread, const kiln::Runtime& runtime, const CudaApi* api,
                   std::vector<kiln::KernelRecord>& records) {
  const kiln::Module module = unwrap(runtime.load(kiln::bundles::load_ops(), "load_ops"), "loading the bundle");
  const std::vector<std::string> kernels = bundle_kernels(module.bundle());
  CUstream stream = nullptr;
  if (api != nullptr) {
    make_primary_context_current(*api, 0);
    api->check(api->cuStreamCreate_fn(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  }
  // Each thread starts at its own kernel (its index over all processes) and walks the whole list,
  // so every kernel is asked for at the same moment by threads of several processes, some while
  // another is compiling it.
  const auto first = static_cast<std::size_t>(options.index * options.threads + thread);
  for (std::size_t step = 0; step < kernels.size(); ++step) {
    const std::string& name = kernels[(first + step) % kernels.size()];
    const kiln::Kernel kernel = unwrap(module.kernel(name), "kernel " + name);
    if (api == nullptr) {
      std::uint64_t out = 0;
      const std::uint64_t seed =
          (static_cast<std::uint64_t>(options.index) << 40) ^ (static_cast<std::uint64_t>(thread) << 20) ^ step;
      unwrap(kernel.launch(kiln::Dim3{1}, kiln::Dim3{1}, 0, nullptr, &out, seed), "launching " + name);
      if (out != fake_kernel_result(name, seed)) {
        throw std::runtime_error("kernel " + name +
                                 " ran another kernel's code (a cubin for the wrong kernel was loaded)");
      }
    } else if (const ElementwiseKernel* which = checked_kernel(name)) {
      if (which->is_double) {
        run_and_verify<double>(*api, *which, kernel, stream);
      } else {
        run_and_verify<float>(*api, *which, kernel, stream);
      }
    }
  }
  if (api != nullptr) api->check(api->cuStreamDestroy_fn(stream), "cuStreamDestroy");
  records = module.records();
}

int run_worker(const WorkerOptions& options) {
  std::optional<CudaApi> api;
  std::shared_ptr<kiln::Driver> device;
  if (options.gpu) {
    api = load_cuda_api();
    device = unwrap(kiln::load_cuda_driver(), "loading the CUDA driver");
  } else {
    device = std::make_shared<FakeGpuDriver>();
  }
  auto driver = std::make_shared<CompileCountingDriver>(device, options.directory / "compiles.log");
  // KILN_FORCE_JIT and KILN_CACHE_DIR come from the parent.
  const kiln::Runtime runtime =
      unwrap(kiln::Runtime::create(driver, kiln::make_jit_compiler(driver)), "kiln::Runtime::create");

  // Ready; then wait for the parent to let every worker go at once (stdin closes).
  std::fputs("ready\n", stdout);
  std::fflush(stdout);
  close(STDOUT_FILENO);
  char ignored;
  while (read(STDIN_FILENO, &ignored, 1) > 0) {
  }

  std::vector<std::vector<kiln::KernelRecord>> records(static_cast<std::size_t>(options.threads));
  std::vector<std::string> failures(records.size());
  std::vector<std::thread> threads;
  for (int thread = 0; thread < options.threads; ++thread) {
    threads.emplace_back([&, thread] {
      try {
        worker_thread(options, thread, runtime, api ? &*api : nullptr, records[static_cast<std::size_t>(thread)]);
      } catch (const std::exception& error) {
        failures[static_cast<std::size_t>(thread)] = error.what();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  bool failed = false;
  for (std::size_t thread = 0; thread < failures.size(); ++thread) {
    if (failures[thread].empty()) continue;
    std::fprintf(stderr, "load worker %d, thread %zu: %s\n", options.index, thread, failures[thread].c_str());
    failed = true;
  }
  if (failed) return 1;

  // The report: this process's pid (as the compile log names it), then "<thread> <mangled
  // kernel> <path>" per record.
  std::ostringstream report;
  report << getpid() << "\n";
  for (std::size_t thread = 0; thread < records.size(); ++thread) {
    for (const kiln::KernelRecord& record : records[thread]) {
      report << thread << " " << record.mangled << " " << kiln::path_name(record.path) << "\n";
    }
  }
  write_file(options.directory / ("worker-" + std::to_string(options.index) + ".txt"), report.str());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The parent.

struct Options {
  bool gpu = false;
  int processes = 16;
  int threads = 8;
  std::optional<fs::path> report;
};


std::vector<std::string> worker_environment(const fs::path& cache) {
  std::vector<std::string> environment;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    if (!std::string_view(*variable).starts_with("KILN_")) environment.emplace_back(*variable);
  }
  environment.push_back("KILN_FORCE_JIT=1");
  environment.push_back("KILN_CACHE_DIR=" + cache.string());
  environment.push_back("CUDA_CACHE_DISABLE=1");  // the driver's own JIT cache must not hide a compile
  return environment;
}

class Pipe {
 public:
  Pipe() {
    if (pipe2(ends_, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  ~Pipe() {
    close_read();
    close_write();
  }
  [[nodiscard]] int read_end() const { return ends_[0]; }
  [[nodiscard]] int write_end() const { return ends_[1]; }
  void close_read() { close_end(0); }
  void close_write() { close_end(1); }

 private:
  void close_end(int which) {
    if (ends_[which] >= 0) close(ends_[which]);
    ends_[which] = -1;
  }
  int ends_[2] = {-1, -1};
};

int run_parent(const Options& options) {
  if (options.gpu) load_cuda_api();  // throws NoGpu: the test is skipped, visibly

  const kiln::Bundle bundle = unwrap(kiln::Bundle::open(kiln::bundles::load_ops(), "load_ops"), "opening the bundle");
  const std::vector<std::string> kernels = bundle_kernels(bundle);
  const ScratchDirectory scratch("kiln-load");
  const fs::path cache = scratch.path() / "cache";  // made by kiln, private, on first write
  write_file(scratch.path() / "compiles.log", "");

  // Workers' stdout is `ready` (one line each when set up), their stdin is `gate` (they start
  // when it closes), so that all of them ask for the kernels at the same moment.
  Pipe ready, gate;
  const std::vector<std::string> environment = worker_environment(cache);
  std::vector<char*> envp;
  for (const std::string& variable : environment) envp.push_back(const_cast<char*>(variable.c_str()));
  envp.push_back(nullptr);
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<pid_t> workers;
  for (int index = 0; index < options.processes; ++index) {
    std::vector<std::string> arguments = {self,
                                          "--worker",
                                          std::to_string(index),
                                          "--dir",
                                          scratch.path().string(),
                                          "--threads",
                                          std::to_string(options.threads)};
    if (options.gpu) arguments.emplace_back("--gpu");
    std::vector<char*> argv;
    for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, gate.read_end(), STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, ready.write_end(), STDOUT_FILENO);
    pid_t pid = 0;
    const int spawn_error = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (spawn_error != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(spawn_error));
    workers.push_back(pid);
  }
  ready.close_write();
  gate.close_read();
  // Every worker says "ready" or dies; either way its end of `ready` closes, and EOF follows.
  std::string said;
  char buffer[256];
  for (ssize_t got; (got = read(ready.read_end(), buffer, sizeof buffer)) != 0;) {
    if (got > 0)
      said.append(buffer, static_cast<std::size_t>(got));
    else if (errno != EINTR)
      throw std::runtime_error(std::string("read: ") + std::strerror(errno));
  }
  const Clock::time_point start = Clock::now();
  gate.close_write();

  std::vector<std::string> problems;
  for (std::size_t index = 0; index < workers.size(); ++index) {
    int status = 0;
    while (waitpid(workers[index], &status, 0) < 0) {
      if (errno != EINTR) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      problems.push_back("worker " + std::to_string(index) + " failed (" +
                         (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                            : "signal " + std::to_string(WTERMSIG(status))) +
                         "); its stderr is above");
    }
  }
  const double wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();

  // Compiles: exactly one per kernel over all processes, and which process did it.
  std::map<std::string, std::vector<std::string>> compilers;  // kernel -> pids that compiled it
  {
    std::istringstream log(std::string(kiln::as_text(read_file(scratch.path() / "compiles.log"))));
    std::string pid, entry;
    while (log >> pid >> entry) compilers[entry].push_back(pid);
  }
  for (const auto& [entry, pids] : compilers) {
    if (std::find(kernels.begin(), kernels.end(), entry) == kernels.end()) {
      problems.push_back("a compile of " + entry + ", which the bundle does not list as a kernel");
    }
  }
  std::size_t compiles = 0;
  for (const std::string& kernel : kernels) {
    const std::size_t count = compilers.count(kernel) != 0 ? compilers[kernel].size() : 0;
    compiles += count;
    if (count != 1) problems.push_back(kernel + " was compiled " + std::to_string(count) + " times, not once");
  }

  // Records: every thread has one per kernel. The process that compiled a kernel reports
  // jit-ptx for it (from the compiling thread, and from its threads that waited for that
  // compile); every other process must report cache-hit: it read what the first one wrote.
  std::map<std::string, std::size_t> records_by_path;
  std::size_t records = 0;
  for (int index = 0; index < options.processes && problems.empty(); ++index) {
    const std::string worker = "worker " + std::to_string(index);
    std::istringstream report(
        std::string(kiln::as_text(read_file(scratch.path() / ("worker-" + std::to_string(index) + ".txt")))));
    std::string pid;
    report >> pid;
    std::map<std::string, std::size_t> per_kernel, jit_per_kernel;
    std::string thread, kernel, path;
    while (report >> thread >> kernel >> path) {
      ++records;
      ++records_by_path[path];
      ++per_kernel[kernel];
      if (path == kiln::path_name(kiln::Path::JitPtx)) {
        ++jit_per_kernel[kernel];
      } else if (path != kiln::path_name(kiln::Path::CacheHit)) {
        problems.push_back(worker + ": " + kernel + " took path " + path);
      }
    }
    for (const std::string& name : kernels) {
      const bool compiled_here = compilers[name].front() == pid;
      if (per_kernel[name] != static_cast<std::size_t>(options.threads)) {
        problems.push_back(worker + " has " + std::to_string(per_kernel[name]) + " records of " + name +
                           ", not one per thread");
      } else if (compiled_here && jit_per_kernel[name] == 0) {
        problems.push_back(worker + " compiled " + name + " but no thread of it reports jit-ptx");
      } else if (!compiled_here && jit_per_kernel[name] != 0) {
        problems.push_back(worker + " reports jit-ptx for " + name + ", which another process compiled");
      }
    }
  }

  // The cache: one entry per kernel.
  const kiln::CacheStats stats =
      unwrap(kiln::DiskCache(cache, kiln::CachePolicy{}).stats(), "reading the cache's statistics");
  if (problems.empty() && stats.entries != kernels.size()) {
    problems.push_back("the cache holds " + std::to_string(stats.entries) + " entries for " +
                       std::to_string(kernels.size()) + " kernels");
  }

  std::ostringstream summary;
  summary << "load test (" << (options.gpu ? "GPU" : "CPU, fake GPU") << "): " << options.processes << " processes x "
          << options.threads << " threads, " << kernels.size() << " kernels, one empty cache: " << compiles
          << " compiles, " << stats.entries << " cache entries, " << records << " kernel records (";
  const char* separator = "";
  for (const auto& [path, count] : records_by_path) {
    summary << separator << path << " " << count;
    separator = ", ";
  }
  char wall[32];
  std::snprintf(wall, sizeof wall, "%.2f", wall_seconds);
  summary << "), wall " << wall << " s";
  std::printf("%s\n", summary.str().c_str());
  if (options.report) write_file(*options.report, summary.str() + "\n");
  for (const std::string& problem : problems) std::fprintf(stderr, "FAIL: %s\n", problem.c_str());
  return problems.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr const char* kUsage = "usage: kiln_load_test [--gpu] [--processes N] [--threads N] [--report FILE]\n";
  const std::vector<std::string_view> arguments(argv + 1, argv + argc);
  Options options;
  std::optional<WorkerOptions> worker;
  auto positive = [](std::string_view text) {
    const int value = std::atoi(std::string(text).c_str());
    if (value < 1) throw std::invalid_argument("expected a positive number, got '" + std::string(text) + "'");
    return value;
  };
  try {
    for (std::size_t i = 0; i < arguments.size(); ++i) {
      const std::string_view argument = arguments[i];
      const bool has_value = i + 1 < arguments.size();
      if (argument == "--gpu") {
        options.gpu = true;
      } else if (argument == "--processes" && has_value) {
        options.processes = positive(arguments[++i]);
      } else if (argument == "--threads" && has_value) {
        options.threads = positive(arguments[++i]);
      } else if (argument == "--report" && has_value) {
        options.report = fs::path(arguments[++i]);
      } else if (argument == "--worker" && has_value) {
        worker.emplace();
        worker->index = std::atoi(std::string(arguments[++i]).c_str());
      } else if (argument == "--dir" && has_value && worker) {
        worker->directory = fs::path(arguments[++i]);
      } else if (argument == "--help" || argument == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else {
        throw std::invalid_argument("unexpected argument '" + std::string(argument) + "'");
      }
    }
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "kiln_load_test: %s\n%s", error.what(), kUsage);
    return 2;
  }

  try {
    if (worker) {
      worker->gpu = options.gpu;
      worker->threads = options.threads;
      return run_worker(*worker);
    }
    return run_parent(options);
  } catch (const NoGpu& no_gpu) {
    std::fprintf(stderr, "SKIP: kiln_load_test --gpu: no GPU: %s\n", no_gpu.what());
    return kExitNoGpu;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kiln_load_test: %s\n", error.what());
    return 1;
  }
}
