#include "source_image.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "kiln/little_endian.hpp"

namespace kiln::source {
namespace {

Result<std::string> read_text(const std::filesystem::path& path, std::string_view role) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return make_error(Component::Io, "cannot open the " + std::string(role), path.string(),
                      "check that the file exists and is readable");
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return make_error(Component::Io, "cannot read the " + std::string(role), path.string());
  return text.str();
}

std::filesystem::path absolute_normal(const std::filesystem::path& path) {
  std::error_code error;
  auto canonical = std::filesystem::weakly_canonical(path, error);
  return error ? std::filesystem::absolute(path).lexically_normal() : canonical;
}

bool is_under(const std::filesystem::path& path, const std::filesystem::path& directory) {
  if (directory.empty()) return false;
  auto [end, _] = std::mismatch(directory.begin(), directory.end(), path.begin(), path.end());
  return end == directory.end();
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

// Appends to `out` little-endian.
template <class T>
void put(Bytes& out, T value) {
  std::uint8_t bytes[sizeof(T)];
  store_le<T>(bytes, value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

enum class EntryKind : std::uint32_t { MainFile = 1, Header = 2, Define = 3, LanguageStandard = 4 };

constexpr std::string_view kMagic{"KILNSRC\0", 8};
constexpr std::size_t kPreambleSize = 16;
constexpr std::size_t kEntryHeaderSize = 16;
constexpr std::size_t kChecksumSize = 8;

void put_entry(Bytes& out, EntryKind kind, std::string_view name, std::string_view data) {
  put<std::uint32_t>(out, static_cast<std::uint32_t>(kind));
  put<std::uint32_t>(out, static_cast<std::uint32_t>(name.size()));
  put<std::uint64_t>(out, data.size());
  out.insert(out.end(), name.begin(), name.end());
  out.insert(out.end(), data.begin(), data.end());
}

// A reader over untrusted bytes: every take checks the bytes left first.
class Reader {
 public:
  explicit Reader(ByteView bytes) : bytes_(bytes) {}
  std::size_t left() const { return bytes_.size() - at_; }
  template <class T>
  bool take(T& value) {
    if (left() < sizeof(T)) return false;
    value = load_le<T>(bytes_.data() + at_);
    at_ += sizeof(T);
    return true;
  }
  bool take(std::uint64_t size, std::string& text) {
    if (size > left()) return false;
    text.assign(reinterpret_cast<const char*>(bytes_.data() + at_), static_cast<std::size_t>(size));
    at_ += static_cast<std::size_t>(size);
    return true;
  }

 private:
  ByteView bytes_;
  std::size_t at_ = 0;
};

Error damaged(std::string what) {
  return make_error(Component::Compiler, "source image damaged: " + std::move(what), {},
                    "rebuild the bundle with --embed-source");
}

bool is_identifier_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_identifier(char c) { return is_identifier_start(c) || (c >= '0' && c <= '9'); }

// "NAME" or "NAME=VALUE" with NAME an identifier, optionally a macro's parameter list
// ("MAX(a,b)=..."): what -D accepts and nothing that NVRTC could read as another option.
bool is_valid_define(std::string_view define) {
  if (define.empty() || !is_identifier_start(define.front())) return false;
  std::size_t end = 1;
  while (end < define.size() && is_identifier(define[end])) ++end;
  if (end < define.size() && define[end] == '(') {
    end = define.find(')', end);
    if (end == std::string_view::npos) return false;
    ++end;
  }
  return end == define.size() || define[end] == '=';
}

bool is_valid_standard(std::string_view standard) {
  return standard == "c++11" || standard == "c++14" || standard == "c++17" || standard == "c++20";
}

}  // namespace

std::vector<std::pair<std::string, bool>> include_directives(std::string_view text, std::vector<std::string>* computed) {
  std::vector<std::pair<std::string, bool>> includes;
  bool in_block_comment = false;
  std::size_t line_start = 0;
  while (line_start < text.size()) {
    std::size_t line_end = text.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = text.size();
    const std::string_view line = text.substr(line_start, line_end - line_start);
    line_start = line_end + 1;

    // The line with comments blanked out (a block comment may span lines); string and
    // character literals are kept whole so that "//" or "/*" inside them is not a comment.
    std::string code;
    for (std::size_t i = 0; i < line.size(); ++i) {
      if (in_block_comment) {
        if (line.substr(i, 2) == "*/") {
          in_block_comment = false;
          ++i;
          code += ' ';
        }
        continue;
      }
      if (line.substr(i, 2) == "//") break;
      if (line.substr(i, 2) == "/*") {
        in_block_comment = true;
        ++i;
        continue;
      }
      if (line[i] == '"' || line[i] == '\'') {
        const char quote = line[i];
        std::size_t end = i + 1;
        while (end < line.size() && line[end] != quote) end += line[end] == '\\' ? 2 : 1;
        code.append(line.substr(i, std::min(end + 1, line.size()) - i));
        i = end;
        continue;
      }
      code += line[i];
    }

    std::string_view rest = code;
    auto skip_blanks = [&rest] {
      while (!rest.empty() && is_blank(rest.front())) rest.remove_prefix(1);
    };
    skip_blanks();
    if (rest.empty() || rest.front() != '#') continue;
    rest.remove_prefix(1);
    skip_blanks();
    if (!rest.starts_with("include")) continue;
    rest.remove_prefix(7);
    if (!rest.empty() && is_identifier(rest.front())) continue;  // #include_next, #includes...
    skip_blanks();
    if (rest.empty()) continue;
    if (rest.front() != '"' && rest.front() != '<') {  // computed: #include MACRO
      if (computed != nullptr) {
        while (!rest.empty() && is_blank(rest.back())) rest.remove_suffix(1);
        computed->emplace_back(rest);
      }
      continue;
    }
    const bool quoted = rest.front() == '"';
    const std::size_t close = rest.find(quoted ? '"' : '>', 1);
    if (close == std::string_view::npos || close == 1) continue;
    includes.emplace_back(std::string(rest.substr(1, close - 1)), quoted);
  }
  return includes;
}

Result<SourceClosure> read_closure(const std::filesystem::path& source,
                                   const std::vector<std::filesystem::path>& search_dirs,
                                   const std::filesystem::path& toolkit_include_dir) {
  SourceClosure closure;
  closure.path = absolute_normal(source);
  auto text = read_text(closure.path, "source");
  if (!text) return text.error();
  closure.text = std::move(*text);

  std::vector<std::filesystem::path> dirs;
  for (const auto& dir : search_dirs) dirs.push_back(absolute_normal(dir));
  const std::filesystem::path toolkit = toolkit_include_dir.empty() ? toolkit_include_dir
                                                                    : absolute_normal(toolkit_include_dir);

  std::map<std::filesystem::path, std::size_t> index_of;  // header path -> index in closure.headers
  std::vector<std::filesystem::path> found_in;           // by header index: the directory it was found in
  // Scans one file's #include lines; returns the indices of headers seen for the first time.
  // `beside`: where a quoted include is looked up before the search path.
  auto scan = [&](std::string_view file_text, const std::vector<std::filesystem::path>& beside) -> Result<std::vector<std::size_t>> {
    std::vector<std::size_t> found;
    for (const auto& [name, quoted] : include_directives(file_text, &closure.computed_includes)) {
      std::vector<std::filesystem::path> candidates;
      const std::filesystem::path written(name);
      if (written.is_absolute()) {
        candidates.push_back(written);
      } else {
        if (quoted) {
          for (const auto& directory : beside) candidates.push_back(directory / written);
        }
        for (const auto& dir : dirs) candidates.push_back(dir / written);
      }
      std::error_code error;
      auto match = std::find_if(candidates.begin(), candidates.end(), [&](const std::filesystem::path& candidate) {
        return std::filesystem::is_regular_file(candidate, error);
      });
      if (match == candidates.end()) continue;  // the toolkit's, or skipped by #if: NVRTC decides
      const std::filesystem::path path = absolute_normal(*match);
      if (is_under(path, toolkit)) continue;
      auto [entry, inserted] = index_of.try_emplace(path, closure.headers.size());
      if (inserted) {
        auto header_text = read_text(path, "header");
        if (!header_text) return header_text.error();
        closure.headers.push_back({path, {}, std::move(*header_text)});
        found_in.push_back(std::filesystem::absolute(*match, error).lexically_normal().parent_path());
        found.push_back(entry->second);
      }
      auto& names = closure.headers[entry->second].include_names;
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
    return found;
  };

  // NVRTC knows the source by its bare file name, so "beside it" is the working directory first;
  // the source's own directory (as named, links not followed) comes next, as on kiln's search path.
  std::error_code no_cwd;
  std::vector<std::filesystem::path> beside_source{std::filesystem::current_path(no_cwd)};
  beside_source.push_back(std::filesystem::absolute(source, no_cwd).lexically_normal().parent_path());
  auto first = scan(closure.text, beside_source);
  if (!first) return first.error();
  // Depth-first over the headers not yet scanned; the order is fixed by the texts alone.
  std::vector<std::size_t> stack(first->rbegin(), first->rend());
  while (!stack.empty()) {
    const std::size_t index = stack.back();
    stack.pop_back();
    const std::string header_text = closure.headers[index].text;  // a copy: scan() may grow headers
    auto found = scan(header_text, {found_in[index]});
    if (!found) return found.error();
    stack.insert(stack.end(), found->rbegin(), found->rend());
  }
  return closure;
}

std::vector<std::string> SourceImage::options() const {
  std::vector<std::string> options;
  for (const auto& define : defines) options.push_back("-D" + define);
  options.push_back("-std=" + language_standard);
  return options;
}

Result<SourceImage> make_source_image(const SourceClosure& closure, std::vector<std::string> defines,
                                      std::string language_standard) {
  SourceImage image;
  image.file_name = closure.path.filename().string();
  image.text = closure.text;
  image.defines = std::move(defines);
  image.language_standard = std::move(language_standard);
  std::map<std::string, const Header*> by_name;
  for (const Header& header : closure.headers) {
    for (const std::string& name : header.include_names) {
      auto [entry, inserted] = by_name.emplace(name, &header);
      if (!inserted && entry->second->text != header.text) {
        return make_error(Component::Compiler,
                          "two different headers are included as \"" + name + "\": " + entry->second->path.string() +
                              " and " + header.path.string(),
                          closure.path.string(),
                          "a source image holds headers by include name; rename one, or build without --embed-source");
      }
    }
  }
  for (const auto& [name, header] : by_name) image.headers.emplace_back(name, header->text);
  return image;
}

Bytes encode_source_image(const SourceImage& image) {
  Bytes out(kMagic.begin(), kMagic.end());
  put<std::uint32_t>(out, kSourceImageVersion);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(2 + image.headers.size() + image.defines.size()));
  put_entry(out, EntryKind::MainFile, image.file_name, image.text);
  for (const auto& [name, text] : image.headers) put_entry(out, EntryKind::Header, name, text);
  for (const auto& define : image.defines) put_entry(out, EntryKind::Define, {}, define);
  put_entry(out, EntryKind::LanguageStandard, {}, image.language_standard);
  put<std::uint64_t>(out, checksum64(out));
  return out;
}

Result<SourceImage> decode_source_image(ByteView bytes) {
  if (bytes.size() < kPreambleSize + kChecksumSize) return damaged("shorter than its fixed fields");
  if (std::memcmp(bytes.data(), kMagic.data(), kMagic.size()) != 0) return damaged("no KILNSRC magic");
  const ByteView body = bytes.first(bytes.size() - kChecksumSize);
  Reader trailer(bytes.subspan(body.size()));
  std::uint64_t stored_checksum = 0;
  (void)trailer.take(stored_checksum);
  if (checksum64(body) != stored_checksum) return damaged("checksum mismatch");

  Reader reader(body.subspan(kMagic.size()));
  std::uint32_t version = 0;
  std::uint32_t count = 0;
  (void)reader.take(version);
  (void)reader.take(count);
  if (version != kSourceImageVersion) {
    return damaged("format version " + std::to_string(version) + ", this kiln reads " +
                   std::to_string(kSourceImageVersion));
  }
  if (count > reader.left() / kEntryHeaderSize) return damaged("entry count exceeds the bytes present");

  SourceImage image;
  bool has_main = false;
  bool has_standard = false;
  std::set<std::string> header_names;
  for (std::uint32_t index = 0; index < count; ++index) {
    const std::string which = "entry " + std::to_string(index);
    std::uint32_t kind = 0;
    std::uint32_t name_size = 0;
    std::uint64_t data_size = 0;
    if (!reader.take(kind) || !reader.take(name_size) || !reader.take(data_size)) {
      return damaged(which + " header is truncated");
    }
    std::string name;
    std::string data;
    if (!reader.take(name_size, name)) return damaged(which + " name runs past the end");
    if (!reader.take(data_size, data)) return damaged(which + " data runs past the end");
    if (name.find('\0') != std::string::npos) return damaged(which + " name holds a NUL byte");
    switch (static_cast<EntryKind>(kind)) {
      case EntryKind::MainFile:
        if (has_main) return damaged(which + " is a second main file");
        if (name.empty()) return damaged(which + ": the main file has no name");
        has_main = true;
        image.file_name = std::move(name);
        image.text = std::move(data);
        break;
      case EntryKind::Header:
        if (name.empty()) return damaged(which + ": a header has no name");
        if (!header_names.insert(name).second) return damaged(which + ": header \"" + name + "\" appears twice");
        image.headers.emplace_back(std::move(name), std::move(data));
        break;
      case EntryKind::Define:
        if (!is_valid_define(data)) return damaged(which + ": \"" + data + "\" is not a macro definition");
        image.defines.push_back(std::move(data));
        break;
      case EntryKind::LanguageStandard:
        if (has_standard) return damaged(which + " is a second language standard");
        if (!is_valid_standard(data)) return damaged(which + ": unknown language standard \"" + data + "\"");
        has_standard = true;
        image.language_standard = std::move(data);
        break;
      default:
        return damaged(which + " has unknown kind " + std::to_string(kind));
    }
  }
  if (reader.left() != 0) return damaged("bytes after the last entry");
  if (!has_main) return damaged("no main file");
  return image;
}

}  // namespace kiln::source
