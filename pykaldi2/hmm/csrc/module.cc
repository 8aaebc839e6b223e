// Python bindings of the decoder extension (pykaldi2.hmm._decoder). Lattices cross the
// boundary as dicts of numpy arrays (arcs in state order):
//   Lattice:        num_states, start, src, dst, ilabel, olabel, graph, ac, final_graph,
//                   final_ac
//   CompactLattice: num_states, start, src, dst, label, graph, ac, str_offsets (A + 1),
//                   strings, final_graph, final_ac, final_offsets (S + 1), final_strings
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>

#include "decoder.h"
#include "determinize.h"
#include "graph.h"
#include "lattice.h"
#include "lattice_io.h"

namespace py = pybind11;
using namespace pk2;

namespace {

template <class T>
py::array_t<T> ToArray(const std::vector<T> &v) {
  py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <class T>
CArray<T> Get(const py::dict &d, const char *key) {
  if (!d.contains(key)) throw Error(std::string("lattice dict has no '") + key + "'");
  return CArray<T>::ensure(d[key]);
}

py::dict LatticeToDict(const Lattice &lat) {
  std::vector<int32> src, dst, il, ol;
  std::vector<float> g, a, fg, fa;
  for (int32 s = 0; s < lat.NumStates(); s++) {
    for (const LatArc &arc : lat.arcs[s]) {
      src.push_back(s);
      dst.push_back(arc.nextstate);
      il.push_back(arc.ilabel);
      ol.push_back(arc.olabel);
      g.push_back(arc.w.g);
      a.push_back(arc.w.a);
    }
    fg.push_back(lat.final[s].g);
    fa.push_back(lat.final[s].a);
  }
  py::dict d;
  d["num_states"] = lat.NumStates();
  d["start"] = lat.start;
  d["src"] = ToArray(src);
  d["dst"] = ToArray(dst);
  d["ilabel"] = ToArray(il);
  d["olabel"] = ToArray(ol);
  d["graph"] = ToArray(g);
  d["ac"] = ToArray(a);
  d["final_graph"] = ToArray(fg);
  d["final_ac"] = ToArray(fa);
  return d;
}

Lattice DictToLattice(const py::dict &d) {
  const int32 S = d["num_states"].cast<int32>();
  auto src = Get<int32>(d, "src"), dst = Get<int32>(d, "dst"), il = Get<int32>(d, "ilabel"),
       ol = Get<int32>(d, "olabel");
  auto g = Get<float>(d, "graph"), a = Get<float>(d, "ac"), fg = Get<float>(d, "final_graph"),
       fa = Get<float>(d, "final_ac");
  const py::ssize_t A = src.size();
  if (dst.size() != A || il.size() != A || ol.size() != A || g.size() != A || a.size() != A ||
      fg.size() != S || fa.size() != S)
    throw Error("lattice arrays of inconsistent sizes");
  Lattice lat;
  for (int32 s = 0; s < S; s++) lat.AddState();
  lat.start = d["start"].cast<int32>();
  for (py::ssize_t i = 0; i < A; i++) {
    const int32 s = src.at(i), t = dst.at(i);
    if (s < 0 || s >= S || t < 0 || t >= S) throw Error("lattice arc state out of range");
    lat.arcs[s].push_back(LatArc{il.at(i), ol.at(i), LatWeight{g.at(i), a.at(i)}, t});
  }
  for (int32 s = 0; s < S; s++) lat.final[s] = LatWeight{fg.at(s), fa.at(s)};
  return lat;
}

py::dict CompactToDict(const CompactLattice &lat) {
  std::vector<int32> src, dst, lab, strs, fstrs;
  std::vector<float> g, a, fg, fa;
  std::vector<int64> off{0}, foff{0};
  for (int32 s = 0; s < lat.NumStates(); s++) {
    for (const CompactArc &arc : lat.arcs[s]) {
      src.push_back(s);
      dst.push_back(arc.nextstate);
      lab.push_back(arc.label);
      g.push_back(arc.w.g);
      a.push_back(arc.w.a);
      strs.insert(strs.end(), arc.str.begin(), arc.str.end());
      off.push_back(static_cast<int64>(strs.size()));
    }
    fg.push_back(lat.final[s].g);
    fa.push_back(lat.final[s].a);
    fstrs.insert(fstrs.end(), lat.final_str[s].begin(), lat.final_str[s].end());
    foff.push_back(static_cast<int64>(fstrs.size()));
  }
  py::dict d;
  d["num_states"] = lat.NumStates();
  d["start"] = lat.start;
  d["src"] = ToArray(src);
  d["dst"] = ToArray(dst);
  d["label"] = ToArray(lab);
  d["graph"] = ToArray(g);
  d["ac"] = ToArray(a);
  d["str_offsets"] = ToArray(off);
  d["strings"] = ToArray(strs);
  d["final_graph"] = ToArray(fg);
  d["final_ac"] = ToArray(fa);
  d["final_offsets"] = ToArray(foff);
  d["final_strings"] = ToArray(fstrs);
  return d;
}

CompactLattice DictToCompact(const py::dict &d) {
  const int32 S = d["num_states"].cast<int32>();
  auto src = Get<int32>(d, "src"), dst = Get<int32>(d, "dst"), lab = Get<int32>(d, "label"),
       strs = Get<int32>(d, "strings"), fstrs = Get<int32>(d, "final_strings");
  auto g = Get<float>(d, "graph"), a = Get<float>(d, "ac"), fg = Get<float>(d, "final_graph"),
       fa = Get<float>(d, "final_ac");
  auto off = Get<int64>(d, "str_offsets"), foff = Get<int64>(d, "final_offsets");
  const py::ssize_t A = src.size();
  if (dst.size() != A || lab.size() != A || g.size() != A || a.size() != A ||
      off.size() != A + 1 || fg.size() != S || fa.size() != S || foff.size() != S + 1)
    throw Error("compact lattice arrays of inconsistent sizes");
  CompactLattice lat;
  for (int32 s = 0; s < S; s++) lat.AddState();
  lat.start = d["start"].cast<int32>();
  auto slice = [](const CArray<int32> &v, int64 b, int64 e) {
    if (b < 0 || e < b || e > v.size()) throw Error("bad string offsets");
    return std::vector<int32>(v.data() + b, v.data() + e);
  };
  for (py::ssize_t i = 0; i < A; i++) {
    const int32 s = src.at(i), t = dst.at(i);
    if (s < 0 || s >= S || t < 0 || t >= S) throw Error("lattice arc state out of range");
    lat.arcs[s].push_back(
        CompactArc{lab.at(i), LatWeight{g.at(i), a.at(i)}, slice(strs, off.at(i), off.at(i + 1)), t});
  }
  for (int32 s = 0; s < S; s++) {
    lat.final[s] = LatWeight{fg.at(s), fa.at(s)};
    lat.final_str[s] = slice(fstrs, foff.at(s), foff.at(s + 1));
  }
  return lat;
}

DeterminizeOptions DetOptions(float delta, int64 max_mem, bool phone, bool word) {
  DeterminizeOptions o;
  o.delta = delta;
  o.max_mem = max_mem;
  o.phone_determinize = phone;
  o.word_determinize = word;
  return o;
}

// One decoder per graph, reused across utterances; holds the graph alive.
class PyDecoder {
 public:
  PyDecoder(std::shared_ptr<Graph> graph, const DecoderOptions &opts)
      : graph_(std::move(graph)), dec_(*graph_, opts) {}

  bool Decode(CArray<float> loglik, CArray<int32> tid2pdf, float scale) {
    if (loglik.ndim() != 2) throw Error("log-likelihoods must be a (T, num_pdfs) matrix");
    if (tid2pdf.ndim() != 1) throw Error("tid2pdf must be a vector");
    const int32 T = static_cast<int32>(loglik.shape(0)), P = static_cast<int32>(loglik.shape(1));
    const int32 num_tids = static_cast<int32>(tid2pdf.shape(0)) - 1;
    if (graph_->max_ilabel > num_tids)
      throw Error("the graph has transition-id " + std::to_string(graph_->max_ilabel) +
                  ", the model only " + std::to_string(num_tids));
    const int32 *t2p = tid2pdf.data();
    for (int32 t = 1; t <= num_tids; t++)
      if (t2p[t] < 0 || t2p[t] >= P)
        throw Error("transition-id " + std::to_string(t) + " maps to pdf " + std::to_string(t2p[t]) +
                    ", the log-likelihoods have " + std::to_string(P) + " columns");
    loglik_ = loglik;  // keep the buffers alive while decoding
    tid2pdf_ = tid2pdf;
    Decodable d;
    d.loglik = loglik_.data();
    d.num_frames = T;
    d.num_pdfs = P;
    d.tid2pdf = tid2pdf_.data();
    d.scale = scale;
    bool ok;
    {
      py::gil_scoped_release release;
      raw_ = Lattice();  // the last utterance's lattice is not kept through this search
      have_lattice_ = false;
      ok = dec_.Decode(d);
      have_lattice_ = ok && dec_.GetRawLattice(&raw_);
      dec_.ReleaseTokens();
    }
    loglik_ = CArray<float>();
    return ok && have_lattice_;
  }

  float FinalRelativeCost() const { return dec_.FinalRelativeCost(); }
  int32 NumFramesDecoded() const { return dec_.NumFramesDecoded(); }
  size_t PeakTokens() const { return dec_.PeakTokens(); }
  size_t PoolBytes() const { return dec_.PoolBytes(); }

  // Best path of the raw lattice: (transition-ids, words, graph cost, acoustic cost (scaled)).
  py::tuple BestPath() const {
    Need();
    std::vector<const LatArc *> path;
    int32 f = -1;
    if (!pk2::BestPath(raw_, &path, &f)) throw Error("the lattice has no path to a final state");
    std::vector<int32> ali, words;
    LatWeight w = WeightOne();
    for (const LatArc *a : path) {
      if (a->ilabel) ali.push_back(a->ilabel);
      if (a->olabel) words.push_back(a->olabel);
      w = Times(w, a->w);
    }
    w = Times(w, raw_.final[f]);
    return py::make_tuple(ToArray(ali), ToArray(words), w.g, w.a);
  }

  // The raw lattice, connected, acoustic costs multiplied by `ac_scale`.
  py::dict RawLattice(double ac_scale) const {
    Need();
    Lattice lat = raw_;
    {
      py::gil_scoped_release release;
      Connect(&lat);
      if (ac_scale != 1.0) ScaleAcoustic(ac_scale, &lat);
    }
    return LatticeToDict(lat);
  }

  // Kaldi's gmm-latgen-faster output: Connect, DeterminizeLatticePhonePrunedWrapper with the
  // lattice beam, acoustic costs multiplied by `ac_scale`. Returns (dict, complete).
  // keep_raw false: the raw lattice is determinized in place (no copy; raw_lattice, best_path
  // and compact_lattice then need the next decode).
  py::tuple CompactLatticeOut(py::object phone_start, double beam, double ac_scale, float delta,
                              int64 max_mem, bool phone, bool word, bool keep_raw) {
    Need();
    CArray<int32> ps;
    const int32 *ps_data = nullptr;
    int32 num_tids = 0;
    if (!phone_start.is_none()) {
      ps = CArray<int32>::ensure(phone_start);
      ps_data = ps.data();
      num_tids = static_cast<int32>(ps.size()) - 1;
    }
    Lattice copy;
    if (keep_raw) copy = raw_;
    Lattice &lat = keep_raw ? copy : raw_;
    have_lattice_ = keep_raw;
    CompactLattice clat;
    bool complete;
    {
      py::gil_scoped_release release;
      Connect(&lat);
      complete = DeterminizeLatticePhonePruned(&lat, ps_data, num_tids, beam, &clat,
                                               DetOptions(delta, max_mem, phone, word));
      lat = Lattice();
      if (ac_scale != 1.0) ScaleAcoustic(ac_scale, &clat);
    }
    return py::make_tuple(CompactToDict(clat), complete);
  }

 private:
  void Need() const {
    if (!have_lattice_) throw Error("no lattice: decode() failed or was not called");
  }
  std::shared_ptr<Graph> graph_;
  LatticeFasterDecoder dec_;
  Lattice raw_;
  bool have_lattice_ = false;
  CArray<float> loglik_;
  CArray<int32> tid2pdf_;
};

}  // namespace

PYBIND11_MODULE(_decoder, m) {
  m.doc() = "pykaldi2's compiled decoder: OpenFst graph reader, LatticeFasterDecoder, pruned "
            "lattice determinization, Kaldi binary lattice I/O";
  py::register_exception<Error>(m, "DecoderError", PyExc_RuntimeError);

  py::class_<Graph, std::shared_ptr<Graph>>(m, "Graph")
      .def_static(
          "read",
          [](const std::string &path) {
            py::gil_scoped_release release;
            return std::make_shared<Graph>(ReadGraph(path));
          },
          py::arg("path"))
      .def_static(
          "from_arcs",
          [](int32 num_states, int32 start, CArray<int32> src, CArray<int32> dst,
             CArray<int32> ilabel, CArray<int32> olabel, CArray<float> weight,
             CArray<float> final) {
            const py::ssize_t A = src.size();
            if (dst.size() != A || ilabel.size() != A || olabel.size() != A ||
                weight.size() != A || final.size() != num_states)
              throw Error("graph arrays of inconsistent sizes");
            return std::make_shared<Graph>(GraphFromArcs(num_states, start, src.data(),
                                                         dst.data(), ilabel.data(),
                                                         olabel.data(), weight.data(), A,
                                                         final.data()));
          },
          py::arg("num_states"), py::arg("start"), py::arg("src"), py::arg("dst"),
          py::arg("ilabel"), py::arg("olabel"), py::arg("weight"), py::arg("final"))
      .def_property_readonly("num_states", &Graph::NumStates)
      .def_property_readonly("num_arcs", &Graph::NumArcs)
      .def_property_readonly("start", [](const Graph &g) { return g.start; })
      .def_property_readonly("fst_type", [](const Graph &g) { return g.fst_type; })
      .def_property_readonly("properties", [](const Graph &g) { return g.properties; })
      .def_property_readonly("max_ilabel", [](const Graph &g) { return g.max_ilabel; })
      .def("arrays", [](const Graph &g) {
        std::vector<int32> src, dst, il, ol;
        std::vector<float> w;
        for (int32 s = 0; s < g.NumStates(); s++)
          for (int64 i = g.off[s]; i < g.off[s + 1]; i++) {
            src.push_back(s);
            dst.push_back(g.arcs[i].nextstate);
            il.push_back(g.arcs[i].ilabel);
            ol.push_back(g.arcs[i].olabel);
            w.push_back(g.arcs[i].weight);
          }
        py::dict d;
        d["src"] = ToArray(src);
        d["dst"] = ToArray(dst);
        d["ilabel"] = ToArray(il);
        d["olabel"] = ToArray(ol);
        d["weight"] = ToArray(w);
        d["final"] = ToArray(g.final);
        return d;
      });

  py::class_<DecoderOptions>(m, "DecoderOptions")
      .def(py::init<>())
      .def_readwrite("beam", &DecoderOptions::beam)
      .def_readwrite("max_active", &DecoderOptions::max_active)
      .def_readwrite("min_active", &DecoderOptions::min_active)
      .def_readwrite("lattice_beam", &DecoderOptions::lattice_beam)
      .def_readwrite("prune_interval", &DecoderOptions::prune_interval)
      .def_readwrite("beam_delta", &DecoderOptions::beam_delta)
      .def_readwrite("hash_ratio", &DecoderOptions::hash_ratio)
      .def_readwrite("prune_scale", &DecoderOptions::prune_scale)
      .def("check", &DecoderOptions::Check);

  py::class_<PyDecoder>(m, "LatticeFasterDecoder")
      .def(py::init<std::shared_ptr<Graph>, const DecoderOptions &>(), py::arg("graph"),
           py::arg("options"))
      .def("decode", &PyDecoder::Decode, py::arg("loglik"), py::arg("tid2pdf"),
           py::arg("acoustic_scale"))
      .def("final_relative_cost", &PyDecoder::FinalRelativeCost)
      .def("num_frames_decoded", &PyDecoder::NumFramesDecoded)
      .def("peak_tokens", &PyDecoder::PeakTokens)
      .def("pool_bytes", &PyDecoder::PoolBytes)
      .def("best_path", &PyDecoder::BestPath)
      .def("raw_lattice", &PyDecoder::RawLattice, py::arg("ac_scale") = 1.0)
      .def("compact_lattice", &PyDecoder::CompactLatticeOut, py::arg("phone_start"),
           py::arg("beam"), py::arg("ac_scale") = 1.0, py::arg("delta") = kDelta,
           py::arg("max_mem") = 50000000, py::arg("phone_determinize") = true,
           py::arg("word_determinize") = true, py::arg("keep_raw") = true);

  m.def(
      "determinize_lattice_pruned",
      [](const py::dict &raw, py::object phone_start, double beam, bool inverted, float delta,
         int64 max_mem, bool phone, bool word) {
        Lattice lat = DictToLattice(raw);
        CArray<int32> ps;
        const int32 *ps_data = nullptr;
        int32 num_tids = 0;
        if (!phone_start.is_none()) {
          ps = CArray<int32>::ensure(phone_start);
          ps_data = ps.data();
          num_tids = static_cast<int32>(ps.size()) - 1;
        }
        CompactLattice clat;
        bool complete;
        {
          py::gil_scoped_release release;
          if (inverted) Invert(&lat);  // the wrapper inverts again: words back on the input
          complete = DeterminizeLatticePhonePruned(&lat, ps_data, num_tids, beam, &clat,
                                                   DetOptions(delta, max_mem, phone, word));
        }
        return py::make_tuple(CompactToDict(clat), complete);
      },
      py::arg("lattice"), py::arg("phone_start"), py::arg("beam"), py::arg("inverted") = false,
      py::arg("delta") = kDelta, py::arg("max_mem") = 50000000,
      py::arg("phone_determinize") = true, py::arg("word_determinize") = true,
      "Kaldi's DeterminizeLatticePhonePrunedWrapper on a raw lattice dict (ilabel = "
      "transition-id, olabel = word; inverted=True: the other way round).");

  m.def(
      "write_lattice",
      [](const py::dict &d, bool compact, py::object properties) {
        std::string out;
        if (compact) {
          CompactLattice lat = DictToCompact(d);
          const uint64 p = properties.is_none() ? LatticeProperties(lat) : properties.cast<uint64>();
          out = WriteLatticeBinary(lat, p);
        } else {
          Lattice lat = DictToLattice(d);
          const uint64 p = properties.is_none() ? LatticeProperties(lat) : properties.cast<uint64>();
          out = WriteLatticeBinary(lat, p);
        }
        return py::bytes(out);
      },
      py::arg("lattice"), py::arg("compact"), py::arg("properties") = py::none(),
      "Kaldi's binary lattice (OpenFst VectorFst) of a lattice dict.");

  m.def(
      "read_lattice",
      [](py::buffer data, size_t pos) {
        py::buffer_info info = data.request();
        if (info.ndim != 1 || info.itemsize != 1) throw Error("read_lattice needs a byte buffer");
        const char *buf = static_cast<const char *>(info.ptr);
        const py::ssize_t len = info.size;
        bool compact = false;
        Lattice lat;
        CompactLattice clat;
        uint64 props = 0;
        size_t end;
        {
          py::gil_scoped_release release;
          end = ReadLatticeBinary(buf, static_cast<size_t>(len), pos, &compact, &lat, &clat, &props);
        }
        return py::make_tuple(compact ? CompactToDict(clat) : LatticeToDict(lat), compact, props,
                              end);
      },
      py::arg("data"), py::arg("pos"),
      "One binary lattice at data[pos:]: (dict, compact, properties, end position).");

  m.def(
      "lattice_properties",
      [](const py::dict &d, bool compact) {
        return compact ? LatticeProperties(DictToCompact(d)) : LatticeProperties(DictToLattice(d));
      },
      py::arg("lattice"), py::arg("compact"));
}
