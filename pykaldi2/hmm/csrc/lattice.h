// Kaldi's two lattice types in memory, and the FST operations the decoder needs on them.
//
// Lattice (raw, state-level): arcs carry an ilabel, an olabel and a LatWeight; as the decoder
//   makes it, ilabel = transition-id and olabel = word.
// CompactLattice: an acceptor on words whose weights carry a LatWeight and a string of
//   transition-ids (Kaldi's CompactLatticeWeight); final weights carry one too.
#ifndef PYKALDI2_HMM_CSRC_LATTICE_H_
#define PYKALDI2_HMM_CSRC_LATTICE_H_

#include <vector>

#include "common.h"

namespace pk2 {

struct LatArc {
  int32 ilabel;
  int32 olabel;
  LatWeight w;
  int32 nextstate;
};

struct Lattice {
  int32 start = -1;
  std::vector<std::vector<LatArc>> arcs;  // per state
  std::vector<LatWeight> final;           // per state; WeightZero() when not final

  int32 NumStates() const { return static_cast<int32>(final.size()); }
  int32 AddState() {
    arcs.emplace_back();
    final.push_back(WeightZero());
    return NumStates() - 1;
  }
  int64 NumArcs() const;
};

struct CompactArc {
  int32 label;
  LatWeight w;
  std::vector<int32> str;
  int32 nextstate;
};

struct CompactLattice {
  int32 start = -1;
  std::vector<std::vector<CompactArc>> arcs;
  std::vector<LatWeight> final;
  std::vector<std::vector<int32>> final_str;

  int32 NumStates() const { return static_cast<int32>(final.size()); }
  int32 AddState() {
    arcs.emplace_back();
    final.push_back(WeightZero());
    final_str.emplace_back();
    return NumStates() - 1;
  }
  int64 NumArcs() const;
};

// Swaps ilabel and olabel of every arc (OpenFst's Invert).
void Invert(Lattice *lat);
// True when every arc goes to a higher-numbered state.
bool IsTopSorted(const Lattice &lat);
// Renumbers the states in a topological order (depth-first, as OpenFst's TopSort). False (and
// the lattice unchanged) when it has a cycle.
bool TopSort(Lattice *lat);
// Stable sort of each state's arcs on ilabel.
void ArcSortByILabel(Lattice *lat);
// True when each state's arcs are sorted on ilabel.
bool IsILabelSorted(const Lattice &lat);
// Removes the states that are not on a path from the start to a final state, keeping the
// order of the others (OpenFst's Connect).
void Connect(Lattice *lat);
void Connect(CompactLattice *lat);
// Kaldi's PruneLattice: drops arcs and states outside `beam` of the best path (topologically
// sorted input). False when the lattice has no successful path.
bool PruneLattice(float beam, Lattice *lat);
// Multiplies the acoustic costs by `scale` as Kaldi's ScaleLattice(AcousticLatticeScale(scale))
// does (computed in double, rounded to float; Zero stays Zero).
void ScaleAcoustic(double scale, Lattice *lat);
void ScaleAcoustic(double scale, CompactLattice *lat);
// The best path (OpenFst's ShortestPath with n = 1) of a topologically sorted lattice: its
// arcs in order and the final state. False when no final state is reachable.
bool BestPath(const Lattice &lat, std::vector<const LatArc *> *path, int32 *final_state);

}  // namespace pk2

#endif  // PYKALDI2_HMM_CSRC_LATTICE_H_
