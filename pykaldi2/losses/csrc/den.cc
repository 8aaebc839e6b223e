// LF-MMI denominator forward-backward on CPU (pykaldi2.losses._den): the recursion of
// pykaldi2/losses/lfmmi.py's DenLogLikelihood (probability domain, leaky HMM, Kaldi's
// chain-denominator.cc), one pass over the arcs per frame with the gather, the products and
// the scatter fused, instead of five tensor operations each reading and writing (A, N) values.
// The torch implementation in lfmmi.py is the reference (and the GPU path); the two are
// compared in tests/unit/losses/test_losses_den_kernel.py.
//
// Layout (all C-contiguous, N = sequences, the innermost dimension, so every arc moves
// contiguous rows of N values):
//   x       (T, P, N)  exp(nnet_output - max over pdfs), padded frames zeroed first
//   src, dst, pdf (A)  int64 arcs of the den graph; w (A) arc probabilities
//   init    (S)        the leaky HMM's initial probabilities
//   alphas  (T, S, N)  out: the normalized alpha'(t) of every frame
//   tots    (T + 1, N) out: sum(alpha(t))
//   grad    (T, P, N)  out (zeroed by the caller): d log p_den / d nnet_output
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using int64 = std::int64_t;

template <class T>
using CArray = py::array_t<T, py::array::c_style>;

void Require(bool ok, const std::string &what) {
  if (!ok) throw std::invalid_argument("den kernel: " + what);
}

template <class T>
const T *Data(const CArray<T> &a, py::ssize_t size, const char *name) {
  Require(a.size() == size, std::string(name) + " has " + std::to_string(a.size()) +
                                " values, expected " + std::to_string(size));
  return a.data();
}

template <class T>
T *MutData(CArray<T> &a, py::ssize_t size, const char *name) {
  Require(a.size() == size, std::string(name) + " has " + std::to_string(a.size()) +
                                " values, expected " + std::to_string(size));
  return a.mutable_data();
}

struct Arcs {
  const int64 *src, *dst, *pdf;
  int64 num;
};

// Every index in range once per call (the graph is ours, but a bad one must not write out of
// bounds).
Arcs CheckArcs(const CArray<int64> &src, const CArray<int64> &dst, const CArray<int64> &pdf,
               int64 num_states, int64 num_pdfs) {
  const int64 a = src.size();
  Require(dst.size() == a && pdf.size() == a, "src, dst and pdf differ in length");
  Arcs arcs{src.data(), dst.data(), pdf.data(), a};
  for (int64 k = 0; k < a; k++) {
    Require(arcs.src[k] >= 0 && arcs.src[k] < num_states && arcs.dst[k] >= 0 &&
                arcs.dst[k] < num_states,
            "arc " + std::to_string(k) + " has a state outside [0, " +
                std::to_string(num_states) + ")");
    Require(arcs.pdf[k] >= 0 && arcs.pdf[k] < num_pdfs,
            "arc " + std::to_string(k) + " has a pdf outside [0, " + std::to_string(num_pdfs) +
                ")");
  }
  return arcs;
}

// The shapes and read-only inputs both passes share, checked.
template <class T>
struct Inputs {
  int64 t_max, p_num, n, s_num;
  Arcs arcs;
  const T *x, *w, *init;
};

template <class T>
Inputs<T> Unpack(const CArray<T> &x, const CArray<int64> &src, const CArray<int64> &dst,
                 const CArray<int64> &pdf, const CArray<T> &w, const CArray<T> &init) {
  Require(x.ndim() == 3, "x must be (T, P, N)");
  Inputs<T> in;
  in.t_max = x.shape(0);
  in.p_num = x.shape(1);
  in.n = x.shape(2);
  in.s_num = init.size();
  in.arcs = CheckArcs(src, dst, pdf, in.s_num, in.p_num);
  in.x = x.data();
  in.w = Data(w, in.arcs.num, "w");
  in.init = init.data();
  return in;
}

template <class T>
void Forward(const CArray<T> &x, const CArray<int64> &src, const CArray<int64> &dst,
             const CArray<int64> &pdf, const CArray<T> &w, const CArray<T> &init, double leaky,
             CArray<T> &alphas, CArray<T> &tots) {
  const Inputs<T> in = Unpack(x, src, dst, pdf, w, init);
  const int64 t_max = in.t_max, p_num = in.p_num, n = in.n, s_num = in.s_num;
  const Arcs &arcs = in.arcs;
  const T *xd = in.x, *wd = in.w, *id = in.init;
  T *ad = MutData(alphas, t_max * s_num * n, "alphas");
  T *td = MutData(tots, (t_max + 1) * n, "tots");
  const T tiny = std::numeric_limits<T>::min();
  {
    py::gil_scoped_release release;
    double init_sum = 0;
    for (int64 s = 0; s < s_num; s++) init_sum += id[s];
    const T leak_gain = static_cast<T>(1.0 + leaky * static_cast<T>(init_sum));
    const T c = static_cast<T>(leaky);
    std::vector<T> a(s_num * n), tot(n), denom(n);
    auto sum_states = [&]() {  // tot = sum over states of a
      std::fill(tot.begin(), tot.end(), T(0));
      for (int64 s = 0; s < s_num; s++) {
        const T *row = a.data() + s * n;
        for (int64 j = 0; j < n; j++) tot[j] += row[j];
      }
    };
    for (int64 s = 0; s < s_num; s++) std::fill_n(a.data() + s * n, n, id[s]);
    for (int64 t = 0; t < t_max; t++) {
      sum_states();
      for (int64 j = 0; j < n; j++) {
        td[t * n + j] = tot[j];
        denom[j] = std::max(tot[j] * leak_gain, tiny);
      }
      T *alpha = ad + t * s_num * n;
      for (int64 s = 0; s < s_num; s++) {
        const T *row = a.data() + s * n;
        T *out = alpha + s * n;
        const T is = id[s];
        for (int64 j = 0; j < n; j++) out[j] = (row[j] + c * (is * tot[j])) / denom[j];
      }
      std::fill(a.begin(), a.end(), T(0));
      const T *xt = xd + t * p_num * n;
      for (int64 k = 0; k < arcs.num; k++) {
        const T *__restrict as = alpha + arcs.src[k] * n;
        const T *__restrict xs = xt + arcs.pdf[k] * n;
        T *__restrict out = a.data() + arcs.dst[k] * n;
        const T wk = wd[k];
        for (int64 j = 0; j < n; j++) out[j] += as[j] * (xs[j] * wk);
      }
    }
    sum_states();
    std::copy(tot.begin(), tot.end(), td + t_max * n);
  }
}

// scale (T, N) = 1 / s(t); ends_at (N) = 1 / sum(alpha(T_n)); lengths (N) in [1, T].
template <class T>
void Backward(const CArray<T> &x, const CArray<int64> &src, const CArray<int64> &dst,
              const CArray<int64> &pdf, const CArray<T> &w, const CArray<T> &init,
              double leaky, const CArray<T> &alphas, const CArray<T> &scale,
              const CArray<T> &ends_at, const CArray<int64> &lengths, CArray<T> &grad) {
  const Inputs<T> in = Unpack(x, src, dst, pdf, w, init);
  const int64 t_max = in.t_max, p_num = in.p_num, n = in.n, s_num = in.s_num;
  const Arcs &arcs = in.arcs;
  const T *xd = in.x, *wd = in.w, *id = in.init;
  const T *ad = Data(alphas, t_max * s_num * n, "alphas");
  const T *sd = Data(scale, t_max * n, "scale");
  const T *ed = Data(ends_at, n, "ends_at");
  const int64 *ld = Data(lengths, n, "lengths");
  for (int64 j = 0; j < n; j++)
    Require(ld[j] >= 1 && ld[j] <= t_max, "lengths must be in [1, " + std::to_string(t_max) + "]");
  T *gd = MutData(grad, t_max * p_num * n, "grad");
  {
    py::gil_scoped_release release;
    const T c = static_cast<T>(leaky);
    std::vector<T> beta(s_num * n, T(0)), bd(s_num * n), ib(n);
    for (int64 t = t_max - 1; t >= 0; t--) {
      for (int64 j = 0; j < n; j++) {
        if (ld[j] != t + 1) continue;
        for (int64 s = 0; s < s_num; s++) beta[s * n + j] = ed[j];
      }
      std::fill(bd.begin(), bd.end(), T(0));
      const T *xt = xd + t * p_num * n;
      const T *alpha = ad + t * s_num * n;
      T *gt = gd + t * p_num * n;
      for (int64 k = 0; k < arcs.num; k++) {
        const T *__restrict xs = xt + arcs.pdf[k] * n;
        const T *__restrict bb = beta.data() + arcs.dst[k] * n;
        const T *__restrict as = alpha + arcs.src[k] * n;
        T *__restrict g = gt + arcs.pdf[k] * n;
        T *__restrict b = bd.data() + arcs.src[k] * n;
        const T wk = wd[k];
        for (int64 j = 0; j < n; j++) {
          const T prod = (xs[j] * wk) * bb[j];
          g[j] += as[j] * prod;
          b[j] += prod;
        }
      }
      const T *st = sd + t * n;
      std::fill(ib.begin(), ib.end(), T(0));
      for (int64 s = 0; s < s_num; s++) {
        T *row = bd.data() + s * n;
        const T is = id[s];
        for (int64 j = 0; j < n; j++) {
          row[j] *= st[j];
          ib[j] += is * row[j];
        }
      }
      for (int64 s = 0; s < s_num; s++) {
        const T *row = bd.data() + s * n;
        T *out = beta.data() + s * n;
        for (int64 j = 0; j < n; j++) out[j] = row[j] + c * ib[j];
      }
    }
  }
}

template <class T>
void Bind(py::module_ &m) {
  m.def("forward", &Forward<T>, py::arg("x"), py::arg("src"), py::arg("dst"), py::arg("pdf"),
        py::arg("w"), py::arg("init"), py::arg("leaky"), py::arg("alphas").noconvert(),
        py::arg("tots").noconvert());
  m.def("backward", &Backward<T>, py::arg("x"), py::arg("src"), py::arg("dst"), py::arg("pdf"),
        py::arg("w"), py::arg("init"), py::arg("leaky"), py::arg("alphas"), py::arg("scale"),
        py::arg("ends_at"), py::arg("lengths"), py::arg("grad").noconvert());
}

}  // namespace

PYBIND11_MODULE(_den, m) {
  m.doc() = "LF-MMI denominator forward-backward on CPU (see pykaldi2/losses/lfmmi.py)";
  Bind<float>(m);
  Bind<double>(m);
}
