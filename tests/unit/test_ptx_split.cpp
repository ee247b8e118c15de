// PTX split per kernel: each piece holds exactly its entry and what that entry reaches, and
// still compiles on its own (checked with ptxas where the toolkit has it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "ptx_split.hpp"

namespace {

namespace fs = std::filesystem;
using kiln::PtxModule;

const fs::path kPtxas = "/usr/local/cuda/bin/ptxas";
const fs::path kNvcc = "/usr/local/cuda/bin/nvcc";

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

fs::path scratch_directory() {
  fs::path directory = fs::temp_directory_path() / ("kiln-ptx-split-" + std::to_string(::getpid()));
  fs::create_directories(directory);
  return directory;
}

// ptxas on one PTX text; empty on success, else its output.
std::string ptxas_errors(const std::string& ptx, const std::string& name) {
  const fs::path directory = scratch_directory();
  const fs::path input = directory / (name + ".ptx");
  const fs::path log = directory / (name + ".log");
  std::ofstream(input, std::ios::binary) << ptx;
  const std::string command = kPtxas.string() + " -arch=sm_90 " + input.string() + " -o " +
                              (directory / (name + ".cubin")).string() + " > " + log.string() + " 2>&1";
  if (std::system(command.c_str()) == 0) return {};
  return "ptxas failed on " + input.string() + ":\n" + read_text(log);
}

PtxModule parse_or_fail(std::string text) {
  kiln::Result<PtxModule> module = PtxModule::parse(std::move(text));
  EXPECT_TRUE(module.ok()) << module.error().describe();
  return std::move(module).value();
}

std::string piece_of(const PtxModule& module, const std::string& entry) {
  kiln::Result<std::string> piece = module.kernel_ptx(entry);
  EXPECT_TRUE(piece.ok()) << piece.error().describe();
  return piece.ok() ? *piece : std::string();
}

bool mentions(const std::string& text, const std::string& word) { return text.find(word) != std::string::npos; }

std::size_t count_of(const std::string& text, const std::string& word) {
  std::size_t count = 0;
  for (std::size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++count;
  return count;
}

const std::vector<std::string> kSampleEntries = {"polynomial",    "squares",   "bump_launches",
                                                 "smooth",        "say_hello", "_Z5scaleIfEvPT_S0_i",
                                                 "_Z5scaleIdEvPT_S0_i"};

// What each sample kernel must reach, and a name from the module it must not carry.
struct Expectation {
  std::string entry;
  std::vector<std::string> needs;
  std::vector<std::string> excludes;
};
const std::vector<Expectation> kSampleExpectations = {
    {"polynomial", {"_Z6squaref", "_Z4cubef", "coefficients"}, {"launches", "weights", "tile", "vprintf", "$str"}},
    {"squares", {"_Z6squaref"}, {"_Z4cubef", "coefficients", "launches", "weights", "tile", "vprintf"}},
    {"bump_launches", {"launches"}, {"_Z6squaref", "_Z4cubef", "coefficients", "weights", "tile", "vprintf"}},
    {"smooth", {"weights", "tile"}, {"_Z6squaref", "coefficients", "launches", "vprintf"}},
    {"say_hello", {"vprintf", "$str"}, {"_Z6squaref", "coefficients", "launches", "weights", "tile"}},
    {"_Z5scaleIfEvPT_S0_i", {}, {"_Z6squaref", "coefficients", "launches", "weights", "tile", "vprintf"}},
    {"_Z5scaleIdEvPT_S0_i", {}, {"_Z6squaref", "coefficients", "launches", "weights", "tile", "vprintf"}},
};

TEST(PtxSplit, FindsEveryEntryOfTheSample) {
  const PtxModule module = parse_or_fail(read_text(fs::path(KILN_SOURCE_DIR) / "tests/data/ptx/split_sample.ptx"));
  EXPECT_EQ(module.entries(), kSampleEntries);
  EXPECT_TRUE(module.splittable()) << module.why_whole();
}

TEST(PtxSplit, EachPieceHoldsExactlyItsEntryAndWhatItReaches) {
  const PtxModule module = parse_or_fail(read_text(fs::path(KILN_SOURCE_DIR) / "tests/data/ptx/split_sample.ptx"));
  for (const Expectation& expected : kSampleExpectations) {
    SCOPED_TRACE(expected.entry);
    const std::string piece = piece_of(module, expected.entry);
    EXPECT_EQ(piece.rfind(".version 9.0\n.target sm_80\n.address_size 64\n", 0), 0u) << piece;
    EXPECT_EQ(count_of(piece, ".entry"), 1u);
    EXPECT_TRUE(mentions(piece, ".entry " + expected.entry + "("));
    for (const std::string& other : kSampleEntries) {
      if (other != expected.entry) EXPECT_FALSE(mentions(piece, ".entry " + other + "(")) << other;
    }
    for (const std::string& needed : expected.needs) EXPECT_TRUE(mentions(piece, needed)) << needed;
    for (const std::string& excluded : expected.excludes) EXPECT_FALSE(mentions(piece, excluded)) << excluded;

    // A piece is itself a module whose only entry is the kernel.
    const PtxModule reparsed = parse_or_fail(piece);
    EXPECT_EQ(reparsed.entries(), std::vector<std::string>{expected.entry});
  }
}

TEST(PtxSplit, CalledFunctionsComeWithTheirCallees) {
  const PtxModule module = parse_or_fail(read_text(fs::path(KILN_SOURCE_DIR) / "tests/data/ptx/split_sample.ptx"));
  const std::string piece = piece_of(module, "polynomial");
  // cube calls square, and square must be defined before cube, as in the module.
  const std::size_t square = piece.find(") _Z6squaref(");
  const std::size_t cube = piece.find(") _Z4cubef(");
  ASSERT_NE(square, std::string::npos);
  ASSERT_NE(cube, std::string::npos);
  EXPECT_LT(square, cube);
}

TEST(PtxSplit, PiecesCompileWithPtxas) {
  if (!fs::exists(kPtxas)) GTEST_SKIP() << kPtxas << " is not installed";
  const PtxModule module = parse_or_fail(read_text(fs::path(KILN_SOURCE_DIR) / "tests/data/ptx/split_sample.ptx"));
  ASSERT_EQ(ptxas_errors(module.text(), "whole"), "");
  for (const std::string& entry : module.entries()) {
    EXPECT_EQ(ptxas_errors(piece_of(module, entry), entry), "");
  }
}

// PTX made now by nvcc from the GPU tests' kernels (cub's block reduction included) and from
// the sample with -lineinfo, whose .loc directives refer to a .debug_str section.
TEST(PtxSplit, FreshNvccOutputSplitsAndCompiles) {
  if (!fs::exists(kNvcc) || !fs::exists(kPtxas)) GTEST_SKIP() << "nvcc or ptxas is not installed";
  const fs::path directory = scratch_directory();
  struct Source {
    fs::path path;
    std::string flags;
  };
  std::vector<Source> sources = {{fs::path(KILN_SOURCE_DIR) / "tests/data/ptx/split_sample.cu", "-lineinfo"}};
  for (const auto& item : fs::directory_iterator(fs::path(KILN_SOURCE_DIR) / "tests/gpu/data")) {
    if (item.path().extension() == ".cu") sources.push_back({item.path(), ""});
  }
  for (const Source& source : sources) {
    SCOPED_TRACE(source.path.string());
    const fs::path ptx = directory / (source.path.stem().string() + ".ptx");
    const std::string command = kNvcc.string() + " -ptx -arch=compute_80 " + source.flags + " -o " + ptx.string() +
                                " " + source.path.string();
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    const PtxModule module = parse_or_fail(read_text(ptx));
    ASSERT_FALSE(module.entries().empty());
    EXPECT_TRUE(module.splittable()) << module.why_whole();
    for (const std::string& entry : module.entries()) {
      const std::string piece = piece_of(module, entry);
      EXPECT_EQ(count_of(piece, ".entry"), 1u);
      EXPECT_EQ(ptxas_errors(piece, source.path.stem().string() + "-" + entry), "");
    }
  }
}

TEST(PtxSplit, DebugSectionsKeepTheModuleWhole) {
  if (!fs::exists(kNvcc)) GTEST_SKIP() << "nvcc is not installed";
  const fs::path ptx = scratch_directory() / "debug.ptx";
  const std::string command = kNvcc.string() + " -ptx -G -arch=compute_80 -o " + ptx.string() + " " +
                              (fs::path(KILN_SOURCE_DIR) / "tests/data/ptx/split_sample.cu").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const PtxModule module = parse_or_fail(read_text(ptx));
  EXPECT_EQ(module.entries().size(), kSampleEntries.size());
  EXPECT_FALSE(module.splittable());
  EXPECT_TRUE(mentions(module.why_whole(), "debug")) << module.why_whole();
}

constexpr const char* kSharedGlobal = R"(.version 8.0
.target sm_80
.address_size 64
.global .align 4 .u32 counter;
.visible .entry producer() { mov.u64 %rd1, counter; ret; }
.visible .entry consumer() { mov.u64 %rd1, counter; ret; }
.visible .entry bystander() { ret; }
)";

TEST(PtxSplit, KernelsSharingAMutableGlobalStayTogether) {
  const PtxModule module = parse_or_fail(kSharedGlobal);
  EXPECT_FALSE(module.splittable());
  EXPECT_TRUE(mentions(module.why_whole(), "producer")) << module.why_whole();
  EXPECT_TRUE(mentions(module.why_whole(), "consumer")) << module.why_whole();
  EXPECT_TRUE(mentions(module.why_whole(), "counter")) << module.why_whole();
}

TEST(PtxSplit, AKernelWhoseAddressIsTakenKeepsTheModuleWhole) {
  // nvcc's output for `parent(void** o) { *o = (void*)child; }`: the parent's piece alone would
  // name a kernel it does not hold (ptxas: "Unknown symbol 'child'").
  const PtxModule by_a_kernel = parse_or_fail(R"(.version 8.0
.target sm_80
.address_size 64
.visible .entry child(.param .u64 child_param_0) { ret; }
.visible .entry parent(.param .u64 parent_param_0) { mov.u64 %rd1, child; ret; }
)");
  EXPECT_FALSE(by_a_kernel.splittable());
  EXPECT_TRUE(mentions(by_a_kernel.why_whole(), "parent refers to the kernel child")) << by_a_kernel.why_whole();
  const PtxModule by_a_table = parse_or_fail(R"(.version 8.0
.target sm_80
.address_size 64
.visible .entry worker() { ret; }
.global .align 8 .u64 kernels[1] = {generic(worker)};
.visible .entry launcher() { mov.u64 %rd1, kernels; ret; }
)");
  EXPECT_FALSE(by_a_table.splittable());
  EXPECT_TRUE(mentions(by_a_table.why_whole(), "refers to the kernel worker")) << by_a_table.why_whole();
}

TEST(PtxSplit, CallsThroughPointersKeepTheModuleWhole) {
  // An indirect call may land in a function that another kernel's piece holds, with that piece's
  // own globals: the split would compile and silently run the wrong code.
  const PtxModule module = parse_or_fail(R"(.version 8.0
.target sm_80
.address_size 64
.func (.param .b32 out) triple(.param .b32 in) { ret; }
.visible .entry make(.param .u64 slot) { mov.u64 %rd1, triple; ret; }
.visible .entry use(.param .u64 slot) {
  .reg .b64 %rd<2>;
  prototype_0 : .callprototype (.param .b32 _) _ (.param .b32 _);
  call (retval0), %rd1, (param0), prototype_0;
  ret;
}
)");
  EXPECT_FALSE(module.splittable());
  EXPECT_TRUE(mentions(module.why_whole(), "function pointers")) << module.why_whole();
}

TEST(PtxSplit, SharedStringLiteralsDoNotPreventTheSplit) {
  // What nvcc writes for two kernels that printf one format, or both assert: a .global literal.
  const PtxModule module = parse_or_fail(R"(.version 8.0
.target sm_80
.address_size 64
.global .align 1 .b8 $str[3] = {120, 10, 0};
.visible .entry first() { mov.u64 %rd1, $str; ret; }
.visible .entry second() { mov.u64 %rd1, $str; ret; }
)");
  EXPECT_TRUE(module.splittable()) << module.why_whole();
  EXPECT_TRUE(mentions(piece_of(module, "second"), "$str[3]"));
}

TEST(PtxSplit, SharedConstantsDoNotPreventTheSplit) {
  const PtxModule module = parse_or_fail(R"(.version 8.0
.target sm_80
.address_size 64
.const .align 4 .b8 table[8] = {1, 2, 3, 4, 5, 6, 7, 8};
.visible .entry first() { mov.u64 %rd1, table; ret; }
.visible .entry second() { mov.u64 %rd1, table; ret; }
)");
  EXPECT_TRUE(module.splittable()) << module.why_whole();
  EXPECT_TRUE(mentions(piece_of(module, "second"), "table[8]"));
}

// Braces and semicolons inside strings and comments are not structure.
TEST(PtxSplit, StringsAndCommentsAreNotStructure) {
  const PtxModule module = parse_or_fail(
      ".version 8.0\n"
      ".target sm_80 // a comment with } and ;\n"
      ".address_size 64\n"
      "/* a block comment: .entry fake() { ; */\n"
      ".file 1 \"dir/odd { name; }.cu\"\n"
      ".visible .entry real(.param .u32 n)\n"
      ".maxntid 128, 1, 1\n"
      "{\n"
      "  .pragma \"nounroll; }\";\n"
      "  // } ;\n"
      "  ret;\n"
      "}\n"
      ".visible .entry other() { ret; }\n");
  EXPECT_EQ(module.entries(), (std::vector<std::string>{"real", "other"}));
  const std::string piece = piece_of(module, "real");
  EXPECT_TRUE(mentions(piece, ".file 1 \"dir/odd { name; }.cu\""));
  EXPECT_TRUE(mentions(piece, ".pragma \"nounroll; }\";"));
  EXPECT_FALSE(mentions(piece, "other"));
}

TEST(PtxSplit, PrototypesAndDefinitionsOfACalleeBothCome) {
  const PtxModule module = parse_or_fail(R"(.version 8.0
.target sm_80
.address_size 64
.func helper(.param .b32 x);
.func unrelated();
.visible .entry caller() { call.uni helper, (1); ret; }
.func helper(.param .b32 x) { ret; }
.func unrelated() { ret; }
)");
  const std::string piece = piece_of(module, "caller");
  EXPECT_EQ(count_of(piece, "helper("), 2u);
  EXPECT_FALSE(mentions(piece, "unrelated"));
}

TEST(PtxSplit, AcceptsATrailingNul) {
  std::string text = kSharedGlobal;
  text.push_back('\0');
  const PtxModule module = parse_or_fail(text);
  EXPECT_EQ(module.entries().size(), 3u);
}

TEST(PtxSplit, UnknownKernelIsAnError) {
  const PtxModule module = parse_or_fail(kSharedGlobal);
  kiln::Result<std::string> piece = module.kernel_ptx("nope");
  ASSERT_FALSE(piece.ok());
  EXPECT_TRUE(mentions(piece.error().message, "nope"));
}

TEST(PtxSplit, MalformedTextSaysWhereAndWhat) {
  struct Case {
    const char* text;
    const char* what;
    const char* line;
  };
  for (const Case& bad : {Case{".version 8.0\n.visible .entry k() {\n ret;\n", "'{' is not closed", "line 2"},
                          Case{".version 8.0\n}\n", "'}' has no matching '{'", "line 2"},
                          Case{".version 8.0\n/* never closed\n", "comment is not closed", "line 2"},
                          Case{".version 8.0\n.file 1 \"never closed\n", "not closed", "line 2"}}) {
    kiln::Result<PtxModule> module = PtxModule::parse(bad.text);
    ASSERT_FALSE(module.ok()) << bad.text;
    EXPECT_TRUE(mentions(module.error().message, bad.what)) << module.error().describe();
    EXPECT_EQ(module.error().context, bad.line) << module.error().describe();
  }
}

}  // namespace
