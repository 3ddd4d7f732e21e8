/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Helpers shared by the qemu-vfio-pci kselftests: finding a device's VFIO cdev from its PCI
 * address and querying regions; for the migration tests (vfio_migration_test, vfio_stress_test)
 * also opening a bochs-display through iommufd, its registers, the VFIO v2 migration uAPI,
 * stream I/O, the stream format's records and complete checked migrations.
 *
 * Also small file and sysfs helpers (binding a device to a driver) and the kernel log check
 * every hardening test makes: /dev/kmsg read since the test began, failing on any splat.
 *
 * Everything is static inline, so a test uses what it needs; the checked helpers take the
 * harness' _metadata and ASSERT, so call them from the test's own thread only.
 */
#ifndef QVP_VFIO_UTIL_H
#define QVP_VFIO_UTIL_H

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "bochs_regs.h"

static inline bool is_bdf(const char *str)
{
	unsigned int s, b, d, f;
	int len = 0;

	if (sscanf(str, "%4x:%2x:%2x.%1x%n", &s, &b, &d, &f, &len) != 4)
		return false;
	return len > 0 && (size_t)len == strlen(str);
}

/*
 * The devices a test runs on: up to @max PCI addresses taken from the end of the command line
 * (they are removed from it: *@argc shrinks, so the harness sees only its options), or else
 * from $QVP_BDFS (space-separated, as tests/vm/run sets it), up to the first word that is not
 * one. @bdfs points into @argv or into a copy of the variable that is never freed. Returns how
 * many were found.
 */
static inline unsigned int take_bdfs(int *argc, char *argv[], const char **bdfs,
				     unsigned int max)
{
	unsigned int n = 0, i;
	const char *env;

	while (*argc > 1 && n < max && is_bdf(argv[*argc - 1]))
		(*argc)--, n++;
	if (n) {
		for (i = 0; i < n; i++)
			bdfs[i] = argv[*argc + i];
	} else if ((env = getenv("QVP_BDFS"))) {
		char *copy = strdup(env), *tok, *save = NULL;

		for (tok = copy ? strtok_r(copy, " \t\n", &save) : NULL;
		     tok && n < max && is_bdf(tok);
		     tok = strtok_r(NULL, " \t\n", &save))
			bdfs[n++] = tok;
	}
	return n;
}

/* Path of the VFIO device cdev of @bdf, or NULL with errno set. */
static inline char *vfio_cdev_path(const char *bdf)
{
	char dir_path[PATH_MAX];
	struct dirent *entry;
	char *path = NULL;
	DIR *dir;

	errno = 0;
	snprintf(dir_path, sizeof(dir_path),
		 "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	dir = opendir(dir_path);
	if (!dir)
		return NULL;

	errno = 0;
	while ((entry = readdir(dir))) {
		if (strncmp(entry->d_name, "vfio", 4))
			continue;
		if (asprintf(&path, "/dev/vfio/devices/%s", entry->d_name) < 0)
			path = NULL;
		break;
	}
	closedir(dir);
	if (!path && !errno)
		errno = ENOENT;
	return path;
}

static inline int get_region_info(int fd, __u32 index, struct vfio_region_info *info)
{
	memset(info, 0, sizeof(*info));
	info->argsz = sizeof(*info);
	info->index = index;

	return ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, info) ? -errno : 0;
}


/* ---------------------------------------------------------------------- */
/* Files and sysfs                                                        */
/* ---------------------------------------------------------------------- */

/* Write @val to @path: 0 or -errno. */
static inline int write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int err;

	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	err = n < 0 ? -errno : 0;
	close(fd);
	return err;
}

/* Read @path into @buf (NUL-terminated, trailing newline removed). */
static inline int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = 0;
	return 0;
}

static inline void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Whether PCI device @bdf exists. */
static inline bool pci_dev_exists(const char *bdf)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s", bdf);
	return !access(path, F_OK);
}

/*
 * The name of the driver @bdf is bound to into @buf: 0, -ENOENT when it is
 * bound to none, or another -errno.
 */
static inline int pci_driver_of(const char *bdf, char *buf, size_t len)
{
	char path[PATH_MAX], link[PATH_MAX];
	const char *base;
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = 0;
	base = strrchr(link, '/');
	if (snprintf(buf, len, "%s", base ? base + 1 : link) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

static inline bool pci_bound_to(const char *bdf, const char *driver)
{
	char name[64];

	return !pci_driver_of(bdf, name, sizeof(name)) && !strcmp(name, driver);
}

/*
 * Bind @bdf to @driver through driver_override (as tests/vm/guest.sh does),
 * unbinding it from another driver first: 0 or -errno, with @step naming what
 * failed.
 */
static inline int pci_bind(const char *bdf, const char *driver, const char **step)
{
	char path[PATH_MAX], cur[64];
	int ret;

	*step = "the device exists";
	if (!pci_dev_exists(bdf))
		return -ENOENT;
	if (!pci_driver_of(bdf, cur, sizeof(cur))) {
		if (!strcmp(cur, driver))
			return 0;
		*step = "unbind from the other driver";
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver/unbind",
			 bdf);
		ret = write_file(path, bdf);
		if (ret)
			return ret;
	}
	*step = "write driver_override";
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver_override",
		 bdf);
	ret = write_file(path, driver);
	if (ret)
		return ret;
	*step = "write /sys/bus/pci/drivers_probe";
	ret = write_file("/sys/bus/pci/drivers_probe", bdf);
	if (ret)
		return ret;
	*step = "the device is bound to the driver after drivers_probe";
	return pci_bound_to(bdf, driver) ? 0 : -ENXIO;
}

/* ---------------------------------------------------------------------- */
/* Kernel log                                                             */
/* ---------------------------------------------------------------------- */

/*
 * What the kernel logs when something went wrong: a warning, an oops, a
 * sanitizer, lockdep, CFI, list debugging, hang or stall report.  A stack
 * dump ("Call Trace:") counts too, unless it belongs to an allocation failure
 * report (see kmsg_drain()).
 */
static const char *const splat_patterns[] __maybe_unused = {
	"WARNING:", "BUG:", "BUG ", "Oops", "general protection",
	"KASAN", "UBSAN", "kmemleak", "possible circular locking",
	"possible recursive locking", "inconsistent lock state",
	"lockdep", "DEBUG_LOCKS_WARN_ON", "suspicious RCU usage",
	"CFI failure", "list_add corruption", "list_del corruption",
	"refcount_t:", "blocked for more than", "soft lockup",
	"hard LOCKUP", "rcu_sched detected stalls", "sleeping function called",
	"scheduling while atomic",
};

struct kmsg_stats {
	unsigned int lines, splats;
	unsigned int injected;		/* FAULT_INJECTION: forcing a failure */
	unsigned int failslab, fail_page_alloc, fail_usercopy;
	unsigned int alloc_warnings;	/* warn_alloc() after an injection */
	bool alloc_trace_due;		/* its stack dump is still to come */
};

/* /dev/kmsg positioned at its end, or -1 (the log checks then skip). */
static inline int kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		lseek(fd, 0, SEEK_END);
	return fd;
}

/* Write "PROGRAM: @what" to the kernel log, to help reading it. */
static inline void kmsg_mark(const char *what)
{
	char buf[200];
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	snprintf(buf, sizeof(buf), "%s: %s\n", program_invocation_short_name,
		 what);
	/* the marker only helps reading the log: a failure does not matter */
	if (write(fd, buf, strlen(buf)) < 0)
		errno = 0;
	close(fd);
}

/*
 * Read what the kernel logged since the last call and classify it; log and
 * count the splats.  Allocation failure reports (warn_alloc) are counted
 * apart, with the stack dump that follows each: they are the kernel's normal
 * reaction to an injected failure.
 */
static inline void kmsg_drain(struct __test_metadata *_metadata, int fd,
			      struct kmsg_stats *st)
{
	char rec[8192];

	if (fd < 0)
		return;
	for (;;) {
		ssize_t n = read(fd, rec, sizeof(rec) - 1);
		const char *msg;
		unsigned int i;
		bool splat = false;

		if (n < 0 && errno == EPIPE)
			continue;	/* overwritten records: go on */
		if (n <= 0)
			break;
		rec[n] = 0;
		msg = strchr(rec, ';');
		msg = msg ? msg + 1 : rec;
		st->lines++;
		if (strstr(msg, "FAULT_INJECTION: forcing a failure")) {
			st->injected++;
			if (strstr(msg, "name failslab"))
				st->failslab++;
			else if (strstr(msg, "name fail_page_alloc"))
				st->fail_page_alloc++;
			else if (strstr(msg, "name fail_usercopy"))
				st->fail_usercopy++;
		}
		if (strstr(msg, "page allocation failure") ||
		    strstr(msg, "vmalloc error")) {
			st->alloc_warnings++;
			st->alloc_trace_due = true;
		}
		if (strstr(msg, "Call Trace")) {
			if (st->alloc_trace_due)
				st->alloc_trace_due = false;
			else
				splat = true;
		}
		for (i = 0; !splat && i < ARRAY_SIZE(splat_patterns); i++)
			splat = strstr(msg, splat_patterns[i]);
		if (!splat)
			continue;
		st->splats++;
		TH_LOG("kernel: %.*s", (int)strcspn(msg, "\n"), msg);
	}
}

/* EXPECT that nothing bad was logged since @fd was opened or last drained. */
static inline void expect_clean_kmsg(struct __test_metadata *_metadata, int fd)
{
	struct kmsg_stats st = { 0 };

	if (fd < 0) {
		TH_LOG("no /dev/kmsg: the kernel log is not checked");
		return;
	}
	kmsg_drain(_metadata, fd, &st);
	EXPECT_EQ(0, st.splats) {
		TH_LOG("%u kernel log reports (above) during the test",
		       st.splats);
	}
}

/* ---------------------------------------------------------------------- */
/* Migration tests: bochs-display state                                   */
/* ---------------------------------------------------------------------- */

/* The device state the tests move around: ENABLE is written last. */
static const unsigned int state_regs[] __maybe_unused = {
	DISPI_INDEX_XRES, DISPI_INDEX_YRES, DISPI_INDEX_BPP,
	DISPI_INDEX_VIRT_WIDTH, DISPI_INDEX_VIRT_HEIGHT,
	DISPI_INDEX_X_OFFSET, DISPI_INDEX_Y_OFFSET, DISPI_INDEX_BANK,
	DISPI_INDEX_ENABLE,
};

static const char *const dispi_names[DISPI_NR_RW] __maybe_unused = {
	[DISPI_INDEX_ID] = "ID",
	[DISPI_INDEX_XRES] = "XRES",
	[DISPI_INDEX_YRES] = "YRES",
	[DISPI_INDEX_BPP] = "BPP",
	[DISPI_INDEX_ENABLE] = "ENABLE",
	[DISPI_INDEX_BANK] = "BANK",
	[DISPI_INDEX_VIRT_WIDTH] = "VIRT_WIDTH",
	[DISPI_INDEX_VIRT_HEIGHT] = "VIRT_HEIGHT",
	[DISPI_INDEX_X_OFFSET] = "X_OFFSET",
	[DISPI_INDEX_Y_OFFSET] = "Y_OFFSET",
};

/* Migration states the driver supports (VFIO_MIGRATION_STOP_COPY | P2P). */
static const __u32 fsm_states[] __maybe_unused = {
	VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_STATE_STOP,
	VFIO_DEVICE_STATE_STOP_COPY, VFIO_DEVICE_STATE_RESUMING,
	VFIO_DEVICE_STATE_RUNNING_P2P,
};

/* Bytes at each end of the stream moved one byte per syscall. */
#define BYTE_IO_EDGE		SZ_64K

static inline const char *state_name(__u32 state)
{
	static const char *const names[] = {
		[VFIO_DEVICE_STATE_ERROR] = "ERROR",
		[VFIO_DEVICE_STATE_STOP] = "STOP",
		[VFIO_DEVICE_STATE_RUNNING] = "RUNNING",
		[VFIO_DEVICE_STATE_STOP_COPY] = "STOP_COPY",
		[VFIO_DEVICE_STATE_RESUMING] = "RESUMING",
		[VFIO_DEVICE_STATE_RUNNING_P2P] = "RUNNING_P2P",
		[VFIO_DEVICE_STATE_PRE_COPY] = "PRE_COPY",
		[VFIO_DEVICE_STATE_PRE_COPY_P2P] = "PRE_COPY_P2P",
	};

	return state < ARRAY_SIZE(names) ? names[state] : "(invalid)";
}

static inline bool is_data_state(__u32 state)
{
	return state == VFIO_DEVICE_STATE_STOP_COPY ||
	       state == VFIO_DEVICE_STATE_RESUMING;
}

static inline double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline double mib_per_sec(size_t bytes, double secs)
{
	return secs > 0 ? bytes / (double)SZ_1M / secs : 0;
}

/* splitmix64: pattern words and the test's pseudo-random numbers */
static inline __u64 mix64(__u64 z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline __u64 rng_next(__u64 *state)
{
	*state += 0x9e3779b97f4a7c15ULL;
	return mix64(*state);
}

/* A different seed on every call: VRAM survives resets and re-opens. */
static inline __u64 fresh_seed(void)
{
	static __u64 counter;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return mix64(ts.tv_sec * 1000000000ULL + ts.tv_nsec +
		     ((__u64)getpid() << 40) + ++counter);
}

/* Pseudo-random VRAM contents for @seed. */
static inline void fill_pattern(__u8 *buf, size_t len, __u64 seed)
{
	__u64 *p = (__u64 *)buf;
	size_t i;

	for (i = 0; i < len / 8; i++)
		p[i] = mix64(seed + (i + 1) * 0x9e3779b97f4a7c15ULL);
}

/* Offset of the first byte where @a and @b differ, or -1. */
static inline ssize_t first_diff(const void *a, const void *b, size_t len)
{
	const __u8 *pa = a, *pb = b;
	size_t i;

	if (!memcmp(a, b, len))
		return -1;
	for (i = 0; i < len; i++)
		if (pa[i] != pb[i])
			return i;
	return -1;
}

/* CRC-32C as in Documentation/stream-format.rst */
static inline __u32 crc32c(const __u8 *p, size_t len)
{
	__u32 crc = ~0U;
	int k;

	while (len--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78U & -(crc & 1));
	}
	return ~crc;
}

/* ---------------------------------------------------------------------- */
/* Device access                                                          */
/* ---------------------------------------------------------------------- */

struct regs {
	__u16 dispi[DISPI_NR_RW];	/* by DISPI index; ID unused */
	__u32 byteorder;
};

struct qdev {
	const char *bdf;
	int fd;
	int iommufd;
	struct vfio_region_info bar0;
	struct vfio_region_info bar2;
	__u8 *vram;
	size_t vram_size;
	/* registers at setup, put back by the teardown */
	bool saved_valid;
	struct regs saved;
};

/*
 * Open @bdf through its VFIO cdev bound to a fresh iommufd and IOAS, and
 * map its VRAM.  Returns 0, or -errno with @step naming what failed.
 */
static inline int dev_open(struct qdev *d, const char *bdf, const char **step)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_device_attach_iommufd_pt attach = {
		.argsz = sizeof(attach),
	};
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	char *cdev;

	d->bdf = bdf;
	d->fd = -1;
	d->iommufd = -1;
	d->vram = MAP_FAILED;

	*step = "find the VFIO cdev (bound to qemu-vfio-pci?)";
	cdev = vfio_cdev_path(bdf);
	if (!cdev)
		return -errno;
	*step = "open the VFIO cdev";
	d->fd = open(cdev, O_RDWR);
	free(cdev);
	if (d->fd < 0)
		return -errno;
	*step = "open /dev/iommu";
	d->iommufd = open("/dev/iommu", O_RDWR);
	if (d->iommufd < 0)
		return -errno;
	*step = "VFIO_DEVICE_BIND_IOMMUFD";
	bind.iommufd = d->iommufd;
	if (ioctl(d->fd, VFIO_DEVICE_BIND_IOMMUFD, &bind))
		return -errno;
	*step = "IOMMU_IOAS_ALLOC";
	if (ioctl(d->iommufd, IOMMU_IOAS_ALLOC, &alloc))
		return -errno;
	*step = "VFIO_DEVICE_ATTACH_IOMMUFD_PT";
	attach.pt_id = alloc.out_ioas_id;
	if (ioctl(d->fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach))
		return -errno;
	*step = "BAR0 region info";
	if (get_region_info(d->fd, VFIO_PCI_BAR0_REGION_INDEX, &d->bar0))
		return -errno;
	*step = "BAR2 region info";
	if (get_region_info(d->fd, VFIO_PCI_BAR2_REGION_INDEX, &d->bar2))
		return -errno;
	*step = "mmap BAR0 (VRAM)";
	d->vram_size = d->bar0.size;
	d->vram = mmap(NULL, d->vram_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       d->fd, d->bar0.offset);
	if (d->vram == MAP_FAILED)
		return -errno;
	return 0;
}

/* Unmap VRAM, close the device and its iommufd. */
static inline void dev_close(struct qdev *d)
{
	if (d->vram != MAP_FAILED)
		munmap(d->vram, d->vram_size);
	d->vram = MAP_FAILED;
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	if (d->iommufd >= 0)
		close(d->iommufd);
	d->iommufd = -1;
}

static inline int bar2_rw(struct qdev *d, __u64 off, void *buf, size_t len,
			  bool write)
{
	ssize_t n;

	if (write)
		n = pwrite(d->fd, buf, len, d->bar2.offset + off);
	else
		n = pread(d->fd, buf, len, d->bar2.offset + off);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

static inline int dispi_read(struct qdev *d, unsigned int idx, __u16 *val)
{
	__u16 le;
	int ret = bar2_rw(d, DISPI_REG(idx), &le, sizeof(le), false);

	*val = le16toh(le);
	return ret;
}

static inline int dispi_write(struct qdev *d, unsigned int idx, __u16 val)
{
	__u16 le = htole16(val);

	return bar2_rw(d, DISPI_REG(idx), &le, sizeof(le), true);
}

static inline int regs_read(struct qdev *d, struct regs *r)
{
	unsigned int i;
	__u32 le;
	int ret;

	memset(r, 0, sizeof(*r));
	for (i = 0; i < ARRAY_SIZE(state_regs); i++) {
		ret = dispi_read(d, state_regs[i], &r->dispi[state_regs[i]]);
		if (ret)
			return ret;
	}
	ret = bar2_rw(d, QEXT_REG_BYTEORDER, &le, sizeof(le), false);
	r->byteorder = le32toh(le);
	return ret;
}

static inline int regs_write(struct qdev *d, const struct regs *r)
{
	unsigned int i;
	__u32 le;
	int ret;

	for (i = 0; i < ARRAY_SIZE(state_regs); i++) {
		ret = dispi_write(d, state_regs[i], r->dispi[state_regs[i]]);
		if (ret)
			return ret;
	}
	le = htole32(r->byteorder);
	return bar2_rw(d, QEXT_REG_BYTEORDER, &le, sizeof(le), true);
}

/*
 * A distinctive, valid display state: @mode picks the geometry (0:
 * 1024x768x32, 1: 800x600x16, both enabled with the linear framebuffer),
 * @seed the panning offsets and bank.
 */
static inline void regs_make(struct regs *r, int mode, __u64 seed)
{
	memset(r, 0, sizeof(*r));
	r->dispi[DISPI_INDEX_XRES] = mode ? 800 : 1024;
	r->dispi[DISPI_INDEX_YRES] = mode ? 600 : 768;
	r->dispi[DISPI_INDEX_BPP] = mode ? 16 : 32;
	r->dispi[DISPI_INDEX_VIRT_WIDTH] = r->dispi[DISPI_INDEX_XRES];
	r->dispi[DISPI_INDEX_VIRT_HEIGHT] = r->dispi[DISPI_INDEX_YRES] +
					    (seed & 0x3f);
	r->dispi[DISPI_INDEX_X_OFFSET] = (seed >> 8) & 0x3f;
	r->dispi[DISPI_INDEX_Y_OFFSET] = (seed >> 16) & 0x3f;
	r->dispi[DISPI_INDEX_BANK] = (seed >> 24) & 0xf;
	r->dispi[DISPI_INDEX_ENABLE] = DISPI_ENABLED | DISPI_LFB_ENABLED;
	r->byteorder = mode ? QEXT_LITTLE_ENDIAN : QEXT_BIG_ENDIAN;
}

/* A state that differs from @r in every register (a destination's "before"). */
static inline void regs_make_other(struct regs *o, const struct regs *r)
{
	memset(o, 0, sizeof(*o));
	o->dispi[DISPI_INDEX_XRES] = 640;
	o->dispi[DISPI_INDEX_YRES] = 480;
	o->dispi[DISPI_INDEX_BPP] = 8;
	o->dispi[DISPI_INDEX_VIRT_WIDTH] = 640;
	o->dispi[DISPI_INDEX_VIRT_HEIGHT] = 480 + 64 +
		(r->dispi[DISPI_INDEX_VIRT_HEIGHT] & 0x3f);
	o->dispi[DISPI_INDEX_X_OFFSET] = r->dispi[DISPI_INDEX_X_OFFSET] ^ 0x41;
	o->dispi[DISPI_INDEX_Y_OFFSET] = r->dispi[DISPI_INDEX_Y_OFFSET] ^ 0x42;
	o->dispi[DISPI_INDEX_BANK] = r->dispi[DISPI_INDEX_BANK] ^ 0x5;
	o->dispi[DISPI_INDEX_ENABLE] = 0;
	o->byteorder = r->byteorder == QEXT_BIG_ENDIAN ? QEXT_LITTLE_ENDIAN :
							 QEXT_BIG_ENDIAN;
}

/* EXPECT that @got equals @want register by register; true if so. */
static inline bool expect_regs(struct __test_metadata *_metadata,
			       const struct regs *want, const struct regs *got,
			       const char *what)
{
	bool ok = true;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(state_regs); i++) {
		unsigned int idx = state_regs[i];

		if (want->dispi[idx] == got->dispi[idx])
			continue;
		ok = false;
		EXPECT_EQ(want->dispi[idx], got->dispi[idx]) {
			TH_LOG("%s: DISPI %s is %#x, want %#x", what,
			       dispi_names[idx], got->dispi[idx],
			       want->dispi[idx]);
		}
	}
	if (want->byteorder != got->byteorder) {
		ok = false;
		EXPECT_EQ(want->byteorder, got->byteorder) {
			TH_LOG("%s: byte order is %#x, want %#x", what,
			       got->byteorder, want->byteorder);
		}
	}
	return ok;
}

/* ---------------------------------------------------------------------- */
/* Migration uAPI                                                         */
/* ---------------------------------------------------------------------- */

/* VFIO_DEVICE_FEATURE with a payload of @len bytes, copied back always. */
static inline int device_feature(int fd, __u32 flags, void *data, size_t len)
{
	__u64 buf[(sizeof(struct vfio_device_feature) + 64) / 8] = { 0 };
	struct vfio_device_feature *f = (void *)buf;
	int ret;

	if (len > 64)
		return -E2BIG;
	f->argsz = sizeof(*f) + len;
	f->flags = flags;
	memcpy(f->data, data, len);
	ret = ioctl(fd, VFIO_DEVICE_FEATURE, f) ? -errno : 0;
	memcpy(data, f->data, len);
	return ret;
}

static inline int mig_flags(int fd, __u64 *flags)
{
	struct vfio_device_feature_migration mig = { 0 };
	int ret;

	ret = device_feature(fd, VFIO_DEVICE_FEATURE_GET |
			     VFIO_DEVICE_FEATURE_MIGRATION, &mig, sizeof(mig));
	*flags = mig.flags;
	return ret;
}

static inline int mig_get(int fd, __u32 *state)
{
	struct vfio_device_feature_mig_state mig = { .data_fd = -2 };
	int ret;

	ret = device_feature(fd, VFIO_DEVICE_FEATURE_GET |
			     VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
			     &mig, sizeof(mig));
	*state = ret ? ~0U : mig.device_state;
	return ret;
}

/* SET @state; *data_fd gets the returned data_fd (also on failure). */
static inline int mig_set(int fd, __u32 state, int *data_fd)
{
	struct vfio_device_feature_mig_state mig = {
		.device_state = state,
		.data_fd = -2,
	};
	int ret;

	ret = device_feature(fd, VFIO_DEVICE_FEATURE_SET |
			     VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
			     &mig, sizeof(mig));
	if (data_fd)
		*data_fd = mig.data_fd;
	else if (!ret && mig.data_fd >= 0)
		close(mig.data_fd);
	return ret;
}

static inline int get_data_size(int fd, __u64 *len)
{
	struct vfio_device_feature_mig_data_size size = { 0 };
	int ret;

	ret = device_feature(fd, VFIO_DEVICE_FEATURE_GET |
			     VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
			     &size, sizeof(size));
	*len = size.stop_copy_length;
	return ret;
}

static inline int device_reset(struct qdev *d)
{
	return ioctl(d->fd, VFIO_DEVICE_RESET) ? -errno : 0;
}

/*
 * Move @d to @to and check the promise: success, a data_fd exactly when a
 * data state is entered from another state, GET reports @to afterwards.
 * Returns the data fd or -1.
 */
static inline int go_state(struct __test_metadata *_metadata, struct qdev *d,
			   __u32 to)
{
	__u32 from, now;
	bool want_fd;
	int dfd, ret;

	ASSERT_EQ(0, mig_get(d->fd, &from));
	ret = mig_set(d->fd, to, &dfd);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: %s -> %s: %s", d->bdf, state_name(from),
		       state_name(to), strerror(-ret));
	}
	want_fd = is_data_state(to) && from != to;
	if (want_fd) {
		ASSERT_LE(0, dfd) {
			TH_LOG("%s: %s -> %s returned data_fd %d", d->bdf,
			       state_name(from), state_name(to), dfd);
		}
	} else {
		ASSERT_EQ(-1, dfd) {
			TH_LOG("%s: %s -> %s returned data_fd %d, want -1",
			       d->bdf, state_name(from), state_name(to), dfd);
			if (dfd >= 0)
				close(dfd);
		}
	}
	ASSERT_EQ(0, mig_get(d->fd, &now));
	ASSERT_EQ(to, now) {
		TH_LOG("%s: %s -> %s, GET says %s", d->bdf, state_name(from),
		       state_name(to), state_name(now));
	}
	return dfd;
}

static inline void expect_state(struct __test_metadata *_metadata, struct qdev *d,
				__u32 want, const char *what)
{
	__u32 state;
	int ret = mig_get(d->fd, &state);

	ASSERT_EQ(0, ret) {
		TH_LOG("%s: %s: MIG_DEVICE_STATE GET: %s", d->bdf, what,
		       strerror(-ret));
	}
	ASSERT_EQ(want, state) {
		TH_LOG("%s: %s: state %s, want %s", d->bdf, what,
		       state_name(state), state_name(want));
	}
}

/* ---------------------------------------------------------------------- */
/* Stream I/O                                                             */
/* ---------------------------------------------------------------------- */

enum io_mode {
	IO_CHUNK,	/* @chunk bytes per call */
	IO_RANDOM,	/* 1 byte to 1 MiB per call, from the rng */
	IO_BYTE_EDGES,	/* 1 byte per call in the first and last 64 KiB */
};

struct io_plan {
	enum io_mode mode;
	size_t chunk;
	__u64 rng;
};

static inline size_t io_next_len(struct io_plan *p, size_t done, size_t total)
{
	size_t n;

	switch (p->mode) {
	case IO_RANDOM:
		/* mostly small and odd, sometimes beyond a record */
		n = rng_next(&p->rng);
		n = (n & 3) ? 1 + (n >> 8) % 9000 : 1 + (n >> 8) % SZ_1M;
		return n;
	case IO_BYTE_EDGES:
		if (done < BYTE_IO_EDGE || done + BYTE_IO_EDGE >= total)
			return 1;
		/* up to the start of the last edge, at most 1 MiB */
		n = total - BYTE_IO_EDGE - done;
		return n < SZ_1M ? n : SZ_1M;
	case IO_CHUNK:
	default:
		return p->chunk;
	}
}

struct stream {
	__u8 *buf;
	size_t len;
};

/*
 * Read a saving data fd up to end of stream into @buf (@cap bytes); @expect
 * is the expected length, used by IO_BYTE_EDGES.  Returns 0, -errno from
 * read(), or -EFBIG if the stream does not fit.
 */
static inline int stream_read(int fd, __u8 *buf, size_t cap, size_t expect,
			      struct io_plan *plan, size_t *len)
{
	size_t done = 0;

	for (;;) {
		size_t n = io_next_len(plan, done, expect);
		ssize_t ret;

		if (n > cap - done)
			n = cap - done;
		if (!n) {
			*len = done;
			return -EFBIG;
		}
		ret = read(fd, buf + done, n);
		if (ret < 0) {
			*len = done;
			return -errno;
		}
		if (ret == 0)
			break;
		done += ret;
	}
	*len = done;
	return 0;
}

/* Write @len bytes to a resuming data fd; *done gets the bytes accepted. */
static inline int stream_write(int fd, const __u8 *buf, size_t len,
			       struct io_plan *plan, size_t *done)
{
	*done = 0;
	while (*done < len) {
		size_t n = io_next_len(plan, *done, len);
		ssize_t ret;

		if (n > len - *done)
			n = len - *done;
		ret = write(fd, buf + *done, n);
		if (ret < 0)
			return -errno;
		if (ret == 0)
			return -EIO;	/* no progress: would loop forever */
		*done += ret;
	}
	return 0;
}

/*
 * Save @d: -> STOP_COPY, read the whole stream, check its length against
 * MIG_DATA_SIZE.  The data fd is closed, the device left in STOP_COPY.
 */
static inline void save_stream(struct __test_metadata *_metadata, struct qdev *d,
			       struct io_plan *plan, struct stream *s, double *secs)
{
	__u64 size;
	double t0;
	int dfd, ret;

	ASSERT_EQ(0, get_data_size(d->fd, &size));
	ASSERT_LT(0, size);
	s->buf = malloc(size + SZ_1M);
	ASSERT_NE(NULL, s->buf);

	t0 = now_sec();
	dfd = go_state(_metadata, d, VFIO_DEVICE_STATE_STOP_COPY);
	ret = stream_read(dfd, s->buf, size + SZ_1M, size, plan, &s->len);
	if (secs)
		*secs = now_sec() - t0;
	close(dfd);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: read data_fd after %zu bytes: %s", d->bdf, s->len,
		       strerror(-ret));
	}
	ASSERT_EQ(size, s->len) {
		TH_LOG("%s: stream has %zu bytes, MIG_DATA_SIZE said %llu",
		       d->bdf, s->len, (unsigned long long)size);
	}
}

/* Save @d and bring it back to RUNNING (the source of a bad-stream test). */
static inline void save_and_run(struct __test_metadata *_metadata, struct qdev *d,
				struct stream *s)
{
	struct io_plan plan = { .mode = IO_CHUNK, .chunk = SZ_1M };

	save_stream(_metadata, d, &plan, s, NULL);
	go_state(_metadata, d, VFIO_DEVICE_STATE_STOP);
	go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING);
}

/*
 * Resume @d from @s: -> RESUMING, write, -> STOP.  With @close_first the
 * data fd is closed before RESUMING -> STOP, as QEMU does.  Leaves @d in
 * STOP.
 */
static inline void resume_stream(struct __test_metadata *_metadata, struct qdev *d,
				 const struct stream *s, struct io_plan *plan,
				 bool close_first, double *secs)
{
	size_t done;
	double t0;
	int dfd, ret;

	t0 = now_sec();
	dfd = go_state(_metadata, d, VFIO_DEVICE_STATE_RESUMING);
	ret = stream_write(dfd, s->buf, s->len, plan, &done);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: write data_fd at %zu of %zu: %s", d->bdf, done,
		       s->len, strerror(-ret));
		close(dfd);
	}
	if (close_first)
		close(dfd);
	ret = mig_set(d->fd, VFIO_DEVICE_STATE_STOP, NULL);
	if (secs)
		*secs = now_sec() - t0;
	if (!close_first)
		close(dfd);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: RESUMING -> STOP after a valid stream: %s",
		       d->bdf, strerror(-ret));
	}
	expect_state(_metadata, d, VFIO_DEVICE_STATE_STOP, "after resume");
}

/* Check that @d's VRAM holds @pat, logging the first difference. */
static inline void expect_vram(struct __test_metadata *_metadata, struct qdev *d,
			       const __u8 *pat, const char *what)
{
	ssize_t bad = first_diff(d->vram, pat, d->vram_size);

	EXPECT_EQ(-1, bad) {
		TH_LOG("%s: %s: VRAM differs at %#zx (%#x, want %#x)",
		       d->bdf, what, bad, d->vram[bad], pat[bad]);
	}
}

/* A register write after RUNNING takes effect. */
static inline void expect_works(struct __test_metadata *_metadata, struct qdev *d,
				__u16 xres)
{
	__u16 val = 0;

	ASSERT_EQ(0, dispi_write(d, DISPI_INDEX_XRES, xres));
	ASSERT_EQ(0, dispi_read(d, DISPI_INDEX_XRES, &val));
	EXPECT_EQ(xres, val) {
		TH_LOG("%s: XRES write %#x reads back %#x", d->bdf, xres, val);
	}
	ASSERT_EQ(0, dispi_read(d, DISPI_INDEX_ID, &val));
	EXPECT_EQ(DISPI_ID5, val);
}

struct mig_stats {
	size_t len;
	double save_secs, resume_secs, verify_secs;
};

/*
 * A complete migration @src -> @dst checked end to end: @src gets a fresh
 * VRAM pattern and register state, @dst a different register state; after
 * save (src stays in STOP_COPY meanwhile), resume and RUNNING, @dst equals
 * @src byte for byte, @src is intact and runs again, and both keep working.
 */
static inline void migrate_verify(struct __test_metadata *_metadata,
				  struct qdev *src, struct qdev *dst, int regs_mode,
				  struct io_plan *rplan, struct io_plan *wplan,
				  bool close_first, struct mig_stats *st)
{
	const __u64 seed = fresh_seed();
	struct regs want, other, got;
	struct stream s = { 0 };
	struct mig_stats dummy;
	__u8 *pat;
	double t0;

	if (!st)
		st = &dummy;
	ASSERT_EQ(src->vram_size, dst->vram_size);
	pat = malloc(src->vram_size);
	ASSERT_NE(NULL, pat);
	fill_pattern(pat, src->vram_size, seed);
	memcpy(src->vram, pat, src->vram_size);

	regs_make(&want, regs_mode, seed);
	ASSERT_EQ(0, regs_write(src, &want));
	ASSERT_EQ(0, regs_read(src, &got));
	ASSERT_TRUE(expect_regs(_metadata, &want, &got, "source setup"));
	regs_make_other(&other, &want);
	ASSERT_EQ(0, regs_write(dst, &other));
	/* make sure the destination does not hold the pattern already */
	memset(dst->vram, 0xa5, SZ_4K);
	memset(dst->vram + dst->vram_size / 2, 0xa5, SZ_4K);
	memset(dst->vram + dst->vram_size - SZ_4K, 0xa5, SZ_4K);

	save_stream(_metadata, src, rplan, &s, &st->save_secs);
	st->len = s.len;
	resume_stream(_metadata, dst, &s, wplan, close_first,
		      &st->resume_secs);
	go_state(_metadata, dst, VFIO_DEVICE_STATE_RUNNING);
	go_state(_metadata, src, VFIO_DEVICE_STATE_STOP);
	go_state(_metadata, src, VFIO_DEVICE_STATE_RUNNING);

	t0 = now_sec();
	expect_vram(_metadata, dst, pat, "destination after migration");
	expect_vram(_metadata, src, pat, "source after migration");
	st->verify_secs = now_sec() - t0;
	ASSERT_EQ(0, regs_read(dst, &got));
	expect_regs(_metadata, &want, &got, "destination after migration");
	ASSERT_EQ(0, regs_read(src, &got));
	expect_regs(_metadata, &want, &got, "source after migration");

	expect_works(_metadata, dst, want.dispi[DISPI_INDEX_XRES] + 8);
	expect_works(_metadata, src, want.dispi[DISPI_INDEX_XRES] + 16);
	free(s.buf);
	free(pat);
}

static inline void migrate_simple(struct __test_metadata *_metadata,
				  struct qdev *src, struct qdev *dst)
{
	struct io_plan r = { .mode = IO_CHUNK, .chunk = SZ_1M };
	struct io_plan w = { .mode = IO_CHUNK, .chunk = SZ_1M };

	migrate_verify(_metadata, src, dst, 0, &r, &w, false, NULL);
}

/* Stream format (Documentation/stream-format.rst) */

static inline __u32 get_le32(const __u8 *p)
{
	__u32 v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static inline __u64 get_le64(const __u8 *p)
{
	__u64 v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static inline void put_le32(__u8 *p, __u32 v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static inline void put_le64(__u8 *p, __u64 v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

#define REC_HDR		24
#define REC_HEADER	1
#define REC_REGS	2
#define REC_MEMORY	3
#define REC_END		0xffff

#endif /* QVP_VFIO_UTIL_H */
