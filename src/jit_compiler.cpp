// The real JitCompiler: PTX through the driver's linker, source through NVRTC.
#include "kiln/compiler.hpp"
#include "kiln/driver.hpp"

namespace kiln {
namespace {

class DriverJitCompiler final : public JitCompiler {
 public:
  explicit DriverJitCompiler(std::shared_ptr<Driver> driver) : driver_(std::move(driver)) {}

  Result<std::string> identity(ImageKind kind) override {
    if (kind == ImageKind::Ptx) return "cuda-driver " + std::to_string(driver_->version());
    Result<NvrtcInfo> nvrtc = nvrtc_info();
    if (!nvrtc) return nvrtc.error();
    return "nvrtc " + std::to_string(nvrtc->major) + "." + std::to_string(nvrtc->minor);
  }

  Result<Bytes> compile(const JitRequest& request) override {
    switch (request.kind) {
      case ImageKind::Ptx: {
        // A whole module's kernels are compiled side by side; a single kernel's PTX gains nothing
        // from it, and prepare_all already compiles kernels on every core.
        const unsigned threads = request.kernel.empty() ? 0 : 1;
        return driver_->link_ptx(request.device, as_text(request.input), request.target, request.label, threads);
      }
      case ImageKind::Source: return compile_source_image(request.input, request.target);
      case ImageKind::Cubin: break;
    }
    return make_error(Component::Runtime, "a cubin needs no JIT compile", request.label);
  }

 private:
  std::shared_ptr<Driver> driver_;
};

}  // namespace

std::shared_ptr<JitCompiler> make_jit_compiler(std::shared_ptr<Driver> driver) {
  return std::make_shared<DriverJitCompiler>(std::move(driver));
}

}  // namespace kiln
