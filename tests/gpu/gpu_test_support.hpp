// What the GPU tests need besides kiln: device memory and streams, straight from libcuda.so.1
// (dlopen'd here, so neither kiln nor the tests link a CUDA library), and typed buffers.
#pragma once

#include <cuda.h>
#include <dlfcn.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln_gpu_test {

// The exported names are the legacy-default-stream ABI of each call, as kiln uses for launches.
struct CudaApi {
  CUresult (*mem_alloc)(CUdeviceptr*, size_t) = nullptr;
  CUresult (*mem_free)(CUdeviceptr) = nullptr;
  CUresult (*copy_to_device)(CUdeviceptr, const void*, size_t) = nullptr;
  CUresult (*copy_to_host)(void*, CUdeviceptr, size_t) = nullptr;
  CUresult (*stream_create)(CUstream*, unsigned) = nullptr;
  CUresult (*stream_destroy)(CUstream) = nullptr;
  CUresult (*stream_synchronize)(CUstream) = nullptr;
  CUresult (*function_module)(CUmodule*, CUfunction) = nullptr;
  CUresult (*module_load_data)(CUmodule*, const void*) = nullptr;
  CUresult (*module_unload)(CUmodule) = nullptr;
  CUresult (*module_get_function)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*function_parameter_info)(CUfunction, size_t, size_t*, size_t*) = nullptr;

  // nullptr where the driver is not installed.
  static const CudaApi* get() {
    static const CudaApi* api = [] () -> const CudaApi* {
      void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
      if (library == nullptr) return nullptr;
      auto* loaded = new CudaApi;  // lives as long as the process, as libcuda does
      auto bind = [&](auto& pointer, const char* name) {
        pointer = reinterpret_cast<std::remove_reference_t<decltype(pointer)>>(dlsym(library, name));
        if (pointer == nullptr) throw std::runtime_error(std::string("libcuda.so.1 lacks ") + name);
      };
      bind(loaded->mem_alloc, "cuMemAlloc_v2");
      bind(loaded->mem_free, "cuMemFree_v2");
      bind(loaded->copy_to_device, "cuMemcpyHtoD_v2");
      bind(loaded->copy_to_host, "cuMemcpyDtoH_v2");
      bind(loaded->stream_create, "cuStreamCreate");
      bind(loaded->stream_destroy, "cuStreamDestroy_v2");
      bind(loaded->stream_synchronize, "cuStreamSynchronize");
      bind(loaded->function_module, "cuFuncGetModule");
      bind(loaded->module_load_data, "cuModuleLoadData");
      bind(loaded->module_unload, "cuModuleUnload");
      bind(loaded->module_get_function, "cuModuleGetFunction");
      bind(loaded->function_parameter_info, "cuFuncGetParamInfo");
      return loaded;
    }();
    return api;
  }
};

inline void check(CUresult result, const char* what) {
  if (result != CUDA_SUCCESS) throw std::runtime_error(std::string(what) + " failed: CUresult " + std::to_string(result));
}

// Device memory for `count` values of T, in the calling thread's current context.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    check(CudaApi::get()->mem_alloc(&pointer_, bytes()), "cuMemAlloc");
  }
  explicit DeviceBuffer(const std::vector<T>& values) : DeviceBuffer(values.size()) { upload(values); }
  ~DeviceBuffer() { CudaApi::get()->mem_free(pointer_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void upload(const std::vector<T>& values) {
    check(CudaApi::get()->copy_to_device(pointer_, values.data(), bytes()), "cuMemcpyHtoD");
    // A copy from pageable memory may return before its DMA lands, and it is ordered only on the
    // legacy stream: finish it before a kernel on a non-blocking stream reads the buffer.
    check(CudaApi::get()->stream_synchronize(nullptr), "cuStreamSynchronize(legacy stream)");
  }
  // Synchronous: waits for work on the legacy default stream; streams of other work must be
  // synchronized first.
  std::vector<T> download() const {
    std::vector<T> values(count_);
    check(CudaApi::get()->copy_to_host(values.data(), pointer_, bytes()), "cuMemcpyDtoH");
    return values;
  }
  // What a kernel parameter of type T* takes: the 8-byte device address.
  [[nodiscard]] CUdeviceptr get() const { return pointer_; }

 private:
  std::size_t bytes() const { return count_ * sizeof(T); }
  std::size_t count_;
  CUdeviceptr pointer_ = 0;
};

class Stream {
 public:
  Stream() { check(CudaApi::get()->stream_create(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate"); }
  ~Stream() { CudaApi::get()->stream_destroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  void synchronize() const { check(CudaApi::get()->stream_synchronize(stream_), "cuStreamSynchronize"); }
  [[nodiscard]] CUstream get() const { return stream_; }

 private:
  CUstream stream_ = nullptr;
};

}  // namespace kiln_gpu_test
