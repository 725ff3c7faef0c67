/* libFuzzer driver: http (see targets.h; built by tests/fuzz/build.sh). */
#include "targets.h"
FZ_DRIVER(fz_http)
