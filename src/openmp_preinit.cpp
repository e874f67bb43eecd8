// Linked into l4q's executables (tools, tests, benchmarks), not into libl4q: see
// include/l4q/openmp_spin.h for why this must run before libgomp initialises.
#include "l4q/openmp_spin.h"

L4Q_SHORT_OPENMP_SPIN();
