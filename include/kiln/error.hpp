// Errors as values: every fallible kiln call returns Result<T>, and only the CLI
// (or the application) turns an Error into an exit code or a message.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace kiln {

// Which part of kiln (or of CUDA) the failure came from.
enum class Component { Usage, Catalog, Bundle, Compiler, Nvrtc, NvJitLink, Driver, Cache, Io, Runtime };

// What kind of failure it is; decides the CLI exit code (see exit_code()).
enum class ErrorKind {
  Failed,             // the operation failed (compile error, corrupt file, I/O): exit 1
  Usage,              // bad flag, unknown device name: exit 2
  NoCompatibleImage,  // nothing in the bundle can run on the device: exit 3
};

struct Error {
  Component component = Component::Runtime;
  ErrorKind kind = ErrorKind::Failed;
  std::string message;   // what went wrong, one sentence
  std::string context;   // where: file, arch, kernel ("bundle ops.kiln, image 3")
  std::string hint;      // what to do about it
  std::string log;       // compiler or linker log, when there is one
  int native_code = 0;   // nvrtcResult, CUresult, errno, ...

  // "kiln: bundle: ops.kiln, image 3: stored size exceeds file (hint: rebuild it)" plus log.
  [[nodiscard]] std::string describe() const;
};

[[nodiscard]] const char* component_name(Component component) noexcept;
[[nodiscard]] int exit_code(const Error& error) noexcept;

// Builders that keep call sites to one line.
[[nodiscard]] Error make_error(Component component, std::string message, std::string context = {},
                               std::string hint = {});
[[nodiscard]] Error usage_error(std::string message, std::string hint = {});

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit by design

  [[nodiscard]] bool ok() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(state_); }
  Error&& error() && { return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT: implicit by design

  [[nodiscard]] bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_;
  bool failed_ = false;
};

}  // namespace kiln
