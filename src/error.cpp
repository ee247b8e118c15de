#include "kiln/error.hpp"

namespace kiln {

const char* component_name(Component component) noexcept {
  switch (component) {
    case Component::Usage: return "usage";
    case Component::Catalog: return "catalog";
    case Component::Bundle: return "bundle";
    case Component::Compiler: return "compiler";
    case Component::Nvrtc: return "NVRTC";
    case Component::NvJitLink: return "nvJitLink";
    case Component::Driver: return "CUDA driver";
    case Component::Cache: return "cache";
    case Component::Io: return "I/O";
    case Component::Runtime: return "runtime";
  }
  return "unknown";
}

int exit_code(const Error& error) noexcept {
  switch (error.kind) {
    case ErrorKind::Usage: return 2;
    case ErrorKind::NoCompatibleImage: return 3;
    case ErrorKind::Failed: return 1;
  }
  return 1;
}

std::string Error::describe() const {
  std::string text = std::string("kiln: ") + component_name(component) + ": ";
  if (!context.empty()) text += context + ": ";
  text += message;
  if (!hint.empty()) text += "\n  hint: " + hint;
  if (!log.empty()) {
    text += "\n";
    text += log;
    if (text.back() != '\n') text += '\n';
  }
  return text;
}

Error make_error(Component component, std::string message, std::string context, std::string hint) {
  Error error;
  error.component = component;
  error.message = std::move(message);
  error.context = std::move(context);
  error.hint = std::move(hint);
  return error;
}

Error usage_error(std::string message, std::string hint) {
  Error error = make_error(Component::Usage, std::move(message), {}, std::move(hint));
  error.kind = ErrorKind::Usage;
  return error;
}

}  // namespace kiln
