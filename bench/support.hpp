// Helpers the benchmark programs and the load test share: kiln results that must succeed, whole
// files, and element-wise kernels of the example op library run on real inputs and checked.
#pragma once
#include <cstdlib>
#include <cerrno>
#include <cstring>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda_api.hpp"
#include "kiln/error.hpp"
#include "kiln/hash.hpp"
#include "kiln/runtime.hpp"

namespace kiln_bench {

// The value of a kiln call that must succeed; its error, described, as an exception otherwise.
template <class T>
T unwrap(kiln::Result<T> result, const std::string& what) {
  if (!result) throw std::runtime_error(what + ": " + result.error().describe());
  return std::move(result).value();
}
inline void unwrap(kiln::Result<void> result, const std::string& what) {
  if (!result) throw std::runtime_error(what + ": " + result.error().describe());
}

inline kiln::Bytes read_file(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw std::runtime_error("cannot open " + path.string());
  kiln::Bytes bytes((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  if (stream.bad()) throw std::runtime_error("cannot read " + path.string());
  return bytes;
}

inline void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream stream(path, std::ios::binary);
  stream << text;
  stream.close();
  if (!stream) throw std::runtime_error("cannot write " + path.string());
}

// Element-wise kernels of examples/ops/kernels/elementwise.cu whose results are exact, so that a
// check is a compare: add and mul take (const T* a, const T* b, T* out, long long n), relu
// takes (const T* x, T* out, long long n).
enum class ElementwiseOp { Add, Mul, Relu };

struct ElementwiseKernel {
  const char* mangled;
  ElementwiseOp op;
  bool is_double;  // T = double, else float
};
inline constexpr ElementwiseKernel kAddFloat{"_ZN3ops3addIfEEvPKT_S3_PS1_x", ElementwiseOp::Add, false};
inline constexpr ElementwiseKernel kCheckedElementwiseKernels[] = {
    kAddFloat,
    {"_ZN3ops3addIdEEvPKT_S3_PS1_x", ElementwiseOp::Add, true},
    {"_ZN3ops3mulIfEEvPKT_S3_PS1_x", ElementwiseOp::Mul, false},
    {"_ZN3ops3mulIdEEvPKT_S3_PS1_x", ElementwiseOp::Mul, true},
    {"_ZN3ops4reluIfEEvPKT_PS1_x", ElementwiseOp::Relu, false},
    {"_ZN3ops4reluIdEEvPKT_PS1_x", ElementwiseOp::Relu, true},
};
inline constexpr unsigned kElementwiseThreadsPerBlock = 256;  // kElementwiseThreads, their __launch_bounds__

// Device buffers for one element-wise kernel over `count` elements in the current context:
// inputs uploaded at construction, output checked by verify(). The inputs are small multiples
// of 1/4 and 1/2, so every sum and product is exact in float and in double.
template <class T>
class ElementwiseProblem {
 public:
  ElementwiseProblem(const CudaApi& api, ElementwiseOp op, long long count) : api_(api), op_(op), count_(count) {
    std::vector<T> a(static_cast<std::size_t>(count)), b(a.size());
    expected_.resize(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      a[i] = static_cast<T>(i % 1000) * T(0.25);
      b[i] = T(1) - static_cast<T>(i % 777) * T(0.5);
      switch (op) {
        case ElementwiseOp::Add: expected_[i] = a[i] + b[i]; break;
        case ElementwiseOp::Mul: expected_[i] = a[i] * b[i]; break;
        case ElementwiseOp::Relu: expected_[i] = b[i] > T(0) ? b[i] : T(0); break;
      }
    }
    const std::size_t bytes = a.size() * sizeof(T);
    api.check(api.cuMemAlloc_fn(&a_, bytes), "cuMemAlloc(a)");
    api.check(api.cuMemAlloc_fn(&b_, bytes), "cuMemAlloc(b)");
    api.check(api.cuMemAlloc_fn(&out_, bytes), "cuMemAlloc(out)");
    api.check(api.cuMemcpyHtoD_fn(a_, a.data(), bytes), "cuMemcpyHtoD(a)");
    api.check(api.cuMemcpyHtoD_fn(b_, b.data(), bytes), "cuMemcpyHtoD(b)");
    // A copy from pageable memory may return before its DMA lands, and it is ordered only on
    // the legacy stream: finish it before a kernel on a non-blocking stream reads the inputs.
    api.check(api.cuCtxSynchronize_fn(), "cuCtxSynchronize");
  }
  ElementwiseProblem(const ElementwiseProblem&) = delete;
  ElementwiseProblem& operator=(const ElementwiseProblem&) = delete;
  ~ElementwiseProblem() {
    // Best effort: a destructor cannot report, and a benchmark or test process is ending anyway.
    api_.cuMemFree_fn(out_);
    api_.cuMemFree_fn(b_);
    api_.cuMemFree_fn(a_);
  }

  // Through kiln, with its argument checks.
  [[nodiscard]] kiln::Result<void> launch(const kiln::Kernel& kernel, CUstream stream) const {
    const kiln::Dim3 grid{blocks()}, block{kElementwiseThreadsPerBlock};
    if (op_ == ElementwiseOp::Relu) return kernel.launch(grid, block, 0, stream, b_, out_, count_);
    return kernel.launch(grid, block, 0, stream, a_, b_, out_, count_);
  }

  // Through bare cuLaunchKernel.
  void launch_raw(CUfunction function, CUstream stream) const {
    CUdeviceptr a = a_, b = b_, out = out_;
    long long count = count_;
    void* binary[] = {&a, &b, &out, &count};
    void* unary[] = {&b, &out, &count};
    api_.check(api_.cuLaunchKernel_fn(function, blocks(), 1, 1, kElementwiseThreadsPerBlock, 1, 1, 0, stream,
                                      op_ == ElementwiseOp::Relu ? unary : binary, nullptr),
               "cuLaunchKernel");
  }

  // Copies the output back (after the caller synchronized) and throws on the first wrong element.
  void verify(const std::string& who) const {
    std::vector<T> out(expected_.size());
    api_.check(api_.cuMemcpyDtoH_fn(out.data(), out_, out.size() * sizeof(T)), "cuMemcpyDtoH(out)");
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (out[i] != expected_[i]) {
        throw std::runtime_error(who + ": out[" + std::to_string(i) + "] = " + std::to_string(out[i]) + ", expected " +
                                 std::to_string(expected_[i]));
      }
    }
  }

 private:
  // Enough blocks for one 16-byte pack per thread; the kernels' grid-stride loops cope with any grid.
  [[nodiscard]] unsigned blocks() const {
    const long long per_block = static_cast<long long>(kElementwiseThreadsPerBlock) * (16 / sizeof(T));
    return static_cast<unsigned>((count_ + per_block - 1) / per_block);
  }

  const CudaApi& api_;
  ElementwiseOp op_;
  long long count_;
  CUdeviceptr a_ = 0, b_ = 0, out_ = 0;
  std::vector<T> expected_;
};

// A private scratch directory (for caches), removed however the run ends.
class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& prefix) {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    path_ = pattern;
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;
  ~ScratchDirectory() {
    std::error_code ignored;  // nothing useful to do about a leftover temp directory
    std::filesystem::remove_all(path_, ignored);
  }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace kiln_bench
