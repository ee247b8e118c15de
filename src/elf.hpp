// A small, bounds-checked reader for CUDA cubins (ELF64, little-endian, EM_CUDA): the
// architecture in the header, the kernel entry points in the symbol table, and the kernels'
// parameter sizes in the `.nv.info` sections. It reads untrusted bytes (bundles, cache entries), so every offset and size is checked before use.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/hash.hpp"

namespace kiln::elf {

struct CubinInfo {
  int abi_version = 0;         // e_ident[EI_ABIVERSION]: 7 before CUDA 12.8's new layout, 8 after
  int sm = 0;                  // real architecture: 90 for sm_90
  bool arch_specific = false;  // EF_CUDA_ACCELERATORS ("a"); CUDA 13.0's ptxas leaves it clear
  std::vector<std::string> kernels;  // mangled names of the entry points, sorted
};

// Fails, naming the check, on anything that is not a well-formed cubin.
[[nodiscard]] Result<CubinInfo> read_cubin(ByteView bytes);

// A kernel's parameter sizes in bytes, in order, as ptxas recorded them in the cubin's
// `.nv.info.<kernel>` section (EIATTR_KPARAM_INFO): what cuFuncGetParamInfo reports, read without
// a driver call per parameter. Only the kernel's own section is read. The layout is NVIDIA's and
// undocumented, so this never fails: where the table is missing or not self-consistent (ordinals,
// offsets, and the total in EIATTR_CBANK_PARAM_SIZE) it gives nullopt, and the caller asks the
// driver.
[[nodiscard]] std::optional<std::vector<std::size_t>> parameter_sizes(ByteView cubin, std::string_view kernel);

// The `.entry` names of a PTX module (".visible .entry _Z3addPf(" -> "_Z3addPf"), sorted.
[[nodiscard]] std::vector<std::string> ptx_entry_names(std::string_view ptx);

}  // namespace kiln::elf
