#include "lattice_io.h"

#include <cstring>

namespace pk2 {
namespace {

constexpr int32 kFstMagic = 2125659606;
constexpr uint64 kExpanded = 0x1, kMutable = 0x2, kAcceptor = 0x10000, kNotAcceptor = 0x20000,
                 kEpsilons = 0x400000, kNoEpsilons = 0x800000, kIEpsilons = 0x1000000,
                 kNoIEpsilons = 0x2000000, kOEpsilons = 0x4000000, kNoOEpsilons = 0x8000000,
                 kWeighted = 0x100000000ULL, kUnweighted = 0x200000000ULL;

uint64 Props(bool acceptor, bool eps, bool ieps, bool oeps, bool weighted) {
  return kExpanded | kMutable | (acceptor ? kAcceptor : kNotAcceptor) |
         (eps ? kEpsilons : kNoEpsilons) | (ieps ? kIEpsilons : kNoIEpsilons) |
         (oeps ? kOEpsilons : kNoOEpsilons) | (weighted ? kWeighted : kUnweighted);
}

class Writer {
 public:
  template <class T>
  void Put(const T &x) {
    const char *p = reinterpret_cast<const char *>(&x);
    out_.append(p, sizeof(T));
  }
  void PutString(const std::string &s) {
    Put<int32>(static_cast<int32>(s.size()));
    out_.append(s);
  }
  void Header(const std::string &arc_type, uint64 props, int32 start, int64 num_states) {
    Put<int32>(kFstMagic);
    PutString("vector");
    PutString(arc_type);
    Put<int32>(2);  // VectorFst file version
    Put<int32>(0);  // flags: no symbol tables
    Put<uint64>(props);
    Put<int64>(start);
    Put<int64>(num_states);
    Put<int64>(0);  // OpenFst's VectorFst writer leaves the arc count at 0
  }
  void Ints(const std::vector<int32> &v) {
    Put<int32>(static_cast<int32>(v.size()));
    if (!v.empty()) out_.append(reinterpret_cast<const char *>(v.data()), v.size() * 4);
  }
  std::string &str() { return out_; }

 private:
  std::string out_;
};

class Parser {
 public:
  Parser(const char *d, size_t n, size_t pos) : d_(d), n_(n), pos_(pos) {}
  template <class T>
  T Get() {
    if (pos_ + sizeof(T) > n_) throw Error("lattice data ends early");
    T x;
    std::memcpy(&x, d_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return x;
  }
  std::string GetString() {
    const int32 n = Get<int32>();
    if (n < 0) throw Error("bad string in FST header");
    // past the end of the buffer: more data may follow (the reader refills and retries)
    if (pos_ + static_cast<size_t>(n) > n_) throw Error("lattice data ends early");
    std::string s(d_ + pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  LatWeight Weight(bool dbl) {
    if (dbl) {
      const double g = Get<double>(), a = Get<double>();
      return {static_cast<float>(g), static_cast<float>(a)};
    }
    const float g = Get<float>(), a = Get<float>();
    return {g, a};
  }
  void Ints(std::vector<int32> *v) {
    const int32 n = Get<int32>();
    if (n < 0) throw Error("bad string length");
    if (pos_ + static_cast<size_t>(n) * 4 > n_) throw Error("lattice data ends early");
    v->resize(static_cast<size_t>(n));
    if (n) std::memcpy(v->data(), d_ + pos_, static_cast<size_t>(n) * 4);
    pos_ += static_cast<size_t>(n) * 4;
  }
  size_t pos() const { return pos_; }

 private:
  const char *d_;
  size_t n_, pos_;
};

}  // namespace

uint64 LatticeProperties(const Lattice &lat) {
  bool acceptor = true, eps = false, ieps = false, oeps = false, weighted = false;
  for (int32 s = 0; s < lat.NumStates(); s++) {
    for (const LatArc &a : lat.arcs[s]) {
      acceptor &= a.ilabel == a.olabel;
      eps |= a.ilabel == 0 && a.olabel == 0;
      ieps |= a.ilabel == 0;
      oeps |= a.olabel == 0;
      weighted |= a.w != WeightOne();
    }
    weighted |= !IsZero(lat.final[s]) && lat.final[s] != WeightOne();
  }
  return Props(acceptor, eps, ieps, oeps, weighted);
}

uint64 LatticeProperties(const CompactLattice &lat) {
  bool eps = false, weighted = false;
  for (int32 s = 0; s < lat.NumStates(); s++) {
    for (const CompactArc &a : lat.arcs[s]) {
      eps |= a.label == 0;
      weighted |= a.w != WeightOne() || !a.str.empty();
    }
    weighted |= !IsZero(lat.final[s]) && (lat.final[s] != WeightOne() || !lat.final_str[s].empty());
  }
  return Props(true, eps, eps, eps, weighted);
}

std::string WriteLatticeBinary(const Lattice &lat, uint64 properties) {
  Writer w;
  w.Header("lattice4", properties, lat.start, lat.NumStates());
  for (int32 s = 0; s < lat.NumStates(); s++) {
    w.Put<float>(lat.final[s].g);
    w.Put<float>(lat.final[s].a);
    w.Put<int64>(static_cast<int64>(lat.arcs[s].size()));
    for (const LatArc &a : lat.arcs[s]) {
      w.Put<int32>(a.ilabel);
      w.Put<int32>(a.olabel);
      w.Put<float>(a.w.g);
      w.Put<float>(a.w.a);
      w.Put<int32>(a.nextstate);
    }
  }
  return std::move(w.str());
}

std::string WriteLatticeBinary(const CompactLattice &lat, uint64 properties) {
  Writer w;
  w.Header("compactlattice44", properties, lat.start, lat.NumStates());
  for (int32 s = 0; s < lat.NumStates(); s++) {
    w.Put<float>(lat.final[s].g);
    w.Put<float>(lat.final[s].a);
    w.Ints(lat.final_str[s]);
    w.Put<int64>(static_cast<int64>(lat.arcs[s].size()));
    for (const CompactArc &a : lat.arcs[s]) {
      w.Put<int32>(a.label);
      w.Put<int32>(a.label);
      w.Put<float>(a.w.g);
      w.Put<float>(a.w.a);
      w.Ints(a.str);
      w.Put<int32>(a.nextstate);
    }
  }
  return std::move(w.str());
}

size_t ReadLatticeBinary(const char *data, size_t size, size_t pos, bool *compact, Lattice *lat,
                         CompactLattice *clat, uint64 *properties) {
  Parser p(data, size, pos);
  if (p.Get<int32>() != kFstMagic) throw Error("not a binary FST (bad magic number)");
  const std::string fst_type = p.GetString(), arc_type = p.GetString();
  if (fst_type != "vector") throw Error("lattice FST type '" + fst_type + "', expected 'vector'");
  const int32 version = p.Get<int32>(), flags = p.Get<int32>();
  *properties = p.Get<uint64>();
  const int64 start = p.Get<int64>(), num_states = p.Get<int64>();
  p.Get<int64>();  // arc count (unused by the VectorFst format)
  if (version != 2) throw Error("VectorFst version " + std::to_string(version) + ", expected 2");
  if (flags & 3) throw Error("lattices with symbol tables are not supported");
  if (num_states < 0 || num_states > std::numeric_limits<int32>::max())
    throw Error("bad state count in lattice header");
  bool dbl;
  if (arc_type == "lattice4" || arc_type == "lattice8") {
    *compact = false;
    dbl = arc_type == "lattice8";
  } else if (arc_type == "compactlattice44" || arc_type == "compactlattice84") {
    *compact = true;
    dbl = arc_type == "compactlattice84";
  } else {
    throw Error("arc type '" + arc_type + "' is not a Kaldi lattice");
  }
  const int32 S = static_cast<int32>(num_states);
  auto check_state = [S](int32 d) {
    if (d < 0 || d >= S) throw Error("lattice arc to a state out of range");
  };
  if (!*compact) {
    *lat = Lattice();
    for (int32 s = 0; s < S; s++) lat->AddState();
    lat->start = static_cast<int32>(start);
    for (int32 s = 0; s < S; s++) {
      lat->final[s] = p.Weight(dbl);
      const int64 n = p.Get<int64>();
      if (n < 0) throw Error("negative arc count");
      lat->arcs[s].reserve(static_cast<size_t>(n));
      for (int64 i = 0; i < n; i++) {
        LatArc a;
        a.ilabel = p.Get<int32>();
        a.olabel = p.Get<int32>();
        a.w = p.Weight(dbl);
        a.nextstate = p.Get<int32>();
        check_state(a.nextstate);
        lat->arcs[s].push_back(a);
      }
    }
  } else {
    *clat = CompactLattice();
    for (int32 s = 0; s < S; s++) clat->AddState();
    clat->start = static_cast<int32>(start);
    for (int32 s = 0; s < S; s++) {
      clat->final[s] = p.Weight(dbl);
      p.Ints(&clat->final_str[s]);
      const int64 n = p.Get<int64>();
      if (n < 0) throw Error("negative arc count");
      clat->arcs[s].resize(static_cast<size_t>(n));
      for (int64 i = 0; i < n; i++) {
        CompactArc &a = clat->arcs[s][i];
        a.label = p.Get<int32>();
        if (p.Get<int32>() != a.label) throw Error("compact lattice arc with ilabel != olabel");
        a.w = p.Weight(dbl);
        p.Ints(&a.str);
        a.nextstate = p.Get<int32>();
        check_state(a.nextstate);
      }
    }
  }
  if (start < -1 || start >= num_states) throw Error("lattice start state out of range");
  return p.pos();
}

}  // namespace pk2
