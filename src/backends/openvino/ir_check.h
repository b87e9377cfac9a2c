/* ir_check.h — is a file an OpenVINO IR whose weights are all there? Used before an IR is
 * handed to OpenVINO, by inspect and by --from-ir. */
#ifndef KN_IR_CHECK_H
#define KN_IR_CHECK_H

#include "base/base.h"

/* The largest IR XML kiln reads. */
#define KN_OV_IR_MAX (256u << 20)

/* Checks that xml_path is an OpenVINO IR (a complete <net> with <layers>) and that every weight
 * it references (<data offset=".." size="..">) lies inside the .bin beside it: KILN_ERR_FORMAT
 * naming the file otherwise. Linear in the XML size. */
kiln_status kn_ov_ir_check(const char *xml_path, kiln_error *err);

#endif
