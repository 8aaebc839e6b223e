#include "lattice.h"

#include <algorithm>
#include <utility>

namespace pk2 {

int64 Lattice::NumArcs() const {
  int64 n = 0;
  for (const auto &v : arcs) n += static_cast<int64>(v.size());
  return n;
}

int64 CompactLattice::NumArcs() const {
  int64 n = 0;
  for (const auto &v : arcs) n += static_cast<int64>(v.size());
  return n;
}

void Invert(Lattice *lat) {
  for (auto &v : lat->arcs)
    for (LatArc &a : v) std::swap(a.ilabel, a.olabel);
}

bool IsTopSorted(const Lattice &lat) {
  for (int32 s = 0; s < lat.NumStates(); s++)
    for (const LatArc &a : lat.arcs[s])
      if (a.nextstate <= s) return false;
  return true;
}

namespace {

// Applies the permutation order[new] = old to the states of a lattice-like object.
template <class L, class Arc>
void Renumber(L *lat, const std::vector<int32> &order) {
  const int32 S = lat->NumStates();
  std::vector<int32> new_of(static_cast<size_t>(S), -1);
  for (int32 i = 0; i < static_cast<int32>(order.size()); i++) new_of[order[i]] = i;
  decltype(lat->arcs) arcs(order.size());
  decltype(lat->final) final(order.size());
  for (int32 i = 0; i < static_cast<int32>(order.size()); i++) {
    arcs[i] = std::move(lat->arcs[order[i]]);
    final[i] = lat->final[order[i]];
    std::vector<Arc> kept;
    kept.reserve(arcs[i].size());
    for (Arc &a : arcs[i]) {
      if (new_of[a.nextstate] < 0) continue;
      a.nextstate = new_of[a.nextstate];
      kept.push_back(std::move(a));
    }
    arcs[i].swap(kept);
  }
  lat->arcs.swap(arcs);
  lat->final.swap(final);
  lat->start = lat->start >= 0 ? new_of[lat->start] : -1;
}

// States on a path from the start to a final state, in increasing order.
template <class L>
std::vector<int32> ConnectedStates(const L &lat) {
  const int32 S = lat.NumStates();
  std::vector<char> acc(static_cast<size_t>(S), 0), coacc(static_cast<size_t>(S), 0);
  std::vector<std::vector<int32>> preds(static_cast<size_t>(S));
  for (int32 s = 0; s < S; s++)
    for (const auto &a : lat.arcs[s]) preds[a.nextstate].push_back(s);
  std::vector<int32> stack;
  if (lat.start >= 0) {
    acc[lat.start] = 1;
    stack.push_back(lat.start);
  }
  while (!stack.empty()) {
    int32 s = stack.back();
    stack.pop_back();
    for (const auto &a : lat.arcs[s])
      if (!acc[a.nextstate]) {
        acc[a.nextstate] = 1;
        stack.push_back(a.nextstate);
      }
  }
  for (int32 s = 0; s < S; s++)
    if (!IsZero(lat.final[s])) {
      coacc[s] = 1;
      stack.push_back(s);
    }
  while (!stack.empty()) {
    int32 s = stack.back();
    stack.pop_back();
    for (int32 p : preds[s])
      if (!coacc[p]) {
        coacc[p] = 1;
        stack.push_back(p);
      }
  }
  std::vector<int32> keep;
  for (int32 s = 0; s < S; s++)
    if (acc[s] && coacc[s]) keep.push_back(s);
  return keep;
}

}  // namespace

bool TopSort(Lattice *lat) {
  const int32 S = lat->NumStates();
  // Iterative depth-first search from the start, then from the other states in order; the
  // reverse finishing order is topological when there is no back arc.
  std::vector<char> color(static_cast<size_t>(S), 0);  // 0 new, 1 on stack, 2 done
  std::vector<int32> finish;
  finish.reserve(static_cast<size_t>(S));
  std::vector<std::pair<int32, size_t>> stack;
  auto visit = [&](int32 root) -> bool {
    color[root] = 1;
    stack.emplace_back(root, 0);
    while (!stack.empty()) {
      auto &top = stack.back();
      const auto &arcs = lat->arcs[top.first];
      if (top.second < arcs.size()) {
        int32 d = arcs[top.second++].nextstate;
        if (color[d] == 1) return false;
        if (color[d] == 0) {
          color[d] = 1;
          stack.emplace_back(d, 0);
        }
      } else {
        color[top.first] = 2;
        finish.push_back(top.first);
        stack.pop_back();
      }
    }
    return true;
  };
  if (lat->start >= 0 && !visit(lat->start)) return false;
  for (int32 s = 0; s < S; s++)
    if (color[s] == 0 && !visit(s)) return false;
  std::reverse(finish.begin(), finish.end());
  Renumber<Lattice, LatArc>(lat, finish);
  return true;
}

void ArcSortByILabel(Lattice *lat) {
  for (auto &v : lat->arcs)
    std::stable_sort(v.begin(), v.end(),
                     [](const LatArc &x, const LatArc &y) { return x.ilabel < y.ilabel; });
}

bool IsILabelSorted(const Lattice &lat) {
  for (const auto &v : lat.arcs)
    for (size_t i = 1; i < v.size(); i++)
      if (v[i].ilabel < v[i - 1].ilabel) return false;
  return true;
}

void Connect(Lattice *lat) { Renumber<Lattice, LatArc>(lat, ConnectedStates(*lat)); }

void Connect(CompactLattice *lat) {
  std::vector<int32> keep = ConnectedStates(*lat);
  std::vector<std::vector<int32>> fs(keep.size());
  for (size_t i = 0; i < keep.size(); i++) fs[i] = std::move(lat->final_str[keep[i]]);
  Renumber<CompactLattice, CompactArc>(lat, keep);
  lat->final_str.swap(fs);
}

bool PruneLattice(float beam, Lattice *lat) {
  if (!IsTopSorted(*lat) && !TopSort(lat)) return false;
  const int32 S = lat->NumStates();
  if (S == 0 || lat->start < 0) return false;
  std::vector<double> fwd(static_cast<size_t>(S), kDInf), bwd(static_cast<size_t>(S), kDInf);
  fwd[lat->start] = 0.0;
  double best = kDInf;
  for (int32 s = 0; s < S; s++) {
    for (const LatArc &a : lat->arcs[s])
      fwd[a.nextstate] = std::min(fwd[a.nextstate], fwd[s] + ToCost(a.w));
    best = std::min(best, fwd[s] + ToCost(lat->final[s]));
  }
  if (best == kDInf) return false;
  const double cutoff = best + beam;
  for (int32 s = S - 1; s >= 0; s--) {
    double b = ToCost(lat->final[s]);
    if (b != kDInf && fwd[s] + b > cutoff) lat->final[s] = WeightZero();
    std::vector<LatArc> kept;
    for (const LatArc &a : lat->arcs[s]) {
      const double ab = ToCost(a.w) + bwd[a.nextstate];
      b = std::min(b, ab);
      if (fwd[s] + ab <= cutoff) kept.push_back(a);
    }
    lat->arcs[s].swap(kept);
    bwd[s] = b;
  }
  Connect(lat);
  return true;
}

namespace {
LatWeight ScaleWeight(const LatWeight &w, double scale) {
  if (w.g == kInf) return WeightZero();
  return {w.g, static_cast<float>(scale * static_cast<double>(w.a))};
}
}  // namespace

void ScaleAcoustic(double scale, Lattice *lat) {
  for (int32 s = 0; s < lat->NumStates(); s++) {
    for (LatArc &a : lat->arcs[s]) a.w = ScaleWeight(a.w, scale);
    lat->final[s] = ScaleWeight(lat->final[s], scale);
  }
}

void ScaleAcoustic(double scale, CompactLattice *lat) {
  for (int32 s = 0; s < lat->NumStates(); s++) {
    for (CompactArc &a : lat->arcs[s]) a.w = ScaleWeight(a.w, scale);
    lat->final[s] = ScaleWeight(lat->final[s], scale);
  }
}

bool BestPath(const Lattice &lat, std::vector<const LatArc *> *path, int32 *final_state) {
  path->clear();
  const int32 S = lat.NumStates();
  if (S == 0 || lat.start < 0) return false;
  std::vector<LatWeight> best(static_cast<size_t>(S), WeightZero());
  std::vector<const LatArc *> back(static_cast<size_t>(S), nullptr);
  std::vector<int32> back_state(static_cast<size_t>(S), -1);
  best[lat.start] = WeightOne();
  int32 f = -1;
  LatWeight best_total = WeightZero();
  for (int32 s = 0; s < S; s++) {  // states are in topological order
    if (IsZero(best[s])) continue;
    for (const LatArc &a : lat.arcs[s]) {
      LatWeight w = Times(best[s], a.w);
      if (Compare(w, best[a.nextstate]) > 0) {
        best[a.nextstate] = w;
        back[a.nextstate] = &a;
        back_state[a.nextstate] = s;
      }
    }
    if (!IsZero(lat.final[s])) {
      LatWeight w = Times(best[s], lat.final[s]);
      if (Compare(w, best_total) > 0) {
        best_total = w;
        f = s;
      }
    }
  }
  if (f < 0) return false;
  for (int32 s = f; s != lat.start; s = back_state[s]) path->push_back(back[s]);
  std::reverse(path->begin(), path->end());
  *final_state = f;
  return true;
}

}  // namespace pk2
