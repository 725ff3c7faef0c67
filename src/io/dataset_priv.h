/* Private helpers shared by dataset.c and dataset_split.c. */
#ifndef DN_IO_DATASET_PRIV_H
#define DN_IO_DATASET_PRIV_H

/* 1 if p names an existing regular file. */
int dn_ds_is_file(const char *p);
/* Directory part of path ("." when none, "/" for root files); caller frees. */
char *dn_ds_dir_of(const char *path);

#endif
