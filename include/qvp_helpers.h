/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for qemu-vfio-pci: wrappers for static inline functions and macros of the VFIO C API
 * that bindgen cannot bind. Nothing else belongs here.
 */
#ifndef QVP_HELPERS_H
#define QVP_HELPERS_H

struct vfio_device;

void qvp_vfio_put_device(struct vfio_device *device);

#endif /* QVP_HELPERS_H */
