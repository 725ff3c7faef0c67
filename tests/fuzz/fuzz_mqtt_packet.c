/* libFuzzer driver: mqtt_packet (see targets.h; built by tests/fuzz/build.sh). */
#include "targets.h"
FZ_DRIVER(fz_mqtt_packet)
