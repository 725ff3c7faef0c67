/* Winograd F(4x4,3x3) transforms compiled for AVX-512 (see wino_impl.inc). */
#include "kernels/kern_int.h"
#define WINO_SUFFIX avx512
#include "wino_impl.inc"
