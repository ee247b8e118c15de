#include "elf.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "kiln/little_endian.hpp"

namespace kiln::elf {
namespace {

// ELF64 constants (from the System V ABI and NVIDIA's CUDA ELF extensions, as LLVM's
// BinaryFormat/ELF.h records them).
constexpr std::size_t kHeaderSize = 64;
constexpr std::size_t kSectionHeaderSize = 64;
constexpr std::size_t kSymbolSize = 24;
constexpr std::size_t kProgramHeaderSize = 56;
constexpr std::uint8_t kClass64 = 2;
constexpr std::uint8_t kLittleEndian = 1;
constexpr std::uint16_t kMachineCuda = 190;
constexpr std::uint32_t kSectionSymbolTable = 2;
constexpr std::uint32_t kSectionStringTable = 3;
constexpr std::uint32_t kSectionNoBits = 8;  // .bss-like: a size but no bytes in the file
constexpr std::uint8_t kSymbolFunction = 2;
// st_other bit that marks a kernel entry point (nvcc/ptxas: STO_CUDA_ENTRY).
constexpr std::uint8_t kCudaEntry = 0x10;
// e_flags layout. ABI 8 (CUDA 12.8+): SM in bits 8..15, "a" in bit 3.
// Older ABI: SM in bits 0..7, "a" in bit 11.
constexpr int kNewLayoutAbiVersion = 8;

// Little-endian loads at a checked offset: nullopt if [offset, offset + N) is outside `bytes`.
template <class T>
std::optional<T> load(ByteView bytes, std::uint64_t offset) {
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T)) return std::nullopt;
  return load_le<T>(bytes.data() + offset);
}

// [offset, offset + size) lies inside a buffer of `total` bytes, without overflow.
bool in_bounds(std::uint64_t offset, std::uint64_t size, std::uint64_t total) {
  return offset <= total && size <= total - offset;
}

struct Section {
  std::uint32_t type = 0;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  std::uint32_t link = 0;
  std::uint64_t entry_size = 0;
};

Error malformed(std::string what) {
  return make_error(Component::Compiler, "not a valid cubin: " + std::move(what), {},
                    "the image is damaged or not a CUDA binary; rebuild it");
}

}  // namespace

Result<CubinInfo> read_cubin(ByteView bytes) {
  if (bytes.size() < kHeaderSize) return malformed("shorter than an ELF64 header");
  if (std::memcmp(bytes.data(), "\x7f" "ELF", 4) != 0) return malformed("no ELF magic");
  if (bytes[4] != kClass64) return malformed("not ELF64");
  if (bytes[5] != kLittleEndian) return malformed("not little-endian");
  const std::uint16_t machine = *load<std::uint16_t>(bytes, 18);
  if (machine != kMachineCuda) return malformed("e_machine is " + std::to_string(machine) + ", not EM_CUDA (190)");

  CubinInfo info;
  info.abi_version = bytes[8];
  const std::uint32_t flags = *load<std::uint32_t>(bytes, 48);
  if (info.abi_version >= kNewLayoutAbiVersion) {
    info.sm = static_cast<int>((flags >> 8) & 0xff);
    info.arch_specific = (flags & 0x8) != 0;
  } else {
    info.sm = static_cast<int>(flags & 0xff);
    info.arch_specific = (flags & 0x800) != 0;
  }

  const std::uint64_t program_table = *load<std::uint64_t>(bytes, 32);
  const std::uint16_t program_header_size = *load<std::uint16_t>(bytes, 54);
  const std::uint16_t program_count = *load<std::uint16_t>(bytes, 56);
  if (program_count > 0) {
    if (program_header_size != kProgramHeaderSize) return malformed("e_phentsize is not 56");
    if (!in_bounds(program_table, std::uint64_t{program_count} * kProgramHeaderSize, bytes.size())) {
      return malformed("program header table lies outside the file");
    }
  }

  const std::uint64_t section_table = *load<std::uint64_t>(bytes, 40);
  const std::uint16_t section_header_size = *load<std::uint16_t>(bytes, 58);
  const std::uint16_t section_count = *load<std::uint16_t>(bytes, 60);
  if (section_count == 0) return malformed("no section table");
  if (section_header_size != kSectionHeaderSize) return malformed("e_shentsize is not 64");
  if (!in_bounds(section_table, std::uint64_t{section_count} * kSectionHeaderSize, bytes.size())) {
    return malformed("section table lies outside the file");
  }

  std::vector<Section> sections(section_count);
  for (std::size_t index = 0; index < section_count; ++index) {
    const std::uint64_t at = section_table + index * kSectionHeaderSize;
    Section& section = sections[index];
    section.type = *load<std::uint32_t>(bytes, at + 4);
    section.offset = *load<std::uint64_t>(bytes, at + 24);
    section.size = *load<std::uint64_t>(bytes, at + 32);
    section.link = *load<std::uint32_t>(bytes, at + 40);
    section.entry_size = *load<std::uint64_t>(bytes, at + 56);
    if (section.type != kSectionNoBits && index > 0 && !in_bounds(section.offset, section.size, bytes.size())) {
      return malformed("section " + std::to_string(index) + " lies outside the file");
    }
  }

  for (std::size_t index = 0; index < sections.size(); ++index) {
    const Section& symbols = sections[index];
    if (symbols.type != kSectionSymbolTable) continue;
    const std::string which = "symbol table (section " + std::to_string(index) + ")";
    if (symbols.entry_size != kSymbolSize) return malformed(which + " entry size is not 24");
    if (symbols.link >= sections.size()) return malformed(which + " links to a missing string table");
    const Section& strings = sections[symbols.link];
    if (strings.type != kSectionStringTable) return malformed(which + " links to a section that is not a string table");
    const std::string_view names(reinterpret_cast<const char*>(bytes.data() + strings.offset), strings.size);

    for (std::uint64_t at = symbols.offset; at + kSymbolSize <= symbols.offset + symbols.size; at += kSymbolSize) {
      const std::uint32_t name_offset = *load<std::uint32_t>(bytes, at);
      const std::uint8_t symbol_info = bytes[at + 4];
      const std::uint8_t other = bytes[at + 5];
      if ((symbol_info & 0xf) != kSymbolFunction || (other & kCudaEntry) == 0) continue;
      if (name_offset >= names.size()) return malformed(which + ": a kernel's name lies outside the string table");
      const std::size_t end = names.find('\0', name_offset);
      if (end == std::string_view::npos) return malformed(which + ": a kernel's name is not terminated");
      if (end == name_offset) return malformed(which + ": a kernel has an empty name");
      info.kernels.emplace_back(names.substr(name_offset, end - name_offset));
    }
  }
  std::sort(info.kernels.begin(), info.kernels.end());
  info.kernels.erase(std::unique(info.kernels.begin(), info.kernels.end()), info.kernels.end());
  return info;
}

std::vector<std::string> ptx_entry_names(std::string_view ptx) {
  // PTX identifiers: [a-zA-Z_$%][a-zA-Z0-9_$]* (mangled C++ names stay within that set).
  auto is_identifier = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
           c == '%';
  };
  std::vector<std::string> names;
  constexpr std::string_view kEntry = ".entry";
  for (std::size_t at = ptx.find(kEntry); at != std::string_view::npos; at = ptx.find(kEntry, at + 1)) {
    // A directive, not part of a longer word: preceded by the line start or a blank.
    if (at > 0 && ptx[at - 1] != ' ' && ptx[at - 1] != '\t' && ptx[at - 1] != '\n') continue;
    std::size_t name_start = at + kEntry.size();
    if (name_start >= ptx.size() || (ptx[name_start] != ' ' && ptx[name_start] != '\t')) continue;
    while (name_start < ptx.size() && (ptx[name_start] == ' ' || ptx[name_start] == '\t')) ++name_start;
    std::size_t name_end = name_start;
    while (name_end < ptx.size() && is_identifier(ptx[name_end])) ++name_end;
    if (name_end > name_start) names.emplace_back(ptx.substr(name_start, name_end - name_start));
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

}  // namespace kiln::elf
