// OpenFst binary format (fst/fst.h FstHeader, vector-fst.h, const-fst.h), as written by
// fstcompile/fstconvert and Kaldi's mkgraph.sh:
//
//   header:  int32 magic 2125659606, string fst_type, string arc_type, int32 version,
//            int32 flags, uint64 properties, int64 start, int64 num_states, int64 num_arcs
//            (a string is an int32 length and its bytes), then the input / output symbol
//            tables when flags has bit 1 / 2.
//   vector:  per state: float final, int64 num_arcs, arcs (int32 ilabel, int32 olabel,
//            float weight, int32 nextstate).
//   const:   num_states x (float final, uint32 pos, uint32 num_arcs, uint32 num_ieps,
//            uint32 num_oeps), then num_arcs arcs as above; each block starts at a multiple of
//            16 bytes of the file when the header says it is aligned (flag 4, or version 1).
#include "graph.h"

#include <cstdio>
#include <cstring>
#include <memory>

namespace pk2 {
namespace {

constexpr int32 kFstMagic = 2125659606;
constexpr int32 kSymbolTableMagic = 2125658996;
constexpr int32 kHasISymbols = 1, kHasOSymbols = 2, kIsAligned = 4;

class Reader {
 public:
  explicit Reader(const std::string &path) : path_(path) {
    f_ = std::fopen(path.c_str(), "rb");
    if (!f_) throw Error("cannot open");
    buf_.reset(new char[1 << 20]);
    std::setvbuf(f_, buf_.get(), _IOFBF, 1 << 20);
    if (std::fseek(f_, 0, SEEK_END) == 0) size_ = std::ftell(f_);
    std::fseek(f_, 0, SEEK_SET);
  }
  int64 Size() const { return size_; }
  int64 Pos() const { return pos_; }
  ~Reader() {
    if (f_) std::fclose(f_);
  }
  void Read(void *dst, size_t n, const char *what) {
    if (n && std::fread(dst, 1, n, f_) != n)
      throw Error(std::string("file ends inside ") + what);
    pos_ += static_cast<int64>(n);
  }
  template <class T>
  T Get(const char *what) {
    T x;
    Read(&x, sizeof(T), what);
    return x;
  }
  std::string GetString(const char *what) {
    int32 n = Get<int32>(what);
    if (n < 0 || n > (1 << 20)) throw Error(std::string("bad string length in ") + what);
    std::string s(static_cast<size_t>(n), '\0');
    Read(&s[0], static_cast<size_t>(n), what);
    return s;
  }
  void Align() {  // to the next multiple of 16 bytes of the file
    char c[16];
    int64 pad = (16 - pos_ % 16) % 16;
    Read(c, static_cast<size_t>(pad), "alignment padding");
  }
  void SkipSymbolTable(const char *what) {
    if (Get<int32>(what) != kSymbolTableMagic) throw Error(std::string("bad ") + what);
    GetString(what);
    Get<int64>(what);
    int64 size = Get<int64>(what);
    for (int64 i = 0; i < size; i++) {
      GetString(what);
      Get<int64>(what);
    }
  }

 private:
  std::string path_;
  std::FILE *f_ = nullptr;
  std::unique_ptr<char[]> buf_;
  int64 pos_ = 0;
  int64 size_ = -1;
};

// Appends one state's arcs, input-epsilon arcs first, each group in file order.
void AddState(Graph *g, const GraphArc *arcs, int64 n, float final) {
  int64 neps = 0;
  for (int64 i = 0; i < n; i++) neps += arcs[i].ilabel == 0;
  for (int64 i = 0; i < n; i++)
    if (arcs[i].ilabel == 0) g->arcs.push_back(arcs[i]);
  for (int64 i = 0; i < n; i++)
    if (arcs[i].ilabel != 0) g->arcs.push_back(arcs[i]);
  g->eps_end.push_back(g->off.back() + neps);
  g->off.push_back(static_cast<int64>(g->arcs.size()));
  g->final.push_back(final);
}

void Check(Graph *g) {
  const int32 S = g->NumStates();
  if (g->start >= S || g->start < -1) throw Error("start state out of range");
  int32 max_il = 0;
  for (const GraphArc &a : g->arcs) {
    if (a.nextstate < 0 || a.nextstate >= S) throw Error("arc to a state out of range");
    if (a.ilabel < 0 || a.olabel < 0) throw Error("negative arc label");
    if (a.ilabel > max_il) max_il = a.ilabel;
    if (std::isnan(a.weight) || a.weight == -kInf) throw Error("arc weight is NaN or -inf");
  }
  g->max_ilabel = max_il;
}

}  // namespace

Graph ReadGraph(const std::string &path) {
  Reader r(path);
  Graph g;
  if (r.Get<int32>("header") != kFstMagic) throw Error("not an OpenFst binary file (bad magic)");
  g.fst_type = r.GetString("header");
  const std::string arc_type = r.GetString("header");
  const int32 version = r.Get<int32>("header");
  const int32 flags = r.Get<int32>("header");
  g.properties = r.Get<uint64>("header");
  const int64 start = r.Get<int64>("header");
  const int64 num_states = r.Get<int64>("header");
  const int64 num_arcs = r.Get<int64>("header");
  if (arc_type != "standard")
    throw Error("arc type '" + arc_type + "', expected 'standard' (tropical float weights)");
  if (g.fst_type != "vector" && g.fst_type != "const")
    throw Error("fst type '" + g.fst_type + "', expected 'vector' or 'const'");
  if (flags & kHasISymbols) r.SkipSymbolTable("input symbol table");
  if (flags & kHasOSymbols) r.SkipSymbolTable("output symbol table");
  if (num_states < 0 && g.fst_type == "const") throw Error("ConstFst without a state count");
  if (num_states > std::numeric_limits<int32>::max()) throw Error("too many states");
  g.start = static_cast<int32>(start);
  g.off.push_back(0);
  if (g.fst_type == "vector") {
    if (version != 2) throw Error("VectorFst version " + std::to_string(version) + ", expected 2");
    std::vector<GraphArc> tmp;
    if (num_states > 0) {
      g.final.reserve(static_cast<size_t>(num_states));
      g.off.reserve(static_cast<size_t>(num_states) + 1);
      g.eps_end.reserve(static_cast<size_t>(num_states));
      // The header has no arc count; the file size bounds it (a state takes >= 12 bytes).
      const int64 bound = (r.Size() - r.Pos() - 12 * num_states) / 16;
      if (bound > 0) g.arcs.reserve(static_cast<size_t>(bound));
    }
    for (int64 s = 0; s < num_states; s++) {
      const float final = r.Get<float>("state");
      const int64 n = r.Get<int64>("state");
      if (n < 0) throw Error("negative arc count");
      tmp.resize(static_cast<size_t>(n));
      static_assert(sizeof(GraphArc) == 16, "OpenFst StdArc is 16 bytes");
      r.Read(tmp.data(), static_cast<size_t>(n) * sizeof(GraphArc), "arcs");
      AddState(&g, tmp.data(), n, final);
    }
  } else {
    if (version != 1 && version != 2)
      throw Error("ConstFst version " + std::to_string(version) + ", expected 1 or 2");
    const bool aligned = (flags & kIsAligned) || version == 1;
    struct ConstState {
      float final;
      uint32_t pos, narcs, nieps, noeps;
    };
    static_assert(sizeof(ConstState) == 20, "ConstState is 20 bytes");
    if (aligned) r.Align();
    std::vector<ConstState> states(static_cast<size_t>(num_states));
    r.Read(states.data(), states.size() * sizeof(ConstState), "states");
    if (aligned) r.Align();
    g.arcs.reserve(static_cast<size_t>(num_arcs));
    g.final.reserve(states.size());
    g.eps_end.reserve(states.size());
    g.off.reserve(states.size() + 1);
    // fstconvert writes the arcs state after state: stream them through one state's buffer
    // (no second copy of a large graph); otherwise read them all first.
    bool sequential = true;
    int64 next = 0;
    for (const ConstState &st : states) {
      if (static_cast<int64>(st.pos) != next) sequential = false;
      next = static_cast<int64>(st.pos) + st.narcs;
      if (next > num_arcs) throw Error("state's arcs out of range");
    }
    if (sequential && next == num_arcs) {
      std::vector<GraphArc> tmp;
      for (const ConstState &st : states) {
        tmp.resize(st.narcs);
        r.Read(tmp.data(), tmp.size() * sizeof(GraphArc), "arcs");
        AddState(&g, tmp.data(), st.narcs, st.final);
      }
    } else {
      std::vector<GraphArc> all(static_cast<size_t>(num_arcs));
      r.Read(all.data(), all.size() * sizeof(GraphArc), "arcs");
      for (const ConstState &st : states) AddState(&g, all.data() + st.pos, st.narcs, st.final);
    }
  }
  Check(&g);
  return g;
}

Graph GraphFromArcs(int32 num_states, int32 start, const int32 *src, const int32 *dst,
                    const int32 *ilabel, const int32 *olabel, const float *weight,
                    int64 num_arcs, const float *final) {
  std::vector<std::vector<GraphArc>> per(static_cast<size_t>(num_states));
  for (int64 i = 0; i < num_arcs; i++) {
    if (src[i] < 0 || src[i] >= num_states) throw Error("arc from a state out of range");
    per[src[i]].push_back({ilabel[i], olabel[i], weight[i], dst[i]});
  }
  Graph g;
  g.fst_type = "vector";
  g.start = start;
  g.off.push_back(0);
  for (int32 s = 0; s < num_states; s++)
    AddState(&g, per[s].data(), static_cast<int64>(per[s].size()), final[s]);
  Check(&g);
  return g;
}

}  // namespace pk2
