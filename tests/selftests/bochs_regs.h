/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * QEMU bochs-display facts shared by the qemu-vfio-pci kselftests: PCI IDs and the BAR2
 * register map (hw/display/bochs-display.c, include/hw/display/bochs-vbe.h).
 */
#ifndef QVP_BOCHS_REGS_H
#define QVP_BOCHS_REGS_H

#define BOCHS_VENDOR_ID		0x1234
#define BOCHS_DEVICE_ID		0x1111
#define BOCHS_REVISION		0x02
#define BOCHS_CLASS		0x0380	/* display controller, other */

#define SZ_4K			0x1000UL
#define SZ_64K			0x10000UL
#define SZ_256K			0x40000UL
#define SZ_1M			0x100000UL
#define SZ_4M			0x400000UL

/* BAR2: bochs DISPI registers, 16 bit, index i at 0x500 + 2 * i */
#define DISPI_BASE		0x500
#define DISPI_REG(i)		(DISPI_BASE + 2 * (i))
#define DISPI_INDEX_ID		0x0
#define DISPI_INDEX_XRES	0x1
#define DISPI_INDEX_YRES	0x2
#define DISPI_INDEX_BPP		0x3
#define DISPI_INDEX_ENABLE	0x4
#define DISPI_INDEX_BANK	0x5
#define DISPI_INDEX_VIRT_WIDTH	0x6
#define DISPI_INDEX_VIRT_HEIGHT	0x7
#define DISPI_INDEX_X_OFFSET	0x8
#define DISPI_INDEX_Y_OFFSET	0x9
#define DISPI_INDEX_VIDEO_MEMORY_64K 0xa
#define DISPI_NR_RW		(DISPI_INDEX_Y_OFFSET + 1)
#define DISPI_ID5		0xb0c5
#define DISPI_ID0		0xb0c0
#define DISPI_ENABLED		0x01
#define DISPI_LFB_ENABLED	0x40

/* BAR2: QEMU extended registers, 32 bit */
#define QEXT_REG_SIZE		0x600
#define QEXT_REG_BYTEORDER	0x604
#define QEXT_SIZE		8
#define QEXT_LITTLE_ENDIAN	0x1e1e1e1e
#define QEXT_BIG_ENDIAN		0xbebebebe

#endif /* QVP_BOCHS_REGS_H */
