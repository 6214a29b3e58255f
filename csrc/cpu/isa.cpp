// Which micro-kernel serves: the widest instruction set this CPU runs, unless LIAR_CPU_ISA (or set_isa,
// for tests) names another. Chosen at run time, so one build runs on any x86-64 CPU.
#include <atomic>
#include <cstdlib>
#include <string>

#include <c10/util/Exception.h>

#include "../gram.h"
#include "tiles.h"

namespace liar::cpu {
namespace {

bool supported(const std::string& name) {
  if (name == "generic") return true;
#ifdef LIAR_HAS_X86_KERNELS
  __builtin_cpu_init();
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512") return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#endif
  return false;
}

std::string best() {
  const char* env = std::getenv("LIAR_CPU_ISA");
  if (env != nullptr && *env != '\0') {
    TORCH_CHECK(supported(env), "LIAR_CPU_ISA=", env, " is not supported on this CPU/build; "
                "use avx512, avx2 or generic");
    return env;
  }
  for (const char* name : {"avx512", "avx2"})
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
  if (current() == "avx512") return run_tile_avx512;
  if (current() == "avx2") return run_tile_avx2;
#endif
  return run_tile_generic;
}

}  // namespace liar::cpu
