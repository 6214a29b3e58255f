// Which micro-kernel serves: the widest instruction set this CPU runs, unless LIAR_CPU_ISA (or set_isa,
// for tests) names another. Chosen at run time, so one build runs on any x86-64 CPU. "amx" serves bf16
// inputs with AMX-BF16 tiles (gram_amx.cpp) and every other dtype with the avx512 micro-kernel.
#include <atomic>
#include <cstdlib>
#include <string>

#include <c10/util/Exception.h>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "../gram.h"
#include "tiles.h"

namespace liar::cpu {
namespace {

#ifdef LIAR_HAS_AMX_KERNEL
// AMX-BF16 in the CPU, and Linux's permission to use the tile data registers (without it the first tile
// instruction raises SIGILL): arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), asked once per process.
bool amx_usable() {
  static const bool usable = [] {
    if (!__builtin_cpu_supports("amx-bf16") || !__builtin_cpu_supports("amx-tile") ||
        !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl"))
      return false;
#if defined(__linux__) && defined(SYS_arch_prctl)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return usable;
}
#endif

bool supported(const std::string& name) {
  if (name == "generic") return true;
#ifdef LIAR_HAS_X86_KERNELS
  __builtin_cpu_init();
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512") return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#endif
#ifdef LIAR_HAS_AMX_KERNEL
  if (name == "amx") return supported("avx512") && amx_usable();
#endif
  return false;
}

std::string best() {
  const char* env = std::getenv("LIAR_CPU_ISA");
  if (env != nullptr && *env != '\0') {
    TORCH_CHECK(supported(env), "LIAR_CPU_ISA=", env, " is not supported on this CPU/build; "
                "use amx, avx512, avx2 or generic");
    return env;
  }
  for (const char* name : {"amx", "avx512", "avx2"})
    if (supported(name)) return name;
  return "generic";
}

std::string& current() {
  static std::string name = best();
  return name;
}

}  // namespace

std::string isa() { return current(); }

void set_isa(const std::string& name) {
  TORCH_CHECK(supported(name), "instruction set ", name, " is not supported on this CPU/build");
  current() = name;
}

TileKernel select_kernel() {
#ifdef LIAR_HAS_X86_KERNELS
  if (current() == "avx512" || current() == "amx") return run_tile_avx512;
  if (current() == "avx2") return run_tile_avx2;
#endif
  return run_tile_generic;
}

#ifdef LIAR_HAS_AMX_KERNEL
bool amx_selected() { return current() == "amx"; }
#endif

}  // namespace liar::cpu
