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
// SHT_CUDA_INFO: the `.nv.info*` sections, where ptxas records each kernel's attributes as
// records of (format, attribute, value): EIFMT_NVAL/BVAL/HVAL carry a 16-bit value in the
// record itself, EIFMT_SVAL a 16-bit size and that many bytes after it (cuobjdump -elf shows them).
constexpr std::uint32_t kSectionCudaInfo = 0x70000000;
constexpr std::size_t kAttributeHeaderSize = 4;
constexpr std::uint8_t kFormatNoValue = 1;
constexpr std::uint8_t kFormatByteValue = 2;
constexpr std::uint8_t kFormatHalfValue = 3;
constexpr std::uint8_t kFormatSizedValue = 4;
// EIATTR_KPARAM_INFO: one per parameter, 12 bytes: index (u32), ordinal (u16), offset (u16), and
// a word with the size in bytes in bits 18..31. EIATTR_CBANK_PARAM_SIZE: all parameters' bytes.
constexpr std::uint8_t kAttributeParameterInfo = 0x17;
constexpr std::uint8_t kAttributeParameterBytes = 0x19;
constexpr std::uint16_t kParameterInfoSize = 12;
constexpr int kParameterSizeShift = 18;
constexpr std::uint32_t kParameterSizeMask = 0x3fff;
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
  std::uint32_t name = 0;  // offset in the section-name string table
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

// Where the section headers lie, checked to be inside the file, so that any of them decodes.
struct SectionHeaders {
  std::uint64_t offset = 0;       // e_shoff
  std::uint16_t count = 0;        // e_shnum
  std::uint16_t names_index = 0;  // e_shstrndx: the section whose strings name the sections

  // Section `index` (below count) as its header says; its bytes are not checked here.
  Section at(ByteView bytes, std::size_t index) const {
    const std::uint64_t header = offset + index * kSectionHeaderSize;
    Section section;
    section.name = *load<std::uint32_t>(bytes, header);
    section.type = *load<std::uint32_t>(bytes, header + 4);
    section.offset = *load<std::uint64_t>(bytes, header + 24);
    section.size = *load<std::uint64_t>(bytes, header + 32);
    section.link = *load<std::uint32_t>(bytes, header + 40);
    section.entry_size = *load<std::uint64_t>(bytes, header + 56);
    return section;
  }
};

// Needs a full ELF header (check_elf_header).
Result<SectionHeaders> section_headers(ByteView bytes) {
  SectionHeaders headers;
  headers.offset = *load<std::uint64_t>(bytes, 40);
  const std::uint16_t header_size = *load<std::uint16_t>(bytes, 58);
  headers.count = *load<std::uint16_t>(bytes, 60);
  headers.names_index = *load<std::uint16_t>(bytes, 62);
  if (headers.count == 0) return malformed("no section table");
  if (header_size != kSectionHeaderSize) return malformed("e_shentsize is not 64");
  if (!in_bounds(headers.offset, std::uint64_t{headers.count} * kSectionHeaderSize, bytes.size())) {
    return malformed("section table lies outside the file");
  }
  return headers;
}

// The header checks every reader of a cubin makes, and its section table.
struct Sections {
  std::vector<Section> table;
  std::uint16_t names_index = 0;  // e_shstrndx: the section whose strings name the sections
};

Result<Sections> read_sections(ByteView bytes) {
  Result<SectionHeaders> headers = section_headers(bytes);
  if (!headers) return headers.error();
  Sections sections;
  sections.names_index = headers->names_index;
  sections.table.reserve(headers->count);
  for (std::size_t index = 0; index < headers->count; ++index) {
    const Section& section = sections.table.emplace_back(headers->at(bytes, index));
    // Every section with bytes, the null one (index 0, all zero in a cubin) too: a damaged
    // header may name any index as a string or symbol table.
    if (section.type != kSectionNoBits && !in_bounds(section.offset, section.size, bytes.size())) {
      return malformed("section " + std::to_string(index) + " lies outside the file");
    }
  }
  return sections;
}

Result<void> check_elf_header(ByteView bytes) {
  if (bytes.size() < kHeaderSize) return malformed("shorter than an ELF64 header");
  if (std::memcmp(bytes.data(), "\x7f" "ELF", 4) != 0) return malformed("no ELF magic");
  if (bytes[4] != kClass64) return malformed("not ELF64");
  if (bytes[5] != kLittleEndian) return malformed("not little-endian");
  const std::uint16_t machine = *load<std::uint16_t>(bytes, 18);
  if (machine != kMachineCuda) return malformed("e_machine is " + std::to_string(machine) + ", not EM_CUDA (190)");
  return {};
}

// A section whose bounds the caller has checked (read_sections() checks every one).
ByteView section_bytes(ByteView bytes, const Section& section) { return bytes.subspan(section.offset, section.size); }

// One kernel's `.nv.info.<kernel>` attributes -> its parameter sizes; nullopt when they are not
// the consistent table the driver would read (then the driver is asked instead).
std::optional<std::vector<std::size_t>> parameter_sizes_from_attributes(ByteView data) {
  struct Parameter {
    std::uint32_t ordinal, offset, size;
  };
  std::vector<Parameter> parameters;
  std::optional<std::uint32_t> parameter_bytes;  // EIATTR_CBANK_PARAM_SIZE
  for (std::uint64_t at = 0; at < data.size();) {
    if (data.size() - at < kAttributeHeaderSize) return std::nullopt;
    const std::uint8_t format = data[at];
    const std::uint8_t attribute = data[at + 1];
    const std::uint16_t value = *load<std::uint16_t>(data, at + 2);
    at += kAttributeHeaderSize;
    if (format != kFormatSizedValue) {
      if (format != kFormatNoValue && format != kFormatByteValue && format != kFormatHalfValue) return std::nullopt;
      if (attribute == kAttributeParameterBytes) parameter_bytes = value;
      continue;
    }
    if (data.size() - at < value) return std::nullopt;
    if (attribute == kAttributeParameterInfo) {
      if (value != kParameterInfoSize) return std::nullopt;
      const std::uint32_t layout = *load<std::uint32_t>(data, at + 4);
      const std::uint32_t flags = *load<std::uint32_t>(data, at + 8);
      parameters.push_back({layout & 0xffff, layout >> 16, (flags >> kParameterSizeShift) & kParameterSizeMask});
    }
    at += value;
  }
  // ptxas lists the parameters last to first; each ordinal once, packed in order, no empty ones.
  std::sort(parameters.begin(), parameters.end(),
            [](const Parameter& a, const Parameter& b) { return a.ordinal < b.ordinal; });
  std::vector<std::size_t> sizes;
  std::uint32_t end = 0;
  for (std::size_t index = 0; index < parameters.size(); ++index) {
    const Parameter& parameter = parameters[index];
    if (parameter.ordinal != index || parameter.size == 0 || parameter.offset < end) return std::nullopt;
    end = parameter.offset + parameter.size;
    sizes.push_back(parameter.size);
  }
  if (end != parameter_bytes.value_or(0)) return std::nullopt;
  return sizes;
}

// Calls visit(kernel, attributes) for each `.nv.info.<kernel>` section of a cubin, until it
// returns false; nothing for bytes that are not a cubin with named sections. It walks the section
// headers in place rather than through read_sections(): a start reads one kernel's table of a
// cubin with hundreds of sections, and prepare_all every kernel's in turn, so a copy of the whole
// table per call cost more than the table read itself. Each section it touches is bounds-checked.
template <class Visit>
void visit_kernel_attributes(ByteView bytes, const Visit& visit) {
  if (!check_elf_header(bytes)) return;
  const Result<SectionHeaders> headers = section_headers(bytes);
  if (!headers || headers->names_index >= headers->count) return;
  const Section names_section = headers->at(bytes, headers->names_index);
  if (names_section.type != kSectionStringTable || !in_bounds(names_section.offset, names_section.size, bytes.size())) {
    return;
  }
  const std::string_view names = as_text(section_bytes(bytes, names_section));
  constexpr std::string_view kPrefix = ".nv.info.";
  for (std::size_t index = 0; index < headers->count; ++index) {
    const Section section = headers->at(bytes, index);
    if (section.type != kSectionCudaInfo || section.name >= names.size()) continue;
    const std::string_view rest = names.substr(section.name);
    const std::string_view name = rest.substr(0, rest.find('\0'));
    if (name.size() <= kPrefix.size() || name.substr(0, kPrefix.size()) != kPrefix) continue;
    if (!in_bounds(section.offset, section.size, bytes.size())) return;  // a damaged file: the driver is asked instead
    if (!visit(name.substr(kPrefix.size()), section_bytes(bytes, section))) return;
  }
}

}  // namespace

Result<CubinInfo> read_cubin(ByteView bytes) {
  if (Result<void> header = check_elf_header(bytes); !header) return header.error();
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

  Result<Sections> read = read_sections(bytes);
  if (!read) return read.error();
  const std::vector<Section>& sections = read->table;
  for (std::size_t index = 0; index < sections.size(); ++index) {
    const Section& symbols = sections[index];
    if (symbols.type != kSectionSymbolTable) continue;
    const std::string which = "symbol table (section " + std::to_string(index) + ")";
    if (symbols.entry_size != kSymbolSize) return malformed(which + " entry size is not 24");
    if (symbols.link >= sections.size()) return malformed(which + " links to a missing string table");
    const Section& strings = sections[symbols.link];
    if (strings.type != kSectionStringTable) return malformed(which + " links to a section that is not a string table");
    const std::string_view names = as_text(section_bytes(bytes, strings));

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

std::optional<std::vector<std::size_t>> parameter_sizes(ByteView bytes, std::string_view kernel) {
  std::optional<std::vector<std::size_t>> sizes;
  visit_kernel_attributes(bytes, [&](std::string_view name, ByteView attributes) {
    if (name != kernel) return true;
    sizes = parameter_sizes_from_attributes(attributes);
    return false;
  });
  return sizes;
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
