// Kaldi's LatticeFasterDecoder (decoder/lattice-faster-decoder.{h,cc}), written anew.
//
// Per frame, a list of tokens (one per active graph state) with forward links to the tokens
// they lead to. A frame is decoded in two passes: emitting arcs (one frame of the decodable,
// pruned by a cutoff from GetCutoff -- the beam, narrowed by max_active and widened by
// min_active -- and by a running "next cutoff"), then input-epsilon arcs within the new
// frame. Every prune_interval frames, links and tokens that cannot be within lattice_beam of
// the best path are removed (PruneActiveTokens); at the end, final costs are applied
// (FinalizeDecoding). The raw lattice is read from the surviving tokens and links.
#ifndef PYKALDI2_HMM_CSRC_DECODER_H_
#define PYKALDI2_HMM_CSRC_DECODER_H_

#include <unordered_map>
#include <vector>

#include "common.h"
#include "graph.h"
#include "lattice.h"

namespace pk2 {

struct DecoderOptions {
  float beam = 16.0f;
  int32 max_active = std::numeric_limits<int32>::max();
  int32 min_active = 200;
  float lattice_beam = 10.0f;
  int32 prune_interval = 25;
  float beam_delta = 0.5f;
  float hash_ratio = 2.0f;
  float prune_scale = 0.1f;
  void Check() const;
};

// Kaldi's DecodableMatrixScaledMapped: LogLikelihood(t, tid) = scale * loglik[t, tid2pdf[tid]].
struct Decodable {
  const float *loglik = nullptr;  // (num_frames, num_pdfs), row-major
  int32 num_frames = 0;
  int32 num_pdfs = 0;
  const int32 *tid2pdf = nullptr;  // (num_tids + 1,)
  float scale = 1.0f;
  inline float LogLikelihood(int32 frame, int32 tid) const {
    return scale * loglik[static_cast<int64>(frame) * num_pdfs + tid2pdf[tid]];
  }
};

// A free-list allocator of fixed-size objects in blocks (Kaldi's MemoryPool role).
template <class T>
class Pool {
 public:
  explicit Pool(size_t block = 1024) : block_(block) {}
  ~Pool() {
    for (char *b : blocks_) delete[] b;
  }
  Pool(const Pool &) = delete;
  Pool &operator=(const Pool &) = delete;
  T *New() {
    if (free_) {
      void *p = free_;
      free_ = *static_cast<void **>(p);
      return static_cast<T *>(p);
    }
    if (blocks_.empty() || used_ == block_) {
      if (cur_ + 1 < blocks_.size()) {
        cur_++;
      } else {
        blocks_.push_back(new char[block_ * sizeof(T)]);
        cur_ = blocks_.size() - 1;
      }
      used_ = 0;
    }
    return reinterpret_cast<T *>(blocks_[cur_] + sizeof(T) * used_++);
  }
  void Free(T *p) {
    *reinterpret_cast<void **>(p) = free_;
    free_ = p;
  }
  // Forget every object, keeping the memory for the next utterance.
  void Reset() {
    free_ = nullptr;
    cur_ = 0;
    used_ = 0;
  }
  // Forget every object and give the memory back.
  void Release() {
    for (char *b : blocks_) delete[] b;
    blocks_.clear();
    blocks_.shrink_to_fit();
    Reset();
  }
  size_t Bytes() const { return blocks_.size() * block_ * sizeof(T); }

 private:
  static_assert(sizeof(T) >= sizeof(void *), "pool objects hold the free-list pointer");
  size_t block_;
  std::vector<char *> blocks_;
  size_t cur_ = 0, used_ = 0;
  void *free_ = nullptr;
};

struct Token;

struct ForwardLink {
  Token *next_tok;
  int32 ilabel;
  int32 olabel;
  float graph_cost;
  float acoustic_cost;
  ForwardLink *next;
};

struct Token {
  float tot_cost;    // best cost from the start to here (minus the frames' cost offsets)
  float extra_cost;  // >= 0 after pruning: how far the best path through here is from the best
  ForwardLink *links;
  Token *next;  // next token of the same frame
};

// Kaldi's HashList<StateId, Token*>: a hash whose elements also form one list, grouped by
// bucket in the order the buckets were first used, each bucket in insertion order. The
// decoder visits tokens in this order, which fixes its tie-breaking.
class TokenHash {
 public:
  struct Elem {
    int32 key;
    Token *val;
    Elem *tail;
  };
  TokenHash() = default;
  ~TokenHash();
  TokenHash(const TokenHash &) = delete;
  TokenHash &operator=(const TokenHash &) = delete;
  void SetSize(size_t size);
  size_t Size() const { return hash_size_; }
  // Empties the hash; the caller owns the returned list and must Delete() its elements.
  Elem *Clear();
  const Elem *GetList() const { return list_head_; }
  void Delete(Elem *e) {
    e->tail = freed_;
    freed_ = e;
  }
  // The element of `key`, inserted with `val` when absent.
  Elem *Insert(int32 key, Token *val);

 private:
  struct Bucket {
    size_t prev_bucket;
    Elem *last_elem;
  };
  static constexpr size_t kNone = static_cast<size_t>(-1);
  Elem *NewElem();
  std::vector<Bucket> buckets_;
  size_t hash_size_ = 0;
  Elem *list_head_ = nullptr;
  size_t bucket_list_tail_ = kNone;
  Elem *freed_ = nullptr;
  std::vector<Elem *> blocks_;
};

class LatticeFasterDecoder {
 public:
  LatticeFasterDecoder(const Graph &graph, const DecoderOptions &opts);
  ~LatticeFasterDecoder();

  // Decodes all frames; false when no tokens survive (no traceback at all).
  bool Decode(const Decodable &d);
  void InitDecoding();
  void AdvanceDecoding(const Decodable &d);
  void FinalizeDecoding();
  int32 NumFramesDecoded() const { return static_cast<int32>(active_toks_.size()) - 1; }
  // Cost of the best final path minus the best path (inf when no final state is active).
  float FinalRelativeCost() const;
  bool ReachedFinal() const { return FinalRelativeCost() != kInf; }
  // The state-level lattice (ilabel = transition-id, olabel = word, acoustic costs scaled as
  // the decodable's), states in topological order, the start state 0. Final weights: the
  // graph's final costs when a final state was reached, else One on every last-frame state.
  bool GetRawLattice(Lattice *lat) const;
  size_t PeakTokens() const { return peak_toks_; }
  // Frees the tokens and links (and their pools' memory) once the lattice has been read out:
  // NumFramesDecoded, FinalRelativeCost and PeakTokens keep their values, GetRawLattice and
  // AdvanceDecoding need a new InitDecoding. The next utterance's search then reuses the
  // memory that determinization of this one's lattice did not need, instead of the pools
  // keeping the largest utterance's tokens for good.
  void ReleaseTokens();
  // Bytes the token and link pools hold (0 after ReleaseTokens).
  size_t PoolBytes() const { return token_pool_.Bytes() + link_pool_.Bytes(); }

 private:
  struct TokenList {
    Token *toks = nullptr;
    bool must_prune_forward_links = true;
    bool must_prune_tokens = true;
  };
  using Elem = TokenHash::Elem;

  Elem *FindOrAddToken(int32 state, int32 frame_plus_one, float tot_cost, bool *changed);
  float GetCutoff(Elem *list_head, size_t *tok_count, float *adaptive_beam, Elem **best_elem);
  float ProcessEmitting(const Decodable &d);
  void ProcessNonemitting(float cutoff);
  void PruneForwardLinks(int32 frame_plus_one, bool *extra_costs_changed, bool *links_pruned,
                         float delta);
  void PruneForwardLinksFinal();
  void PruneTokensForFrame(int32 frame_plus_one);
  void PruneActiveTokens(float delta);
  void ComputeFinalCosts(std::unordered_map<Token *, float> *final_costs,
                         float *final_relative_cost, float *final_best_cost) const;
  void DeleteForwardLinks(Token *tok);
  void DeleteElems(Elem *list);
  void ClearActiveTokens();
  // Tokens of one frame in a topological order of their epsilon links.
  void TopSortTokens(Token *tok_list, std::vector<Token *> *out) const;

  const Graph &graph_;
  DecoderOptions opts_;
  TokenHash toks_;
  std::vector<TokenList> active_toks_;
  std::vector<const Elem *> queue_;
  std::vector<float> tmp_array_;
  std::vector<float> cost_offsets_;
  int64 num_toks_ = 0;
  size_t peak_toks_ = 0;
  bool warned_ = false;
  bool decoding_finalized_ = false;
  std::unordered_map<Token *, float> final_costs_;
  float final_relative_cost_ = kInf;
  float final_best_cost_ = kInf;
  Pool<Token> token_pool_;
  Pool<ForwardLink> link_pool_;
};

}  // namespace pk2

#endif  // PYKALDI2_HMM_CSRC_DECODER_H_
