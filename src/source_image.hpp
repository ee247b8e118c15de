// A source file with the user headers it includes (found by following its #include lines),
// and the source image: that set, with the options to compile it, in one self-describing
// archive that the runtime gives to NVRTC on a machine that has none of the user's files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/hash.hpp"

namespace kiln::source {

struct Header {
  std::filesystem::path path;               // where it was found, absolute
  std::vector<std::string> include_names;   // as written in the #include lines that reach it
  std::string text;
};

struct SourceClosure {
  std::filesystem::path path;  // absolute
  std::string text;
  std::vector<Header> headers; // in discovery order (fixed by the texts)
  // `#include MACRO` lines (their macro text): the headers they name are not in `headers`.
  std::vector<std::string> computed_includes;
};

// Reads `source` and follows its #include lines as NVRTC resolves them. "x" is looked up beside
// the including file, then in `search_dirs`; <x> in `search_dirs`. NVRTC knows the source by its
// bare file name, so "beside the source" means the working directory; a header is beside where
// the search found it (a link is not followed to its target's directory). A header found nowhere, or found under
// `toolkit_include_dir`, belongs to the toolkit: NVRTC finds it, the NVRTC version in the cache
// key covers it, and it is not followed. Every #include line counts, whatever #if surrounds it:
// a superset is safe for cache keys and depfiles (NVRTC 13 cannot list dependencies itself).
[[nodiscard]] Result<SourceClosure> read_closure(const std::filesystem::path& source,
                                                 const std::vector<std::filesystem::path>& search_dirs,
                                                 const std::filesystem::path& toolkit_include_dir);

// The #include names in one file's text, in order ("x" and <x> alike); comments and string
// literals are skipped. A computed #include (`#include MACRO`) names no file this scan can find;
// its macro text goes to `computed` where one is given.
[[nodiscard]] std::vector<std::pair<std::string, bool>> include_directives(std::string_view text,
                                                                          std::vector<std::string>* computed = nullptr);

// What a source image holds.
struct SourceImage {
  std::string file_name;                                     // "ops.cu": NVRTC's program name
  std::string text;
  std::vector<std::pair<std::string, std::string>> headers;  // (include name, content), sorted by name
  std::vector<std::string> defines;                          // "NAME" or "NAME=VALUE"
  std::string language_standard = "c++17";

  // The NVRTC options these stand for: "-DNAME=VALUE"..., "-std=c++17".
  [[nodiscard]] std::vector<std::string> options() const;
};

// Every header under each name it was included by; two different files included by one name
// cannot be told apart in memory, so that is an error naming both.
[[nodiscard]] Result<SourceImage> make_source_image(const SourceClosure& closure, std::vector<std::string> defines,
                                                    std::string language_standard);

// The archive, all integers little-endian:
//
//   offset  size  field
//   0       8     magic "KILNSRC\0"
//   8       4     format version (kSourceImageVersion)
//   12      4     entry count
//   16      ...   entries, each: u32 kind, u32 name length, u64 data length, name, data
//   end-8   8     XXH3-64 of every byte before it
//
// Entry kinds: 1 the main file (name: file name, data: text), exactly one; 2 a header (name:
// include name, data: content); 3 a define (name empty, data: "NAME" or "NAME=VALUE");
// 4 the language standard (name empty, data: "c++17"), at most one. Names hold no NUL.
// The decoder checks every length against the bytes left, the checksum, the kinds and counts,
// and that defines and the standard are what they claim, so a damaged or hostile image
// cannot smuggle other options into NVRTC.
//
// Change the layout or the meaning of a field: bump the version.
inline constexpr std::uint32_t kSourceImageVersion = 1;

[[nodiscard]] Bytes encode_source_image(const SourceImage& image);
[[nodiscard]] Result<SourceImage> decode_source_image(ByteView bytes);

}  // namespace kiln::source
