// Short OpenMP spin-waits for executables that use l4q.
//
// libgomp (used by LibTorch and OpenBLAS) makes idle workers spin for ~300k iterations before
// they sleep. On a loaded machine a spinning worker holds a core that the worker it waits for
// needs, so every fork-join region costs scheduler time slices: on 2 cores with two busy
// processes beside it, 10 L4Q steps of stories260K took 183 s instead of 7 s. A spin count of
// 1000 brings that to 7.7 s and costs under 10% on a quiet machine for the smallest model
// (docs/benchmarks.md, "OpenMP spin under load").
//
// libgomp reads its environment once, in its own ELF constructor, before main(). Setting the
// variable from a constructor or from a .preinit_array entry does not work either: libc's own
// initialiser (which runs after .preinit_array, before libgomp's) resets `environ` to the
// process's original environment. So the .preinit_array entry, which runs before any library
// constructor, re-executes the program (/proc/self/exe, same argv) with GOMP_SPINCOUNT=1000
// added to its environment. That costs ~0.14 s (the dynamic linking of LibTorch, done twice);
// no constructor has run yet, so nothing is lost. It does nothing when the user has set
// GOMP_SPINCOUNT or OMP_WAIT_POLICY (set either to keep libgomp's own default), and carries on
// unchanged if the exec fails.
//
// Use: put L4Q_SHORT_OPENMP_SPIN() at namespace scope in exactly one source file of an
// executable (.preinit_array is ignored in shared libraries). l4q's own tools, tests and
// benchmarks get it from src/openmp_preinit.cpp (CMake target l4q_openmp_preinit).
// Plain C only below: it runs before libstdc++ and every other library is initialised.
#pragma once

#include <alloca.h>
#include <string.h>
#include <unistd.h>

namespace l4q::detail {

constexpr const char* kShortSpinSetting = "GOMP_SPINCOUNT=1000";

// True when envp already chooses libgomp's waiting policy, i.e. there is nothing to do.
inline bool openmp_wait_chosen(char* const* envp) {
  for (char* const* e = envp; e != nullptr && *e != nullptr; ++e) {
    if (strncmp(*e, "GOMP_SPINCOUNT=", 15) == 0 || strncmp(*e, "OMP_WAIT_POLICY=", 16) == 0) return true;
  }
  return false;
}

// Copies envp's n pointers into out (capacity n + 2) and appends kShortSpinSetting and the
// terminating null.
inline void add_short_spin(char* const* envp, size_t n, char** out) {
  if (n > 0) memcpy(out, envp, n * sizeof(char*));
  out[n] = const_cast<char*>(kShortSpinSetting);
  out[n + 1] = nullptr;
}

inline void reexec_with_short_openmp_spin(int, char** argv, char** envp) {
  if (argv == nullptr || openmp_wait_chosen(envp)) return;
  size_t n = 0;
  while (envp != nullptr && envp[n] != nullptr) ++n;
  char** env = static_cast<char**>(alloca((n + 2) * sizeof(char*)));
  add_short_spin(envp, n, env);
  execve("/proc/self/exe", argv, env);  // returns only on failure: carry on as we are
}

}  // namespace l4q::detail

#if defined(__linux__) && defined(__ELF__)
#define L4Q_SHORT_OPENMP_SPIN()                                                              \
  __attribute__((section(".preinit_array"), used)) static void (*const                       \
      l4q_short_openmp_spin_entry)(int, char**, char**) = &::l4q::detail::reexec_with_short_openmp_spin
#else
#define L4Q_SHORT_OPENMP_SPIN() static_assert(true, "")
#endif
