// kiln doctor: what this machine can do with kiln, and whether a bundle covers its GPUs.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "kiln/doctor.hpp"

namespace kiln::cli {
namespace {

using nlohmann::ordered_json;

std::string version_text(int version) {  // 13000 -> "13.0"
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

ordered_json library_json(const LibraryReport& library) {
  if (!library.found) return {{"found", false}, {"error", library.error ? library.error->message : ""}};
  return {{"found", true}, {"version", std::to_string(library.major) + "." + std::to_string(library.minor)},
          {"path", library.path}};
}

void print_library(const char* name, const LibraryReport& library, const char* needed_for) {
  if (library.found) {
    std::printf("%-12s %d.%d (%s)\n", name, library.major, library.minor, library.path.c_str());
  } else {
    std::printf("%-12s not found: %s (%s)\n", name, library.error ? library.error->message.c_str() : "unknown",
                needed_for);
  }
}

}  // namespace

Result<void> run_doctor(const std::optional<std::filesystem::path>& bundle, bool json) {
  DoctorReport report;
  if (bundle) {
    auto checked = doctor(*bundle);
    if (!checked) return checked.error();
    report = std::move(*checked);
  } else {
    report = doctor();
  }
  bool uncovered = false;
  for (const GpuSelection& gpu : report.selections) uncovered |= !gpu.selection.has_value();

  if (json) {
    ordered_json out;
    out["driver"] = report.driver_found ? ordered_json{{"found", true}, {"version", version_text(report.driver_version)}}
                                        : ordered_json{{"found", false},
                                                       {"error", report.driver_error ? report.driver_error->message : ""}};
    out["gpus"] = ordered_json::array();
    for (const GpuInfo& gpu : report.gpus) {
      out["gpus"].push_back({{"ordinal", gpu.ordinal}, {"name", gpu.name},
                             {"arch", Arch{gpu.cc, ArchVariant::Plain}.sm_name()}});
    }
    out["nvrtc"] = library_json(report.nvrtc);
    out["nvjitlink"] = library_json(report.nvjitlink);
    out["cache"] = {{"directory", report.cache.directory.string()}, {"disabled", report.cache.disabled},
                    {"entries", report.cache.entries}, {"bytes", report.cache.bytes},
                    {"max_bytes", report.cache.max_bytes}};
    if (report.cache.error) out["cache"]["error"] = report.cache.error->message;
    if (bundle) {
      out["bundle"] = ordered_json::array();
      for (const GpuSelection& gpu : report.selections) {
        ordered_json row{{"ordinal", gpu.ordinal}, {"arch", gpu.arch}};
        if (gpu.selection) {
          row["path"] = path_name(gpu.selection->path);
          row["choice"] = {{"target", gpu.selection->target.name()}, {"kind", kind_name(gpu.selection->target.kind)}};
        } else {
          row["path"] = nullptr;
          row["error"] = gpu.error ? gpu.error->message : "";
        }
        out["bundle"].push_back(row);
      }
    }
    std::cout << out.dump(2) << "\n";
  } else {
    if (report.driver_found) {
      std::printf("%-12s CUDA %s\n", "driver", version_text(report.driver_version).c_str());
    } else {
      std::printf("%-12s not usable: %s\n", "driver",
                  report.driver_error ? report.driver_error->message.c_str() : "unknown");
    }
    for (const GpuInfo& gpu : report.gpus) {
      std::printf("%-12s %s, compute capability %d.%d (%s)\n", ("GPU " + std::to_string(gpu.ordinal)).c_str(),
                  gpu.name.c_str(), gpu.cc.major, gpu.cc.minor, Arch{gpu.cc, ArchVariant::Plain}.sm_name().c_str());
    }
    print_library("NVRTC", report.nvrtc, "needed only for kiln build and source JIT");
    print_library("nvJitLink", report.nvjitlink, "not needed at run time");
    std::printf("%-12s %s: %llu entries, %llu of %llu bytes%s\n", "cache", report.cache.directory.c_str(),
                static_cast<unsigned long long>(report.cache.entries), static_cast<unsigned long long>(report.cache.bytes),
                static_cast<unsigned long long>(report.cache.max_bytes), report.cache.disabled ? " (disabled)" : "");
    if (report.cache.error) std::printf("%-12s %s\n", "", report.cache.error->describe().c_str());
    for (const GpuSelection& gpu : report.selections) {
      if (gpu.selection) {
        std::printf("bundle       GPU %d (%s): %s from %s\n", gpu.ordinal, gpu.arch.c_str(),
                    path_name(gpu.selection->path), gpu.selection->target.name().c_str());
      } else {
        std::printf("bundle       GPU %d (%s): NOT COVERED: %s\n", gpu.ordinal, gpu.arch.c_str(),
                    gpu.error ? gpu.error->message.c_str() : "");
      }
    }
    if (bundle && report.gpus.empty()) std::printf("bundle       no local GPU to check it against\n");
  }
  if (uncovered) {
    Error error = make_error(Component::Runtime, "the bundle does not cover every GPU on this machine",
                             bundle->string(), "rebuild it with these GPUs in the device list (kiln build --devices ...)");
    error.kind = ErrorKind::NoCompatibleImage;
    return error;
  }
  return {};
}

}  // namespace kiln::cli
