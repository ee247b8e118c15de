// Splitting a PTX module per kernel, so that a JIT compiles one kernel without making ptxas
// parse all the others (on a 540 KB module, one kernel alone took 0.09-0.13x of the whole).
// Pure functions over text: no driver, no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.hpp"

namespace kiln {

// A PTX module parsed into its top-level statements, once; then any kernel's own PTX on demand.
class PtxModule {
 public:
  // Fails only where the text cannot be PTX: an unterminated string, comment or brace.
  [[nodiscard]] static Result<PtxModule> parse(std::string text);

  // The .entry names, in the order the module defines them.
  [[nodiscard]] const std::vector<std::string>& entries() const noexcept { return entries_; }

  // False when the kernels must be compiled together: two of them reach the same mutable
  // .global variable (split, each would get its own copy), or a debug section (-G) refers to
  // every function. `why_whole()` says which.
  [[nodiscard]] bool splittable() const noexcept { return why_whole_.empty(); }
  [[nodiscard]] const std::string& why_whole() const noexcept { return why_whole_; }

  // The PTX of one kernel: the header (.version, .target, .address_size, .file), the
  // declarations and variables the kernel reaches, the .func definitions it calls
  // (transitively), and its .entry, in the module's order. Error if there is no such entry.
  [[nodiscard]] Result<std::string> kernel_ptx(std::string_view entry) const;

  [[nodiscard]] const std::string& text() const noexcept { return text_; }

 private:
  enum class Kind {
    Header,        // .version, .target, .address_size, .file: every piece needs them
    DebugStrings,  // .section .debug_str: .loc directives (-lineinfo) refer to its labels
    Section,       // any other .section (the DWARF of -G): refers to every function
    Entry,
    Function,      // .func, declaration or definition
    Variable,      // .global, .const, .shared, .extern, ...
    Other,         // anything else at top level: kept in every piece, to be safe
  };
  struct Statement {
    Kind kind = Kind::Other;
    std::size_t begin = 0;
    std::size_t end = 0;                 // one past the last character
    std::vector<std::string> names;      // what it declares or defines
    bool mutable_global = false;         // a variable in the .global state space
    std::vector<std::size_t> uses;       // statements defining a name this one mentions
  };

  [[nodiscard]] std::vector<bool> reach(std::size_t entry_statement) const;

  std::string text_;
  std::vector<Statement> statements_;
  std::vector<std::string> entries_;
  std::vector<std::size_t> entry_statements_;  // parallel to entries_
  std::string why_whole_;
};

}  // namespace kiln
