#include <cxxabi.h>

#include <cstdlib>
#include <memory>

#include "kiln/compiler.hpp"

namespace kiln {

std::string demangle(std::string_view mangled) {
  const std::string name(mangled);
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> readable(abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status),
                                                       &std::free);
  return status == 0 && readable ? std::string(readable.get()) : name;
}

}  // namespace kiln
