// SPDX-License-Identifier: GPL-2.0
/*
 * Out-of-line wrappers for static inline VFIO functions, so that Rust can call them.
 */
#include <linux/vfio.h>
#include "qvp_helpers.h"

void qvp_vfio_put_device(struct vfio_device *device)
{
	vfio_put_device(device);
}
