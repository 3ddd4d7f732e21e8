/* SPDX-License-Identifier: GPL-2.0 */
/* Input to bindgen: the C API qemu-vfio-pci uses that `kernel::bindings` does not cover. */
#include <linux/anon_inodes.h>
#include <linux/crc32.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>
#include "qvp_helpers.h"
