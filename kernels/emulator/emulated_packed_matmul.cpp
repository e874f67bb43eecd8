// kernels/src/packed_matmul.cu compiled by the host compiler against the SIMT emulator (simt.h).
#include "src/packed_matmul.cu"
