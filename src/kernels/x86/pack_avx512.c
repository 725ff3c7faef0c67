/* B-block packing compiled for AVX512 (see pack_impl.inc). */
#include "kernels/kern_int.h"
#define PACK_SUFFIX avx512
#include "pack_impl.inc"
