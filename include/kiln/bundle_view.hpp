// A bundle embedded in a library or executable by kiln_add_kernels(): static bytes that
// the runtime loads without copying. Generated headers <kiln/bundles/NAME.hpp> return one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace kiln {

class BundleView {
 public:
  constexpr BundleView(const std::uint8_t* data, std::size_t size) noexcept : data_(data), size_(size) {}
  [[nodiscard]] constexpr const std::uint8_t* data() const noexcept { return data_; }
  [[nodiscard]] constexpr std::size_t size() const noexcept { return size_; }
  // What Runtime::load and Bundle::open take.
  constexpr operator std::span<const std::uint8_t>() const noexcept { return {data_, size_}; }  // NOLINT

 private:
  const std::uint8_t* data_;
  std::size_t size_;
};

}  // namespace kiln
