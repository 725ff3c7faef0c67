/* The network's layer list (see layers.h). */
#include "nn/arch.h"
#include <stdio.h>
#include <string.h>

void dn_arch_names(int stage, int block, int kind, char *conv, char *bn, size_t n) {
    char c[DN_ARCH_NAME_MAX], b[DN_ARCH_NAME_MAX];
    int s = stage + 1;
    switch (kind) {
    case DN_ARCH_STEM: snprintf(c, sizeof c, "conv1"); snprintf(b, sizeof b, "bn1"); break;
    case DN_ARCH_CONV1:
    case DN_ARCH_CONV2:
        snprintf(c, sizeof c, "layer%d.%d.conv%d", s, block, kind == DN_ARCH_CONV1 ? 1 : 2);
        snprintf(b, sizeof b, "layer%d.%d.bn%d", s, block, kind == DN_ARCH_CONV1 ? 1 : 2);
        break;
    case DN_ARCH_DOWN:
        snprintf(c, sizeof c, "layer%d.%d.downsample.0", s, block);
        snprintf(b, sizeof b, "layer%d.%d.downsample.1", s, block);
        break;
    default: snprintf(c, sizeof c, "layer%d.%d", s, block); b[0] = 0; break;
    }
    if (conv) snprintf(conv, n, "%s", c);
    if (bn) snprintf(bn, n, "%s", b);
}

int dn_arch_count(const dn_model *m) {
    int n = 1;
    for (int b = 0; b < m->nblocks; b++) n += 2 + (m->blocks[b].has_down ? 1 : 0);
    return n;
}

int dn_arch_at(const dn_model *m, int i, dn_arch_conv *out) {
    dn_model *mm = (dn_model *)m; /* pointers into the model: writable when the model is */
    memset(out, 0, sizeof *out);
    out->index = i;
    if (i < 0) return -1;
    if (i == 0) {
        out->kind = DN_ARCH_STEM;
        out->stage = out->block = out->gblock = -1;
        dn_arch_names(-1, -1, DN_ARCH_STEM, out->conv, out->bn, sizeof out->conv);
        out->conv_p = &mm->conv1;
        out->bn_p = &mm->bn1;
        return 0;
    }
    int k = 1, b = 0;
    for (int stg = 0; stg < 4; stg++)
        for (int j = 0; j < m->layers[stg] && b < m->nblocks; j++, b++) {
            dn_block_p *bp = &mm->blocks[b];
            int cnt = 2 + (bp->has_down ? 1 : 0);
            if (i >= k + cnt) {
                k += cnt;
                continue;
            }
            int w = i - k;
            out->kind = w == 0 ? DN_ARCH_CONV1 : w == 1 ? DN_ARCH_CONV2 : DN_ARCH_DOWN;
            out->stage = stg;
            out->block = j;
            out->gblock = b;
            dn_arch_names(stg, j, out->kind, out->conv, out->bn, sizeof out->conv);
            out->conv_p = w == 0 ? &bp->conv1 : w == 1 ? &bp->conv2 : &bp->down;
            out->bn_p = w == 0 ? &bp->bn1 : w == 1 ? &bp->bn2 : &bp->down_bn;
            return 0;
        }
    return -1;
}

int dn_arch_find(const dn_model *m, const char *name, dn_arch_conv *out) {
    for (int i = 0; !dn_arch_at(m, i, out); i++)
        if (!strcmp(out->conv, name)) return 0;
    return -1;
}
