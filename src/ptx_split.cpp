#include "ptx_split.hpp"

#include <algorithm>
#include <cctype>
#include <unordered_map>

namespace kiln {
namespace {

bool identifier_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '$' || c == '%';
}
bool identifier_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '$'; }

std::size_t line_of(std::string_view text, std::size_t position) {
  return 1 + static_cast<std::size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(position), '\n'));
}

Error ptx_error(std::string_view text, std::size_t position, std::string what) {
  return make_error(Component::Runtime, "PTX does not parse: " + what, "line " + std::to_string(line_of(text, position)));
}

// Skips one comment or string starting at `position`, if there is one there; returns where
// scanning continues, or npos for an unterminated one.
std::size_t skip_comment_or_string(std::string_view text, std::size_t position, bool* skipped) {
  *skipped = true;
  if (text.compare(position, 2, "//") == 0) {
    std::size_t end = text.find('\n', position);
    return end == std::string_view::npos ? text.size() : end;
  }
  if (text.compare(position, 2, "/*") == 0) {
    std::size_t end = text.find("*/", position + 2);
    return end == std::string_view::npos ? std::string_view::npos : end + 2;
  }
  if (text[position] == '"') {
    for (std::size_t i = position + 1; i < text.size(); ++i) {
      if (text[i] == '\\') {
        ++i;
      } else if (text[i] == '"') {
        return i + 1;
      }
    }
    return std::string_view::npos;
  }
  *skipped = false;
  return position;
}

// Directives that end at the end of their line, without a semicolon.
bool line_directive(std::string_view word) {
  return word == ".version" || word == ".target" || word == ".address_size" || word == ".file";
}

bool variable_space(std::string_view word) {
  return word == ".global" || word == ".const" || word == ".shared" || word == ".local" || word == ".tex" ||
         word == ".texref" || word == ".surfref" || word == ".samplerref";
}

}  // namespace

Result<PtxModule> PtxModule::parse(std::string text) {
  // Images from a bundle may carry the C string's terminator.
  while (!text.empty() && text.back() == '\0') text.pop_back();

  PtxModule module;
  module.text_ = std::move(text);
  const std::string_view ptx = module.text_;
  // Per statement, the identifiers it uses: views into text_, which does not change while parsing.
  std::vector<std::vector<std::string_view>> mentions;
  // A call through a pointer (its .callprototype) may land in a function that another kernel's
  // piece holds, with that piece's own globals and constants: only a whole module keeps it right.
  bool calls_through_pointers = false;

  std::size_t position = 0;
  while (true) {
    // Blank space and comments between statements.
    while (position < ptx.size()) {
      if (std::isspace(static_cast<unsigned char>(ptx[position])) != 0) {
        ++position;
        continue;
      }
      if (ptx[position] == '"') break;
      bool skipped = false;
      std::size_t next = skip_comment_or_string(ptx, position, &skipped);
      if (!skipped) break;
      if (next == std::string_view::npos) return ptx_error(ptx, position, "a comment is not closed");
      position = next;
    }
    if (position >= ptx.size()) break;

    Statement statement;
    statement.begin = position;
    std::vector<std::string_view> used;
    int braces = 0;
    int parens = 0;
    int brackets = 0;
    bool initializer = false;   // an '=' at top level: the braces that follow are data, then ';'
    bool keyword_seen = false;  // the directive that decides the kind has been read
    bool named = false;
    bool line_only = false;
    bool ended = false;

    while (position < ptx.size() && !ended) {
      const char c = ptx[position];
      if (line_only && c == '\n') break;
      bool skipped = false;
      std::size_t next = skip_comment_or_string(ptx, position, &skipped);
      if (skipped) {
        if (next == std::string_view::npos) return ptx_error(ptx, position, "a string or comment is not closed");
        position = next;
        continue;
      }
      const bool top = braces == 0 && parens == 0 && brackets == 0;
      if (c == '.' && position + 1 < ptx.size() && identifier_start(ptx[position + 1])) {
        std::size_t end = position + 1;
        while (end < ptx.size() && identifier_char(ptx[end])) ++end;
        const std::string_view word = ptx.substr(position, end - position);
        if (word == ".callprototype") calls_through_pointers = true;
        if (position == statement.begin && line_directive(word)) {
          statement.kind = Kind::Header;
          line_only = true;
        } else if (top && !keyword_seen) {
          if (word == ".entry") {
            statement.kind = Kind::Entry;
            keyword_seen = true;
          } else if (word == ".func" || word == ".alias") {
            statement.kind = Kind::Function;
            keyword_seen = true;
          } else if (word == ".section") {
            statement.kind = Kind::Section;
            keyword_seen = true;
          } else if (variable_space(word)) {
            statement.kind = Kind::Variable;
            statement.mutable_global = word == ".global";
            keyword_seen = true;
          }
        } else if (statement.kind == Kind::Section && top && word == ".debug_str") {
          statement.kind = Kind::DebugStrings;
        }
        position = end;
        continue;
      }
      if (std::isdigit(static_cast<unsigned char>(c)) != 0) {  // numbers, 0f3F800000 included
        while (position < ptx.size() && identifier_char(ptx[position])) ++position;
        continue;
      }
      if (identifier_start(c)) {
        std::size_t end = position + 1;
        while (end < ptx.size() && identifier_char(ptx[end])) ++end;
        const std::string_view word = ptx.substr(position, end - position);
        // A function's name is the first top-level identifier after .func/.entry (the return
        // parameters sit in parentheses before it); a variable's names are the top-level
        // identifiers before any initializer. Everything else is a use.
        const bool declares = top && !initializer &&
                              (((statement.kind == Kind::Entry || statement.kind == Kind::Function) && !named) ||
                               statement.kind == Kind::Variable);
        if (declares) {
          statement.names.emplace_back(word);
          named = true;
        } else {
          used.push_back(word);
        }
        position = end;
        continue;
      }
      switch (c) {
        case '{': ++braces; break;
        case '(': ++parens; break;
        case ')': parens = std::max(0, parens - 1); break;
        case '[': ++brackets; break;
        case ']': brackets = std::max(0, brackets - 1); break;
        case '=':
          if (top) initializer = true;
          break;
        case ';':
          if (braces == 0) ended = true;
          break;
        case '}':
          if (braces == 0) return ptx_error(ptx, position, "a '}' has no matching '{'");
          // A body or a section ends at its brace; an initializer's braces are followed by ';'.
          if (--braces == 0 && !initializer) ended = true;
          break;
        default: break;
      }
      ++position;
    }
    if (braces > 0) return ptx_error(ptx, statement.begin, "a '{' is not closed");
    // The compiler's string literals ($str, $str$1: printf formats, assert's file names) sit in
    // .global but are never written, so each piece may hold its own copy.
    if (statement.mutable_global && initializer && !statement.names.empty() &&
        std::all_of(statement.names.begin(), statement.names.end(),
                    [](const std::string& name) { return name.starts_with("$str"); })) {
      statement.mutable_global = false;
    }
    statement.end = position;
    module.statements_.push_back(std::move(statement));
    mentions.push_back(std::move(used));
  }

  std::unordered_map<std::string_view, std::vector<std::size_t>> definitions;
  for (std::size_t index = 0; index < module.statements_.size(); ++index) {
    for (const std::string& name : module.statements_[index].names) definitions[name].push_back(index);
  }
  for (std::size_t index = 0; index < module.statements_.size(); ++index) {
    Statement& statement = module.statements_[index];
    for (std::string_view word : mentions[index]) {
      auto found = definitions.find(word);
      if (found == definitions.end()) continue;
      for (std::size_t target : found->second) {
        if (target != index && std::find(statement.uses.begin(), statement.uses.end(), target) == statement.uses.end()) {
          statement.uses.push_back(target);
        }
      }
    }
    if (statement.kind == Kind::Entry && !statement.names.empty()) {
      module.entries_.push_back(statement.names.front());
      module.entry_statements_.push_back(index);
    }
    if (statement.kind == Kind::Section && module.why_whole_.empty()) {
      module.why_whole_ = "it carries debug sections (-G) that refer to every function";
    }
  }
  // A kernel's address taken elsewhere (by another kernel, or in a table of kernel pointers)
  // names a kernel that the piece using it would not hold.
  for (std::size_t index = 0; index < module.statements_.size() && module.why_whole_.empty(); ++index) {
    for (std::size_t used : module.statements_[index].uses) {
      const Statement& target = module.statements_[used];
      if (target.kind != Kind::Entry || target.names.empty()) continue;
      const std::vector<std::string>& user = module.statements_[index].names;
      module.why_whole_ = (user.empty() ? std::string("a statement") : user.front()) + " refers to the kernel " +
                          target.names.front() + ", which another kernel's piece would not hold";
      break;
    }
  }
  if (calls_through_pointers && module.why_whole_.empty()) {
    module.why_whole_ = "it calls through function pointers, which may lead into code that another kernel's piece holds";
  }

  // Mutable .global variables reached by more than one kernel tie those kernels together.
  std::vector<std::size_t> first_reacher(module.statements_.size(), module.entries_.size());
  for (std::size_t entry = 0; entry < module.entries_.size() && module.why_whole_.empty(); ++entry) {
    const std::vector<bool> reached = module.reach(module.entry_statements_[entry]);
    for (std::size_t index = 0; index < reached.size(); ++index) {
      if (!reached[index] || !module.statements_[index].mutable_global) continue;
      if (first_reacher[index] == module.entries_.size()) {
        first_reacher[index] = entry;
        continue;
      }
      module.why_whole_ = "kernels " + module.entries_[first_reacher[index]] + " and " + module.entries_[entry] +
                          " share the .global variable " + module.statements_[index].names.front();
      break;
    }
  }
  return module;
}

std::vector<bool> PtxModule::reach(std::size_t entry_statement) const {
  std::vector<bool> reached(statements_.size(), false);
  std::vector<std::size_t> pending{entry_statement};
  reached[entry_statement] = true;
  while (!pending.empty()) {
    const std::size_t index = pending.back();
    pending.pop_back();
    for (std::size_t used : statements_[index].uses) {
      // Kernels cannot call kernels: another .entry is never part of this one.
      if (reached[used] || statements_[used].kind == Kind::Entry) continue;
      reached[used] = true;
      pending.push_back(used);
    }
  }
  return reached;
}

Result<std::string> PtxModule::kernel_ptx(std::string_view entry) const {
  auto found = std::find(entries_.begin(), entries_.end(), entry);
  if (found == entries_.end()) {
    return make_error(Component::Runtime, "the PTX has no kernel named " + std::string(entry));
  }
  const std::vector<bool> reached = reach(entry_statements_[static_cast<std::size_t>(found - entries_.begin())]);
  std::string piece;
  for (std::size_t index = 0; index < statements_.size(); ++index) {
    const Statement& statement = statements_[index];
    const bool always = statement.kind == Kind::Header || statement.kind == Kind::DebugStrings ||
                        statement.kind == Kind::Other;
    if (!always && !reached[index]) continue;
    piece.append(text_, statement.begin, statement.end - statement.begin);
    piece += '\n';
  }
  return piece;
}

}  // namespace kiln
