#include "permute_anneal.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "hinm/parallel.hpp"
#include "hinm/permute_rng.hpp"

namespace hinm::permute {

namespace {

// A row's top-k within a kept set: the sum, and the k-th and (k+1)-th largest values (enough to
// update the sum exactly when one kept column is replaced by another).
struct RowTopk {
  double sum = 0, kth = 0, next = 0;
  int32_t pk = 0, pk1 = 0;  // positions of the k-th and (k+1)-th kept columns in the row's ranking
};

// Updated top-k when column value `out` leaves the set and `in` enters it. Exact whatever the
// ties: when out is one of the top k, the (k+1)-th moves up; in then enters if it beats the k-th.
RowTopk replace_one(const RowTopk& t, double out, double in) {
  RowTopk r = t;
  double kth = t.kth;
  if (out >= t.kth) { r.sum += t.next - out; kth = t.next; }
  if (in > kth) r.sum += in - kth;
  return r;
}

struct Shared {
  const Problem& p;
  std::vector<int64_t>& slots;
  int64_t T, keep;
  bool incremental;              // keep < Kt: the (k+1)-th value exists
  bool positional;               // Kt >= keep + 2: entries follow one-column kept-set changes
  std::vector<int32_t> ranked;   // [R, K] every row's columns by descending score (ties: lower column)
  std::vector<double> ranked_val;  // [R, K] the scores in that order
  std::vector<int32_t> pos_of;   // [R, K] position of every column in the row's ranking
  std::vector<char> in;          // [T, K] kept flags
  std::vector<double> sums;      // [T, K] column sums
  std::vector<RowTopk> table;    // [R, T] row r's top-k under tile t's kept set, valid when stamp == ver[t]
  std::vector<uint32_t> stamp;   // [R, T]
  std::vector<uint32_t> ver;     // [T]

  Shared(const Problem& prob, std::vector<int64_t>& sl)
      : p(prob), slots(sl), T(prob.tiles()), keep(prob.Kt / prob.m * prob.n), incremental(keep < prob.Kt), positional(prob.Kt >= keep + 2),
        ranked(ranked_columns(prob)), ranked_val(prob.R * prob.K), pos_of(prob.R * prob.K), in(T * prob.K, 0), sums(T * prob.K, 0.0), table(prob.R * T),
        stamp(prob.R * T, std::numeric_limits<uint32_t>::max()), ver(T, 0) {
    parallel_for(p.R, 16, [&](int64_t a, int64_t b) {
      for (int64_t r = a; r < b; ++r) {
        const int32_t* idx = ranked.data() + r * p.K;
        const double* x = p.row(r);
        for (int64_t j = 0; j < p.K; ++j) {
          ranked_val[r * p.K + j] = x[idx[j]];
          pos_of[r * p.K + idx[j]] = int32_t(j);
        }
      }
    });
  }

  // Branch-free walk down the row's ranked scores (the kept flags are unpredictable).
  RowTopk walk(int64_t r, const char* flags) const {
    const double* x = ranked_val.data() + r * p.K;
    const int32_t* idx = ranked.data() + r * p.K;
    RowTopk t;
    int64_t taken = 0, j = 0, last = 0;
    double sum = 0;
    for (; taken < keep; ++j) {
      const int64_t f = flags[idx[j]];
      sum += x[j] * double(f);  // a multiply, not a branch
      last = f ? j : last;
      taken += f;
    }
    t.sum = sum;
    t.kth = x[last];
    t.pk = int32_t(last);
    if (incremental) {
      while (!flags[idx[j]]) ++j;
      t.next = x[j];
      t.pk1 = int32_t(j);
    }
    return t;
  }
  // Entry `e` of row r (valid for the kept flags before) made valid for `flags`, which differ by
  // column c_out leaving and c_in entering: the same set as a fresh walk, found by short scans
  // next to the k-th and (k+1)-th positions (needs Kt >= k + 2).
  void replace_in_entry(int64_t r, RowTopk& e, const char* flags, int32_t c_out, int32_t c_in) const {
    const double* x = ranked_val.data() + r * p.K;
    const int32_t* idx = ranked.data() + r * p.K;
    const int32_t po = pos_of[r * p.K + c_out], pi = pos_of[r * p.K + c_in];
    auto kept_other = [&](int32_t j) { return flags[idx[j]] && idx[j] != c_in; };  // the set without both
    if (po <= e.pk) {  // c_out was in the top k: the (k+1)-th moves up
      e.sum += x[e.pk1] - x[po];
      e.pk = e.pk1;
      int32_t j = e.pk1 + 1;
      while (!kept_other(j)) ++j;
      e.pk1 = j;
    } else if (po == e.pk1) {
      int32_t j = e.pk1 + 1;
      while (!kept_other(j)) ++j;
      e.pk1 = j;
    }
    if (pi < e.pk) {  // c_in enters the top k, the k-th drops to (k+1)-th
      e.sum += x[pi] - x[e.pk];
      int32_t j = e.pk - 1;
      while (!flags[idx[j]]) --j;  // the last of the new top k (possibly c_in itself)
      e.pk1 = e.pk;
      e.pk = j;
    } else if (pi < e.pk1) {
      e.pk1 = pi;
    }
    e.kth = x[e.pk];
    e.next = x[e.pk1];
  }
  // Columns leaving (outs) and entering (ins) when kept flags `cur` become `next`, ascending.
  void changes(const char* cur, const char* next, std::vector<int32_t>& outs, std::vector<int32_t>& ins) const {
    outs.clear();
    ins.clear();
    for (int64_t c = 0; c < p.K; ++c)
      if (cur[c] != next[c]) (cur[c] ? outs : ins).push_back(int32_t(c));
  }
  // Up to this many columns changing at once, entries follow one replacement at a time (through
  // intermediate kept sets of Kt columns); beyond, rows are walked again.
  static constexpr size_t kMaxReplaced = 8;
  bool follows(size_t replaced) const { return positional && replaced <= kMaxReplaced; }

  // Tile t's kept flags become `flags`: its valid table entries follow (replace_in_entry, one
  // column pair at a time), or all go stale when too many columns changed.
  void set_flags(int64_t t, const char* flags, std::vector<int32_t>& outs, std::vector<int32_t>& ins,
                 std::vector<char>& tmp) {
    char* cur = in.data() + t * p.K;
    changes(cur, flags, outs, ins);
    if (outs.empty()) return;
    const uint32_t next_ver = ver[t] + 1;
    if (follows(outs.size())) {
      tmp.assign(cur, cur + p.K);
      for (size_t k = 0; k < outs.size(); ++k) {
        tmp[outs[k]] = 0;
        tmp[ins[k]] = 1;
        for (int64_t r = 0; r < p.R; ++r)
          if (stamp[r * T + t] == ver[t]) replace_in_entry(r, table[r * T + t], tmp.data(), outs[k], ins[k]);
      }
      for (int64_t r = 0; r < p.R; ++r)
        if (stamp[r * T + t] == ver[t]) stamp[r * T + t] = next_ver;
    }
    std::copy(flags, flags + p.K, cur);
    ver[t] = next_ver;
  }
  // Row r's entry for tile t, walked again when t's kept set changed since.
  const RowTopk& tab(int64_t r, int64_t t) {
    const int64_t k = r * T + t;
    if (stamp[k] != ver[t]) { table[k] = walk(r, in.data() + t * p.K); stamp[k] = ver[t]; }
    return table[k];
  }
  // Canonical kept flags of column sums (the Kt largest, ties to the lower column).
  void select(const double* sum, char* flags, std::vector<int32_t>& idx) const {
    idx.resize(p.K);
    std::iota(idx.begin(), idx.end(), 0);
    auto better = [&](int32_t a, int32_t b) { return sum[a] > sum[b] || (sum[a] == sum[b] && a < b); };
    if (p.Kt < p.K) std::nth_element(idx.begin(), idx.begin() + p.Kt, idx.end(), better);
    std::fill(flags, flags + p.K, 0);
    for (int64_t j = 0; j < p.Kt; ++j) flags[idx[j]] = 1;
  }
  // The same canonical kept flags, from a previous kept set `prior` (any Kt columns): a kept
  // column above the strongest dropped one stays, a dropped one below the weakest kept one
  // stays out, and only the columns between are ranked (sum desc, column asc).
  void select_from(const double* sum, const char* prior, char* flags, std::vector<int32_t>& idx) const {
    constexpr double inf = std::numeric_limits<double>::infinity();
    double lo = inf, hi = -inf;  // weakest kept, strongest dropped
    for (int64_t c = 0; c < p.K; ++c) {
      const double y = sum[c];
      lo = std::min(lo, prior[c] ? y : inf);
      hi = std::max(hi, prior[c] ? -inf : y);
    }
    std::memcpy(flags, prior, size_t(std::max<int64_t>(p.K, 0)));  // (std::copy: a false -Wstringop-overflow in GCC 12)
    if (hi < lo) return;
    idx.clear();
    int64_t open = 0;  // kept places among the candidates
    for (int64_t c = 0; c < p.K; ++c)
      if (prior[c] ? sum[c] <= hi : sum[c] >= lo) {
        idx.push_back(int32_t(c));
        open += prior[c];
      }
    auto better = [&](int32_t a, int32_t b) { return sum[a] > sum[b] || (sum[a] == sum[b] && a < b); };
    std::nth_element(idx.begin(), idx.begin() + open, idx.end(), better);
    for (size_t k = 0; k < idx.size(); ++k) flags[idx[k]] = int64_t(k) < open;
  }
  // Whether the kept set of `sum` may differ from `flags`: the weakest kept column does not beat
  // the strongest dropped one (an exact tie counts as a change: select() then decides).
  // Branch-free min / max over 4 lanes: this runs for most proposals.
  bool kept_changes(const double* sum, const char* flags) const {
    constexpr double inf = std::numeric_limits<double>::infinity();
    double lo[4] = {inf, inf, inf, inf}, hi[4] = {-inf, -inf, -inf, -inf};
    int64_t c = 0;
    for (; c + 4 <= p.K; c += 4)
      for (int l = 0; l < 4; ++l) {
        const double y = sum[c + l];
        const bool k = flags[c + l];
        lo[l] = std::min(lo[l], k ? y : inf);
        hi[l] = std::max(hi[l], k ? -inf : y);
      }
    for (; c < p.K; ++c) {
      const double y = sum[c];
      lo[0] = std::min(lo[0], flags[c] ? y : inf);
      hi[0] = std::max(hi[0], flags[c] ? -inf : y);
    }
    const double l = std::min(std::min(lo[0], lo[1]), std::min(lo[2], lo[3]));
    const double h = std::max(std::max(hi[0], hi[1]), std::max(hi[2], hi[3]));
    return h >= l;
  }
};

// One pair of tiles annealed on its own: rows and kept sets of tiles a and b only, so pairs run
// in parallel without sharing anything they write.
class PairAnneal {
 public:
  PairAnneal(Shared& sh, int64_t a, int64_t b)
      : sh_(sh), p_(sh.p), a_(a), b_(b), na_(p_.tile_rows(a)), nb_(p_.tile_rows(b)),
        sum_a_(p_.K), sum_b_(p_.K), in_a_(p_.K), in_b_(p_.K) {
    for (int64_t t : {a_, b_}) {  // exact sums (no drift across rounds) and canonical kept flags
      double* sum = sh_.sums.data() + t * p_.K;
      std::fill(sum, sum + p_.K, 0.0);
      for (int64_t s = t * p_.v; s < t * p_.v + p_.tile_rows(t); ++s) {
        const double* x = p_.row(sh_.slots[s]);
        for (int64_t c = 0; c < p_.K; ++c) sum[c] += x[c];
      }
      std::vector<char> flags(p_.K);
      char* cur = sh_.in.data() + t * p_.K;
      sh_.select_from(sum, cur, flags.data(), idx_);
      if (!std::equal(flags.begin(), flags.end(), cur)) sh_.set_flags(t, flags.data(), outs_, ins_, tmp_);
    }
    val_a_ = tile_value(a_);
    val_b_ = tile_value(b_);
  }

  // `moves` proposals, the temperature going linearly from t0 to t1, or fewer once the exact
  // evaluations (proposals that change a kept set: the cost) pass exact_budget. Returns accepted
  // swaps.
  int64_t run(SplitMix64& rng, int64_t moves, double t0, double t1, double tol, int64_t exact_budget,
              const Deadline& dl) {
    int64_t accepted = 0;
    for (int64_t k = 0; k < moves && exact_ <= exact_budget; ++k) {
      if ((k & 255) == 255 && dl.expired()) break;
      const double temp = t0 + (t1 - t0) * double(k) / double(moves);
      const int64_t sa = a_ * p_.v + rng.below(na_), sb = b_ * p_.v + rng.below(nb_);
      const double u = double((rng.next() >> 11) + 1) * 0x1.0p-53;  // (0, 1]
      const double thr = temp > 0 ? temp * std::log(u) : tol;        // accept when the gain > thr
      if (try_swap(sa, sb, thr, temp)) ++accepted;
    }
    return accepted;
  }

  double value_a() const { return val_a_; }
  double value_b() const { return val_b_; }

 private:
  Shared& sh_;
  const Problem& p_;
  int64_t a_, b_, na_, nb_;
  double val_a_ = 0, val_b_ = 0;
  std::vector<double> sum_a_, sum_b_;
  std::vector<char> in_a_, in_b_;
  std::vector<int32_t> idx_, outs_, ins_;
  std::vector<char> tmp_;
  std::vector<RowTopk> entries_;
  int64_t exact_ = 0;  // exact evaluations

  double tile_value(int64_t t) {
    double s = 0;
    for (int64_t q = t * p_.v; q < t * p_.v + p_.tile_rows(t); ++q) s += sh_.tab(sh_.slots[q], t).sum;
    return s;
  }

  // Exact top-k value of tile t with the row in slot `out_slot` replaced by `in_row`, under the
  // new kept flags `flags` (the old ones are sh_.in of t, still matching the table).
  double tile_value_with(int64_t t, int64_t out_slot, int64_t in_row, const char* flags) {
    const char* old = sh_.in.data() + t * p_.K;
    sh_.changes(old, flags, outs_, ins_);
    const int64_t first = t * p_.v, nr = p_.tile_rows(t);
    auto row_at = [&](int64_t q) { return q == out_slot ? in_row : sh_.slots[q]; };
    double s = 0;
    if (outs_.empty()) {  // a tie that select() resolved as before
      for (int64_t q = first; q < first + nr; ++q) s += sh_.tab(row_at(q), t).sum;
      return s;
    }
    if (sh_.follows(outs_.size())) {
      entries_.resize(nr);
      for (int64_t q = 0; q < nr; ++q) entries_[q] = sh_.tab(row_at(first + q), t);
      tmp_.assign(old, old + p_.K);
      for (size_t k = 0; k < outs_.size(); ++k) {
        tmp_[outs_[k]] = 0;
        tmp_[ins_[k]] = 1;
        for (int64_t q = 0; q < nr; ++q) sh_.replace_in_entry(row_at(first + q), entries_[q], tmp_.data(), outs_[k], ins_[k]);
      }
      for (int64_t q = 0; q < nr; ++q) s += entries_[q].sum;
      return s;
    }
    const bool one = sh_.incremental && outs_.size() == 1;
    for (int64_t q = first; q < first + nr; ++q) {
      const int64_t r = row_at(q);
      s += one ? replace_one(sh_.tab(r, t), p_.row(r)[outs_[0]], p_.row(r)[ins_[0]]).sum : sh_.walk(r, flags).sum;
    }
    return s;
  }

  bool try_swap(int64_t sa, int64_t sb, double thr, double temp) {
    const int64_t ri = sh_.slots[sa], rj = sh_.slots[sb];
    // Gain while the kept sets stay; moves far below the threshold are not evaluated further
    // (a kept-set change rarely makes up for more than a few temperatures).
    const double lin = sh_.tab(rj, a_).sum + sh_.tab(ri, b_).sum - sh_.tab(ri, a_).sum - sh_.tab(rj, b_).sum;
    if (lin <= thr - 3 * temp) return false;
    const double* xi = p_.row(ri);
    const double* xj = p_.row(rj);
    double* cur_a = sh_.sums.data() + a_ * p_.K;
    double* cur_b = sh_.sums.data() + b_ * p_.K;
    for (int64_t c = 0; c < p_.K; ++c) {
      const double d = xj[c] - xi[c];
      sum_a_[c] = cur_a[c] + d;
      sum_b_[c] = cur_b[c] - d;
    }
    const bool ch_a = sh_.kept_changes(sum_a_.data(), sh_.in.data() + a_ * p_.K);
    const bool ch_b = sh_.kept_changes(sum_b_.data(), sh_.in.data() + b_ * p_.K);
    double new_a, new_b;
    if (!ch_a && !ch_b) {
      if (!(lin > thr)) return false;
      new_a = val_a_ + sh_.tab(rj, a_).sum - sh_.tab(ri, a_).sum;
      new_b = val_b_ + sh_.tab(ri, b_).sum - sh_.tab(rj, b_).sum;
    } else {
      ++exact_;
      new_a = val_a_ + sh_.tab(rj, a_).sum - sh_.tab(ri, a_).sum;
      new_b = val_b_ + sh_.tab(ri, b_).sum - sh_.tab(rj, b_).sum;
      if (ch_a) {
        sh_.select_from(sum_a_.data(), sh_.in.data() + a_ * p_.K, in_a_.data(), idx_);
        new_a = tile_value_with(a_, sa, rj, in_a_.data());
      }
      if (ch_b) {
        sh_.select_from(sum_b_.data(), sh_.in.data() + b_ * p_.K, in_b_.data(), idx_);
        new_b = tile_value_with(b_, sb, ri, in_b_.data());
      }
      if (!(new_a + new_b - val_a_ - val_b_ > thr)) return false;
      if (ch_a) sh_.set_flags(a_, in_a_.data(), outs_, ins_, tmp_);
      if (ch_b) sh_.set_flags(b_, in_b_.data(), outs_, ins_, tmp_);
    }
    std::copy(sum_a_.begin(), sum_a_.end(), cur_a);
    std::copy(sum_b_.begin(), sum_b_.end(), cur_b);
    std::swap(sh_.slots[sa], sh_.slots[sb]);
    val_a_ = new_a;
    val_b_ = new_b;
    return true;
  }
};

}  // namespace

double topk_objective_of(const Problem& p, const std::vector<int64_t>& slots) {
  const int64_t keep = p.Kt / p.m * p.n;
  std::vector<double> buf(p.Kt);
  double total = 0;
  for (int64_t t = 0; t < p.tiles(); ++t) {
    const int64_t* rows = slots.data() + t * p.v;
    const auto kept = kept_columns(p, rows, p.tile_rows(t));
    for (int64_t i = 0; i < p.tile_rows(t); ++i) total += topk_within(p.row(rows[i]), kept.data(), p.Kt, keep, buf.data());
  }
  return total;
}

// Exact evaluations allowed per proposal, over a pair's round: a layer where most proposals pass
// the first test and change a kept set (a temperature too high for it: a random walk that gained
// nothing on MiniLM) would otherwise cost several times as much as the others (~7 % on most).
constexpr int64_t kProposalsPerExact = 8;

int64_t anneal_rows(const Problem& p, std::vector<int64_t>& slots, const AnnealOptions& opt, const Deadline& dl,
                    double* tracked) {
  const int64_t T = p.tiles();
  if (T < 2 || opt.moves_per_row <= 0 || opt.rounds <= 0) {
    if (tracked) *tracked = topk_objective_of(p, slots);
    return 0;
  }
  Shared sh(p, slots);
  parallel_for(T, 1, [&](int64_t a, int64_t b) {  // canonical sums and kept flags of every tile
    std::vector<int32_t> idx;
    for (int64_t t = a; t < b; ++t) {
      double* sum = sh.sums.data() + t * p.K;
      for (int64_t q = t * p.v; q < t * p.v + p.tile_rows(t); ++q)
        for (int64_t c = 0; c < p.K; ++c) sum[c] += p.row(slots[q])[c];
      sh.select(sum, sh.in.data() + t * p.K, idx);
    }
  });
  const double start = topk_objective_of(p, slots);
  const double t_start = std::max(0.0, opt.temperature) * start / double(p.R);
  const double tol = 1e-12 * std::max(1.0, std::fabs(start));
  const int64_t pairs = T / 2;
  const int64_t per_pair = std::max<int64_t>(1, opt.moves_per_row * p.R / (int64_t(opt.rounds) * pairs));
  int64_t accepted = 0;
  std::vector<int64_t> tiles(T), count(pairs);
  std::vector<double> tile_val(T, 0.0);
  // The annealed state can end below where it started (a high temperature is a random walk): the
  // best state at a round's end is what the stage returns.
  std::vector<int64_t> best_slots = slots;
  double best = start;
  for (int round = 0; round < opt.rounds && !dl.expired(); ++round) {
    std::iota(tiles.begin(), tiles.end(), 0);
    SplitMix64 shuffle = SplitMix64::stream(opt.seed, 0xa22, uint64_t(round));
    for (int64_t i = T - 1; i > 0; --i) std::swap(tiles[i], tiles[shuffle.below(i + 1)]);
    const double t0 = t_start * (1.0 - double(round) / opt.rounds);
    const double t1 = t_start * (1.0 - double(round + 1) / opt.rounds);
    parallel_for(pairs, 1, [&](int64_t x, int64_t y) {
      for (int64_t k = x; k < y; ++k) {
        PairAnneal pa(sh, tiles[2 * k], tiles[2 * k + 1]);
        SplitMix64 rng = SplitMix64::stream(opt.seed, 0xa11, uint64_t(round), uint64_t(k));
        count[k] = pa.run(rng, per_pair, t0, t1, tol, per_pair / kProposalsPerExact, dl);
        tile_val[tiles[2 * k]] = pa.value_a();
        tile_val[tiles[2 * k + 1]] = pa.value_b();
      }
    });
    if (T % 2) {  // the tile left out this round keeps its value
      const int64_t t = tiles[T - 1];
      double v = 0;
      for (int64_t q = t * p.v; q < t * p.v + p.tile_rows(t); ++q) v += sh.tab(slots[q], t).sum;
      tile_val[t] = v;
    }
    for (int64_t c : count) accepted += c;
    double total = 0;
    for (double x : tile_val) total += x;
    if (total > best + tol) { best = total; best_slots = slots; }
  }
  if (tracked) *tracked = best;
  slots = std::move(best_slots);  // the start when nothing beat it
  return best > start + tol ? accepted : 0;
}

}  // namespace hinm::permute
