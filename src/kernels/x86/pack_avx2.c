/* B-block packing compiled for AVX2 (see pack_impl.inc). */
#include "kernels/kern_int.h"
#define PACK_SUFFIX avx2
#include "pack_impl.inc"
