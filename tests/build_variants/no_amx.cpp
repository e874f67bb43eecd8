// src/quant/codes_matmul.cpp built without the tile path (-DL4Q_NO_AMX, as on non-x86
// architectures): every entry point l4q_linear calls must exist, so the library links there,
// and each must refuse to run rather than compute anything.
#include <cstdio>
#include <optional>

#include "l4q/error.h"
#include "quant/codes_matmul.h"

int main() {
  using namespace l4q::cpu;
  int failures = 0;
  auto expect_refusal = [&](const char* name, auto&& f) {
    try {
      f();
      std::printf("%s: ran without the AMX path\n", name);
      ++failures;
    } catch (const l4q::Error&) {
    }
  };
  if (amx_available() || amx_enabled()) {
    std::printf("amx_available/amx_enabled: true without the AMX path\n");
    ++failures;
  }
  expect_refusal("set_amx_enabled(true)", [] { set_amx_enabled(true); });
  set_amx_enabled(std::nullopt);
  float f[1] = {};
  uint16_t h[1] = {};
  expect_refusal("amx_split_x", [&] { amx_split_x(f, 1, 32, 32, 0, 1, h, f); });
  expect_refusal("amx_pack_codes", [&] { amx_pack_codes(f, 1, 32, 32, f, f, h); });
  expect_refusal("amx_codes_matmul",
                 [&] { amx_codes_matmul(h, f, 1, 32, 32, h, f, f, 32, 1, 0, 1, f, f, 1); });
  expect_refusal("amx_dx_pack_codes", [&] { amx_dx_pack_codes(f, 32, 1, 32, f, f, h); });
  expect_refusal("amx_dx_slab", [&] { amx_dx_slab(f, 1, 1, 1, f, h, 32, f, 1, h, f, f, 32); });
  if (failures == 0) std::printf("no_amx: ok\n");
  return failures == 0 ? 0 : 1;
}
