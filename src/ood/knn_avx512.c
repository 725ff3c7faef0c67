/* KNN dot-product tile, AVX-512 build of knn_tile.inc (vcvtph2ps + FMA, masked tail). */
#include "ood/knn_tile.inc"
