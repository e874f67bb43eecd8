// kernels/src/fake_quant_forward.cu compiled by the host compiler against the SIMT emulator (simt.h).
#include "src/fake_quant_forward.cu"
