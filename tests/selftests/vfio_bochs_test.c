// SPDX-License-Identifier: GPL-2.0-only
/*
 * VFIO uAPI selftest for QEMU's bochs-display PCI device (1234:1111).
 *
 * The device is driven through the VFIO device cdev bound to iommufd, the
 * same way the in-tree tools/testing/selftests/vfio tests do it.  It must
 * pass for a device bound to plain vfio-pci as well as to the qemu-vfio-pci
 * variant driver, which has to behave identically.
 *
 * Usage: vfio_bochs_test [harness options] segment:bus:device.function
 *        VFIO_SELFTESTS_BDF=segment:bus:device.function vfio_bochs_test
 */

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "vfio_util.h"
#include "bochs_regs.h"

/* Registers a test may change; restored by the teardown. */
static const unsigned int dispi_rw_regs[] = {
	DISPI_INDEX_XRES, DISPI_INDEX_YRES, DISPI_INDEX_BPP,
	DISPI_INDEX_ENABLE, DISPI_INDEX_BANK, DISPI_INDEX_VIRT_WIDTH,
	DISPI_INDEX_VIRT_HEIGHT, DISPI_INDEX_X_OFFSET, DISPI_INDEX_Y_OFFSET,
};

static const char *device_bdf;



static int bind_iommufd(int fd, int iommufd)
{
	struct vfio_device_bind_iommufd bind = {
		.argsz = sizeof(bind),
		.iommufd = iommufd,
	};

	return ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, &bind) ? -errno : 0;
}


static int get_irq_info(int fd, __u32 index, struct vfio_irq_info *info)
{
	memset(info, 0, sizeof(*info));
	info->argsz = sizeof(*info);
	info->index = index;

	return ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, info) ? -errno : 0;
}

/* Full-length pread/pwrite at @off within a region; 0 or -errno. */
static int region_rw(int fd, const struct vfio_region_info *r, __u64 off,
		     void *buf, size_t len, bool write)
{
	char *p = buf;

	while (len) {
		ssize_t n;

		if (write)
			n = pwrite(fd, p, len, r->offset + off);
		else
			n = pread(fd, p, len, r->offset + off);
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int region_read(int fd, const struct vfio_region_info *r, __u64 off,
		       void *buf, size_t len)
{
	return region_rw(fd, r, off, buf, len, false);
}

static int region_write(int fd, const struct vfio_region_info *r, __u64 off,
			const void *buf, size_t len)
{
	return region_rw(fd, r, off, (void *)buf, len, true);
}

static int read16(int fd, const struct vfio_region_info *r, __u64 off,
		  __u16 *val)
{
	__u16 le;
	int ret = region_read(fd, r, off, &le, sizeof(le));

	*val = le16toh(le);
	return ret;
}

static int write16(int fd, const struct vfio_region_info *r, __u64 off,
		   __u16 val)
{
	__u16 le = htole16(val);

	return region_write(fd, r, off, &le, sizeof(le));
}

static int read32(int fd, const struct vfio_region_info *r, __u64 off,
		  __u32 *val)
{
	__u32 le;
	int ret = region_read(fd, r, off, &le, sizeof(le));

	*val = le32toh(le);
	return ret;
}

static int write32(int fd, const struct vfio_region_info *r, __u64 off,
		   __u32 val)
{
	__u32 le = htole32(val);

	return region_write(fd, r, off, &le, sizeof(le));
}

/*
 * Pseudo-random VRAM contents: the 64-bit word at byte offset @off is the
 * splitmix64 hash of (@seed, @off), so any range can be regenerated.
 */
static __u64 pattern_word(__u64 seed, __u64 off)
{
	__u64 z = seed + (off / 8 + 1) * 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Fill [off, off + len) of VRAM (mapped at @base) with the pattern. */
static void pattern_fill(volatile __u64 *base, __u64 off, size_t len,
			 __u64 seed)
{
	size_t i;

	for (i = 0; i < len; i += 8)
		base[(off + i) / 8] = pattern_word(seed, off + i);
}

/*
 * Check @len bytes at @buf against the pattern for VRAM offset @off.
 * Returns the byte offset (relative to @buf) of the first mismatch, or -1.
 */
static ssize_t pattern_check(const volatile __u64 *buf, __u64 off, size_t len,
			     __u64 seed)
{
	size_t i;

	for (i = 0; i < len; i += 8)
		if (buf[i / 8] != pattern_word(seed, off + i))
			return i;
	return -1;
}

/*
 * A different seed on every run: VRAM survives resets and re-opens, so a
 * fixed pattern could be read back even if the writes were lost.
 */
static __u64 run_seed(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return pattern_word(ts.tv_sec * 1000000000ULL + ts.tv_nsec,
			    (__u64)getpid() << 3);
}

FIXTURE(bochs) {
	int iommufd;
	int fd;
	__u32 ioas_id;
	struct vfio_device_info info;
	struct vfio_region_info config;
	struct vfio_region_info bar0;
	struct vfio_region_info bar2;
	struct vfio_region_info rom;
	void *vram;
	/* register state saved by save_regs(), put back by the teardown */
	bool regs_saved;
	__u16 saved_dispi[DISPI_NR_RW];
	__u32 saved_byteorder;
};

FIXTURE_SETUP(bochs)
{
	struct vfio_device_attach_iommufd_pt attach = {
		.argsz = sizeof(attach),
	};
	struct iommu_ioas_alloc alloc = {
		.size = sizeof(alloc),
	};
	char *cdev;

	self->fd = -1;
	self->iommufd = -1;
	self->vram = MAP_FAILED;

	cdev = vfio_cdev_path(device_bdf);
	ASSERT_NE(NULL, cdev) {
		TH_LOG("no VFIO cdev for %s (bound to vfio-pci?): %s",
		       device_bdf, strerror(errno));
	}
	self->fd = open(cdev, O_RDWR);
	ASSERT_LE(0, self->fd) {
		TH_LOG("open %s: %s", cdev, strerror(errno));
	}
	free(cdev);

	self->iommufd = open("/dev/iommu", O_RDWR);
	ASSERT_LE(0, self->iommufd) {
		TH_LOG("open /dev/iommu: %s", strerror(errno));
	}
	ASSERT_EQ(0, bind_iommufd(self->fd, self->iommufd));
	ASSERT_EQ(0, ioctl(self->iommufd, IOMMU_IOAS_ALLOC, &alloc));
	self->ioas_id = alloc.out_ioas_id;
	attach.pt_id = self->ioas_id;
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach));

	self->info.argsz = sizeof(self->info);
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_INFO, &self->info));
	ASSERT_EQ(0, get_region_info(self->fd, VFIO_PCI_CONFIG_REGION_INDEX,
				     &self->config));
	ASSERT_EQ(0, get_region_info(self->fd, VFIO_PCI_BAR0_REGION_INDEX,
				     &self->bar0));
	ASSERT_EQ(0, get_region_info(self->fd, VFIO_PCI_BAR2_REGION_INDEX,
				     &self->bar2));
	ASSERT_EQ(0, get_region_info(self->fd, VFIO_PCI_ROM_REGION_INDEX,
				     &self->rom));
}

FIXTURE_TEARDOWN(bochs)
{
	unsigned int i;

	if (self->regs_saved) {
		for (i = 0; i < ARRAY_SIZE(dispi_rw_regs); i++) {
			unsigned int idx = dispi_rw_regs[i];

			EXPECT_EQ(0, write16(self->fd, &self->bar2,
					     DISPI_REG(idx),
					     self->saved_dispi[idx]));
		}
		EXPECT_EQ(0, write32(self->fd, &self->bar2, QEXT_REG_BYTEORDER,
				     self->saved_byteorder));
	}
	if (self->vram != MAP_FAILED)
		munmap(self->vram, self->bar0.size);
	if (self->fd >= 0)
		close(self->fd);
	if (self->iommufd >= 0)
		close(self->iommufd);
}

/* Remember the registers a test is about to change. */
static int save_regs(FIXTURE_DATA(bochs) *self)
{
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(dispi_rw_regs); i++) {
		unsigned int idx = dispi_rw_regs[i];

		ret = read16(self->fd, &self->bar2, DISPI_REG(idx),
			     &self->saved_dispi[idx]);
		if (ret)
			return ret;
	}
	ret = read32(self->fd, &self->bar2, QEXT_REG_BYTEORDER,
		     &self->saved_byteorder);
	if (ret)
		return ret;
	self->regs_saved = true;
	return 0;
}

static int map_vram(FIXTURE_DATA(bochs) *self)
{
	self->vram = mmap(NULL, self->bar0.size, PROT_READ | PROT_WRITE,
			  MAP_SHARED, self->fd, self->bar0.offset);
	return self->vram == MAP_FAILED ? -errno : 0;
}

TEST_F(bochs, device_info)
{
	TH_LOG("flags %#x, %u regions, %u irqs", self->info.flags,
	       self->info.num_regions, self->info.num_irqs);

	ASSERT_TRUE(self->info.flags & VFIO_DEVICE_FLAGS_PCI);
	ASSERT_TRUE(self->info.flags & VFIO_DEVICE_FLAGS_RESET);
	ASSERT_LE(VFIO_PCI_NUM_REGIONS, self->info.num_regions);
	ASSERT_GE(VFIO_PCI_NUM_IRQS, self->info.num_irqs);
}

TEST_F(bochs, bar0_region_info)
{
	const __u32 want = VFIO_REGION_INFO_FLAG_READ |
			   VFIO_REGION_INFO_FLAG_WRITE |
			   VFIO_REGION_INFO_FLAG_MMAP;

	TH_LOG("BAR0 size %#llx flags %#x",
	       (unsigned long long)self->bar0.size, self->bar0.flags);
	ASSERT_EQ(VFIO_PCI_BAR0_REGION_INDEX, self->bar0.index);
	ASSERT_LE(SZ_4M, self->bar0.size);
	ASSERT_EQ(0, self->bar0.size & (self->bar0.size - 1));
	ASSERT_EQ(want, self->bar0.flags & want);
}

TEST_F(bochs, bar2_region_info)
{
	const __u32 want = VFIO_REGION_INFO_FLAG_READ |
			   VFIO_REGION_INFO_FLAG_WRITE;

	ASSERT_EQ(VFIO_PCI_BAR2_REGION_INDEX, self->bar2.index);
	ASSERT_EQ(SZ_4K, self->bar2.size);
	ASSERT_EQ(want, self->bar2.flags & want);
}

TEST_F(bochs, config_region_info)
{
	const __u32 want = VFIO_REGION_INFO_FLAG_READ |
			   VFIO_REGION_INFO_FLAG_WRITE;

	ASSERT_LE(256, self->config.size);
	ASSERT_EQ(want, self->config.flags & want);
	ASSERT_FALSE(self->config.flags & VFIO_REGION_INFO_FLAG_MMAP);
}

TEST_F(bochs, rom_region)
{
	__u8 sig[2];

	TH_LOG("ROM size %#llx flags %#x",
	       (unsigned long long)self->rom.size, self->rom.flags);
	ASSERT_LT(0, self->rom.size);
	ASSERT_TRUE(self->rom.flags & VFIO_REGION_INFO_FLAG_READ);
	ASSERT_FALSE(self->rom.flags & VFIO_REGION_INFO_FLAG_WRITE);

	/* PCI expansion ROM signature */
	ASSERT_EQ(0, region_read(self->fd, &self->rom, 0, sig, sizeof(sig)));
	ASSERT_EQ(0x55, sig[0]);
	ASSERT_EQ(0xaa, sig[1]);
}

/* bochs-display only implements BAR0 and BAR2, and it is not a VGA device. */
TEST_F(bochs, absent_regions)
{
	static const __u32 unused_bars[] = {
		VFIO_PCI_BAR1_REGION_INDEX, VFIO_PCI_BAR3_REGION_INDEX,
		VFIO_PCI_BAR4_REGION_INDEX, VFIO_PCI_BAR5_REGION_INDEX,
	};
	struct vfio_region_info info;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(unused_bars); i++) {
		ASSERT_EQ(0, get_region_info(self->fd, unused_bars[i], &info));
		EXPECT_EQ(0, info.size);
		EXPECT_EQ(0, info.flags);
	}
	ASSERT_EQ(-EINVAL, get_region_info(self->fd, VFIO_PCI_VGA_REGION_INDEX,
					   &info));
}

TEST_F(bochs, irq_info)
{
	struct vfio_irq_info irq;
	__u32 i;

	/* No interrupt pin, no MSI, no MSI-X. */
	for (i = VFIO_PCI_INTX_IRQ_INDEX;
	     i <= VFIO_PCI_MSIX_IRQ_INDEX && i < self->info.num_irqs; i++) {
		ASSERT_EQ(0, get_irq_info(self->fd, i, &irq));
		EXPECT_EQ(0, irq.count) {
			TH_LOG("irq index %u", i);
		}
	}
	ASSERT_EQ(-EINVAL, get_irq_info(self->fd, self->info.num_irqs, &irq));
}

TEST_F(bochs, config_space)
{
	__u16 vendor, device, class;
	__u8 rev, hdr;

	ASSERT_EQ(0, read16(self->fd, &self->config, PCI_VENDOR_ID, &vendor));
	ASSERT_EQ(0, read16(self->fd, &self->config, PCI_DEVICE_ID, &device));
	ASSERT_EQ(0, region_read(self->fd, &self->config, PCI_REVISION_ID,
				 &rev, 1));
	ASSERT_EQ(0, read16(self->fd, &self->config, PCI_CLASS_DEVICE, &class));
	ASSERT_EQ(0, region_read(self->fd, &self->config, PCI_HEADER_TYPE,
				 &hdr, 1));

	EXPECT_EQ(BOCHS_VENDOR_ID, vendor);
	EXPECT_EQ(BOCHS_DEVICE_ID, device);
	EXPECT_EQ(BOCHS_REVISION, rev);
	EXPECT_EQ(BOCHS_CLASS, class);
	EXPECT_EQ(PCI_HEADER_TYPE_NORMAL, hdr & 0x7f);

	/* The vendor ID is read-only: a write is accepted and dropped. */
	ASSERT_EQ(0, write16(self->fd, &self->config, PCI_VENDOR_ID, 0xffff));
	ASSERT_EQ(0, read16(self->fd, &self->config, PCI_VENDOR_ID, &vendor));
	EXPECT_EQ(BOCHS_VENDOR_ID, vendor);
}

TEST_F_TIMEOUT(bochs, vram_mmap, 600)
{
	const __u64 seed = run_seed();
	const size_t chunk = SZ_1M;
	const size_t size = self->bar0.size;
	__u64 *buf, page[SZ_4K / 8];
	ssize_t bad;
	size_t off;
	int ret;

	ret = map_vram(self);
	ASSERT_EQ(0, ret) {
		TH_LOG("mmap BAR0: %s", strerror(-ret));
	}

	/* Whole VRAM through the mapping, read back through the mapping... */
	pattern_fill(self->vram, 0, size, seed);
	bad = pattern_check(self->vram, 0, size, seed);
	ASSERT_EQ(-1, bad) {
		TH_LOG("mmap readback mismatch at %#zx", bad);
	}

	/* ... and through pread() on the region. */
	buf = malloc(chunk);
	ASSERT_NE(NULL, buf);
	for (off = 0; off < size; off += chunk) {
		ASSERT_EQ(0, region_read(self->fd, &self->bar0, off, buf,
					 chunk));
		bad = pattern_check(buf, off, chunk, seed);
		ASSERT_EQ(-1, bad) {
			free(buf);
			TH_LOG("pread mismatch at %#zx", off + bad);
		}
	}
	free(buf);

	/* pwrite() on the region is visible through the mapping. */
	for (off = 0; off < size; off += size - SZ_4K) {
		pattern_fill(page, 0, SZ_4K, ~seed ^ off);
		ASSERT_EQ(0, region_write(self->fd, &self->bar0, off, page,
					  SZ_4K));
		bad = pattern_check((__u64 *)self->vram + off / 8, 0, SZ_4K,
				    ~seed ^ off);
		ASSERT_EQ(-1, bad) {
			TH_LOG("pwrite not visible at %#zx", off + bad);
		}
	}
}

TEST_F(bochs, dispi_id_and_vram_size)
{
	__u16 val;

	ASSERT_EQ(0, read16(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_ID),
			    &val));
	ASSERT_EQ(DISPI_ID5, val);

	/* Writes to the ID register never read back on bochs-display. */
	ASSERT_EQ(0, write16(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_ID),
			     DISPI_ID0));
	ASSERT_EQ(0, read16(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_ID),
			    &val));
	ASSERT_EQ(DISPI_ID5, val);

	ASSERT_EQ(0, read16(self->fd, &self->bar2,
			    DISPI_REG(DISPI_INDEX_VIDEO_MEMORY_64K), &val));
	ASSERT_EQ(self->bar0.size / SZ_64K, val);

	/* VIDEO_MEMORY_64K is read-only. */
	ASSERT_EQ(0, write16(self->fd, &self->bar2,
			     DISPI_REG(DISPI_INDEX_VIDEO_MEMORY_64K), 1));
	ASSERT_EQ(0, read16(self->fd, &self->bar2,
			    DISPI_REG(DISPI_INDEX_VIDEO_MEMORY_64K), &val));
	ASSERT_EQ(self->bar0.size / SZ_64K, val);
}

TEST_F(bochs, dispi_registers)
{
	unsigned int i, pass;
	__u16 val, want;

	ASSERT_EQ(0, save_regs(self));

	for (pass = 0; pass < 2; pass++) {
		/* Write every register first, then read them all back. */
		for (i = 0; i < ARRAY_SIZE(dispi_rw_regs); i++) {
			unsigned int idx = dispi_rw_regs[i];

			if (idx == DISPI_INDEX_ENABLE)
				/* never set DISPI_ENABLED */
				want = pass ? 0 : DISPI_LFB_ENABLED;
			else
				want = (pass ? 0x5a3c : 0x0c35) + 0x111 * idx;
			ASSERT_EQ(0, write16(self->fd, &self->bar2,
					     DISPI_REG(idx), want));
		}
		for (i = 0; i < ARRAY_SIZE(dispi_rw_regs); i++) {
			unsigned int idx = dispi_rw_regs[i];

			if (idx == DISPI_INDEX_ENABLE)
				want = pass ? 0 : DISPI_LFB_ENABLED;
			else
				want = (pass ? 0x5a3c : 0x0c35) + 0x111 * idx;
			ASSERT_EQ(0, read16(self->fd, &self->bar2,
					    DISPI_REG(idx), &val));
			EXPECT_EQ(want, val) {
				TH_LOG("DISPI index %#x pass %u", idx, pass);
			}
		}
	}
}

/* A 32-bit access covers two consecutive 16-bit DISPI registers. */
TEST_F(bochs, dispi_32bit_access)
{
	__u16 yres, bpp;
	__u32 val;

	ASSERT_EQ(0, save_regs(self));

	/* YRES (0x504) and BPP (0x506) as one little-endian dword */
	ASSERT_EQ(0, write32(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_YRES),
			     0x0020a1b2));
	ASSERT_EQ(0, read16(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_YRES),
			    &yres));
	ASSERT_EQ(0, read16(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_BPP),
			    &bpp));
	EXPECT_EQ(0xa1b2, yres);
	EXPECT_EQ(0x0020, bpp);

	ASSERT_EQ(0, write16(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_YRES),
			     0x0258));
	ASSERT_EQ(0, write16(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_BPP),
			     0x0018));
	ASSERT_EQ(0, read32(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_YRES),
			    &val));
	EXPECT_EQ(0x00180258, val);
}

TEST_F(bochs, qext_registers)
{
	__u32 val;

	ASSERT_EQ(0, save_regs(self));

	ASSERT_EQ(0, read32(self->fd, &self->bar2, QEXT_REG_SIZE, &val));
	ASSERT_EQ(QEXT_SIZE, val);

	ASSERT_EQ(0, write32(self->fd, &self->bar2, QEXT_REG_BYTEORDER,
			     QEXT_BIG_ENDIAN));
	ASSERT_EQ(0, read32(self->fd, &self->bar2, QEXT_REG_BYTEORDER, &val));
	ASSERT_EQ(QEXT_BIG_ENDIAN, val);

	/* Anything but the two magic values is ignored. */
	ASSERT_EQ(0, write32(self->fd, &self->bar2, QEXT_REG_BYTEORDER,
			     0x12345678));
	ASSERT_EQ(0, read32(self->fd, &self->bar2, QEXT_REG_BYTEORDER, &val));
	ASSERT_EQ(QEXT_BIG_ENDIAN, val);

	ASSERT_EQ(0, write32(self->fd, &self->bar2, QEXT_REG_BYTEORDER,
			     QEXT_LITTLE_ENDIAN));
	ASSERT_EQ(0, read32(self->fd, &self->bar2, QEXT_REG_BYTEORDER, &val));
	ASSERT_EQ(QEXT_LITTLE_ENDIAN, val);

	ASSERT_EQ(0, write32(self->fd, &self->bar2, QEXT_REG_BYTEORDER, 0));
	ASSERT_EQ(0, read32(self->fd, &self->bar2, QEXT_REG_BYTEORDER, &val));
	ASSERT_EQ(QEXT_LITTLE_ENDIAN, val);
}

/*
 * bochs-display has no reset handler, so register and VRAM contents may
 * survive the (bus) reset; only check that the device still works.
 */
TEST_F_TIMEOUT(bochs, device_reset, 300)
{
	const __u64 seed = run_seed();
	const size_t len = 2 * SZ_1M;
	const size_t last = self->bar0.size - SZ_4K;
	struct vfio_device_info info = { .argsz = sizeof(info) };
	__u64 page[SZ_4K / 8];
	__u16 val;
	ssize_t bad;

	ASSERT_EQ(0, save_regs(self));
	ASSERT_EQ(0, map_vram(self));
	pattern_fill(self->vram, 0, len, seed);
	ASSERT_EQ(0, write16(self->fd, &self->bar2,
			     DISPI_REG(DISPI_INDEX_XRES), 1024));

	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_RESET)) {
		TH_LOG("VFIO_DEVICE_RESET: %s", strerror(errno));
	}

	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_INFO, &info));
	ASSERT_EQ(0, read16(self->fd, &self->config, PCI_VENDOR_ID, &val));
	ASSERT_EQ(BOCHS_VENDOR_ID, val);
	ASSERT_EQ(0, read16(self->fd, &self->bar2, DISPI_REG(DISPI_INDEX_ID),
			    &val));
	ASSERT_EQ(DISPI_ID5, val);

	/* BAR2 registers still work... */
	ASSERT_EQ(0, write16(self->fd, &self->bar2,
			     DISPI_REG(DISPI_INDEX_XRES), 800));
	ASSERT_EQ(0, read16(self->fd, &self->bar2,
			    DISPI_REG(DISPI_INDEX_XRES), &val));
	ASSERT_EQ(800, val);

	/* ... and so does VRAM, through the mapping made before the reset. */
	pattern_fill(self->vram, 0, len, ~seed);
	pattern_fill(self->vram, last, SZ_4K, ~seed);
	bad = pattern_check(self->vram, 0, len, ~seed);
	ASSERT_EQ(-1, bad) {
		TH_LOG("mmap readback mismatch at %#zx", bad);
	}
	ASSERT_EQ(0, region_read(self->fd, &self->bar0, last, page, SZ_4K));
	bad = pattern_check(page, last, SZ_4K, ~seed);
	ASSERT_EQ(-1, bad) {
		TH_LOG("pread mismatch at %#zx", last + bad);
	}
}

TEST_F(bochs, invalid_region_access)
{
	struct vfio_region_info info;
	char buf[4];
	void *map;

	ASSERT_EQ(-EINVAL, get_region_info(self->fd, self->info.num_regions,
					   &info));
	ASSERT_EQ(-EINVAL, get_region_info(self->fd, UINT32_MAX, &info));

	/* Past the end of BAR2 */
	ASSERT_EQ(-EINVAL, region_read(self->fd, &self->bar2, self->bar2.size,
				       buf, sizeof(buf)));
	/* An unimplemented BAR */
	ASSERT_EQ(0, get_region_info(self->fd, VFIO_PCI_BAR1_REGION_INDEX,
				     &info));
	ASSERT_EQ(-EINVAL, region_read(self->fd, &info, 0, buf, sizeof(buf)));
	/* Config space cannot be mapped */
	map = mmap(NULL, SZ_4K, PROT_READ, MAP_SHARED, self->fd,
		   self->config.offset);
	ASSERT_EQ(MAP_FAILED, map) {
		munmap(map, SZ_4K);
	}
	ASSERT_EQ(EINVAL, errno);
}

TEST_F(bochs, second_bind_fails)
{
	int fd2, ret;
	char *cdev;

	/* Again on the bound fd */
	ASSERT_EQ(-EINVAL, bind_iommufd(self->fd, self->iommufd));

	/* From a second open of the cdev: the device is already open */
	cdev = vfio_cdev_path(device_bdf);
	ASSERT_NE(NULL, cdev);
	fd2 = open(cdev, O_RDWR);
	free(cdev);
	ASSERT_LE(0, fd2);
	ret = bind_iommufd(fd2, self->iommufd);
	close(fd2);
	ASSERT_EQ(-EINVAL, ret);

	/* The first binding is unaffected. */
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_INFO, &self->info));
}

int main(int argc, char *argv[])
{
	if (argc > 1 && is_bdf(argv[argc - 1])) {
		device_bdf = argv[argc - 1];
		argc--;
	} else {
		device_bdf = getenv("VFIO_SELFTESTS_BDF");
	}

	/* Listing or help does not need a device. */
	if (!device_bdf && argc > 1 &&
	    (!strcmp(argv[1], "-l") || !strcmp(argv[1], "-h")))
		return test_harness_run(argc, argv);

	if (!device_bdf || !is_bdf(device_bdf)) {
		fprintf(stderr,
			"No device given, skipping.\n"
			"Usage: %s [harness options] segment:bus:device.function\n"
			"   or: VFIO_SELFTESTS_BDF=segment:bus:device.function %s [harness options]\n",
			argv[0], argv[0]);
		return KSFT_SKIP;
	}
	printf("# Using device %s\n", device_bdf);

	return test_harness_run(argc, argv);
}
