/* KNN dot-product tile, AVX2 + F16C + FMA build of knn_tile.inc. */
#include "ood/knn_tile.inc"
