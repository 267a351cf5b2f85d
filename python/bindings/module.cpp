// hinm._C: the private, thin extension module. Argument checks and conversions only; the
// algorithms live in the C++ core (cpp/, cuda/) and the user API in the Python package.
#include "common.hpp"

NB_MODULE(_C, m) {
  m.doc() = "hinm C++ core (private; use the hinm package)";
  bind_core(m);
  bind_nm(m);
  bind_sptc(m);
  bind_hinm(m);
  bind_spmm(m);
  bind_permute(m);
  bind_tasd(m);
  bind_cuda(m);
}
