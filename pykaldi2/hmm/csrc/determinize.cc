#include "determinize.h"

#include <algorithm>
#include <memory>
#include <queue>
#include <unordered_map>

namespace pk2 {
namespace {

// Strings of labels as a trie: each id is (parent id, last label); -1 is the empty string.
// Extending a string by one label costs a hash lookup, not a copy (Kaldi's
// LatticeStringRepository plays this role).
class StringRepo {
 public:
  static constexpr int32 kEmpty = -1;

  int32 Successor(int32 parent, int32 label) {
    const uint64 key = (static_cast<uint64>(static_cast<uint32_t>(parent + 1)) << 32) |
                       static_cast<uint32_t>(label);
    auto it = map_.find(key);
    if (it != map_.end()) return it->second;
    const Entry e{parent, label, Size(parent) + 1};
    int32 id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
      entries_[id] = e;
      live_[id] = 1;
    } else {
      id = static_cast<int32>(entries_.size());
      entries_.push_back(e);
      live_.push_back(1);
    }
    map_.emplace(key, id);
    return id;
  }
  int32 Size(int32 s) const { return s < 0 ? 0 : entries_[s].len; }
  void ToVector(int32 s, std::vector<int32> *v) const {
    v->resize(static_cast<size_t>(Size(s)));
    for (int32 i = Size(s) - 1; s >= 0; s = entries_[s].parent, i--) (*v)[i] = entries_[s].label;
  }
  int32 FromRange(const int32 *b, const int32 *e) {
    int32 s = kEmpty;
    for (; b != e; ++b) s = Successor(s, *b);
    return s;
  }
  int32 Concatenate(int32 a, int32 b) {
    if (b < 0) return a;
    std::vector<int32> v;
    ToVector(b, &v);
    for (int32 l : v) a = Successor(a, l);
    return a;
  }
  // Shortens `prefix` to its common prefix with string a.
  void ReduceToCommonPrefix(int32 a, std::vector<int32> *prefix) const {
    int32 n = Size(a);
    while (n > static_cast<int32>(prefix->size())) {
      a = entries_[a].parent;
      n--;
    }
    if (static_cast<int32>(prefix->size()) > n) prefix->resize(static_cast<size_t>(n));
    for (int32 i = n; a >= 0; a = entries_[a].parent) {
      --i;
      if (entries_[a].label != (*prefix)[i]) prefix->resize(static_cast<size_t>(i));
    }
  }
  int32 RemovePrefix(int32 a, size_t n) {
    if (n == 0) return a;
    std::vector<int32> v;
    ToVector(a, &v);
    return FromRange(v.data() + n, v.data() + v.size());
  }
  size_t MemSize() const { return map_.size() * 2 * sizeof(Entry); }
  // Frees every string that neither is needed nor is a prefix of a needed one.
  void Rebuild(const std::vector<int32> &needed) {
    std::vector<char> keep(entries_.size(), 0);
    for (int32 s : needed)
      for (; s >= 0 && !keep[s]; s = entries_[s].parent) keep[s] = 1;
    for (size_t id = 0; id < entries_.size(); id++) {
      if (!live_[id] || keep[id]) continue;
      const Entry &e = entries_[id];
      map_.erase((static_cast<uint64>(static_cast<uint32_t>(e.parent + 1)) << 32) |
                 static_cast<uint32_t>(e.label));
      live_[id] = 0;
      free_.push_back(static_cast<int32>(id));
    }
  }

 private:
  struct Entry {
    int32 parent;
    int32 label;
    int32 len;
  };
  std::vector<Entry> entries_;
  std::vector<char> live_;
  std::vector<int32> free_;
  std::unordered_map<uint64, int32> map_;
};

struct Element {
  int32 state;
  int32 string;
  LatWeight weight;
};
inline bool SameElement(const Element &x, const Element &y) {
  return x.state == y.state && x.string == y.string && x.weight == y.weight;
}

struct SubsetHash {
  size_t operator()(const std::vector<Element> *s) const {  // states and strings only
    size_t h = 0;
    for (const Element &e : *s) h = h * 0x9E3779B1u + static_cast<size_t>(e.state) * 7853 +
                                    static_cast<size_t>(e.string + 1);
    return h;
  }
};
struct SubsetEqual {
  float delta;
  bool operator()(const std::vector<Element> *x, const std::vector<Element> *y) const {
    if (x->size() != y->size()) return false;
    for (size_t i = 0; i < x->size(); i++) {
      const Element &a = (*x)[i], &b = (*y)[i];
      if (a.state != b.state || a.string != b.string || !ApproxEqual(a.weight, b.weight, delta))
        return false;
    }
    return true;
  }
};

class Determinizer {
 public:
  Determinizer(const Lattice &ifst, double beam, const DeterminizeOptions &opts)
      : ifst_(ifst),
        beam_(beam),
        opts_(opts),
        minimal_hash_(ifst.NumStates() / 2 + 3, SubsetHash(), SubsetEqual{opts.delta}),
        initial_hash_(ifst.NumStates() / 2 + 3, SubsetHash(), SubsetEqual{opts.delta}) {
    if (!IsTopSorted(ifst)) throw Error("lattice determinization needs a topologically sorted lattice");
    sorted_ = IsILabelSorted(ifst);
  }
  ~Determinizer() {
    while (!queue_.empty()) {
      delete queue_.top();
      queue_.pop();
    }
  }

  bool Determinize(double *effective_beam) {
    Initialize();
    while (!queue_.empty()) {
      Task *task = queue_.top();
      const size_t num_states = output_states_.size();
      if ((opts_.max_states > 0 && num_states > static_cast<size_t>(opts_.max_states)) ||
          (opts_.max_arcs > 0 && num_arcs_ > opts_.max_arcs) ||
          (num_states % 10 == 0 && !CheckMemoryUsage()))
        break;  // what is done so far is the best part: tasks go best-first
      queue_.pop();
      ProcessTransition(task->state, task->label, &task->subset);
      delete task;
    }
    if (effective_beam) {
      *effective_beam = beam_;
      if (!queue_.empty() && ifst_.start >= 0)
        *effective_beam = queue_.top()->priority_cost - backward_costs_[ifst_.start];
    }
    return queue_.empty();
  }

  void Output(CompactLattice *out) {
    *out = CompactLattice();
    const int32 n = static_cast<int32>(output_states_.size());
    if (n == 0) return;
    for (int32 s = 0; s < n; s++) out->AddState();
    out->start = 0;
    std::vector<int32> seq;
    for (int32 s = 0; s < n; s++) {
      for (const TempArc &t : output_states_[s]->arcs) {
        repo_.ToVector(t.string, &seq);
        if (t.nextstate < 0) {
          out->final[s] = t.weight;
          out->final_str[s] = seq;
        } else {
          out->arcs[s].push_back(CompactArc{t.ilabel, t.weight, seq, t.nextstate});
        }
      }
    }
  }

  void Output(Lattice *out) {
    *out = Lattice();
    const int32 n = static_cast<int32>(output_states_.size());
    if (n == 0) return;
    for (int32 s = 0; s < n; s++) out->AddState();
    out->start = 0;
    std::vector<int32> seq;
    for (int32 s = 0; s < n; s++) {
      for (const TempArc &t : output_states_[s]->arcs) {
        repo_.ToVector(t.string, &seq);
        int32 cur = s;
        if (t.nextstate < 0) {  // a final weight: a chain of epsilon arcs, weight on the first
          for (size_t i = 0; i < seq.size(); i++) {
            const int32 next = out->AddState();
            out->arcs[cur].push_back(LatArc{0, seq[i], i == 0 ? t.weight : WeightOne(), next});
            cur = next;
          }
          out->final[cur] = seq.empty() ? t.weight : WeightOne();
        } else {  // label and weight on the first arc of the chain
          for (size_t i = 0; i + 1 < seq.size(); i++) {
            const int32 next = out->AddState();
            out->arcs[cur].push_back(
                LatArc{i == 0 ? t.ilabel : 0, seq[i], i == 0 ? t.weight : WeightOne(), next});
            cur = next;
          }
          out->arcs[cur].push_back(LatArc{seq.size() <= 1 ? t.ilabel : 0,
                                          seq.empty() ? 0 : seq.back(),
                                          seq.size() <= 1 ? t.weight : WeightOne(), t.nextstate});
        }
      }
    }
  }

 private:
  struct TempArc {
    int32 ilabel;
    int32 string;
    int32 nextstate;  // -1: the final weight
    LatWeight weight;
  };
  struct OutputState {
    std::vector<Element> minimal_subset;
    std::vector<TempArc> arcs;
    double forward_cost;  // best cost from the start (known when created: best-first order)
  };
  struct Task {
    int32 state;
    int32 label;
    std::vector<Element> subset;  // not normalized
    double priority_cost;
  };
  struct TaskCompare {
    bool operator()(const Task *a, const Task *b) const {
      return a->priority_cost > b->priority_cost;
    }
  };
  using Subset = std::vector<Element>;

  // -1 / 0 / +1 as (w, s) is worse / equal / better: weight first, then the shorter string,
  // then the lexicographically smaller (Kaldi's CompactLatticeWeight order).
  int CompareFull(const LatWeight &aw, int32 as, const LatWeight &bw, int32 bs) const {
    const int c = Compare(aw, bw);
    if (c != 0) return c;
    if (as == bs) return 0;
    std::vector<int32> av, bv;
    repo_.ToVector(as, &av);
    repo_.ToVector(bs, &bv);
    if (av.size() > bv.size()) return -1;
    if (av.size() < bv.size()) return 1;
    for (size_t i = 0; i < av.size(); i++) {
      if (av[i] < bv[i]) return -1;
      if (av[i] > bv[i]) return 1;
    }
    return 0;
  }

  bool IsIsymbolOrFinal(int32 s) {
    if (static_cast<size_t>(s) >= isymbol_or_final_.size()) isymbol_or_final_.resize(s + 1, 0);
    char &c = isymbol_or_final_[s];
    if (c == 0) {
      c = 1;
      if (!IsZero(ifst_.final[s])) c = 2;
      for (const LatArc &a : ifst_.arcs[s])
        if (a.ilabel != 0 && !IsZero(a.w)) c = 2;
    }
    return c == 2;
  }

  void ComputeBackwardCosts() {
    const int32 S = ifst_.NumStates();
    backward_costs_.assign(static_cast<size_t>(S), kDInf);
    for (int32 s = S - 1; s >= 0; s--) {
      double cost = ToCost(ifst_.final[s]);
      for (const LatArc &a : ifst_.arcs[s])
        cost = std::min(cost, ToCost(a.w) + backward_costs_[a.nextstate]);
      backward_costs_[s] = cost;
    }
    cutoff_ = ifst_.start >= 0 ? backward_costs_[ifst_.start] + beam_ : kDInf;
  }

  void Initialize() {
    ComputeBackwardCosts();
    if (ifst_.start < 0) return;
    // The start subset is not normalized, so that the output has no extra initial weight.
    Subset subset{Element{ifst_.start, StringRepo::kEmpty, WeightOne()}};
    EpsilonClosure(&subset);
    ConvertToMinimal(&subset);
    output_states_.emplace_back(new OutputState{subset, {}, 0.0});
    num_elems_ += static_cast<int64>(subset.size());
    minimal_hash_[&output_states_[0]->minimal_subset] = 0;
    ProcessFinal(0);
    ProcessTransitions(0);
  }

  // Follows input-epsilon arcs, keeping for each state the best (weight, string).
  void EpsilonClosure(Subset *subset) {
    auto later = [](const Element &x, const Element &y) { return x.state > y.state; };
    std::priority_queue<Element, std::vector<Element>, decltype(later)> queue(later);
    std::unordered_map<int32, Element> cur;
    for (const Element &e : *subset) {
      queue.push(e);
      cur[e.state] = e;
    }
    bool replaced = false;
    while (!queue.empty()) {
      const Element elem = queue.top();
      queue.pop();
      if (replaced && !SameElement(cur[elem.state], elem)) continue;  // superseded
      for (const LatArc &arc : ifst_.arcs[elem.state]) {
        if (sorted_ && arc.ilabel != 0) break;
        if (arc.ilabel != 0 || IsZero(arc.w)) continue;
        Element next{arc.nextstate, StringRepo::kEmpty, Times(elem.weight, arc.w)};
        auto it = cur.find(next.state);
        if (it == cur.end()) {
          next.string = arc.olabel == 0 ? elem.string : repo_.Successor(elem.string, arc.olabel);
          cur[next.state] = next;
          queue.push(next);
          continue;
        }
        int comp = Compare(next.weight, it->second.weight);
        if (comp == 0) {
          next.string = arc.olabel == 0 ? elem.string : repo_.Successor(elem.string, arc.olabel);
          comp = CompareFull(next.weight, next.string, it->second.weight, it->second.string);
        }
        if (comp == 1) {
          next.string = arc.olabel == 0 ? elem.string : repo_.Successor(elem.string, arc.olabel);
          it->second = next;
          queue.push(next);
          replaced = true;
        }
      }
    }
    subset->clear();
    subset->reserve(cur.size());
    for (const auto &kv : cur) subset->push_back(kv.second);
    std::sort(subset->begin(), subset->end(),
              [](const Element &x, const Element &y) { return x.state < y.state; });
  }

  // Keeps only the states that are final or have a labelled arc out.
  void ConvertToMinimal(Subset *subset) {
    size_t out = 0;
    for (size_t i = 0; i < subset->size(); i++)
      if (IsIsymbolOrFinal((*subset)[i].state)) (*subset)[out++] = (*subset)[i];
    subset->resize(out);
  }

  // Divides out the best weight and the common string prefix of the subset.
  void NormalizeSubset(Subset *elems, LatWeight *tot_weight, int32 *common_str) {
    if (elems->empty()) {
      *common_str = StringRepo::kEmpty;
      *tot_weight = WeightZero();
      return;
    }
    std::vector<int32> prefix;
    repo_.ToVector((*elems)[0].string, &prefix);
    LatWeight w = (*elems)[0].weight;
    for (size_t i = 1; i < elems->size(); i++) {
      w = Plus(w, (*elems)[i].weight);
      repo_.ReduceToCommonPrefix((*elems)[i].string, &prefix);
    }
    for (Element &e : *elems) {
      e.weight = Divide(e.weight, w);
      e.string = repo_.RemovePrefix(e.string, prefix.size());
    }
    *common_str = repo_.FromRange(prefix.data(), prefix.data() + prefix.size());
    *tot_weight = w;
  }

  // Merges elements of the same state (sorted on state), keeping the best.
  void MakeSubsetUnique(Subset *subset) {
    size_t out = 0;
    for (size_t in = 0; in < subset->size();) {
      (*subset)[out] = (*subset)[in++];
      while (in < subset->size() && (*subset)[in].state == (*subset)[out].state) {
        const Element &e = (*subset)[in];
        if (CompareFull(e.weight, e.string, (*subset)[out].weight, (*subset)[out].string) == 1) {
          (*subset)[out].weight = e.weight;
          (*subset)[out].string = e.string;
        }
        in++;
      }
      out++;
    }
    subset->resize(out);
  }

  int32 MinimalToStateId(const Subset &subset, double forward_cost) {
    auto it = minimal_hash_.find(&subset);
    if (it != minimal_hash_.end()) return it->second;
    const int32 id = static_cast<int32>(output_states_.size());
    output_states_.emplace_back(new OutputState{subset, {}, forward_cost});
    minimal_hash_[&output_states_.back()->minimal_subset] = id;
    num_elems_ += static_cast<int64>(subset.size());
    ProcessFinal(id);
    ProcessTransitions(id);
    return id;
  }

  int32 InitialToStateId(const Subset &subset_in, double forward_cost, LatWeight *remaining,
                         int32 *common_prefix) {
    auto it = initial_hash_.find(&subset_in);
    if (it != initial_hash_.end()) {
      *remaining = it->second.weight;
      *common_prefix = it->second.string;
      return it->second.state;
    }
    Subset subset(subset_in);
    EpsilonClosure(&subset);
    ConvertToMinimal(&subset);
    Element elem{};
    NormalizeSubset(&subset, &elem.weight, &elem.string);
    forward_cost += ToCost(elem.weight);
    const int32 ans = MinimalToStateId(subset, forward_cost);
    *remaining = elem.weight;
    *common_prefix = elem.string;
    elem.state = ans;
    initial_keys_.emplace_back(new Subset(subset_in));
    initial_hash_[initial_keys_.back().get()] = elem;
    num_elems_ += static_cast<int64>(subset_in.size());
    return ans;
  }

  void ProcessFinal(int32 id) {
    OutputState &state = *output_states_[id];
    bool is_final = false;
    LatWeight final_weight = WeightZero();
    int32 final_string = StringRepo::kEmpty;
    for (const Element &e : state.minimal_subset) {
      const LatWeight w = Times(e.weight, ifst_.final[e.state]);
      if (!IsZero(w) &&
          (!is_final || CompareFull(w, e.string, final_weight, final_string) == 1)) {
        is_final = true;
        final_weight = w;
        final_string = e.string;
      }
    }
    if (is_final && ToCost(final_weight) + state.forward_cost <= cutoff_) {
      state.arcs.push_back(TempArc{0, final_string, -1, final_weight});
      num_arcs_++;
    }
  }

  // Queues one task per input label out of the state's subset (those within the beam).
  void ProcessTransitions(int32 id) {
    const Subset &minimal = output_states_[id]->minimal_subset;
    std::vector<std::pair<int32, Element>> &all = all_elems_tmp_;
    all.clear();
    for (const Element &e : minimal)
      for (const LatArc &arc : ifst_.arcs[e.state]) {
        if (arc.ilabel == 0 || IsZero(arc.w)) continue;
        const int32 str = arc.olabel == 0 ? e.string : repo_.Successor(e.string, arc.olabel);
        all.emplace_back(arc.ilabel, Element{arc.nextstate, str, Times(e.weight, arc.w)});
      }
    std::sort(all.begin(), all.end(), [](const std::pair<int32, Element> &x,
                                         const std::pair<int32, Element> &y) {
      return x.first < y.first || (x.first == y.first && x.second.state < y.second.state);
    });
    const double forward_cost = output_states_[id]->forward_cost;
    for (size_t i = 0; i < all.size();) {
      std::unique_ptr<Task> task(new Task{id, all[i].first, {}, kDInf});
      for (; i < all.size() && all[i].first == task->label; i++) {
        const Element &e = all[i].second;
        task->subset.push_back(e);
        task->priority_cost =
            std::min(task->priority_cost, ToCost(e.weight) + backward_costs_[e.state]);
      }
      task->priority_cost += forward_cost;
      if (task->priority_cost > cutoff_) continue;  // never within the beam
      MakeSubsetUnique(&task->subset);
      queue_.push(task.release());
    }
    all.clear();
  }

  void ProcessTransition(int32 ostate, int32 ilabel, Subset *subset) {
    double forward_cost = output_states_[ostate]->forward_cost;
    int32 common_str;
    LatWeight tot_weight;
    NormalizeSubset(subset, &tot_weight, &common_str);
    forward_cost += ToCost(tot_weight);
    LatWeight next_weight;
    int32 next_str;
    const int32 nextstate = InitialToStateId(*subset, forward_cost, &next_weight, &next_str);
    common_str = repo_.Concatenate(common_str, next_str);
    tot_weight = Times(tot_weight, next_weight);
    output_states_[ostate]->arcs.push_back(TempArc{ilabel, common_str, nextstate, tot_weight});
    num_arcs_++;
  }

  bool CheckMemoryUsage() {
    const int64 arcs_size = num_arcs_ * static_cast<int64>(sizeof(TempArc));
    const int64 elems_size = num_elems_ * static_cast<int64>(sizeof(Element));
    const int64 repo_size = static_cast<int64>(repo_.MemSize());
    if (opts_.max_mem <= 0 || repo_size + arcs_size + elems_size <= opts_.max_mem) return true;
    RebuildRepository();  // usually the strings are what grew
    const int64 new_total = static_cast<int64>(repo_.MemSize()) + arcs_size + elems_size;
    return new_total <= static_cast<int64>(0.8 * static_cast<double>(opts_.max_mem));
  }

  void RebuildRepository() {
    std::vector<int32> needed;
    for (const auto &st : output_states_) {
      for (const Element &e : st->minimal_subset) needed.push_back(e.string);
      for (const TempArc &t : st->arcs) needed.push_back(t.string);
    }
    std::vector<Task *> tasks;
    while (!queue_.empty()) {
      tasks.push_back(queue_.top());
      queue_.pop();
    }
    for (Task *t : tasks) {
      for (const Element &e : t->subset) needed.push_back(e.string);
      queue_.push(t);
    }
    for (const auto &kv : initial_hash_) {
      for (const Element &e : *kv.first) needed.push_back(e.string);
      needed.push_back(kv.second.string);
    }
    repo_.Rebuild(needed);
  }

  const Lattice &ifst_;
  double beam_;
  double cutoff_ = kDInf;
  DeterminizeOptions opts_;
  bool sorted_ = false;
  StringRepo repo_;
  std::vector<double> backward_costs_;
  std::vector<std::unique_ptr<OutputState>> output_states_;
  std::unordered_map<const Subset *, int32, SubsetHash, SubsetEqual> minimal_hash_;
  std::unordered_map<const Subset *, Element, SubsetHash, SubsetEqual> initial_hash_;
  std::vector<std::unique_ptr<Subset>> initial_keys_;
  std::priority_queue<Task *, std::vector<Task *>, TaskCompare> queue_;
  std::vector<std::pair<int32, Element>> all_elems_tmp_;
  std::vector<char> isymbol_or_final_;  // 0 unknown, 1 no, 2 yes
  int64 num_arcs_ = 0;
  int64 num_elems_ = 0;
};

template <class Out>
bool DeterminizeWithRetry(const Lattice &in, double beam, Out *out,
                          const DeterminizeOptions &opts) {
  if (in.NumStates() == 0) {
    *out = Out();
    return true;
  }
  const int max_iters = 10;
  Lattice pruned;
  for (int iter = 0; iter < max_iters; iter++) {
    Determinizer det(iter == 0 ? in : pruned, beam, opts);
    double effective_beam = beam;
    const bool ans = det.Determinize(&effective_beam);
    if (effective_beam >= beam * opts.retry_cutoff || beam == kDInf || iter + 1 == max_iters) {
      det.Output(out);
      return ans;
    }
    // Stopped early (memory): prune the input harder and try again.
    if (effective_beam < 0.0) effective_beam = 0.0;
    beam = std::max(beam * std::sqrt(effective_beam / beam), 0.5 * beam);
    if (iter == 0) pruned = in;
    PruneLattice(static_cast<float>(beam), &pruned);
  }
  return false;
}

int32 HighestInputLabel(const Lattice &lat) {
  int32 m = 0;
  for (const auto &v : lat.arcs)
    for (const LatArc &a : v) m = std::max(m, a.ilabel);
  return m;
}

}  // namespace

bool DeterminizeLatticePruned(const Lattice &in, double beam, CompactLattice *out,
                              const DeterminizeOptions &opts) {
  return DeterminizeWithRetry(in, beam, out, opts);
}

bool DeterminizeLatticePruned(const Lattice &in, double beam, Lattice *out,
                              const DeterminizeOptions &opts) {
  return DeterminizeWithRetry(in, beam, out, opts);
}

bool DeterminizeLatticePhonePruned(Lattice *lat, const int32 *phone_start, int32 num_tids,
                                   double beam, CompactLattice *out,
                                   const DeterminizeOptions &opts) {
  Invert(lat);  // words on the input side
  if (!IsTopSorted(*lat) && !TopSort(lat))
    throw Error("the lattice has a cycle (empty words in the lexicon or epsilon cycles in G?)");
  ArcSortByILabel(lat);
  bool ans = true;
  if (phone_start && opts.phone_determinize) {
    // First pass: a phone label where each phone starts, so that determinization on (words,
    // phones) keeps the best alignment per phone sequence; cheaper than words alone on deep
    // lattices. Phone labels go above the highest word id and are removed afterwards.
    const int32 first_phone = HighestInputLabel(*lat) + 1;
    const int32 S = lat->NumStates();
    for (int32 s = 0; s < S; s++) {
      if (s == lat->start) continue;
      for (size_t i = 0; i < lat->arcs[s].size(); i++) {
        LatArc arc = lat->arcs[s][i];
        if (arc.olabel == 0) continue;
        if (arc.olabel > num_tids) throw Error("lattice transition-id beyond the model's");
        const int32 phone = phone_start[arc.olabel];
        if (phone == 0) continue;
        if (arc.ilabel == 0) {
          arc.ilabel = first_phone + phone;
        } else {
          const int32 extra = lat->AddState();
          lat->arcs[extra].push_back(LatArc{first_phone + phone, 0, WeightOne(), arc.nextstate});
          arc.nextstate = extra;
        }
        lat->arcs[s][i] = arc;
      }
    }
    if (!TopSort(lat)) throw Error("internal error: cycle after inserting phones");
    Lattice det;
    ans = DeterminizeLatticePruned(*lat, beam, &det, opts) && ans;
    *lat = std::move(det);
    for (auto &v : lat->arcs)
      for (LatArc &a : v)
        if (a.ilabel >= first_phone) a.ilabel = 0;
    if (!TopSort(lat)) throw Error("internal error: cycle after removing phones");
  }
  if (opts.word_determinize) {
    ans = DeterminizeLatticePruned(*lat, beam, out, opts) && ans;
  } else {  // a compact copy, one arc per arc
    *out = CompactLattice();
    for (int32 s = 0; s < lat->NumStates(); s++) out->AddState();
    out->start = lat->start;
    for (int32 s = 0; s < lat->NumStates(); s++) {
      for (const LatArc &a : lat->arcs[s])
        out->arcs[s].push_back(CompactArc{a.ilabel, a.w,
                                          a.olabel ? std::vector<int32>{a.olabel}
                                                   : std::vector<int32>{},
                                          a.nextstate});
      out->final[s] = lat->final[s];
    }
  }
  Connect(out);
  return ans;
}

}  // namespace pk2
