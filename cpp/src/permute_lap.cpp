#include "hinm/permute_lap.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace hinm {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Crouse's shortest augmenting path from row `i` (scipy's rectangular_lsap). nr <= nc.
struct Lsap {
  int64_t nr, nc;
  const std::vector<double>& c;
  std::vector<double> u, v, spc;
  std::vector<int64_t> path, col4row, row4col, remaining;
  std::vector<char> sr, sc;

  Lsap(const std::vector<double>& cost, int64_t r, int64_t cc)
      : nr(r), nc(cc), c(cost), u(r, 0), v(cc, 0), spc(cc), path(cc, -1), col4row(r, -1), row4col(cc, -1),
        remaining(cc), sr(r), sc(cc) {}

  int64_t augment(int64_t i, double& min_val) {
    min_val = 0;
    int64_t num_remaining = nc;
    // Reverse order so that ties favour the lower column index, as scipy does.
    for (int64_t it = 0; it < nc; ++it) remaining[it] = nc - it - 1;
    std::fill(sr.begin(), sr.end(), 0);
    std::fill(sc.begin(), sc.end(), 0);
    std::fill(spc.begin(), spc.end(), kInf);
    int64_t sink = -1;
    while (sink == -1) {
      int64_t index = -1;
      double lowest = kInf;
      sr[i] = 1;
      const double* ci = c.data() + i * nc;
      const double ui = u[i];
      // Relaxation, branch-free, with the minimum in four independent lanes (min is exact in
      // any order); then the pick scipy's sequential scan makes: among the columns at the
      // minimum, the last free one in scan order, else the first one.
      double lo0 = kInf, lo1 = kInf, lo2 = kInf, lo3 = kInf;
      const int64_t* rem = remaining.data();
      double* sp = spc.data();
      int64_t* pa = path.data();
      const double* vv = v.data();
      auto relax = [&](int64_t it) {
        const int64_t j = rem[it];
        const double r = min_val + ci[j] - ui - vv[j];
        const double s = sp[j];
        const int64_t closer = -int64_t(r < s);  // all ones when closer: a mask, not a branch
        pa[j] = (pa[j] & ~closer) | (i & closer);
        const double d = std::min(s, r);  // r < s ? r : s
        sp[j] = d;
        return d;
      };
      int64_t it = 0;
      for (; it + 4 <= num_remaining; it += 4) {
        lo0 = std::min(lo0, relax(it));
        lo1 = std::min(lo1, relax(it + 1));
        lo2 = std::min(lo2, relax(it + 2));
        lo3 = std::min(lo3, relax(it + 3));
      }
      for (; it < num_remaining; ++it) lo0 = std::min(lo0, relax(it));
      double lo[4] = {lo0, lo1, lo2, lo3};
      lowest = std::min(std::min(lo[0], lo[1]), std::min(lo[2], lo[3]));
      int64_t first = -1;
      for (int64_t it = 0; it < num_remaining; ++it) {
        const int64_t j = rem[it];
        if (sp[j] == lowest) {
          if (first < 0) first = it;
          if (row4col[j] == -1) index = it;
        }
      }
      if (index < 0) index = first;
      min_val = lowest;
      if (min_val == kInf) return -1;
      const int64_t j = remaining[index];
      if (row4col[j] == -1) sink = j; else i = row4col[j];
      sc[j] = 1;
      remaining[index] = remaining[--num_remaining];
    }
    return sink;
  }

  // Jonker-Volgenant's augmenting row reduction (square, finite costs; v from a column
  // reduction): two passes over the free rows, each taking its cheapest column and lowering
  // that column's dual to the row's second-best reduced cost (the row then ties there), so the
  // column's previous row is bumped and goes on. Every matched row stays at a minimum of its
  // reduced costs, so u = c - v on the match is feasible and tight for the augmenting paths.
  void augmenting_row_reduction() {
    // The reductions of one pass stop after 8 rows' worth of bumping (JV's own bound is
    // quadratic): long chains of bumped rows are cheaper for the augmenting paths.
    constexpr int64_t kCap = 8;
    std::vector<int64_t> free_rows(nr);
    for (int64_t i = 0; i < nr; ++i) free_rows[i] = i;
    int64_t n_free = nr;
    for (int pass = 0; pass < 2 && n_free > 0; ++pass) {
      int64_t current = 0, new_free = 0, count = 0;
      while (current < n_free) {
        ++count;
        const int64_t i = free_rows[current++];
        const double* ci = c.data() + i * nc;
        int64_t j1 = 0, j2 = -1;
        double v1 = ci[0] - v[0], v2 = kInf;
        for (int64_t j = 1; j < nc; ++j) {
          const double x = ci[j] - v[j];
          if (x < v2) {
            if (x >= v1) { v2 = x; j2 = j; } else { v2 = v1; v1 = x; j2 = j1; j1 = j; }
          }
        }
        int64_t i0 = row4col[j1];
        const double lowered = v[j1] - (v2 - v1);
        const bool lowers = lowered < v[j1];
        if (count < current * nr && count < kCap * nr) {
          if (lowers) v[j1] = lowered;
          else if (i0 >= 0) { j1 = j2; i0 = row4col[j2]; }
          if (i0 >= 0) {
            col4row[i0] = -1;
            if (lowers) free_rows[--current] = i0; else free_rows[new_free++] = i0;
          }
        } else if (i0 >= 0) {
          col4row[i0] = -1;
          free_rows[new_free++] = i0;
        }
        col4row[i] = j1;
        row4col[j1] = i;
      }
      n_free = new_free;
    }
    for (int64_t i = 0; i < nr; ++i) {
      if (col4row[i] >= 0) { u[i] = c[i * nc + col4row[i]] - v[col4row[i]]; continue; }
      double lo = kInf;
      for (int64_t j = 0; j < nc; ++j) lo = std::min(lo, c[i * nc + j] - v[j]);
      u[i] = lo;
    }
  }

  void solve() {
    for (int64_t cur = 0; cur < nr; ++cur) {
      if (col4row[cur] >= 0) continue;  // matched by the row reduction
      double min_val;
      const int64_t sink = augment(cur, min_val);
      if (sink < 0) throw std::runtime_error("linear_assignment: cost matrix is infeasible");
      u[cur] += min_val;
      for (int64_t i = 0; i < nr; ++i)
        if (sr[i] && i != cur) u[i] += min_val - spc[col4row[i]];
      for (int64_t j = 0; j < nc; ++j)
        if (sc[j]) v[j] -= min_val - spc[j];
      int64_t j = sink;
      while (true) {
        const int64_t i = path[j];
        row4col[j] = i;
        std::swap(col4row[i], j);
        if (i == cur) break;
      }
    }
  }
};

}  // namespace

std::vector<int64_t> linear_assignment(const double* cost, int64_t rows, int64_t cols, bool maximize, bool reduced_start) {
  if (rows < 0 || cols < 0) throw std::invalid_argument("linear_assignment: negative shape");
  std::vector<int64_t> out(rows, -1);
  if (rows == 0 || cols == 0) return out;
  const bool transpose = rows > cols;
  const int64_t nr = transpose ? cols : rows, nc = transpose ? rows : cols;
  std::vector<double> c(nr * nc);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const double x = cost[i * cols + j];
      if (std::isnan(x) || x == (maximize ? kInf : -kInf))
        throw std::invalid_argument("linear_assignment: cost matrix contains NaN or " +
                                    std::string(maximize ? "+inf" : "-inf") + " at (" + std::to_string(i) +
                                    ", " + std::to_string(j) + ")");
      c[transpose ? j * nc + i : i * nc + j] = maximize ? -x : x;
    }
  // Shift so every entry is >= 0 (keeps the path costs well conditioned for large values).
  double lo = kInf;
  for (double x : c) if (x < lo) lo = x;
  if (std::isfinite(lo)) for (double& x : c) x -= lo;
  Lsap lsap(c, nr, nc);
  if (reduced_start) {
    // Column reduction, then Jonker-Volgenant's augmenting row reduction (square problems with
    // finite costs) or a row reduction: feasible starting duals, and for the first most of the
    // rows already matched. When every row prefers the same few columns (the permutation
    // search's cost matrices), the paths from zero duals run through most rows; from here few
    // rows are left and their paths stay short. Column duals only for square problems: with
    // columns left free, every free column must start at the same dual.
    for (int64_t j = 0; j < nc && nr == nc; ++j) {
      double lo = kInf;
      for (int64_t i = 0; i < nr; ++i) lo = std::min(lo, c[i * nc + j]);
      lsap.v[j] = std::isfinite(lo) ? lo : 0;
    }
    bool finite = nr == nc && nr > 1;
    for (double x : c) finite = finite && std::isfinite(x);
    if (finite) {
      lsap.augmenting_row_reduction();
    } else {
      for (int64_t i = 0; i < nr; ++i) {
        double lo = kInf;
        for (int64_t j = 0; j < nc; ++j) lo = std::min(lo, c[i * nc + j] - lsap.v[j]);
        lsap.u[i] = std::isfinite(lo) ? lo : 0;
      }
    }
  }
  lsap.solve();
  if (!transpose) {
    for (int64_t i = 0; i < nr; ++i) out[i] = lsap.col4row[i];
  } else {
    for (int64_t i = 0; i < nr; ++i) out[lsap.col4row[i]] = i;
  }
  return out;
}

std::vector<int32_t> capacitated_assignment(const double* cost, int64_t rows, int64_t bins,
                                            const std::vector<int64_t>& capacity) {
  if (int64_t(capacity.size()) != bins) throw std::invalid_argument("capacitated_assignment: capacity size != bins");
  int64_t total = 0;
  for (int64_t c : capacity) {
    if (c < 0) throw std::invalid_argument("capacitated_assignment: negative capacity");
    total += c;
  }
  if (total != rows)
    throw std::invalid_argument("capacitated_assignment: capacities sum to " + std::to_string(total) + ", rows = " +
                                std::to_string(rows));
  std::vector<int32_t> bin_of(rows, -1);
  std::vector<std::vector<int64_t>> members(bins);
  // w[a*bins+b] = cheapest cost of moving one member of bin a to bin b, through row arg[a*bins+b].
  std::vector<double> w(bins * bins, kInf), pot(bins, 0), dist(bins);
  std::vector<int64_t> arg(bins * bins, -1), pred(bins);
  std::vector<int64_t> open(bins);
  // w / arg of bin a: the first member (in member order) at the minimum, kept up to date as
  // members come and go: an arrival can only lower a minimum (strictly, so an earlier member
  // keeps a tie); a departure rescans the entries it held.
  auto rescan = [&](int64_t a, int64_t b) {
    double best = kInf;
    int64_t at = -1;
    for (int64_t r : members[a]) {
      const double d = cost[r * bins + b] - cost[r * bins + a];
      if (d < best) { best = d; at = r; }
    }
    w[a * bins + b] = best;
    arg[a * bins + b] = at;
  };
  auto arrive = [&](int64_t a, int64_t r) {
    members[a].push_back(r);
    const double* cr = cost + r * bins;
    for (int64_t b = 0; b < bins; ++b) {
      if (b == a) continue;
      const double d = cr[b] - cr[a];
      if (d < w[a * bins + b]) { w[a * bins + b] = d; arg[a * bins + b] = r; }
    }
  };
  auto depart = [&](int64_t a, int64_t r) {
    auto& ma = members[a];
    ma.erase(std::find(ma.begin(), ma.end(), r));
    for (int64_t b = 0; b < bins; ++b)
      if (arg[a * bins + b] == r) rescan(a, b);
  };
  for (int64_t i0 = 0; i0 < rows; ++i0) {
    const double* ci = cost + i0 * bins;
    for (int64_t b = 0; b < bins; ++b) {
      if (std::isnan(ci[b])) throw std::invalid_argument("capacitated_assignment: NaN cost");
      dist[b] = ci[b] - pot[b];  // reduced distance from the new item
      pred[b] = -1;
    }
    // Dense Dijkstra over bins on reduced costs (non-negative between bins), on the list of
    // bins not yet done (pops the lowest bin among the closest, as a scan over all bins would).
    for (int64_t b = 0; b < bins; ++b) open[b] = b;
    for (int64_t left = bins; left > 0;) {
      int64_t at = 0;
      for (int64_t k = 1; k < left; ++k) {
        const int64_t b = open[k], a = open[at];
        if (dist[b] < dist[a] || (dist[b] == dist[a] && b < a)) at = k;
      }
      const int64_t a = open[at];
      open[at] = open[--left];
      if (members[a].empty()) continue;
      const double base = dist[a], pa = pot[a];
      const double* wa = w.data() + a * bins;
      for (int64_t k = 0; k < left; ++k) {
        const int64_t b = open[k];
        if (arg[a * bins + b] < 0) continue;
        const double nd = base + wa[b] + pa - pot[b];
        if (nd < dist[b]) { dist[b] = nd; pred[b] = a; }
      }
    }
    int64_t sink = -1;
    double best = kInf;
    for (int64_t b = 0; b < bins; ++b) {
      const double d = dist[b] + pot[b];
      if (int64_t(members[b].size()) < capacity[b] && (sink < 0 || d < best)) { best = d; sink = b; }
    }
    for (int64_t b = 0; b < bins; ++b) pot[b] += dist[b];
    // Walk the path back: each bin on it passes one member to the next bin.
    int64_t b = sink;
    while (true) {
      const int64_t a = pred[b];
      if (a < 0) { arrive(b, i0); bin_of[i0] = int32_t(b); break; }
      const int64_t r = arg[a * bins + b];
      depart(a, r);
      arrive(b, r);
      bin_of[r] = int32_t(b);
      b = a;
    }
  }
  return bin_of;
}

}  // namespace hinm
