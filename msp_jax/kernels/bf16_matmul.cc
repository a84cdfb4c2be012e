// out[M, N] = x[M, K] @ W + bias, bfloat16 inputs, float32 accumulation and output, for CPUs with AVX512-BF16,
// as an XLA FFI custom call.
//
//   x     [M, K]            bfloat16, row-major
//   w     [P, K / 2, 32, 2] bfloat16: W in 32-column panels, pairs of consecutive k interleaved
//                           (w[p, k2, j, t] = W[2 k2 + t, 32 p + j]), the layout VDPBF16PS multiplies;
//                           K even (pad W with a zero row), N = 32 P (pad with zero columns)
//   bias  [32 P]            float32
//   out   [M, 32 P]         float32
//
// Why: the denoiser's sentence encoder is matmul-bound. XLA's CPU dot on bfloat16 inputs reaches about 82% of
// this instruction's peak on AVX512-BF16 CPUs; a register-blocked kernel on pre-packed weights gets closer.
//
// Each VDPBF16PS multiplies 16 pairs of bfloat16 (two consecutive k of one output column) and adds both
// products to a float32 lane. The micro-kernel keeps a [12 rows x 32 columns] tile in 24 accumulators: per
// pair of k it loads one panel row (two vectors), broadcasts each row's (x[m, 2 k2], x[m, 2 k2 + 1]) as one
// 32-bit value, and issues 24 dot instructions. Rows are taken in blocks of 192, so a block of x (192 x K) stays
// in L2 while every panel of W streams past it; work items are (row block, group of 4 panels) pairs, split
// over XLA's intra-op thread pool (parallel_for.h).
//
// Compiled only where the compiler targets AVX512-BF16 (-march=native on such a CPU); elsewhere the library
// exports MspHasBf16Matmul() = 0 and Python keeps XLA's dot.

#include <cstdint>
#include <cstring>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

extern "C" int MspHasBf16Matmul() {
#ifdef __AVX512BF16__
  return 1;
#else
  return 0;
#endif
}

#ifdef __AVX512BF16__

#include <immintrin.h>

namespace ffi = xla::ffi;

namespace {

constexpr int kPanel = 32;       // output columns per panel (two vectors of 16)
constexpr int kRows = 12;        // rows per micro-kernel tile
constexpr int kBlockRows = 192;  // rows per block (16 tiles)
constexpr int kPanelGroup = 8;   // panels per work item

// out[0:R, 0:32] = x[0:R, :] @ panel + bias; x rows are k_dim bfloat16 apart, out rows ldo floats apart.
template <int R>
void Tile(const uint16_t* x, const uint16_t* panel, const float* bias, float* out, int64_t k_dim, int64_t ldo) {
  __m512 lo[R], hi[R];
  for (int r = 0; r < R; ++r) {
    lo[r] = _mm512_setzero_ps();
    hi[r] = _mm512_setzero_ps();
  }
  const int64_t pairs = k_dim / 2;
  for (int64_t k2 = 0; k2 < pairs; ++k2) {
    const __m512bh w_lo = (__m512bh)_mm512_loadu_si512(panel + k2 * 2 * kPanel);
    const __m512bh w_hi = (__m512bh)_mm512_loadu_si512(panel + k2 * 2 * kPanel + kPanel);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, x + r * k_dim + 2 * k2, sizeof(pair));
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      lo[r] = _mm512_dpbf16_ps(lo[r], a, w_lo);
      hi[r] = _mm512_dpbf16_ps(hi[r], a, w_hi);
    }
  }
  const __m512 b_lo = _mm512_loadu_ps(bias), b_hi = _mm512_loadu_ps(bias + 16);
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(out + r * ldo, _mm512_add_ps(lo[r], b_lo));
    _mm512_storeu_ps(out + r * ldo + 16, _mm512_add_ps(hi[r], b_hi));
  }
}

// out[0:R, panels p0 .. p1) for R rows: the tile of x (R x K) stays in L1 while the panels stream from L2.
template <int R>
void TilePanels(const uint16_t* x, const uint16_t* w, const float* bias, float* out, int64_t k_dim, int64_t ldo,
                int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    Tile<R>(x, w + p * k_dim * kPanel, bias + p * kPanel, out + p * kPanel, k_dim, ldo);
  }
}

// Rows [0, rows) of x against panels p0 .. p1, in tiles of 12 rows and a remainder tile.
void Rows(const uint16_t* x, const uint16_t* w, const float* bias, float* out, int64_t rows, int64_t k_dim,
          int64_t ldo, int64_t p0, int64_t p1) {
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) TilePanels<kRows>(x + r * k_dim, w, bias, out + r * ldo, k_dim, ldo, p0, p1);
  const uint16_t* xr = x + r * k_dim;
  float* outr = out + r * ldo;
  switch (rows - r) {
    case 1: TilePanels<1>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 2: TilePanels<2>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 3: TilePanels<3>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 4: TilePanels<4>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 5: TilePanels<5>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 6: TilePanels<6>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 7: TilePanels<7>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 8: TilePanels<8>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 9: TilePanels<9>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 10: TilePanels<10>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    case 11: TilePanels<11>(xr, w, bias, outr, k_dim, ldo, p0, p1); break;
    default: break;
  }
}

ffi::Error Bf16Matmul(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> x, ffi::Buffer<ffi::BF16> w,
                      ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> out) {
  const auto x_dims = x.dimensions();
  const auto w_dims = w.dimensions();
  const auto out_dims = out->dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 4 || bias.dimensions().size() != 1 || out_dims.size() != 2) {
    return ffi::Error::InvalidArgument("msp_bf16_matmul: expected x [M, K], w [P, K / 2, 32, 2], bias [32 P], "
                                       "out [M, 32 P]");
  }
  const int64_t m_dim = x_dims[0], k_dim = x_dims[1], panels = w_dims[0], n_dim = panels * kPanel;
  if (k_dim % 2 != 0 || w_dims[1] * 2 != k_dim || w_dims[2] != kPanel || w_dims[3] != 2 ||
      bias.dimensions()[0] != n_dim || out_dims[0] != m_dim || out_dims[1] != n_dim) {
    return ffi::Error::InvalidArgument("msp_bf16_matmul: shapes do not agree (x [M, K] with K even, "
                                       "w [P, K / 2, 32, 2], bias [32 P], out [M, 32 P])");
  }
  if (m_dim == 0 || panels == 0) return ffi::Error::Success();
  const uint16_t* x_data = reinterpret_cast<const uint16_t*>(x.untyped_data());
  const uint16_t* w_data = reinterpret_cast<const uint16_t*>(w.untyped_data());
  const float* bias_data = bias.typed_data();
  float* out_data = out->typed_data();
  const int64_t blocks = (m_dim + kBlockRows - 1) / kBlockRows;
  const int64_t groups = (panels + kPanelGroup - 1) / kPanelGroup;
  msp_jax::ParallelFor(pool, blocks * groups, [=](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t block = item / groups, group = item % groups;
      const int64_t row = block * kBlockRows;
      const int64_t rows = std::min<int64_t>(kBlockRows, m_dim - row);
      Rows(x_data + row * k_dim, w_data, bias_data, out_data + row * n_dim, rows, k_dim, n_dim,
           group * kPanelGroup, std::min<int64_t>(panels, (group + 1) * kPanelGroup));
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MspBf16Matmul, Bf16Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

#endif  // __AVX512BF16__
