#include <kiln/bundles/alpha.hpp>
#include <kiln/bundles/beta.hpp>

#include "check.hpp"

int main() {
  return check_bundle(kiln::bundles::alpha(), "alpha", "alpha_fill") +
         check_bundle(kiln::bundles::beta(), "beta", "beta_scale_all");
}
