/* exit.c — the exit status of the kiln command for a library status. */
#include "cli.h"

int kiln_exit_code(kiln_status s) {
    switch (s) {
    case KILN_OK: return 0;
    case KILN_ERR_INVALID_ARG:
    case KILN_ERR_IO:
    case KILN_ERR_FORMAT:
    case KILN_ERR_UNSUPPORTED: return 2;
    case KILN_ERR_DEVICE: return 3;
    case KILN_ERR_CANCELLED: return 130;
    default: return 1;
    }
}
