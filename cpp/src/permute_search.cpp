// The permutation search driver: baselines, output-channel permutation (OCP), per-tile
// input-channel permutation (ICP) and the rows -> tiles refinement of the gyro method.
#include "hinm/permute_search.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "hinm/parallel.hpp"
#include "hinm/permute_kmeans.hpp"
#include "hinm/permute_lap.hpp"
#include "hinm/permute_rng.hpp"
#include "permute_anneal.hpp"
#include "permute_tile.hpp"

namespace hinm {

using permute::Deadline;
using permute::Problem;

PermuteMethod parse_permute_method(const std::string& name) {
  if (name == "identity") return PermuteMethod::identity;
  if (name == "random") return PermuteMethod::random;
  if (name == "channel_swap") return PermuteMethod::channel_swap;
  if (name == "gyro") return PermuteMethod::gyro;
  throw std::invalid_argument("method: expected 'gyro', 'channel_swap', 'random' or 'identity', got '" + name + "'");
}

namespace {

// Scores as contiguous float64 (NaN / inf rejected).
std::vector<double> scores_f64(const Matrix& scores) {
  if (scores.dtype != DType::f32 && scores.dtype != DType::f64)
    throw std::invalid_argument(std::string("scores: expected float32 or float64, got ") + dtype_name(scores.dtype));
  require(scores, "scores", scores.dtype);
  std::vector<double> s(scores.rows * scores.cols);
  for (int64_t r = 0; r < scores.rows; ++r)
    for (int64_t c = 0; c < scores.cols; ++c) {
      const double x = scores.dtype == DType::f32 ? double(scores.row<const float>(r)[c])
                                                  : scores.row<const double>(r)[c];
      if (!std::isfinite(x))
        throw std::invalid_argument("scores contains NaN or inf (first at row " + std::to_string(r) + ", column " +
                                    std::to_string(c) + ")");
      s[r * scores.cols + c] = x;
    }
  return s;
}

Problem make_problem(const std::vector<double>& s, const Matrix& scores, int64_t v, int64_t kept, NMPattern pattern) {
  pattern.validate();
  if (scores.rows < 1 || scores.cols < 1) throw std::invalid_argument("scores: empty matrix");
  if (v < 1) throw std::invalid_argument("v: rows per tile must be >= 1, got " + std::to_string(v));
  if (kept < pattern.m || kept > scores.cols || kept % pattern.m != 0)
    throw std::invalid_argument("kept: need m <= Kt <= K and Kt % m == 0, got Kt=" + std::to_string(kept) + ", K=" +
                                std::to_string(scores.cols) + ", m=" + std::to_string(pattern.m));
  Problem p;
  p.s = s.data();
  p.R = scores.rows;
  p.K = scores.cols;
  p.v = std::min<int64_t>(v, scores.rows);
  p.Kt = kept;
  p.n = pattern.n;
  p.m = pattern.m;
  return p;
}

// The search state: slot -> row, and per tile its kept columns in order and its retained value.
struct State {
  std::vector<int64_t> slots;
  std::vector<std::vector<int32_t>> order;
  std::vector<double> value;

  double total() const {
    double s = 0;
    for (double x : value) s += x;
    return s;
  }
};

const int64_t* tile_ptr(const Problem& p, const State& st, int64_t t) { return st.slots.data() + t * p.v; }

// Kept columns of tile t after a membership change: columns still kept keep their positions,
// entering columns (ascending) take the positions of the leaving ones (ascending).
std::vector<int32_t> adapt_order_rows(const Problem& p, const int64_t* rows, int64_t nr, const std::vector<int32_t>& old) {
  std::vector<int32_t> kept = permute::kept_columns(p, rows, nr);
  if (old.empty()) return kept;
  std::vector<char> is_kept(p.K, 0), was_kept(p.K, 0);
  for (int32_t c : kept) is_kept[c] = 1;
  for (int32_t c : old) was_kept[c] = 1;
  std::vector<int32_t> entering;
  for (int32_t c : kept) if (!was_kept[c]) entering.push_back(c);
  std::vector<int32_t> out(old);
  size_t e = 0;
  for (auto& c : out) if (!is_kept[c]) c = entering[e++];
  return out;
}

std::vector<int32_t> adapt_order(const Problem& p, const State& st, int64_t t, const std::vector<int32_t>& old) {
  return adapt_order_rows(p, tile_ptr(p, st, t), p.tile_rows(t), old);
}

void reset_tile(const Problem& p, State& st, int64_t t, bool keep_order) {
  st.order[t] = adapt_order(p, st, t, keep_order ? st.order[t] : std::vector<int32_t>{});
  st.value[t] = permute::tile_retained(p, tile_ptr(p, st, t), p.tile_rows(t), st.order[t].data());
}

State initial_state(const Problem& p, std::vector<int64_t> slots) {
  State st;
  st.slots = std::move(slots);
  st.order.resize(p.tiles());
  st.value.resize(p.tiles());
  parallel_for(p.tiles(), 1, [&](int64_t a, int64_t b) { for (int64_t t = a; t < b; ++t) reset_tile(p, st, t, false); });
  return st;
}

std::vector<int64_t> identity(int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

struct Search {
  Search(const Problem& problem, const PermuteOptions& options) : p(problem), opt(options) {}

  const Problem& p;
  const PermuteOptions& opt;
  Deadline dl;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::vector<PermuteHistoryEntry> history;
  // The best state seen: what the search returns if it stops now. OCP on the vector objective may
  // lower the HiNM retained saliency for a while; history reports the best, so it never drops.
  State best;
  bool have_best = false;
  double vector_cost = 0;  // vector-pruning cost of the OCP state

  void record(const std::string& stage, int64_t step, const State& st) {
    if (!have_best || st.total() > best.total()) { best = st; have_best = true; }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    history.push_back({stage, best.total(), secs});
    if (opt.progress) opt.progress(stage, step, best.total());
  }
  double eps(double total) const { return 1e-12 * std::max(1.0, std::fabs(total)); }

  // Vector-pruning cost of a tile whose column sums are a + b: the sum of the K - Kt smallest,
  // what the top-Kt columns leave out. The OCP asks it for T^2 similar vectors per step (one
  // tile's remaining rows plus each cluster), so a band of values around the last boundary
  // usually holds the boundary: the columns under the band count whole (one vectorised pass)
  // and only the band is selected. Exact up to the order of the additions; deterministic for a
  // sequence of calls.
  class PrunedCost {
   public:
    PrunedCost(int64_t K, int64_t Kt) : K_(K), drop_(K - Kt), sum_(K), band_(K) {}

    double operator()(const double* a, const double* b) {
      if (drop_ <= 0) return 0.0;
      if (!have_band_) return first(a, b);
      int64_t n_below = 0, n_band = 0;
      const double below = permute::split_sum(a, b, sum_.data(), K_, lo_, hi_, band_.data(), n_band, n_below);
      const int64_t need = drop_ - n_below;
      double pruned, boundary;
      if (need >= 0 && need <= n_band) {  // the usual case: the boundary lies in the band
        pruned = below + smallest(band_.data(), n_band, need, boundary);
      } else if (need > n_band) {  // above the band: all of it, and the least of what lies over
        pruned = below;
        for (int64_t k = 0; k < n_band; ++k) pruned += band_[k];
        int64_t n = 0;
        for (int64_t c = 0; c < K_; ++c) { band_[n] = sum_[c]; n += sum_[c] > hi_; }
        pruned += smallest(band_.data(), n, need - n_band, boundary);
      } else {  // under the band: the least drop_ of what lies there
        int64_t n = 0;
        for (int64_t c = 0; c < K_; ++c) { band_[n] = sum_[c]; n += sum_[c] < lo_; }
        pruned = smallest(band_.data(), n, drop_, boundary);
      }
      const double half = 0.5 * (hi_ - lo_);  // the band follows the boundary, keeping its width
      lo_ = boundary - half;
      hi_ = boundary + half;
      return pruned;
    }

   private:
    int64_t K_, drop_;
    std::vector<double> sum_, band_;
    bool have_band_ = false;
    double lo_ = 0, hi_ = 0;  // band [lo_, hi_]: columns under lo_ are dropped, over hi_ kept

    // Sum of the k smallest of x[0..n) (k <= n); boundary = the k-th smallest (or the least left).
    static double smallest(double* x, int64_t n, int64_t k, double& boundary) {
      if (k < n) std::nth_element(x, x + k, x + n);
      double s = 0;
      for (int64_t i = 0; i < k; ++i) s += x[i];
      boundary = k > 0 ? *std::max_element(x, x + k) : (n > 0 ? *std::min_element(x, x + n) : 0.0);
      return s;
    }

    // The first vector: a full selection; the band spans its values ranked drop -+ w.
    double first(const double* a, const double* b) {
      for (int64_t c = 0; c < K_; ++c) band_[c] = a[c] + b[c];
      double boundary;
      const double pruned = smallest(band_.data(), K_, drop_, boundary);
      const int64_t w = std::max<int64_t>(4, K_ / 48);
      const int64_t down = std::max<int64_t>(0, drop_ - 1 - w), up = std::min<int64_t>(K_ - 1, drop_ + w);
      std::nth_element(band_.begin(), band_.begin() + down, band_.begin() + drop_);
      lo_ = band_[down];
      std::nth_element(band_.begin() + drop_, band_.begin() + up, band_.end());
      hi_ = band_[up];
      have_band_ = true;
      return pruned;
    }
  };

  // One OCP step with ne sampled rows per tile: clusters of sampled rows are reassigned to tiles
  // by a T x T assignment at minimum vector-pruning cost; accepted if the retained saliency grows.
  bool ocp_step(State& st, int ne, uint64_t step) {
    const int64_t T = p.tiles();
    // Sampled slot positions: ne distinct slots per tile.
    std::vector<int64_t> sample(T * ne);
    SplitMix64 rng = SplitMix64::stream(opt.seed, 0x0c9, step);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int64_t> local = identity(p.tile_rows(t));
      for (int k = 0; k < ne; ++k) std::swap(local[k], local[k + rng.below(int64_t(local.size()) - k)]);
      std::sort(local.begin(), local.begin() + ne);
      for (int k = 0; k < ne; ++k) sample[t * ne + k] = t * p.v + local[k];
    }
    // Clusters of ne sampled rows (cluster j = tile j's own samples when ne == 1).
    std::vector<std::vector<int64_t>> cluster(T);
    if (ne > 1) {
      std::vector<double> pts(T * ne * p.K);
      for (int64_t i = 0; i < T * ne; ++i)
        std::copy(p.row(st.slots[sample[i]]), p.row(st.slots[sample[i]]) + p.K, pts.begin() + i * p.K);
      const auto label = balanced_kmeans(pts.data(), T, ne, p.K, opt.seed ^ (step * 0x9E3779B97F4A7C15ull));
      for (int64_t i = 0; i < T * ne; ++i) cluster[label[i]].push_back(st.slots[sample[i]]);
    } else {
      for (int64_t t = 0; t < T; ++t) cluster[t].push_back(st.slots[sample[t]]);
    }
    std::vector<double> rem(T * p.K, 0.0), ext(T * p.K, 0.0), cost(T * T);
    parallel_for(T, 1, [&](int64_t a, int64_t b) {
      for (int64_t t = a; t < b; ++t) {
        double* rt = rem.data() + t * p.K;
        double* et = ext.data() + t * p.K;
        const int64_t* rows = tile_ptr(p, st, t);
        std::vector<char> sampled(p.tile_rows(t), 0);
        for (int k = 0; k < ne; ++k) sampled[sample[t * ne + k] - t * p.v] = 1;
        for (int64_t i = 0; i < p.tile_rows(t); ++i)
          if (!sampled[i]) for (int64_t c = 0; c < p.K; ++c) rt[c] += p.row(rows[i])[c];
        for (int64_t r : cluster[t]) for (int64_t c = 0; c < p.K; ++c) et[c] += p.row(r)[c];
      }
    });
    parallel_for(T, 1, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) {
        PrunedCost pruned(p.K, p.Kt);  // per cost row: the same results for any thread count
        for (int64_t j = 0; j < T; ++j) cost[i * T + j] = pruned(rem.data() + i * p.K, ext.data() + j * p.K);
      }
    });
    const auto asg = linear_assignment(cost.data(), T, T, false, true);
    if (opt.ocp_vector_objective) {
      // The assigned costs add up to the vector-pruning cost of the new state: the official test.
      double after = 0;
      for (int64_t t = 0; t < T; ++t) after += cost[t * T + asg[t]];
      if (!(after < vector_cost - eps(vector_cost))) return false;
      for (int64_t t = 0; t < T; ++t)
        for (int k = 0; k < ne; ++k) st.slots[sample[t * ne + k]] = cluster[asg[t]][k];
      vector_cost = after;
      return true;  // tile values are refreshed when the stage ends
    }
    State next = st;
    std::vector<char> changed(T, 0);
    for (int64_t t = 0; t < T; ++t) {
      const auto& rows = cluster[asg[t]];
      for (int k = 0; k < ne; ++k) {
        if (next.slots[sample[t * ne + k]] != rows[k]) changed[t] = 1;
        next.slots[sample[t * ne + k]] = rows[k];
      }
    }
    parallel_for(T, 1, [&](int64_t a, int64_t b) {
      for (int64_t t = a; t < b; ++t) if (changed[t]) reset_tile(p, next, t, false);
    });
    const double before = st.total(), after = next.total();
    if (!(after > before + eps(before))) return false;
    st = std::move(next);
    return true;
  }

  // Saliency removed by vector pruning alone (the official OCP objective).
  double vector_pruned(const State& st) const {
    std::vector<double> v(p.tiles());
    parallel_for(p.tiles(), 1, [&](int64_t a, int64_t b) {
      std::vector<double> sum(p.K);
      for (int64_t t = a; t < b; ++t) {
        std::fill(sum.begin(), sum.end(), 0.0);
        const int64_t* rows = tile_ptr(p, st, t);
        for (int64_t i = 0; i < p.tile_rows(t); ++i)
          for (int64_t c = 0; c < p.K; ++c) sum[c] += p.row(rows[i])[c];
        const std::vector<double> zero(p.K, 0.0);
        v[t] = PrunedCost(p.K, p.Kt)(sum.data(), zero.data());
      }
    });
    double total = 0;
    for (double x : v) total += x;
    return total;
  }

  void ocp(State& st) {
    const int64_t T = p.tiles();
    if (T < 2) return;
    int64_t min_rows = p.v;
    for (int64_t t = 0; t < T; ++t) min_rows = std::min(min_rows, p.tile_rows(t));
    uint64_t step = 0;
    vector_cost = vector_pruned(st);
    for (int ne_req : opt.schedule) {
      const int ne = int(std::min<int64_t>(std::max(ne_req, 1), min_rows));
      int accepted = 0;
      for (int fails = 0; fails < opt.ocp_fail_limit && !dl.expired(); ++step) {
        if (ocp_step(st, ne, step)) ++accepted; else ++fails;
      }
      if (accepted && opt.ocp_vector_objective)
        parallel_for(T, 1, [&](int64_t a, int64_t b) { for (int64_t t = a; t < b; ++t) reset_tile(p, st, t, false); });
      record("ocp", int64_t(step), st);
    }
  }

  // Slots after moving every row r to tile bin[r]: staying rows keep their slots, incoming rows
  // (ascending) take the leaving rows' slots (ascending); changed[t] marks tiles whose rows changed.
  std::vector<int64_t> apply_bins(const std::vector<int64_t>& slots, const std::vector<int32_t>& bin,
                                  std::vector<char>& changed) const {
    const int64_t T = p.tiles();
    std::vector<std::vector<int64_t>> incoming(T);
    std::vector<int64_t> tile_of(p.R);
    for (int64_t s = 0; s < p.R; ++s) tile_of[slots[s]] = s / p.v;
    for (int64_t r = 0; r < p.R; ++r) if (bin[r] != tile_of[r]) incoming[bin[r]].push_back(r);
    std::vector<int64_t> next = slots;
    changed.assign(T, 0);
    for (int64_t t = 0; t < T; ++t) {
      size_t k = 0;
      for (int64_t s = t * p.v; s < t * p.v + p.tile_rows(t); ++s)
        if (bin[slots[s]] != t) { next[s] = incoming[t][k++]; changed[t] = 1; }
    }
    return next;
  }

  // The clustering objective of a row partition: per tile and row, the Kt*n/m largest scores
  // among the tile's kept columns (what the best column order could keep). Fills kept[t] and
  // val[t] of every tile, or of the tiles marked in `only` (the others keep theirs).
  double topk_objective(const std::vector<int64_t>& slots, std::vector<std::vector<int32_t>>& kept,
                        std::vector<double>& val, const std::vector<char>* only = nullptr) const {
    const int64_t T = p.tiles(), keep = p.Kt / p.m * p.n;
    val.resize(T, 0.0);
    kept.resize(T);
    parallel_for(T, 1, [&](int64_t a, int64_t b) {
      std::vector<double> buf(p.Kt);
      for (int64_t t = a; t < b; ++t) {
        if (only && !(*only)[t]) continue;
        const int64_t* rows = slots.data() + t * p.v;
        kept[t] = permute::kept_columns(p, rows, p.tile_rows(t));
        double s = 0;
        for (int64_t i = 0; i < p.tile_rows(t); ++i)
          s += permute::topk_within(p.row(rows[i]), kept[t].data(), p.Kt, keep, buf.data());
        val[t] = s;
      }
    });
    double total = 0;
    for (double x : val) total += x;
    return total;
  }

  // out[k] = -(row's top-k within the kept set of the k-th of `nt` tiles) for nt tiles at once:
  // one walk down the row's ranked scores (idx / val), each tile adding the scores it keeps
  // (flag[c * nt + k] = 1) until it has `keep` of them. The sums are those of a walk per tile (a
  // skipped score adds an exact 0) and the inner loop over tiles vectorises.
  static void topk_tiles(const int32_t* idx, const double* val, int64_t K, const double* flag, int64_t nt,
                         int64_t keep, double* __restrict sum, double* __restrict left, double* out) {
    std::fill(sum, sum + nt, 0.0);
    std::fill(left, left + nt, double(keep));  // scores still to take (integers; min keeps it branch-free)
    for (int64_t j = 0; j < K;) {
      for (const int64_t stop = std::min<int64_t>(K, j + 8); j < stop; ++j) {
        const double x = val[j];
        const double* __restrict f = flag + int64_t(idx[j]) * nt;
        for (int64_t k = 0; k < nt; ++k) {
          const double use = std::min(f[k], left[k]);
          sum[k] += x * use;
          left[k] -= use;
        }
      }
      double most = 0;
      for (int64_t k = 0; k < nt; ++k) most = std::max(most, left[k]);
      if (most == 0) break;
    }
    for (int64_t k = 0; k < nt; ++k) out[k] = -sum[k];
  }

  // Lloyd-style clustering of rows into tiles on the top-k objective: with every tile's kept set
  // fixed, a capacitated assignment gives each row the tile where its top-k is largest; the kept
  // sets then follow the new rows. Repeats while the objective grows. Only the tiles whose rows
  // (objective) or kept set (costs) changed are computed again.
  void cluster(State& st) {
    const int64_t T = p.tiles(), keep = p.Kt / p.m * p.n;
    if (T < 2 || opt.cluster_rounds <= 0) return;
    std::vector<std::vector<int32_t>> kept, next_kept;
    std::vector<double> val, next_val;
    double current = topk_objective(st.slots, kept, val);
    std::vector<int64_t> cap(T);
    for (int64_t t = 0; t < T; ++t) cap[t] = p.tile_rows(t);
    std::vector<double> cost(p.R * T);
    const std::vector<int32_t> ranked = permute::ranked_columns(p);
    std::vector<double> ranked_val(p.R * p.K);
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t j = 0; j < p.K; ++j) ranked_val[r * p.K + j] = p.row(r)[ranked[r * p.K + j]];
    std::vector<char> stale(T, 1);  // tiles whose cost column is out of date
    std::vector<int64_t> stale_tiles;
    std::vector<double> flag;  // [column, stale tile]: 1 when that tile keeps the column
    int accepted = 0;
    for (int round = 0; round < opt.cluster_rounds && !dl.expired(); ++round) {
      stale_tiles.clear();
      for (int64_t t = 0; t < T; ++t) if (stale[t]) stale_tiles.push_back(t);
      const int64_t nt = int64_t(stale_tiles.size());
      if (nt) {
        flag.assign(p.K * nt, 0.0);
        for (int64_t k = 0; k < nt; ++k) for (int32_t c : kept[stale_tiles[k]]) flag[c * nt + k] = 1.0;
        parallel_for(p.R, 16, [&](int64_t a, int64_t b) {
          std::vector<double> sum(nt), left(nt), out(nt);
          for (int64_t r = a; r < b; ++r) {
            topk_tiles(ranked.data() + r * p.K, ranked_val.data() + r * p.K, p.K, flag.data(), nt, keep, sum.data(),
                       left.data(), out.data());
            for (int64_t k = 0; k < nt; ++k) cost[r * T + stale_tiles[k]] = out[k];
          }
        });
      }
      const auto bin = capacitated_assignment(cost.data(), p.R, T, cap);
      std::vector<char> changed;
      std::vector<int64_t> next = apply_bins(st.slots, bin, changed);
      next_kept = kept;
      next_val = val;
      const double value = topk_objective(next, next_kept, next_val, &changed);
      if (!(value > current + eps(current))) break;
      st.slots = std::move(next);
      for (int64_t t = 0; t < T; ++t) stale[t] = next_kept[t] != kept[t];
      kept.swap(next_kept);
      val.swap(next_val);
      const double gain = value - current;
      current = value;
      ++accepted;
      if (gain < opt.cluster_min_gain * current) break;  // the tail of tiny gains is not worth its time
    }
    if (!accepted) return;
    parallel_for(T, 1, [&](int64_t a, int64_t b) { for (int64_t t = a; t < b; ++t) reset_tile(p, st, t, false); });
    record("cluster", accepted, st);
  }

  // Simulated annealing of rows between tiles on the top-k objective (see permute_anneal.hpp).
  void anneal(State& st) {
    if (p.tiles() < 2 || p.tiles() > opt.anneal_max_tiles || opt.anneal_moves <= 0) return;
    permute::AnnealOptions ao;
    ao.moves_per_row = std::max<int64_t>(1, opt.anneal_moves * 384 / std::max<int64_t>(p.K, 384));
    ao.temperature = opt.anneal_temperature;
    ao.seed = opt.seed;
    const int64_t accepted = permute::anneal_rows(p, st.slots, ao, dl);
    if (!accepted) return;
    parallel_for(p.tiles(), 1, [&](int64_t a, int64_t b) { for (int64_t t = a; t < b; ++t) reset_tile(p, st, t, false); });
    record("anneal", accepted, st);
  }

  // The ICP's non-improving step limit for this tile width (see PermuteOptions::icp_fail_limit).
  int icp_fails() const {
    const double groups = double(p.Kt / p.m), ratio = std::min(1.0, 48.0 / groups);
    const int scaled = int(opt.icp_fail_limit * ratio * ratio);
    return std::max(scaled, std::min(3, opt.icp_fail_limit));
  }

  // ICP of every tile: assignment stage (official), then pairwise swaps (and windows for N:M).
  void icp(State& st, bool assignment, bool window, const std::vector<char>* only = nullptr, uint64_t round = 0) {
    const int64_t T = p.tiles();
    parallel_for(T, 1, [&](int64_t a, int64_t b) {
      for (int64_t t = a; t < b; ++t) {
        if (only && !(*only)[t]) continue;
        permute::TileIcp tile(p, tile_ptr(p, st, t), p.tile_rows(t), st.order[t]);
        if (assignment) tile.alternate(SplitMix64::stream(opt.seed, 0x1c9, t, round).next(), icp_fails(), dl);
        else tile.swap_stage(dl);
        if (window) { tile.window_stage(dl); tile.swap_stage(dl); }
        auto order = tile.order();
        const double value = permute::tile_retained(p, tile_ptr(p, st, t), p.tile_rows(t), order.data());
        if (value >= st.value[t]) { st.order[t] = std::move(order); st.value[t] = value; }
      }
    });
  }

  // Retained saliency of row r under a tile structure (Kt kept columns in order).
  double row_value(int64_t r, const int32_t* ord) const {
    double g[256], s = 0;
    const double* x = p.row(r);
    for (int64_t q = 0; q < p.Kt; q += p.m) {
      for (int j = 0; j < p.m; ++j) g[j] = x[ord[q + j]];
      s += permute::topn_sum(g, p.m, p.n);
    }
    return s;
  }

  // Tile t with the row in `slot` replaced by row `in_row`: its kept columns (order adapted as in
  // a refresh) and exact retained value.
  struct Trial {
    double value = 0;
    std::vector<int32_t> order;
  };
  Trial trial(const State& st, int64_t t, int64_t slot, int64_t in_row) const {
    std::vector<int64_t> rows(tile_ptr(p, st, t), tile_ptr(p, st, t) + p.tile_rows(t));
    rows[slot - t * p.v] = in_row;
    Trial tr;
    tr.order = adapt_order_rows(p, rows.data(), int64_t(rows.size()), st.order[t]);
    tr.value = permute::tile_retained(p, rows.data(), int64_t(rows.size()), tr.order.data());
    return tr;
  }

  // Row swaps between tiles. table[r*T + t] = row r's value under tile t's structure, so the gain
  // of swapping rows i (tile a) and j (tile b) is, while the kept sets stay, the linear
  // table[i,b] + table[j,a] - table[i,a] - table[j,b]. Per pair of tiles the best few linear
  // candidates (whatever their sign: a kept set may move) are evaluated exactly (kept sets
  // recomputed, order adapted) in parallel; then the best exact moves on disjoint tiles are
  // applied in a fixed order (gain, then pair index). Only pairs touching a changed tile are
  // evaluated again. Returns the tiles that changed.
  std::vector<char> row_swaps(State& st, int max_rounds) {
    const int64_t T = p.tiles();
    std::vector<char> touched(T, 0);
    if (T < 2) return touched;
    constexpr int kCand = 3;
    std::vector<double> table(p.R * T);
    auto fill = [&](const std::vector<int64_t>& tiles) {
      parallel_for(p.R, 16, [&](int64_t a, int64_t b) {
        for (int64_t r = a; r < b; ++r)
          for (int64_t t : tiles) table[r * T + t] = row_value(r, st.order[t].data());
      });
    };
    std::vector<int64_t> all_tiles(T);
    std::iota(all_tiles.begin(), all_tiles.end(), 0);
    fill(all_tiles);
    const int64_t pairs = T * (T - 1) / 2;
    std::vector<int64_t> pa(pairs), pb(pairs);
    for (int64_t a = 0, k = 0; a < T; ++a)
      for (int64_t b = a + 1; b < T; ++b, ++k) { pa[k] = a; pb[k] = b; }
    struct Move {
      double gain = 0;
      int64_t sa = -1, sb = -1;
      Trial ta, tb;
    };
    std::vector<Move> best(pairs);
    const double tol = eps(st.total());
    auto eval_pair = [&](int64_t k) {
      const int64_t a = pa[k], b = pb[k];
      double cg[kCand];
      int64_t ci[kCand], cj[kCand];
      int nc = 0;
      for (int64_t i = a * p.v; i < a * p.v + p.tile_rows(a); ++i) {
        const double* ri = table.data() + st.slots[i] * T;
        for (int64_t j = b * p.v; j < b * p.v + p.tile_rows(b); ++j) {
          const double* rj = table.data() + st.slots[j] * T;
          const double g = ri[b] + rj[a] - ri[a] - rj[b];
          if (nc == kCand && g <= cg[nc - 1]) continue;  // exact evaluation decides: the kept sets may move
          int q = nc < kCand ? nc++ : kCand - 1;  // insertion into the descending candidate list
          while (q > 0 && cg[q - 1] < g) { cg[q] = cg[q - 1]; ci[q] = ci[q - 1]; cj[q] = cj[q - 1]; --q; }
          cg[q] = g; ci[q] = i; cj[q] = j;
        }
      }
      Move mv;
      for (int c = 0; c < nc; ++c) {
        Trial ta = trial(st, a, ci[c], st.slots[cj[c]]);
        Trial tb = trial(st, b, cj[c], st.slots[ci[c]]);
        const double gain = (ta.value + tb.value) - (st.value[a] + st.value[b]);
        if (gain > tol && gain > mv.gain) mv = Move{gain, ci[c], cj[c], std::move(ta), std::move(tb)};
      }
      best[k] = std::move(mv);
    };
    std::vector<int64_t> dirty(pairs);
    std::iota(dirty.begin(), dirty.end(), 0);
    std::vector<char> used(T);
    for (int round = 0; round < max_rounds && !dl.expired(); ++round) {
      parallel_for(int64_t(dirty.size()), 4, [&](int64_t x, int64_t y) { for (int64_t i = x; i < y; ++i) eval_pair(dirty[i]); });
      std::vector<int64_t> order;
      for (int64_t k = 0; k < pairs; ++k) if (best[k].sa >= 0) order.push_back(k);
      if (order.empty()) break;
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return best[x].gain > best[y].gain; });
      std::fill(used.begin(), used.end(), 0);
      std::vector<int64_t> changed;
      for (int64_t k : order) {
        const int64_t a = pa[k], b = pb[k];
        if (used[a] || used[b]) continue;
        used[a] = used[b] = 1;
        Move& mv = best[k];
        std::swap(st.slots[mv.sa], st.slots[mv.sb]);
        st.order[a] = std::move(mv.ta.order);
        st.order[b] = std::move(mv.tb.order);
        st.value[a] = mv.ta.value;
        st.value[b] = mv.tb.value;
        touched[a] = touched[b] = 1;
        changed.push_back(a);
        changed.push_back(b);
      }
      fill(changed);
      // Pairs whose tiles did not change keep their best move (still exact); the others are redone.
      dirty.clear();
      for (int64_t k = 0; k < pairs; ++k)
        if (used[pa[k]] || used[pb[k]]) dirty.push_back(k);
    }
    return touched;
  }

  // Alternates row swaps between tiles and a full ICP of the tiles they changed, while the
  // retained saliency grows.
  void swap_refine(State& st) {
    for (int outer = 0; outer < opt.swap_rounds && !dl.expired(); ++outer) {
      const double before = st.total();
      std::vector<char> touched = row_swaps(st, 100000);
      if (std::find(touched.begin(), touched.end(), 1) == touched.end()) break;
      icp(st, true, false, &touched, uint64_t(outer) + 1000);
      record("row_swap", outer + 1, st);
      if (!(st.total() > before + eps(before))) break;
    }
  }

  // Rows -> tiles: every row's retained saliency under every tile's current structure (kept
  // columns in order), then a capacitated assignment; the changed tiles get new kept sets and a
  // fresh ICP. Accepted if the total grows.
  bool refine_step(State& st, uint64_t round, double stay_bonus) {
    const int64_t T = p.tiles();
    std::vector<double> cost(p.R * T);
    parallel_for(p.R, 32, [&](int64_t a, int64_t b) {
      std::vector<double> g(p.m);
      for (int64_t r = a; r < b; ++r)
        for (int64_t t = 0; t < T; ++t) {
          double s = 0;
          const int32_t* ord = st.order[t].data();
          for (int64_t q = 0; q < p.Kt; q += p.m) {
            for (int j = 0; j < p.m; ++j) g[j] = p.row(r)[ord[q + j]];
            s += permute::topn_sum(g.data(), p.m, p.n);
          }
          cost[r * T + t] = -s;
        }
    });
    // A bonus for staying damps the churn when a full reassignment did not pay off.
    for (int64_t sl = 0; sl < p.R; ++sl) cost[st.slots[sl] * T + sl / p.v] -= stay_bonus;
    std::vector<int64_t> cap(T);
    for (int64_t t = 0; t < T; ++t) cap[t] = p.tile_rows(t);
    const auto bin = capacitated_assignment(cost.data(), p.R, T, cap);
    State next = st;
    std::vector<char> changed;
    next.slots = apply_bins(st.slots, bin, changed);
    parallel_for(T, 1, [&](int64_t a, int64_t b) {
      for (int64_t t = a; t < b; ++t) if (changed[t]) reset_tile(p, next, t, true);
    });
    icp(next, false, false, &changed, round);
    const double before = st.total(), after = next.total();
    if (!(after > before + eps(before))) return false;
    st = std::move(next);
    return true;
  }

  PermuteResult finish() {
    const State& st = best;
    const double retained = st.total();
    PermuteResult res;
    res.row_perm = st.slots;
    const int64_t T = p.tiles();
    res.col_orders.resize(T * p.K);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<char> in(p.K, 0);
      int64_t* out = res.col_orders.data() + t * p.K;
      int64_t k = 0;
      for (int32_t c : st.order[t]) { out[k++] = c; in[c] = 1; }
      for (int64_t c = 0; c < p.K; ++c) if (!in[c]) out[k++] = c;
    }
    res.retained = retained;
    res.history = std::move(history);
    return res;
  }
};

// The random baseline: a random row permutation and a random column order in every tile.
State random_state(const Problem& p, uint64_t seed, std::vector<std::vector<int64_t>>& orders) {
  SplitMix64 rng = SplitMix64::stream(seed, 0x4a4d);
  std::vector<int64_t> slots = identity(p.R);
  // One tile (plain N:M): the row order changes nothing, so it stays the identity.
  if (p.tiles() > 1)
    for (int64_t i = p.R - 1; i > 0; --i) std::swap(slots[i], slots[rng.below(i + 1)]);
  State st = initial_state(p, slots);
  orders.assign(p.tiles(), {});
  for (int64_t t = 0; t < p.tiles(); ++t) {
    auto& ord = orders[t];
    ord = identity(p.K);
    for (int64_t i = p.K - 1; i > 0; --i) std::swap(ord[i], ord[rng.below(i + 1)]);
    std::vector<int64_t> rank(p.K);
    for (int64_t i = 0; i < p.K; ++i) rank[ord[i]] = i;
    std::sort(st.order[t].begin(), st.order[t].end(), [&](int32_t a, int32_t b) { return rank[a] < rank[b]; });
    st.value[t] = permute::tile_retained(p, tile_ptr(p, st, t), p.tile_rows(t), st.order[t].data());
  }
  return st;
}

}  // namespace

PermuteResult search_permutation(const Matrix& scores, int64_t v, int64_t kept, NMPattern pattern,
                                 const PermuteOptions& options) {
  const std::vector<double> s = scores_f64(scores);
  const Problem p = make_problem(s, scores, v, kept, pattern);
  if (options.anneal_moves < 0 || !(options.anneal_temperature >= 0) || !std::isfinite(options.anneal_temperature))
    throw std::invalid_argument("anneal_moves and anneal_temperature: expected >= 0 (finite), got " +
                                std::to_string(options.anneal_moves) + ", " + std::to_string(options.anneal_temperature));
  for (int ne : options.schedule)
    if (ne < 1) throw std::invalid_argument("schedule: every entry must be >= 1, got " + std::to_string(ne));
  Search search(p, options);
  if (options.time_budget >= 0) {
    search.dl.active = true;
    search.dl.at = search.start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                      std::chrono::duration<double>(options.time_budget));
  }
  if (options.method == PermuteMethod::random) {
    std::vector<std::vector<int64_t>> orders;
    State st = random_state(p, options.seed, orders);
    search.record("random", 0, st);
    PermuteResult res = search.finish();
    for (int64_t t = 0; t < p.tiles(); ++t) std::copy(orders[t].begin(), orders[t].end(), res.col_orders.begin() + t * p.K);
    return res;
  }
  State st = initial_state(p, identity(p.R));
  search.record("identity", 0, st);
  const bool single_tile = p.tiles() == 1;
  if (options.method == PermuteMethod::channel_swap) {
    search.icp(st, false, options.window_search);
    search.record("channel_swap", 0, st);
  } else if (options.method == PermuteMethod::gyro) {
    search.ocp(st);
    search.cluster(st);
    search.anneal(st);
    search.icp(st, true, options.window_search);
    search.record("icp", 0, st);
    if (!single_tile) {
      // Row retained scale, for the stay bonus used after a rejected reassignment.
      const double row_scale = st.total() / double(p.R);
      double bonus = 0;
      int fails = 0;
      for (int round = 0; round < options.refine_rounds && !search.dl.expired(); ++round) {
        if (search.refine_step(st, uint64_t(round) + 1, bonus)) {
          search.record("refine", round + 1, st);
        } else {
          if (++fails > 3) break;
          bonus = bonus == 0 ? 1e-3 * row_scale : bonus * 4;
        }
      }
      search.swap_refine(st);
    }
  }
  return search.finish();
}

double hinm_retained(const Matrix& scores, int64_t v, int64_t kept, NMPattern pattern,
                     const std::vector<int64_t>& row_perm, const std::vector<int64_t>& col_orders) {
  const std::vector<double> s = scores_f64(scores);
  const Problem p = make_problem(s, scores, v, kept, pattern);
  const int64_t T = p.tiles();
  if (int64_t(row_perm.size()) != p.R) throw std::invalid_argument("row_perm: expected length R");
  std::vector<char> seen(p.R, 0);
  for (int64_t r : row_perm) {
    if (r < 0 || r >= p.R || seen[r]) throw std::invalid_argument("row_perm is not a permutation of range(R)");
    seen[r] = 1;
  }
  if (!col_orders.empty() && int64_t(col_orders.size()) != T * p.K)
    throw std::invalid_argument("col_orders: expected shape [T, K]");
  double total = 0;
  for (int64_t t = 0; t < T; ++t) {
    auto kept_cols = permute::kept_columns(p, row_perm.data() + t * p.v, p.tile_rows(t));
    if (!col_orders.empty()) {
      std::vector<int64_t> rank(p.K, -1);
      for (int64_t i = 0; i < p.K; ++i) {
        const int64_t c = col_orders[t * p.K + i];
        if (c < 0 || c >= p.K || rank[c] >= 0)
          throw std::invalid_argument("col_orders[" + std::to_string(t) + "] is not a permutation of range(K)");
        rank[c] = i;
      }
      std::sort(kept_cols.begin(), kept_cols.end(), [&](int32_t a, int32_t b) { return rank[a] < rank[b]; });
    }
    total += permute::tile_retained(p, row_perm.data() + t * p.v, p.tile_rows(t), kept_cols.data());
  }
  return total;
}

}  // namespace hinm
