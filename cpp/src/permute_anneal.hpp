// Simulated annealing of rows between tiles on the top-k objective (what the best column order
// could keep of every row: the Kt*n/m largest scores among its tile's kept columns). Lloyd
// clustering converges where no row prefers another tile under the current kept sets; most of
// the remaining headroom lies in moves that change the kept sets themselves, which only an
// exact evaluation of the kept sets sees.
#pragma once

#include <cstdint>
#include <vector>

#include "permute_tile.hpp"

namespace hinm::permute {

struct AnnealOptions {
  int64_t moves_per_row = 0;  // proposed row swaps, per row of the matrix, over the whole stage
  double temperature = 0;     // initial temperature, relative to the mean top-k value of a row
  int rounds = 64;            // rounds of tile pairings (the temperature falls linearly to 0)
  uint64_t seed = 0;
};

// Anneals `slots` (slot -> row, [R]) in place. Every round pairs the tiles at random (seeded) and
// each pair of tiles anneals its own rows independently (in parallel; the result does not depend
// on the thread count). The best state at a round's end is kept (never below the start). Returns
// the number of accepted swaps (0: slots unchanged); `tracked` (optional) gets the objective of
// the result as the stage's incremental bookkeeping has it (tests compare it with a recount).
int64_t anneal_rows(const Problem& p, std::vector<int64_t>& slots, const AnnealOptions& opt, const Deadline& dl,
                    double* tracked = nullptr);

// The top-k objective of a row partition (exact, from scratch): used by the stage and by tests.
double topk_objective_of(const Problem& p, const std::vector<int64_t>& slots);

}  // namespace hinm::permute
