// kiln: the command line, a thin layer over the kiln library.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "commands.hpp"

namespace {

int report(const kiln::Result<void>& result) {
  if (result) return 0;
  std::cerr << result.error().describe();
  if (result.error().describe().back() != '\n') std::cerr << '\n';
  return kiln::exit_code(result.error());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln: ahead-of-time GPU kernel bundles with a cached JIT fallback"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("kiln ") + KILN_VERSION);

  bool json = false;
  auto* devices = app.add_subcommand("devices", "List the devices kiln knows and their architectures");
  devices->add_flag("--json", json, "Machine-readable output");

  kiln::cli::BuildArgs build_args;
  auto* build = app.add_subcommand("build", "Compile CUDA sources into a bundle");
  build->add_option("sources", build_args.sources, "CUDA C++ source files")->required()->check(CLI::ExistingFile);
  build->add_option("-o,--output", build_args.output, "The bundle to write")->required();
  build->add_option("--devices", build_args.devices, "Comma-separated devices or architectures (default: $KILN_AOT_DEVLIST)");
  build->add_option("--ptx", build_args.ptx, "PTX to keep for JIT: an architecture, 'newest' or 'none' (default: the oldest listed)");
  build->add_flag("--embed-source", build_args.embed_source, "Keep the source for NVRTC at run time");
  build->add_flag("--split-kernels", build_args.split_kernels,
                  "A cubin per kernel: a program loads only the kernels it uses (needs nvJitLink)");
  build->add_option("-I,--include-dir", build_args.include_dirs, "Add an include directory");
  build->add_option("-D,--define", build_args.defines, "Define a macro: NAME or NAME=VALUE");
  build->add_option("-j,--jobs", build_args.jobs,
                    "Parallel compile jobs, as helper processes when the compile cache is on (default: all cores)");
  build->add_option("--compress", build_args.compress,
                    "Image compression: zstd (default, smallest), lz4 (decodes several times faster at start-up, "
                    "bundle about twice as large) or none")
      ->check(CLI::IsMember({"zstd", "lz4", "none"}));
  build->add_option("--depfile", build_args.depfile, "Write a Makefile-style dependency file (for build systems)");
  build->add_flag("--no-cache", build_args.no_cache, "Do not use the compile cache");
  build->add_flag("-q,--quiet", build_args.quiet, "No progress output");
  build->add_option("--fill-cache-units", build_args.fill_cache_units)->group("");  // helper processes only

  std::filesystem::path file;
  bool list_kernels = false;
  auto* inspect = app.add_subcommand("inspect", "Show the images in a bundle");
  inspect->add_option("file", file, "A .kiln bundle")->required();
  inspect->add_flag("--json", json, "Machine-readable output");
  inspect->add_flag("--kernels", list_kernels, "List every kernel of every image");

  std::string device;
  auto* select = app.add_subcommand("select", "Show which image a device would get, and why");
  select->add_option("file", file, "A .kiln bundle")->required();
  select->add_option("--device", device, "A device name (l4) or architecture (sm_89)")->required();
  select->add_flag("--json", json, "Machine-readable output");

  std::optional<std::filesystem::path> doctor_bundle;
  auto* doctor = app.add_subcommand("doctor", "Check the driver, GPUs, NVRTC, nvJitLink and the cache");
  doctor->add_option("bundle", doctor_bundle, "Also check whether this bundle covers each local GPU");
  doctor->add_flag("--json", json, "Machine-readable output");

  std::string cache_action;
  std::string max_size;
  auto* cache = app.add_subcommand("cache", "Inspect or trim the JIT cache");
  cache->add_option("action", cache_action, "stats | list | prune | clear")
      ->required()
      ->check(CLI::IsMember({"stats", "list", "prune", "clear"}));
  cache->add_option("--max-size", max_size, "With prune: the size to trim to (e.g. 500M); default KILN_CACHE_MAX_SIZE");
  cache->add_flag("--json", json, "Machine-readable output");

  auto* prewarm = app.add_subcommand("prewarm", "Compile into the cache everything the local GPUs need from a bundle");
  prewarm->add_option("file", file, "A .kiln bundle")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& success) {
    return app.exit(success);
  } catch (const CLI::ParseError& error) {
    app.exit(error);
    return 2;  // every command-line mistake is a usage error
  }

  if (devices->parsed()) return report(kiln::cli::run_devices(json));
  if (build->parsed()) return report(kiln::cli::run_build(build_args));
  if (inspect->parsed()) return report(kiln::cli::run_inspect(file, json, list_kernels));
  if (select->parsed()) return report(kiln::cli::run_select(file, device, json));
  if (doctor->parsed()) return report(kiln::cli::run_doctor(doctor_bundle, json));
  if (cache->parsed()) return report(kiln::cli::run_cache(cache_action, max_size, json));
  if (prewarm->parsed()) return report(kiln::cli::run_prewarm(file));
  return 2;
}
