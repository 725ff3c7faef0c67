#!/bin/sh
# Cost of one Grad-CAM heatmap (issue 11 item 2), defectnet and PyTorch in the same run:
# forward pass, Grad-CAM map (forward + backward to the layer + map) and, for defectnet,
# the whole heatmap (map, overlay, PNG); batch 1; prints both tables and the ratios.
#   sh bench/gradcam.sh [BUILD] [THREADS] [SIZE] [ITERS]
# Run it under ../shared/tools/quiet for publishable figures.
set -eu
B=${1:-build}; T=${2:-1}; S=${3:-224}; N=${4:-9}
W=${DN_SHARED:-../shared}/weights/resnet18-imagenet.pth
[ -x "$B/bench/bench_gradcam" ] || { echo "gradcam.sh: build $B/bench/bench_gradcam first (make BUILD=$B bench)" >&2; exit 2; }
dn=$("$B/bench/bench_gradcam" --weights "$W" --threads "$T" --size "$S" --iters "$N")
pt=$(/usr/bin/python3 tools/bench_gradcam_torch.py --weights "$W" --threads "$T" --size "$S" --iters "$N")
echo "$dn"
echo "$pt"
ms() { echo "$1" | awk -v w="$2" '$0 ~ w {for (i = 1; i <= NF; i++) if ($(i+1) == "ms") {print $i; exit}}'; }
df=$(ms "$dn" "defectnet forward"); dg=$(ms "$dn" "defectnet gradcam map"); dp=$(ms "$dn" "defectnet gradcam png")
pf=$(ms "$pt" "pytorch +forward"); pg=$(ms "$pt" "pytorch +gradcam map")
awk -v df="$df" -v dg="$dg" -v dp="$dp" -v pf="$pf" -v pg="$pg" 'BEGIN {
    printf "ratio defectnet/pytorch: forward %.2f, gradcam map %.2f (below 1: defectnet faster)\n", df / pf, dg / pg
    printf "heatmap cost per image: defectnet %.1f ms map + %.1f ms overlay and PNG = %.1f ms (%.2fx its forward); pytorch map %.1f ms (%.2fx its forward)\n", dg, dp - dg, dp, dp / df, pg, pg / pf }'
