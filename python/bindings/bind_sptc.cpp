#include "common.hpp"

void bind_sptc(nb::module_& m) {
  (void)m;  // filled in by the sptc work
}
