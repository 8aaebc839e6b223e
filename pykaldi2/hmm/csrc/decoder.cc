#include "decoder.h"

#include <algorithm>
#include <cstdio>

namespace pk2 {

void DecoderOptions::Check() const {
  if (!(beam > 0.0f && max_active > 1 && lattice_beam > 0.0f && min_active <= max_active &&
        min_active >= 0 && prune_interval > 0 && beam_delta > 0.0f && hash_ratio >= 1.0f &&
        prune_scale > 0.0f && prune_scale < 1.0f))
    throw Error(
        "invalid decoder options: need beam > 0, max_active > 1, lattice_beam > 0, "
        "0 <= min_active <= max_active, prune_interval > 0, beam_delta > 0, hash_ratio >= 1, "
        "0 < prune_scale < 1");
}

// ---- TokenHash ---------------------------------------------------------------------------
TokenHash::~TokenHash() {
  for (Elem *b : blocks_) delete[] b;
}

void TokenHash::SetSize(size_t size) {
  hash_size_ = size;
  if (size > buckets_.size()) buckets_.resize(size, Bucket{kNone, nullptr});
}

TokenHash::Elem *TokenHash::Clear() {
  for (size_t b = bucket_list_tail_; b != kNone; b = buckets_[b].prev_bucket)
    buckets_[b].last_elem = nullptr;
  bucket_list_tail_ = kNone;
  Elem *ans = list_head_;
  list_head_ = nullptr;
  return ans;
}

TokenHash::Elem *TokenHash::NewElem() {
  if (!freed_) {
    const size_t n = 1024;
    Elem *block = new Elem[n];
    for (size_t i = 0; i + 1 < n; i++) block[i].tail = block + i + 1;
    block[n - 1].tail = nullptr;
    blocks_.push_back(block);
    freed_ = block;
  }
  Elem *e = freed_;
  freed_ = e->tail;
  return e;
}

TokenHash::Elem *TokenHash::Insert(int32 key, Token *val) {
  const size_t index = static_cast<size_t>(key) % hash_size_;
  Bucket &bucket = buckets_[index];
  if (bucket.last_elem) {
    Elem *head = bucket.prev_bucket == kNone ? list_head_ : buckets_[bucket.prev_bucket].last_elem->tail;
    Elem *tail = bucket.last_elem->tail;
    for (Elem *e = head; e != tail; e = e->tail)
      if (e->key == key) return e;
  }
  Elem *e = NewElem();
  e->key = key;
  e->val = val;
  if (!bucket.last_elem) {  // a new bucket goes to the end of the list
    if (bucket_list_tail_ == kNone)
      list_head_ = e;
    else
      buckets_[bucket_list_tail_].last_elem->tail = e;
    e->tail = nullptr;
    bucket.last_elem = e;
    bucket.prev_bucket = bucket_list_tail_;
    bucket_list_tail_ = index;
  } else {  // the end of its bucket's run
    e->tail = bucket.last_elem->tail;
    bucket.last_elem->tail = e;
    bucket.last_elem = e;
  }
  return e;
}

// ---- LatticeFasterDecoder ----------------------------------------------------------------
LatticeFasterDecoder::LatticeFasterDecoder(const Graph &graph, const DecoderOptions &opts)
    : graph_(graph), opts_(opts) {
  opts_.Check();
  toks_.SetSize(1000);
}

LatticeFasterDecoder::~LatticeFasterDecoder() {
  DeleteElems(toks_.Clear());
  ClearActiveTokens();
}

void LatticeFasterDecoder::DeleteElems(Elem *list) {
  for (Elem *e = list, *next; e; e = next) {
    next = e->tail;
    toks_.Delete(e);
  }
}

void LatticeFasterDecoder::ClearActiveTokens() {
  active_toks_.clear();
  token_pool_.Reset();
  link_pool_.Reset();
  num_toks_ = 0;
}

void LatticeFasterDecoder::ReleaseTokens() {
  if (!decoding_finalized_) final_relative_cost_ = FinalRelativeCost();
  decoding_finalized_ = true;  // FinalRelativeCost answers from the cached value
  DeleteElems(toks_.Clear());
  for (TokenList &l : active_toks_) l.toks = nullptr;  // keeps NumFramesDecoded
  final_costs_.clear();
  token_pool_.Release();
  link_pool_.Release();
  num_toks_ = 0;
}

void LatticeFasterDecoder::InitDecoding() {
  DeleteElems(toks_.Clear());
  cost_offsets_.clear();
  ClearActiveTokens();
  warned_ = false;
  decoding_finalized_ = false;
  final_costs_.clear();
  peak_toks_ = 0;
  if (graph_.start < 0 || graph_.start >= graph_.NumStates())
    throw Error("the decoding graph has no start state");
  active_toks_.resize(1);
  Token *tok = token_pool_.New();
  *tok = Token{0.0f, 0.0f, nullptr, nullptr};
  active_toks_[0].toks = tok;
  toks_.Insert(graph_.start, tok);
  num_toks_++;
  ProcessNonemitting(opts_.beam);
}

bool LatticeFasterDecoder::Decode(const Decodable &d) {
  InitDecoding();
  AdvanceDecoding(d);
  FinalizeDecoding();
  return !active_toks_.empty() && active_toks_.back().toks != nullptr;
}

LatticeFasterDecoder::Elem *LatticeFasterDecoder::FindOrAddToken(int32 state,
                                                                 int32 frame_plus_one,
                                                                 float tot_cost, bool *changed) {
  Token *&toks = active_toks_[frame_plus_one].toks;
  Elem *e = toks_.Insert(state, nullptr);
  if (e->val == nullptr) {
    // A new token: extra_cost 0, as any token of the newest frame may end on the best path.
    Token *tok = token_pool_.New();
    *tok = Token{tot_cost, 0.0f, nullptr, toks};
    toks = tok;
    num_toks_++;
    e->val = tok;
    if (changed) *changed = true;
  } else if (e->val->tot_cost > tot_cost) {
    // A better path to an existing token: its old incoming links stay (pruned later).
    e->val->tot_cost = tot_cost;
    if (changed) *changed = true;
  } else if (changed) {
    *changed = false;
  }
  return e;
}

void LatticeFasterDecoder::DeleteForwardLinks(Token *tok) {
  for (ForwardLink *l = tok->links, *m; l; l = m) {
    m = l->next;
    link_pool_.Free(l);
  }
  tok->links = nullptr;
}

float LatticeFasterDecoder::GetCutoff(Elem *list_head, size_t *tok_count, float *adaptive_beam,
                                      Elem **best_elem) {
  float best_weight = kInf;
  size_t count = 0;
  if (opts_.max_active == std::numeric_limits<int32>::max() && opts_.min_active == 0) {
    for (Elem *e = list_head; e; e = e->tail, count++) {
      const float w = e->val->tot_cost;
      if (w < best_weight) {
        best_weight = w;
        if (best_elem) *best_elem = e;
      }
    }
    if (tok_count) *tok_count = count;
    if (adaptive_beam) *adaptive_beam = opts_.beam;
    return best_weight + opts_.beam;
  }
  tmp_array_.clear();
  for (Elem *e = list_head; e; e = e->tail, count++) {
    const float w = e->val->tot_cost;
    tmp_array_.push_back(w);
    if (w < best_weight) {
      best_weight = w;
      if (best_elem) *best_elem = e;
    }
  }
  if (tok_count) *tok_count = count;
  const float beam_cutoff = best_weight + opts_.beam;
  float min_active_cutoff = kInf, max_active_cutoff = kInf;
  const size_t max_active = static_cast<size_t>(opts_.max_active);
  const size_t min_active = static_cast<size_t>(opts_.min_active);
  if (tmp_array_.size() > max_active) {
    std::nth_element(tmp_array_.begin(), tmp_array_.begin() + max_active, tmp_array_.end());
    max_active_cutoff = tmp_array_[max_active];
  }
  if (max_active_cutoff < beam_cutoff) {  // max_active is tighter than the beam
    if (adaptive_beam) *adaptive_beam = max_active_cutoff - best_weight + opts_.beam_delta;
    return max_active_cutoff;
  }
  if (tmp_array_.size() > min_active) {
    if (min_active == 0) {
      min_active_cutoff = best_weight;
    } else {
      std::nth_element(tmp_array_.begin(), tmp_array_.begin() + min_active,
                       tmp_array_.size() > max_active ? tmp_array_.begin() + max_active
                                                      : tmp_array_.end());
      min_active_cutoff = tmp_array_[min_active];
    }
  }
  if (min_active_cutoff > beam_cutoff) {  // min_active is looser than the beam
    if (adaptive_beam) *adaptive_beam = min_active_cutoff - best_weight + opts_.beam_delta;
    return min_active_cutoff;
  }
  if (adaptive_beam) *adaptive_beam = opts_.beam;
  return beam_cutoff;
}

float LatticeFasterDecoder::ProcessEmitting(const Decodable &d) {
  const int32 frame = static_cast<int32>(active_toks_.size()) - 1;
  active_toks_.resize(active_toks_.size() + 1);
  Elem *final_toks = toks_.Clear();  // the previous frame's tokens, now owned here
  Elem *best_elem = nullptr;
  float adaptive_beam = opts_.beam;
  size_t tok_cnt = 0;
  const float cur_cutoff = GetCutoff(final_toks, &tok_cnt, &adaptive_beam, &best_elem);
  const size_t new_size = static_cast<size_t>(static_cast<float>(tok_cnt) * opts_.hash_ratio);
  if (new_size > toks_.Size()) toks_.SetSize(new_size);

  float next_cutoff = kInf;
  float cost_offset = 0.0f;  // keeps the costs in a good range
  // The best token first, for a tight initial bound on the next frame's cutoff.
  if (best_elem) {
    const int32 state = best_elem->key;
    const Token *tok = best_elem->val;
    cost_offset = -tok->tot_cost;
    for (int64 i = graph_.eps_end[state]; i < graph_.off[state + 1]; i++) {
      const GraphArc &arc = graph_.arcs[i];
      const float new_weight =
          arc.weight + cost_offset - d.LogLikelihood(frame, arc.ilabel) + tok->tot_cost;
      if (new_weight + adaptive_beam < next_cutoff) next_cutoff = new_weight + adaptive_beam;
    }
  }
  cost_offsets_.resize(static_cast<size_t>(frame) + 1, 0.0f);
  cost_offsets_[frame] = cost_offset;

  for (Elem *e = final_toks, *e_tail; e; e = e_tail) {
    const int32 state = e->key;
    Token *tok = e->val;
    if (tok->tot_cost <= cur_cutoff) {
      for (int64 i = graph_.eps_end[state]; i < graph_.off[state + 1]; i++) {
        const GraphArc &arc = graph_.arcs[i];
        const float ac_cost = cost_offset - d.LogLikelihood(frame, arc.ilabel);
        const float graph_cost = arc.weight;
        const float tot_cost = tok->tot_cost + ac_cost + graph_cost;
        if (tot_cost >= next_cutoff) continue;
        if (tot_cost + adaptive_beam < next_cutoff) next_cutoff = tot_cost + adaptive_beam;
        Elem *e_next = FindOrAddToken(arc.nextstate, frame + 1, tot_cost, nullptr);
        ForwardLink *link = link_pool_.New();
        *link = ForwardLink{e_next->val, arc.ilabel, arc.olabel, graph_cost, ac_cost, tok->links};
        tok->links = link;
      }
    }
    e_tail = e->tail;
    toks_.Delete(e);
  }
  return next_cutoff;
}

void LatticeFasterDecoder::ProcessNonemitting(float cutoff) {
  const int32 frame = static_cast<int32>(active_toks_.size()) - 2;
  queue_.clear();
  if (toks_.GetList() == nullptr && !warned_) warned_ = true;  // no surviving tokens
  for (const Elem *e = toks_.GetList(); e; e = e->tail)
    if (graph_.NumInputEpsilons(e->key) != 0) queue_.push_back(e);
  while (!queue_.empty()) {
    const Elem *e = queue_.back();
    queue_.pop_back();
    const int32 state = e->key;
    Token *tok = e->val;
    const float cur_cost = tok->tot_cost;
    if (cur_cost >= cutoff) continue;
    // Its epsilon links are regenerated (a token can be visited again after improving).
    DeleteForwardLinks(tok);
    for (int64 i = graph_.off[state]; i < graph_.eps_end[state]; i++) {
      const GraphArc &arc = graph_.arcs[i];
      const float graph_cost = arc.weight;
      const float tot_cost = cur_cost + graph_cost;
      if (tot_cost < cutoff) {
        bool changed = false;
        Elem *e_new = FindOrAddToken(arc.nextstate, frame + 1, tot_cost, &changed);
        ForwardLink *link = link_pool_.New();
        *link = ForwardLink{e_new->val, 0, arc.olabel, graph_cost, 0.0f, tok->links};
        tok->links = link;
        if (changed && graph_.NumInputEpsilons(arc.nextstate) != 0) queue_.push_back(e_new);
      }
    }
  }
}

void LatticeFasterDecoder::PruneForwardLinks(int32 frame_plus_one, bool *extra_costs_changed,
                                             bool *links_pruned, float delta) {
  *extra_costs_changed = false;
  *links_pruned = false;
  if (active_toks_[frame_plus_one].toks == nullptr) warned_ = true;
  // Repeat until nothing changes: links within a frame are not in topological order.
  bool changed = true;
  while (changed) {
    changed = false;
    for (Token *tok = active_toks_[frame_plus_one].toks; tok; tok = tok->next) {
      ForwardLink *link, *prev = nullptr;
      float tok_extra_cost = kInf;
      for (link = tok->links; link;) {
        Token *next_tok = link->next_tok;
        float link_extra_cost =
            next_tok->extra_cost +
            ((tok->tot_cost + link->acoustic_cost + link->graph_cost) - next_tok->tot_cost);
        if (link_extra_cost > opts_.lattice_beam) {  // excise the link
          ForwardLink *next_link = link->next;
          if (prev)
            prev->next = next_link;
          else
            tok->links = next_link;
          link_pool_.Free(link);
          link = next_link;
          *links_pruned = true;
        } else {
          if (link_extra_cost < 0.0f) link_extra_cost = 0.0f;  // rounding
          if (link_extra_cost < tok_extra_cost) tok_extra_cost = link_extra_cost;
          prev = link;
          link = link->next;
        }
      }
      if (std::fabs(tok_extra_cost - tok->extra_cost) > delta) changed = true;
      tok->extra_cost = tok_extra_cost;  // inf: no link survived
    }
    if (changed) *extra_costs_changed = true;
  }
}

namespace {
bool ApproxEqualRel(float a, float b, float rel) {
  if (a == b) return true;
  const float diff = std::fabs(a - b);
  if (diff == kInf || diff != diff) return false;
  return diff <= rel * (std::fabs(a) + std::fabs(b));
}
}  // namespace

void LatticeFasterDecoder::PruneForwardLinksFinal() {
  const int32 frame_plus_one = static_cast<int32>(active_toks_.size()) - 1;
  ComputeFinalCosts(&final_costs_, &final_relative_cost_, &final_best_cost_);
  decoding_finalized_ = true;
  DeleteElems(toks_.Clear());
  bool changed = true;
  const float delta = 1.0e-05f;
  while (changed) {
    changed = false;
    for (Token *tok = active_toks_[frame_plus_one].toks; tok; tok = tok->next) {
      ForwardLink *link, *prev = nullptr;
      float final_cost;
      if (final_costs_.empty()) {
        final_cost = 0.0f;
      } else {
        auto it = final_costs_.find(tok);
        final_cost = it != final_costs_.end() ? it->second : kInf;
      }
      // A min over ending here (with the final cost) and continuing through a link.
      float tok_extra_cost = tok->tot_cost + final_cost - final_best_cost_;
      for (link = tok->links; link;) {
        Token *next_tok = link->next_tok;
        float link_extra_cost =
            next_tok->extra_cost +
            ((tok->tot_cost + link->acoustic_cost + link->graph_cost) - next_tok->tot_cost);
        if (link_extra_cost > opts_.lattice_beam) {
          ForwardLink *next_link = link->next;
          if (prev)
            prev->next = next_link;
          else
            tok->links = next_link;
          link_pool_.Free(link);
          link = next_link;
        } else {
          if (link_extra_cost < 0.0f) link_extra_cost = 0.0f;
          if (link_extra_cost < tok_extra_cost) tok_extra_cost = link_extra_cost;
          prev = link;
          link = link->next;
        }
      }
      if (tok_extra_cost > opts_.lattice_beam) tok_extra_cost = kInf;
      if (!ApproxEqualRel(tok->extra_cost, tok_extra_cost, delta)) changed = true;
      tok->extra_cost = tok_extra_cost;
    }
  }
}

void LatticeFasterDecoder::PruneTokensForFrame(int32 frame_plus_one) {
  Token *&toks = active_toks_[frame_plus_one].toks;
  Token *prev = nullptr;
  for (Token *tok = toks, *next; tok; tok = next) {
    next = tok->next;
    if (tok->extra_cost == kInf) {  // no forward link survived
      if (prev)
        prev->next = next;
      else
        toks = next;
      token_pool_.Free(tok);
      num_toks_--;
    } else {
      prev = tok;
    }
  }
}

void LatticeFasterDecoder::PruneActiveTokens(float delta) {
  const int32 cur_frame_plus_one = NumFramesDecoded();
  // Backwards from the frame before the newest, stopping where extra costs stop changing.
  for (int32 f = cur_frame_plus_one - 1; f >= 0; f--) {
    if (active_toks_[f].must_prune_forward_links) {
      bool extra_costs_changed = false, links_pruned = false;
      PruneForwardLinks(f, &extra_costs_changed, &links_pruned, delta);
      if (extra_costs_changed && f > 0) active_toks_[f - 1].must_prune_forward_links = true;
      if (links_pruned) active_toks_[f].must_prune_tokens = true;
      active_toks_[f].must_prune_forward_links = false;
    }
    if (f + 1 < cur_frame_plus_one && active_toks_[f + 1].must_prune_tokens) {
      PruneTokensForFrame(f + 1);
      active_toks_[f + 1].must_prune_tokens = false;
    }
  }
}

void LatticeFasterDecoder::ComputeFinalCosts(std::unordered_map<Token *, float> *final_costs,
                                             float *final_relative_cost,
                                             float *final_best_cost) const {
  if (final_costs) final_costs->clear();
  float best_cost = kInf, best_cost_with_final = kInf;
  for (const Elem *e = toks_.GetList(); e; e = e->tail) {
    const float final_cost = graph_.final[e->key];
    const float cost = e->val->tot_cost, cost_with_final = cost + final_cost;
    best_cost = std::min(cost, best_cost);
    best_cost_with_final = std::min(cost_with_final, best_cost_with_final);
    if (final_costs && final_cost != kInf) (*final_costs)[e->val] = final_cost;
  }
  if (final_relative_cost) {
    if (best_cost == kInf && best_cost_with_final == kInf)
      *final_relative_cost = kInf;
    else
      *final_relative_cost = best_cost_with_final - best_cost;
  }
  if (final_best_cost)
    *final_best_cost = best_cost_with_final != kInf ? best_cost_with_final : best_cost;
}

float LatticeFasterDecoder::FinalRelativeCost() const {
  if (decoding_finalized_) return final_relative_cost_;
  float relative_cost;
  ComputeFinalCosts(nullptr, &relative_cost, nullptr);
  return relative_cost;
}

void LatticeFasterDecoder::AdvanceDecoding(const Decodable &d) {
  if (active_toks_.empty() || decoding_finalized_) throw Error("InitDecoding() first");
  while (NumFramesDecoded() < d.num_frames) {
    if (NumFramesDecoded() % opts_.prune_interval == 0)
      PruneActiveTokens(opts_.lattice_beam * opts_.prune_scale);
    const float cutoff = ProcessEmitting(d);
    ProcessNonemitting(cutoff);
    if (static_cast<size_t>(num_toks_) > peak_toks_) peak_toks_ = static_cast<size_t>(num_toks_);
  }
}

void LatticeFasterDecoder::FinalizeDecoding() {
  const int32 final_frame_plus_one = NumFramesDecoded();
  PruneForwardLinksFinal();
  for (int32 f = final_frame_plus_one - 1; f >= 0; f--) {
    bool b1, b2;
    PruneForwardLinks(f, &b1, &b2, 0.0f);  // delta 0: always update
    PruneTokensForFrame(f + 1);
  }
  PruneTokensForFrame(0);
}

void LatticeFasterDecoder::TopSortTokens(Token *tok_list, std::vector<Token *> *out) const {
  std::vector<Token *> toks;
  for (Token *t = tok_list; t; t = t->next) toks.push_back(t);
  std::reverse(toks.begin(), toks.end());  // oldest first: the start token leads frame 0
  std::unordered_map<const Token *, int32> index(toks.size() * 2 + 1);
  for (size_t i = 0; i < toks.size(); i++) index[toks[i]] = static_cast<int32>(i);
  std::vector<int32> indeg(toks.size(), 0);
  for (Token *t : toks)
    for (ForwardLink *l = t->links; l; l = l->next)
      if (l->ilabel == 0) {
        auto it = index.find(l->next_tok);
        if (it != index.end()) indeg[it->second]++;
      }
  out->clear();
  std::vector<int32> ready;
  for (size_t i = toks.size(); i-- > 0;)
    if (indeg[i] == 0) ready.push_back(static_cast<int32>(i));
  while (!ready.empty()) {  // smallest index first among the ready ones
    const int32 i = ready.back();
    ready.pop_back();
    out->push_back(toks[i]);
    for (ForwardLink *l = toks[i]->links; l; l = l->next)
      if (l->ilabel == 0) {
        auto it = index.find(l->next_tok);
        if (it != index.end() && --indeg[it->second] == 0) ready.push_back(it->second);
      }
  }
  if (out->size() != toks.size())
    throw Error("epsilon cycle in the decoding graph (not allowed in HCLG)");
}

bool LatticeFasterDecoder::GetRawLattice(Lattice *lat) const {
  *lat = Lattice();
  const int32 num_frames = NumFramesDecoded();
  if (num_frames < 0) return false;
  std::unordered_map<const Token *, int32> state_of(static_cast<size_t>(num_toks_) * 2 + 3);
  std::vector<std::vector<Token *>> order(static_cast<size_t>(num_frames) + 1);
  for (int32 f = 0; f <= num_frames; f++) {
    if (active_toks_[f].toks == nullptr) return false;  // no tokens on a frame
    TopSortTokens(active_toks_[f].toks, &order[f]);
    for (Token *t : order[f]) state_of[t] = lat->AddState();
  }
  lat->start = 0;
  for (int32 f = 0; f <= num_frames; f++) {
    for (Token *tok : order[f]) {
      const int32 s = state_of[tok];
      for (ForwardLink *l = tok->links; l; l = l->next) {
        auto it = state_of.find(l->next_tok);
        if (it == state_of.end()) throw Error("internal error: link to a pruned token");
        const float offset = l->ilabel != 0 ? cost_offsets_[f] : 0.0f;
        lat->arcs[s].push_back(
            LatArc{l->ilabel, l->olabel, LatWeight{l->graph_cost, l->acoustic_cost - offset},
                   it->second});
      }
      if (f == num_frames) {
        if (!final_costs_.empty()) {
          auto it = final_costs_.find(tok);
          if (it != final_costs_.end()) lat->final[s] = LatWeight{it->second, 0.0f};
        } else {
          lat->final[s] = WeightOne();
        }
      }
    }
  }
  return lat->NumStates() > 0;
}

}  // namespace pk2
