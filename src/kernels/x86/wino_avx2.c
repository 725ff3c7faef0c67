/* Winograd F(4x4,3x3) transforms compiled for AVX2 (see wino_impl.inc). */
#include "kernels/kern_int.h"
#define WINO_SUFFIX avx2
#include "wino_impl.inc"
