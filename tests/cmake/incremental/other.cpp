#include <kiln/bundles/gamma.hpp>

#include "check.hpp"

int main() { return check_bundle(kiln::bundles::gamma(), "gamma", "gamma_negate"); }
