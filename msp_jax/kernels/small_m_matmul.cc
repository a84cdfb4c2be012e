// out[M, P * 32] = x[M, K] @ W for a weight matrix stored in 32-column panels, w[P, K, 32]
// (w[p, k, j] = W[k, 32 p + j]), as an XLA FFI custom call for the CPU backend.
//
// Why: at decode batch sizes (M of 1 to a few dozen rows) a matmul reads every weight once and does only M
// multiply-adds with it, so its speed is the speed at which the weights stream from memory. XLA's CPU dot
// reaches about half the machine's memory bandwidth at M = 8; this kernel streams each panel contiguously
// (one hardware-prefetch stream per thread), keeps an [8 rows x 32 columns] accumulator tile in registers,
// and splits the panels over XLA's own intra-op thread pool (parallel_for.h), which brings it to the bandwidth.
//
// Rows are processed in blocks of 8 per panel; a panel (K * 128 bytes) stays in cache between row blocks.
// Written with GCC vector extensions (no intrinsics): compiled with -march=native it uses the widest
// vectors the machine has, and it compiles on any x86-64 or Arm64 machine.

#include <cstdint>
#include <cstring>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kPanel = 32;    // columns per panel
constexpr int kRowBlock = 8;  // rows per register tile

typedef float Vec16 __attribute__((vector_size(64)));

inline Vec16 Load(const float* p) {
  Vec16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, Vec16 v) { std::memcpy(p, &v, sizeof(v)); }

// out[r, 0:32] = sum_k x[r, k] * panel[k, 0:32] for R rows; x rows are `k_dim` apart, out rows `ldo`.
template <int R>
void PanelRows(const float* x, const float* panel, float* out, int64_t k_dim, int64_t ldo) {
  Vec16 lo[R], hi[R];
  for (int r = 0; r < R; ++r) {
    lo[r] = Vec16{};
    hi[r] = Vec16{};
  }
  for (int64_t k = 0; k < k_dim; ++k) {
    __builtin_prefetch(panel + (k + 16) * kPanel);
    __builtin_prefetch(panel + (k + 16) * kPanel + 16);
    const Vec16 w_lo = Load(panel + k * kPanel);
    const Vec16 w_hi = Load(panel + k * kPanel + 16);
    for (int r = 0; r < R; ++r) {
      const float xv = x[r * k_dim + k];
      lo[r] += xv * w_lo;
      hi[r] += xv * w_hi;
    }
  }
  for (int r = 0; r < R; ++r) {
    Store(out + r * ldo, lo[r]);
    Store(out + r * ldo + 16, hi[r]);
  }
}

void Panel(const float* x, const float* panel, float* out, int64_t m_dim, int64_t k_dim, int64_t ldo) {
  int64_t row = 0;
  for (; row + kRowBlock <= m_dim; row += kRowBlock) {
    PanelRows<kRowBlock>(x + row * k_dim, panel, out + row * ldo, k_dim, ldo);
  }
  const float* xr = x + row * k_dim;
  float* outr = out + row * ldo;
  switch (m_dim - row) {
    case 1: PanelRows<1>(xr, panel, outr, k_dim, ldo); break;
    case 2: PanelRows<2>(xr, panel, outr, k_dim, ldo); break;
    case 3: PanelRows<3>(xr, panel, outr, k_dim, ldo); break;
    case 4: PanelRows<4>(xr, panel, outr, k_dim, ldo); break;
    case 5: PanelRows<5>(xr, panel, outr, k_dim, ldo); break;
    case 6: PanelRows<6>(xr, panel, outr, k_dim, ldo); break;
    case 7: PanelRows<7>(xr, panel, outr, k_dim, ldo); break;
    default: break;
  }
}

ffi::Error SmallMMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                        ffi::ResultBuffer<ffi::F32> out) {
  const auto x_dims = x.dimensions();
  const auto w_dims = w.dimensions();
  const auto out_dims = out->dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 3 || out_dims.size() != 2) {
    return ffi::Error::InvalidArgument("msp_small_m_matmul: expected x [M, K], w [P, K, 32], out [M, 32 P]");
  }
  const int64_t m_dim = x_dims[0], k_dim = x_dims[1], panels = w_dims[0];
  if (w_dims[1] != k_dim || w_dims[2] != kPanel || out_dims[0] != m_dim || out_dims[1] != panels * kPanel) {
    return ffi::Error::InvalidArgument("msp_small_m_matmul: shapes do not agree (x [M, K], w [P, K, 32], "
                                       "out [M, 32 P])");
  }
  if (m_dim == 0 || panels == 0) return ffi::Error::Success();
  const float* x_data = x.typed_data();
  const float* w_data = w.typed_data();
  float* out_data = out->typed_data();
  const int64_t ldo = panels * kPanel;
  msp_jax::ParallelFor(pool, panels, [=](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      Panel(x_data, w_data + p * k_dim * kPanel, out_data + p * kPanel, m_dim, k_dim, ldo);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MspSmallMMatmul, SmallMMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
