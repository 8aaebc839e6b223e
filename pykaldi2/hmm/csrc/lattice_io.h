// Kaldi's binary lattice format: an OpenFst VectorFst (header + states) with arc type
// "lattice4" (Lattice) or "compactlattice44" (CompactLattice), as Kaldi's lattice holders
// write it after "key " in an archive (no "\0B" marker for lattices).
//
//   Lattice state:         float g, float a (final), int64 num_arcs, then per arc:
//                          int32 ilabel, int32 olabel, float g, float a, int32 nextstate
//   CompactLattice state:  float g, float a, int32 n, n x int32 (final), int64 num_arcs, then
//                          per arc: int32 label, int32 label, float g, float a, int32 n,
//                          n x int32 transition-ids, int32 nextstate
#ifndef PYKALDI2_HMM_CSRC_LATTICE_IO_H_
#define PYKALDI2_HMM_CSRC_LATTICE_IO_H_

#include <string>

#include "lattice.h"

namespace pk2 {

// OpenFst property bits that are true of the lattice (what OpenFst would know of a lattice
// built arc by arc): expanded, mutable, acceptor-ness, epsilons, weighted-ness.
uint64 LatticeProperties(const Lattice &lat);
uint64 LatticeProperties(const CompactLattice &lat);

std::string WriteLatticeBinary(const Lattice &lat, uint64 properties);
std::string WriteLatticeBinary(const CompactLattice &lat, uint64 properties);

// Reads one FST of either type from data[pos..size); returns the position after it. Sets
// *compact, and fills *lat or *clat; *properties is the header's. "lattice8" and
// "compactlattice84" (double weights) are read into float.
size_t ReadLatticeBinary(const char *data, size_t size, size_t pos, bool *compact, Lattice *lat,
                         CompactLattice *clat, uint64 *properties);

}  // namespace pk2

#endif  // PYKALDI2_HMM_CSRC_LATTICE_IO_H_
