// Shared types of the decoder extension: Kaldi's lattice weight and its total order.
//
// A LatticeWeight is a pair (graph cost, acoustic cost). As a semiring it is the tropical
// semiring on their sum, with the graph cost breaking ties (Kaldi's fstext/lattice-weight.h):
// "Plus" keeps the better of two weights, "Times" adds both parts.
#ifndef PYKALDI2_HMM_CSRC_COMMON_H_
#define PYKALDI2_HMM_CSRC_COMMON_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace pk2 {

using int32 = std::int32_t;
using int64 = std::int64_t;
using uint64 = std::uint64_t;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kDInf = std::numeric_limits<double>::infinity();
// Kaldi's default tolerance for comparing weights (fst::kDelta).
constexpr float kDelta = 1.0f / 1024.0f;

struct LatWeight {
  float g = 0.0f;  // graph cost (LM + transitions + pronunciation)
  float a = 0.0f;  // acoustic cost
};

inline LatWeight WeightOne() { return {0.0f, 0.0f}; }
inline LatWeight WeightZero() { return {kInf, kInf}; }
inline bool IsZero(const LatWeight &w) { return w.g == kInf && w.a == kInf; }
inline bool operator==(const LatWeight &x, const LatWeight &y) {
  return x.g == y.g && x.a == y.a;
}
inline bool operator!=(const LatWeight &x, const LatWeight &y) { return !(x == y); }

inline LatWeight Times(const LatWeight &x, const LatWeight &y) {
  return {x.g + y.g, x.a + y.a};
}

// +1 when x is better (lower total cost; on a tie, lower graph cost), -1 when worse, 0 equal.
inline int Compare(const LatWeight &x, const LatWeight &y) {
  const float fx = x.g + x.a, fy = y.g + y.a;
  if (fx < fy) return 1;
  if (fx > fy) return -1;
  if (x.g < y.g) return 1;
  if (x.g > y.g) return -1;
  return 0;
}

// The semiring sum: the better weight.
inline LatWeight Plus(const LatWeight &x, const LatWeight &y) {
  return Compare(x, y) >= 0 ? x : y;
}

// x / y; Zero when the result is not a valid weight (as Kaldi's Divide).
inline LatWeight Divide(const LatWeight &x, const LatWeight &y) {
  const float g = x.g - y.g, a = x.a - y.a;
  if (std::isnan(g) || std::isnan(a) || g == -kInf || a == -kInf || g == kInf || a == kInf)
    return WeightZero();
  return {g, a};
}

inline double ToCost(const LatWeight &w) {
  return static_cast<double>(w.g) + static_cast<double>(w.a);
}

inline bool ApproxEqual(const LatWeight &x, const LatWeight &y, float delta) {
  if (x.g == y.g && x.a == y.a) return true;
  return std::fabs((x.g + x.a) - (y.g + y.a)) <= delta;
}

// Errors raised to Python as RuntimeError (the Python layer adds file and utterance).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string &what) : std::runtime_error(what) {}
};

}  // namespace pk2

#endif  // PYKALDI2_HMM_CSRC_COMMON_H_
