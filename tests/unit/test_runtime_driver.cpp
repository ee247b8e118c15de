// The runtime's edges that need no fake: loading the driver where there is none (or only the
// toolkit's stub), the environment variables, the logger, and doctor() without a GPU.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "driver_cuda.hpp"
#include "kiln/doctor.hpp"
#include "kiln/runtime.hpp"
#include "log.hpp"

namespace {

using namespace kiln;

constexpr const char* kNoDriverMessage =
    "the CUDA driver (libcuda.so.1) was not found: install the NVIDIA driver; AOT images need nothing else";

TEST(RuntimeDriver, AMissingDriverSaysToInstallIt) {
  Result<std::shared_ptr<Driver>> driver = load_cuda_driver_from("libkiln-test-no-such-driver.so.1");
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.error().component, Component::Driver);
  EXPECT_EQ(driver.error().message, kNoDriverMessage);
  EXPECT_EQ(driver.error().describe().rfind("kiln: CUDA driver: ", 0), 0u) << driver.error().describe();
}

TEST(RuntimeDriver, TheToolkitsStubIsNamedAsSuch) {
  const char* stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
  if (!std::filesystem::exists(stub)) GTEST_SKIP() << stub << " is not installed";
  Result<std::shared_ptr<Driver>> driver = load_cuda_driver_from(stub);
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.error().component, Component::Driver);
  EXPECT_NE(driver.error().message.find("CUDA_ERROR_STUB_LIBRARY"), std::string::npos) << driver.error().describe();
  EXPECT_NE(driver.error().hint.find("stub"), std::string::npos) << driver.error().describe();
  EXPECT_EQ(driver.error().native_code, 34);
}

TEST(RuntimeDriver, RuntimeCreateWithoutADriverFailsClearly) {
  if (load_cuda_driver().ok()) GTEST_SKIP() << "this machine has a CUDA driver";
  RuntimeOptions options;
  Result<Runtime> runtime = Runtime::create(options);
  ASSERT_FALSE(runtime.ok());
  EXPECT_EQ(runtime.error().component, Component::Driver);
  EXPECT_EQ(runtime.error().message, kNoDriverMessage);
}

TEST(RuntimeDriver, DoctorReportsEachPartOnItsOwn) {
  RuntimeOptions options;
  options.cache_dir = std::filesystem::temp_directory_path() / "kiln-doctor-test-never-created";
  options.cache_policy.max_bytes = 12345;
  const DoctorReport report = doctor(options);
  EXPECT_EQ(report.driver_found, !report.driver_error.has_value());
  EXPECT_EQ(report.driver_found, !report.gpus.empty());
  if (!report.driver_found) {
    EXPECT_EQ(report.driver_error->message, kNoDriverMessage);
  }
  EXPECT_EQ(report.nvrtc.found, !report.nvrtc.error.has_value());
  EXPECT_EQ(report.nvjitlink.found, !report.nvjitlink.error.has_value());
  if (report.nvjitlink.found) {
    EXPECT_EQ(report.nvjitlink.major, 13);
    EXPECT_FALSE(report.nvjitlink.path.empty());
  }
  EXPECT_EQ(report.cache.directory, options.cache_dir);
  EXPECT_EQ(report.cache.max_bytes, 12345u);
  EXPECT_EQ(report.cache.entries, 0u);
  EXPECT_FALSE(std::filesystem::exists(options.cache_dir));  // looking creates nothing
  EXPECT_TRUE(report.selections.empty());
}

TEST(RuntimeDriver, DoctorOfAMissingBundleFails) {
  EXPECT_FALSE(doctor(std::filesystem::path("/nonexistent/kiln-test.kiln"), RuntimeOptions{}).ok());
}

// Sets (or, with nullptr, unsets) environment variables for one test and restores them after.
class ScopedEnvironment {
 public:
  ScopedEnvironment(std::initializer_list<std::pair<const char*, const char*>> values) {
    for (const auto& [name, value] : values) {
      const char* old = ::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      if (value != nullptr) {
        ::setenv(name, value, 1);
      } else {
        ::unsetenv(name);
      }
    }
  }
  ~ScopedEnvironment() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(RuntimeOptionsTest, ReadTheEnvironment) {
  ScopedEnvironment environment({{"KILN_FORCE_JIT", "1"},
                                 {"KILN_DISABLE_JIT", "0"},
                                 {"KILN_CACHE_DISABLE", "true"},
                                 {"KILN_CACHE_DIR", "/tmp/kiln-env-test"},
                                 {"KILN_CACHE_MAX_SIZE", "10M"},
                                 {"KILN_LOG", "INFO"},
                                 {"KILN_BACKGROUND_COMPILE", "0"}});
  const RuntimeOptions options = RuntimeOptions::from_environment();
  EXPECT_TRUE(options.force_jit);
  EXPECT_FALSE(options.background_compile);
  EXPECT_FALSE(options.disable_jit);
  EXPECT_TRUE(options.cache_disabled);
  EXPECT_EQ(options.cache_dir, std::filesystem::path("/tmp/kiln-env-test"));
  EXPECT_EQ(options.cache_policy.max_bytes, 10u << 20);
  EXPECT_EQ(options.log_level, LogLevel::Info);
}

TEST(RuntimeOptionsTest, DefaultsWithoutTheEnvironment) {
  ScopedEnvironment environment(
      {{"KILN_FORCE_JIT", ""}, {"KILN_DISABLE_JIT", nullptr}, {"KILN_CACHE_DISABLE", "0"}, {"KILN_LOG", nullptr},
       {"KILN_BACKGROUND_COMPILE", nullptr}});
  const RuntimeOptions options = RuntimeOptions::from_environment();
  EXPECT_TRUE(options.background_compile);
  EXPECT_FALSE(options.force_jit);
  EXPECT_FALSE(options.disable_jit);
  EXPECT_FALSE(options.cache_disabled);
  EXPECT_EQ(options.log_level, LogLevel::Warn);
  EXPECT_EQ(options.jit_threads, 0u);
}

TEST(RuntimeOptionsTest, UnreadableValuesWarnAndKeepTheDefault) {
  ScopedEnvironment environment(
      {{"KILN_LOG", "loud"}, {"KILN_FORCE_JIT", "maybe"}, {"KILN_BACKGROUND_COMPILE", "sometimes"}});
  ::testing::internal::CaptureStderr();
  const RuntimeOptions options = RuntimeOptions::from_environment();
  const std::string warnings = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(options.log_level, LogLevel::Warn);
  EXPECT_FALSE(options.force_jit);
  EXPECT_TRUE(options.background_compile);
  EXPECT_NE(warnings.find("KILN_BACKGROUND_COMPILE=sometimes is not 1 or 0; taken as 1"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("kiln: warning: KILN_LOG=loud is not one of off, error, warn, info, debug"),
            std::string::npos)
      << warnings;
  EXPECT_NE(warnings.find("KILN_FORCE_JIT=maybe"), std::string::npos) << warnings;
}

TEST(RuntimeLog, LevelsParseAndName) {
  for (LogLevel level : {LogLevel::Off, LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug}) {
    EXPECT_EQ(parse_log_level(log_level_name(level)), level);
  }
  EXPECT_EQ(parse_log_level("Debug"), LogLevel::Debug);
  EXPECT_FALSE(parse_log_level("verbose").has_value());
  EXPECT_FALSE(parse_log_level("").has_value());
}

TEST(RuntimeLog, WritesAtOrBelowItsLevelToStderr) {
  const Logger logger(LogLevel::Info, {});
  EXPECT_TRUE(logger.enabled(LogLevel::Error));
  EXPECT_TRUE(logger.enabled(LogLevel::Info));
  EXPECT_FALSE(logger.enabled(LogLevel::Debug));
  EXPECT_FALSE(logger.enabled(LogLevel::Off));
  ::testing::internal::CaptureStderr();
  logger.write(LogLevel::Info, "add on GPU 0 (sm_90): aot-exact from sm_90, 0.1 ms");
  logger.write(LogLevel::Warn, "something odd");
  logger.write(LogLevel::Debug, "not shown");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "kiln: add on GPU 0 (sm_90): aot-exact from sm_90, 0.1 ms\nkiln: warning: something odd\n");
}

TEST(RuntimeLog, OffSaysNothing) {
  const Logger logger(LogLevel::Off, {});
  EXPECT_FALSE(logger.enabled(LogLevel::Error));
  ::testing::internal::CaptureStderr();
  logger.write(LogLevel::Error, "quiet");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

}  // namespace
