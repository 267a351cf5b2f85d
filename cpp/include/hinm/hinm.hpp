// Umbrella header: the whole public C++ API of hinm.
#pragma once

#include "hinm/build_info.hpp"
#include "hinm/cuda_layout.hpp"
#include "hinm/cuda_spmm.hpp"
#include "hinm/dtype.hpp"
#include "hinm/hinm_format.hpp"
#include "hinm/hinm_mask.hpp"
#include "hinm/mask.hpp"
#include "hinm/matrix.hpp"
#include "hinm/nm_format.hpp"
#include "hinm/parallel.hpp"
#include "hinm/pattern.hpp"
#include "hinm/spmm.hpp"
#include "hinm/sptc.hpp"
#include "hinm/sptc_index.hpp"
#include "hinm/tasd.hpp"
