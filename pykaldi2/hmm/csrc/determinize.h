// Pruned lattice determinization (Kaldi's lat/determinize-lattice-pruned.{h,cc}), written anew.
//
// The input is a state-level Lattice with words on the input side and transition-ids on the
// output side (an inverted decoder lattice). Seen as an acceptor on words whose weights are
// (LatWeight, transition-id string) pairs with "keep the better one" as the sum, it is
// determinized with epsilon removal: each word sequence keeps its best path and that path's
// transition-ids. Subsets are processed best-first by forward + backward cost, and work more
// than `beam` worse than the best path is never done.
#ifndef PYKALDI2_HMM_CSRC_DETERMINIZE_H_
#define PYKALDI2_HMM_CSRC_DETERMINIZE_H_

#include <vector>

#include "common.h"
#include "lattice.h"

namespace pk2 {

struct DeterminizeOptions {
  float delta = kDelta;        // tolerance when comparing subset weights
  int64 max_mem = 50000000;    // approximate bytes before stopping early (<= 0: no limit)
  int32 max_states = -1;       // stop after this many output states (<= 0: no limit)
  int32 max_arcs = -1;         // stop after this many output arcs (<= 0: no limit)
  float retry_cutoff = 0.5f;   // retry on a pruned input when the beam reached < this x beam
  bool phone_determinize = true;  // first pass on phones + words (Kaldi's default)
  bool word_determinize = true;   // second pass on words
};

// DeterminizeLatticePruned with a CompactLattice output. `in` must be topologically sorted.
// Returns false when it stopped before reaching `beam` (memory/state/arc limits).
bool DeterminizeLatticePruned(const Lattice &in, double beam, CompactLattice *out,
                              const DeterminizeOptions &opts);
// The same with a Lattice output: each output string becomes a chain of arcs.
bool DeterminizeLatticePruned(const Lattice &in, double beam, Lattice *out,
                              const DeterminizeOptions &opts);

// Kaldi's DeterminizeLatticePhonePrunedWrapper on a decoder lattice (ilabel = transition-id,
// olabel = word; destroyed): invert, sort, a first pass on words + phones (phone_start[tid]
// is the phone a transition-id starts, 0 if none; may be null to skip that pass), a second
// pass on words, connect.
bool DeterminizeLatticePhonePruned(Lattice *lat, const int32 *phone_start, int32 num_tids,
                                   double beam, CompactLattice *out,
                                   const DeterminizeOptions &opts);

}  // namespace pk2

#endif  // PYKALDI2_HMM_CSRC_DETERMINIZE_H_
