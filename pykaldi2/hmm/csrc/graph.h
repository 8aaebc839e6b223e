// A decoding graph (HCLG) in flat arrays, read from OpenFst's binary VectorFst or ConstFst.
//
// The arcs of state s are arcs[off[s] .. off[s+1]); the first ones, up to eps_end[s], are its
// input-epsilon arcs, the rest its emitting arcs, each group in the file's order (the order
// Kaldi's decoders visit them in).
#ifndef PYKALDI2_HMM_CSRC_GRAPH_H_
#define PYKALDI2_HMM_CSRC_GRAPH_H_

#include <string>
#include <vector>

#include "common.h"

namespace pk2 {

struct GraphArc {
  int32 ilabel;
  int32 olabel;
  float weight;
  int32 nextstate;
};

struct Graph {
  int32 start = -1;
  std::vector<int64> off;      // (S + 1,)
  std::vector<int64> eps_end;  // (S,)
  std::vector<GraphArc> arcs;  // (A,)
  std::vector<float> final;    // (S,) final cost, +inf when not final
  std::string fst_type;        // "vector" or "const"
  uint64 properties = 0;       // the header's property bits
  int32 max_ilabel = 0;

  int32 NumStates() const { return static_cast<int32>(final.size()); }
  int64 NumArcs() const { return static_cast<int64>(arcs.size()); }
  int64 NumInputEpsilons(int32 s) const { return eps_end[s] - off[s]; }
};

// Reads an OpenFst binary file (fst type "vector" or "const", arc type "standard").
// Throws Error with a message naming what is wrong.
Graph ReadGraph(const std::string &path);

// Builds a graph from arc arrays (src need not be sorted; arcs keep their order per state).
Graph GraphFromArcs(int32 num_states, int32 start, const int32 *src, const int32 *dst,
                    const int32 *ilabel, const int32 *olabel, const float *weight,
                    int64 num_arcs, const float *final);

}  // namespace pk2

#endif  // PYKALDI2_HMM_CSRC_GRAPH_H_
