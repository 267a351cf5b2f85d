#include "common.hpp"

void bind_hinm(nb::module_& m) {
  (void)m;  // filled in by the hinm work
}
