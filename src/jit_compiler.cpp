// The real JitCompiler: PTX through the driver's linker, source through NVRTC.
#include "kiln/compiler.hpp"
#include "kiln/driver.hpp"

namespace kiln {
namespace {

class DriverJitCompiler final : public JitCompiler {
 public:
  explicit DriverJitCompiler(std::shared_ptr<Driver> driver) : driver_(std::move(driver)) {}

  // Whatever changes the compiled code: the driver's build for PTX (its compiler), and for source
  // the toolchain as the offline compiler's cache keys it (NVRTC's and nvJitLink's versions and
  // library files, whose patch releases report the same major.minor).
  Result<std::string> identity(ImageKind kind) override {
    if (kind == ImageKind::Ptx) return "cuda-driver " + std::to_string(driver_->version()) + " " + driver_->build_identity();
    Result<std::string> toolchain = source_jit_identity();
    if (!toolchain) return toolchain.error();
    return "nvrtc " + *toolchain;
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
