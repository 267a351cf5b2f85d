#include "common.hpp"

void bind_tasd(nb::module_& m) {
  (void)m;  // filled in by the tasd work
}
