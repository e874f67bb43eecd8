// kernels/src/fake_quant_backward.cu compiled by the host compiler against the SIMT emulator (simt.h).
#include "src/fake_quant_backward.cu"
