// The int8 step kernels of quantized_kernels.h in AMX tiles: the 8-bit levels and
// panels of the VNNI kernels (quantized_kernels_avx512.cpp), their sums taken 16
// rows x 16 columns x 64 values of k per tdpbusd (against 16 x 64 per vpdpbusd),
// with the cell math of the AVX-512 float kernels. Row blocks of up to 16 rows
// (one A tile); a panel of PV vectors is PV C tiles. K is padded to 64 (the A
// tile's width), and every tile is loaded whole: the operand's rows go on for
// kTileRows rows past the last (quantized_path.cpp), whose sums are not read.
// The kernels are compiled for AMX (with the float kernels' code they instantiate);
// quantized_kernels_amx() hands them out only where the CPU has AMX and the OS lets
// this process use it (amx_usable). The tiles are not released after a call: the
// next call's workers load their configuration again, as other AMX code does.

#include "fast_kernels.h"
#include "quantized_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmath>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,amx-tile,amx-int8,avx2,fma")
#include "rnnkit/cells.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // as in fast_kernels_avx512.cpp

#define RNNKIT_TARGET \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,amx-tile,amx-int8,avx2,fma")))
#define RNNKIT_AMX_TILES 1

namespace rnnkit {
namespace cpu {
namespace fast {
namespace amx {

// Row blocks of one A tile, all of a panel's vectors at once (the tile shapes of
// fast_kernels_impl.h's TileShape, which the microkernel does not use here).
constexpr int kRows4 = 16;
constexpr int kPass4 = 4;
constexpr int kRows3 = 16;
constexpr int kPass3 = 3;
constexpr int kWideRows = 16;

#include "avx512_vectors_impl.h"

constexpr const char* kName = "avx512_amx";

#include "avx512_levels_impl.h"

// The tile configuration: palette 1, every tile 16 rows of 64 bytes (C: 16 x 16
// int32; A: 16 rows x 64 levels; B: 16 groups of 4 k x 16 columns).
struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};

// A constant in memory: built on the stack, GCC dropped the stores into it that
// only ldtilecfg reads.
alignas(64) static const TileConfig kTileConfig = {
    1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

RNNKIT_TARGET static void begin_thread() { _tile_loadconfig(&kTileConfig); }

// Up to kVnniRows rows (B = 1 streaming, the tail of a chunk): vpdpbusd's register
// tiles over all PV vectors at once; a 16-row A tile would spend most of its
// products, and its B tiles' loads, on rows that are not there.
constexpr int kVnniRows = 6;

// The sums of 16 rows of levels A (K apart, K a multiple of 64) with a panel of
// PV vectors in AMX tiles, into sums (rows of PV*W int32). Tiles: C 0..PV-1, A 4,
// B 5..7 (the fourth B reuses 5, free again by then).
template <int PV>
RNNKIT_TARGET static inline void amx_sums(const Level* A, int64_t K, const int8_t* panel,
                                          int32_t* sums) {
  static_assert(PV >= 1 && PV <= 4, "a panel of at most 4 C tiles");
  constexpr int64_t columns = PV * W, stride = 4 * columns;  // bytes per panel row
  _tile_zero(0);
  if constexpr (PV > 1) _tile_zero(1);
  if constexpr (PV > 2) _tile_zero(2);
  if constexpr (PV > 3) _tile_zero(3);
  for (int64_t k = 0; k < K; k += 64) {
    const int8_t* b = panel + k * columns;  // group k / 4 at (k / 4) * stride
    _tile_loadd(4, A + k, K);
    _tile_loadd(5, b, stride);
    _tile_dpbusd(0, 4, 5);
    if constexpr (PV > 1) {
      _tile_loadd(6, b + 64, stride);
      _tile_dpbusd(1, 4, 6);
    }
    if constexpr (PV > 2) {
      _tile_loadd(7, b + 128, stride);
      _tile_dpbusd(2, 4, 7);
    }
    if constexpr (PV > 3) {
      _tile_loadd(5, b + 192, stride);
      _tile_dpbusd(3, 4, 5);
    }
  }
  constexpr int64_t row_bytes = columns * 4;
  _tile_stored(0, sums, row_bytes);
  if constexpr (PV > 1) _tile_stored(1, sums + 16, row_bytes);
  if constexpr (PV > 2) _tile_stored(2, sums + 32, row_bytes);
  if constexpr (PV > 3) _tile_stored(3, sums + 48, row_bytes);
}

constexpr int kKAlign = 64;
constexpr int kIdotScratch = 0;
constexpr void (*kBeginThread)() = &begin_thread;

// The float kernels' step functions (their table goes unused here).
#include "fast_kernels_impl.h"
#include "quantized_kernels_impl.h"

#pragma GCC pop_options

}  // namespace amx

// Whether this process may use AMX's tile data: the CPU has AMX-TILE and AMX-INT8
// and Linux grants the permission (asked once; arch_prctl ARCH_REQ_XCOMP_PERM).
static bool amx_usable() {
  static const bool usable = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__builtin_cpu_supports("avx512vnni") == 0) return false;
    __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
    const bool tile = (edx >> 24) & 1u, int8 = (edx >> 25) & 1u;
    if (!tile || !int8) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}

const QuantizedKernels* quantized_kernels_amx() {
  return amx_usable() ? &amx::kQuantizedKernels : nullptr;
}

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#else

namespace rnnkit {
namespace cpu {
namespace fast {
const QuantizedKernels* quantized_kernels_amx() { return nullptr; }
}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#endif
