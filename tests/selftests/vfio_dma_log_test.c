// SPDX-License-Identifier: GPL-2.0-only
/*
 * DMA logging selftest for qemu-vfio-pci and QEMU's bochs-display (1234:1111).
 *
 * bochs-display cannot write guest memory (no DMA engine), so the driver
 * offers VFIO_DEVICE_FEATURE_DMA_LOGGING_{START,STOP,REPORT} with a log that
 * is always empty.  The tests hold it to the uAPI (include/uapi/linux/vfio.h)
 * and to what QEMU does with it:
 *
 *   - PROBE of DMA_LOGGING_START succeeds (QEMU then adds no migration
 *     blocker), and debugfs lists the feature as dirty-tracking;
 *   - one START at a time (EINVAL while active, whatever its page size); a
 *     page size that is not a power of two of at least 4096 is refused and
 *     leaves logging idle; the page size comes back as given;
 *   - REPORT succeeds while active, for any range (QEMU reports per memory
 *     section, not per START range), in every migration state QEMU reports
 *     in, and never writes the user's bitmap: a pattern stays byte for byte;
 *     it fails with EINVAL while idle, and for a page size the core refuses;
 *   - STOP succeeds from any state, twice in a row too;
 *   - logging survives VFIO_DEVICE_RESET and ends with the device's close;
 *   - of STARTs racing from several threads exactly one succeeds.
 *
 * Usage: vfio_dma_log_test [harness options] BDF [BDF...]
 *        QVP_BDFS="BDF [BDF...]" vfio_dma_log_test [harness options]
 *
 * Only the first device is used.  In the test guest:
 *	tests/vm/run -- sh -c 'tests/selftests/vfio_dma_log_test $QVP_BDFS 2>&1'
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "vfio_util.h"

#define SZ_2M			0x200000ULL
#define SZ_16M			0x1000000ULL
#define SZ_1G			0x40000000ULL
#define SZ_4G			0x100000000ULL

#define PAGE_SZ			SZ_4K
#define PATTERN			0xA5
#define RACERS			8

/* The START range of most tests, and a range outside it. */
#define RANGE_IOVA		0x100000ULL
#define RANGE_LEN		(64ULL * SZ_1M)
#define OTHER_IOVA		(8ULL << 30)
#define OTHER_LEN		(16ULL * SZ_1M)

static const char *bdf;

/* ---------------------------------------------------------------------- */
/* DMA logging uAPI                                                       */
/* ---------------------------------------------------------------------- */

/* VFIO_DEVICE_FEATURE with only @flags (PROBE, STOP): no payload. */
static int feature_flags(int fd, __u32 flags)
{
	struct vfio_device_feature f = { .argsz = sizeof(f), .flags = flags };

	return ioctl(fd, VFIO_DEVICE_FEATURE, &f) ? -errno : 0;
}

/* START over @n ranges; *@page_size_out gets the page size written back. */
static int log_start(int fd, __u64 page_size,
		     const struct vfio_device_feature_dma_logging_range *ranges,
		     __u32 n, __u64 *page_size_out)
{
	struct vfio_device_feature_dma_logging_control ctl = {
		.page_size = page_size,
		.num_ranges = n,
		.ranges = (uintptr_t)ranges,
	};
	int ret;

	ret = device_feature(fd, VFIO_DEVICE_FEATURE_SET |
			     VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
			     &ctl, sizeof(ctl));
	if (page_size_out)
		*page_size_out = ctl.page_size;
	return ret;
}

/* START over the one range [RANGE_IOVA, RANGE_IOVA + RANGE_LEN). */
static int log_start1(int fd, __u64 page_size)
{
	const struct vfio_device_feature_dma_logging_range r = {
		.iova = RANGE_IOVA, .length = RANGE_LEN,
	};

	return log_start(fd, page_size, &r, 1, NULL);
}

static int log_stop(int fd)
{
	return feature_flags(fd, VFIO_DEVICE_FEATURE_SET |
			     VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP);
}

static int log_report(int fd, __u64 iova, __u64 length, __u64 page_size,
		      void *bitmap)
{
	struct vfio_device_feature_dma_logging_report r = {
		.iova = iova,
		.length = length,
		.page_size = page_size,
		.bitmap = (uintptr_t)bitmap,
	};

	return device_feature(fd, VFIO_DEVICE_FEATURE_GET |
			      VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
			      &r, sizeof(r));
}

/* Bytes of the bitmap of @length at @page_size: u64 words, as QEMU has. */
static size_t bitmap_bytes(__u64 length, __u64 page_size)
{
	__u64 pages = (length + page_size - 1) / page_size;

	return (pages + 63) / 64 * 8;
}

/*
 * REPORT @iova..+@length into a bitmap filled with @fill: returns the ioctl's
 * result, and ASSERTs that the bitmap is still @fill in every byte (QEMU's
 * bitmaps are zeroed, so the pattern 0 is what it sees; PATTERN shows that
 * nothing is cleared either).
 */
static int report_keeps(struct __test_metadata *_metadata, int fd, __u64 iova,
			__u64 length, __u64 page_size, __u8 fill)
{
	size_t len = bitmap_bytes(length, page_size);
	__u8 *bitmap = malloc(len), *want = malloc(len);
	ssize_t diff;
	int ret;

	ASSERT_NE(NULL, bitmap);
	ASSERT_NE(NULL, want);
	memset(bitmap, fill, len);
	memset(want, fill, len);
	ret = log_report(fd, iova, length, page_size, bitmap);
	diff = first_diff(bitmap, want, len);
	EXPECT_EQ(-1, diff) {
		TH_LOG("REPORT %#llx+%#llx (page %llu, %s): bitmap byte %zd is %#x, was %#x",
		       (unsigned long long)iova, (unsigned long long)length,
		       (unsigned long long)page_size, strerror(-ret), diff,
		       diff >= 0 ? bitmap[diff] : 0, fill);
	}
	free(bitmap);
	free(want);
	return ret;
}

/* ---------------------------------------------------------------------- */
/* Fixture: the first device, opened through iommufd                      */
/* ---------------------------------------------------------------------- */

FIXTURE(dl) {
	struct qdev d;
};

FIXTURE_SETUP(dl)
{
	const char *step;
	int ret;

	self->d.fd = -1;
	self->d.iommufd = -1;
	self->d.vram = MAP_FAILED;
	ret = dev_open(&self->d, bdf, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: %s: %s", bdf, step, strerror(-ret));
	}
}

FIXTURE_TEARDOWN(dl)
{
	/* The close ends logging anyway; STOP first, as QEMU would. */
	if (self->d.fd >= 0)
		log_stop(self->d.fd);
	dev_close(&self->d);
}

/* ---------------------------------------------------------------------- */
/* Tests                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * QEMU's probe at realize (hw/vfio/migration.c): PROBE | DMA_LOGGING_START
 * with no payload.  Its success is what spares enable-migration=auto a
 * blocker.  The SET and GET forms of the three features probe too.
 */
TEST_F(dl, probe)
{
	static const struct {
		__u32 flags;
		const char *what;
	} probes[] = {
		{ VFIO_DEVICE_FEATURE_DMA_LOGGING_START, "START (as QEMU)" },
		{ VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
		  "SET | START" },
		{ VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
		  "SET | STOP" },
		{ VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
		  "GET | REPORT" },
	};
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(probes); i++) {
		ret = feature_flags(self->d.fd, VFIO_DEVICE_FEATURE_PROBE |
				    probes[i].flags);
		EXPECT_EQ(0, ret) {
			TH_LOG("PROBE | %s: %s", probes[i].what, strerror(-ret));
		}
	}
	/* Probing starts nothing. */
	EXPECT_EQ(-EINVAL, report_keeps(_metadata, self->d.fd, RANGE_IOVA,
					RANGE_LEN, PAGE_SZ, PATTERN));
}

/* debugfs vfio/<dev>/migration/features lists dirty-tracking. */
TEST_F(dl, debugfs_features)
{
	char path[PATH_MAX], buf[256] = { 0 };
	bool found = false;
	FILE *f;

	if (access("/sys/kernel/debug/vfio", F_OK))
		SKIP(return, "/sys/kernel/debug/vfio: %s (debugfs not mounted, or no CONFIG_VFIO_DEBUGFS)",
		     strerror(errno));
	snprintf(path, sizeof(path),
		 "/sys/kernel/debug/vfio/%s/migration/features", bdf);
	f = fopen(path, "r");
	ASSERT_NE(NULL, f) {
		TH_LOG("%s: %s", path, strerror(errno));
	}
	while (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = 0;
		TH_LOG("features: %s", buf);
		if (!strcmp(buf, "dirty-tracking"))
			found = true;
	}
	fclose(f);
	EXPECT_TRUE(found) {
		TH_LOG("%s does not list dirty-tracking", path);
	}
}

/*
 * The whole protocol on one range: START, a second START refused, REPORTs
 * that touch no bitmap in and outside the range, a page size the core
 * refuses, STOP twice, REPORT after STOP refused.
 */
TEST_F(dl, start_report_stop)
{
	const struct vfio_device_feature_dma_logging_range r = {
		.iova = RANGE_IOVA, .length = RANGE_LEN,
	};
	int fd = self->d.fd;
	__u64 got = 0;
	int ret;

	ret = log_start(fd, PAGE_SZ, &r, 1, &got);
	ASSERT_EQ(0, ret) {
		TH_LOG("START 1 range, page 4096: %s", strerror(-ret));
	}
	EXPECT_EQ(PAGE_SZ, got);

	/* "Another start is not allowed in the meantime", whatever its size. */
	EXPECT_EQ(-EINVAL, log_start(fd, PAGE_SZ, &r, 1, NULL));
	EXPECT_EQ(-EINVAL, log_start(fd, SZ_2M, &r, 1, NULL));

	/* Nothing dirty, and the bitmap is neither cleared nor initialised. */
	EXPECT_EQ(0, report_keeps(_metadata, fd, RANGE_IOVA, RANGE_LEN,
				  PAGE_SZ, PATTERN));
	EXPECT_EQ(0, report_keeps(_metadata, fd, RANGE_IOVA, RANGE_LEN,
				  PAGE_SZ, 0));
	/* Part of the range, and another page size than START's. */
	EXPECT_EQ(0, report_keeps(_metadata, fd, RANGE_IOVA + SZ_1M, SZ_2M,
				  PAGE_SZ, PATTERN));
	EXPECT_EQ(0, report_keeps(_metadata, fd, RANGE_IOVA, RANGE_LEN,
				  SZ_2M, PATTERN));
	/* A range START did not name: QEMU reports per memory section. */
	EXPECT_EQ(0, report_keeps(_metadata, fd, OTHER_IOVA, OTHER_LEN,
				  PAGE_SZ, PATTERN));
	/* The core refuses a page size below 4096 or not a power of two. */
	EXPECT_EQ(-EINVAL, report_keeps(_metadata, fd, RANGE_IOVA, RANGE_LEN,
					1000, PATTERN));
	EXPECT_EQ(-EINVAL, report_keeps(_metadata, fd, RANGE_IOVA, RANGE_LEN,
					3 * PAGE_SZ, PATTERN));
	/* ... and logging goes on. */
	EXPECT_EQ(0, report_keeps(_metadata, fd, RANGE_IOVA, RANGE_LEN,
				  PAGE_SZ, PATTERN));

	EXPECT_EQ(0, log_stop(fd));
	EXPECT_EQ(0, log_stop(fd));
	EXPECT_EQ(-EINVAL, report_keeps(_metadata, fd, RANGE_IOVA, RANGE_LEN,
					PAGE_SZ, PATTERN));

	/* And again. */
	EXPECT_EQ(0, log_start1(fd, PAGE_SZ));
	EXPECT_EQ(0, report_keeps(_metadata, fd, RANGE_IOVA, RANGE_LEN,
				  PAGE_SZ, PATTERN));
	EXPECT_EQ(0, log_stop(fd));
}

/* Idle after open: REPORT is refused, STOP is fine. */
TEST_F(dl, idle_after_open)
{
	EXPECT_EQ(-EINVAL, report_keeps(_metadata, self->d.fd, RANGE_IOVA,
					RANGE_LEN, PAGE_SZ, PATTERN));
	EXPECT_EQ(0, log_stop(self->d.fd));
	EXPECT_EQ(-EINVAL, report_keeps(_metadata, self->d.fd, RANGE_IOVA,
					RANGE_LEN, PAGE_SZ, PATTERN));
}

/*
 * START's page size: not a power of two, or below 4096, is refused (the core
 * only checks the ranges' alignment against it) and leaves logging idle;
 * powers of two from 4096 up are taken and come back unchanged.
 */
TEST_F(dl, start_page_sizes)
{
	static const __u64 bad[] = { 1000, 2048, 512, 3 * SZ_4K, 5 * SZ_1M };
	static const __u64 good[] = { SZ_4K, SZ_64K, SZ_2M, SZ_1G };
	int fd = self->d.fd;
	unsigned int i;
	__u64 got;
	int ret;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		/*
		 * A range the core's IS_ALIGNED() (a mask test) lets through
		 * for every one of them, so that the driver decides.
		 */
		const struct vfio_device_feature_dma_logging_range r = {
			.iova = 0, .length = SZ_16M,
		};

		ret = log_start(fd, bad[i], &r, 1, NULL);
		EXPECT_EQ(-EINVAL, ret) {
			TH_LOG("START with page size %llu: %s",
			       (unsigned long long)bad[i], strerror(-ret));
		}
		EXPECT_EQ(-EINVAL, report_keeps(_metadata, fd, 0, SZ_1M,
						PAGE_SZ, PATTERN));
	}
	for (i = 0; i < ARRAY_SIZE(good); i++) {
		const struct vfio_device_feature_dma_logging_range r = {
			.iova = good[i], .length = good[i] * 4,
		};

		got = 0;
		ret = log_start(fd, good[i], &r, 1, &got);
		ASSERT_EQ(0, ret) {
			TH_LOG("START with page size %llu: %s",
			       (unsigned long long)good[i], strerror(-ret));
		}
		EXPECT_EQ(good[i], got);
		/* REPORT's page size may differ from START's. */
		EXPECT_EQ(0, report_keeps(_metadata, fd, good[i], good[i] * 4,
					  PAGE_SZ, PATTERN));
		EXPECT_EQ(0, report_keeps(_metadata, fd, 0, SZ_4G, SZ_1G,
					  PATTERN));
		EXPECT_EQ(0, log_stop(fd));
	}
}

/*
 * What QEMU does in a migration: START over up to three ranges (below 4 GiB,
 * above 4 GiB, the 64-bit PCI hole), then one REPORT per RAM section with a
 * zeroed bitmap at every sync, while RUNNING, in PRE_COPY and for the final
 * sync in STOP_COPY.  Every bitmap stays zero, and logging survives the
 * state changes.
 */
TEST_F(dl, qemu_migration)
{
	static const struct vfio_device_feature_dma_logging_range ranges[] = {
		{ .iova = 0, .length = 0x80000000ULL },
		{ .iova = 0x100000000ULL, .length = 0x80000000ULL },
		{ .iova = 0x8000000000ULL, .length = 0x10000000ULL },
	};
	static const struct {
		__u64 iova, length;
	} sections[] = {
		{ 0, 0xa0000 },
		{ 0xc0000, 0x40000 },
		{ 0x100000, 0x7ff00000 },
		{ 0x100000000ULL, 0x80000000ULL },
		{ 0xfffc0000ULL, 0x40000 },
	};
	static const __u32 states[] = {
		VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_STATE_PRE_COPY,
		VFIO_DEVICE_STATE_STOP_COPY,
	};
	struct qdev *d = &self->d;
	unsigned int i, s;
	int dfd = -1, ret;

	ASSERT_EQ(0, log_start(d->fd, PAGE_SZ, ranges, ARRAY_SIZE(ranges), NULL));
	for (s = 0; s < ARRAY_SIZE(states); s++) {
		if (states[s] != VFIO_DEVICE_STATE_RUNNING) {
			ret = mig_set(d->fd, states[s],
				      dfd < 0 ? &dfd : NULL);
			ASSERT_EQ(0, ret) {
				TH_LOG("-> %s: %s", state_name(states[s]),
				       strerror(-ret));
			}
		}
		for (i = 0; i < ARRAY_SIZE(sections); i++) {
			ret = report_keeps(_metadata, d->fd, sections[i].iova,
					   sections[i].length, PAGE_SZ, 0);
			EXPECT_EQ(0, ret) {
				TH_LOG("%s: REPORT %#llx+%#llx: %s",
				       state_name(states[s]),
				       (unsigned long long)sections[i].iova,
				       (unsigned long long)sections[i].length,
				       strerror(-ret));
			}
		}
	}
	if (dfd >= 0)
		close(dfd);
	/* The source stays stopped; back to RUNNING, logging still on. */
	ASSERT_EQ(0, mig_set(d->fd, VFIO_DEVICE_STATE_STOP, NULL));
	ASSERT_EQ(0, mig_set(d->fd, VFIO_DEVICE_STATE_RUNNING, NULL));
	EXPECT_EQ(0, report_keeps(_metadata, d->fd, 0, SZ_1G, PAGE_SZ, 0));
	EXPECT_EQ(-EINVAL, log_start(d->fd, PAGE_SZ, ranges, 1, NULL));
	EXPECT_EQ(0, log_stop(d->fd));
}

/*
 * VFIO_DEVICE_RESET keeps logging: QEMU never starts it again after a reset,
 * so a guest reboot during a migration must not fail the next REPORT.
 */
TEST_F(dl, kept_across_reset)
{
	struct qdev *d = &self->d;
	int ret;

	ASSERT_EQ(0, log_start1(d->fd, PAGE_SZ));
	ret = device_reset(d);
	ASSERT_EQ(0, ret) {
		TH_LOG("VFIO_DEVICE_RESET: %s", strerror(-ret));
	}
	expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING, "after reset");
	EXPECT_EQ(0, report_keeps(_metadata, d->fd, RANGE_IOVA, RANGE_LEN,
				  PAGE_SZ, PATTERN));
	EXPECT_EQ(-EINVAL, log_start1(d->fd, PAGE_SZ));

	/* Also a reset in the middle of a migration. */
	ASSERT_EQ(0, mig_set(d->fd, VFIO_DEVICE_STATE_STOP, NULL));
	ASSERT_EQ(0, device_reset(d));
	expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING, "after reset in STOP");
	EXPECT_EQ(0, report_keeps(_metadata, d->fd, RANGE_IOVA, RANGE_LEN,
				  PAGE_SZ, PATTERN));
	EXPECT_EQ(0, log_stop(d->fd));
}

/*
 * Closing the device ends logging: the next user finds it idle and can start
 * it.  (QEMU's source normally exits with logging still on.)
 */
TEST_F(dl, ended_by_close)
{
	struct qdev *d = &self->d;
	const char *step;
	int ret;

	ASSERT_EQ(0, log_start1(d->fd, PAGE_SZ));
	dev_close(d);
	ret = dev_open(d, bdf, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: reopen: %s: %s", bdf, step, strerror(-ret));
	}
	EXPECT_EQ(-EINVAL, report_keeps(_metadata, d->fd, RANGE_IOVA,
					RANGE_LEN, PAGE_SZ, PATTERN));
	EXPECT_EQ(0, log_start1(d->fd, PAGE_SZ));
	EXPECT_EQ(0, report_keeps(_metadata, d->fd, RANGE_IOVA, RANGE_LEN,
				  PAGE_SZ, PATTERN));
	EXPECT_EQ(0, log_stop(d->fd));
}

struct racer {
	pthread_barrier_t *go;
	int fd;
	int ret;
};

static void *race_start(void *arg)
{
	struct racer *r = arg;

	pthread_barrier_wait(r->go);
	r->ret = log_start1(r->fd, PAGE_SZ);
	return NULL;
}

/* Of STARTs racing on one device, exactly one wins; the others get EINVAL. */
TEST_F(dl, racing_starts)
{
	struct racer racers[RACERS];
	pthread_t threads[RACERS];
	pthread_barrier_t go;
	unsigned int i, round, won;

	for (round = 0; round < 50; round++) {
		ASSERT_EQ(0, pthread_barrier_init(&go, NULL, RACERS));
		for (i = 0; i < RACERS; i++) {
			racers[i] = (struct racer){ .go = &go, .fd = self->d.fd };
			ASSERT_EQ(0, pthread_create(&threads[i], NULL,
						    race_start, &racers[i]));
		}
		won = 0;
		for (i = 0; i < RACERS; i++) {
			pthread_join(threads[i], NULL);
			if (!racers[i].ret)
				won++;
			else
				EXPECT_EQ(-EINVAL, racers[i].ret);
		}
		pthread_barrier_destroy(&go);
		ASSERT_EQ(1, won) {
			TH_LOG("round %u: %u STARTs succeeded", round, won);
		}
		EXPECT_EQ(0, log_stop(self->d.fd));
	}
}

int main(int argc, char *argv[])
{
	static char env_bdf[32];
	const char *env;

	/* The device: the trailing BDF arguments (the first one), or QVP_BDFS. */
	while (argc > 1 && is_bdf(argv[argc - 1])) {
		bdf = argv[argc - 1];
		argc--;
	}
	if (!bdf && (env = getenv("QVP_BDFS")) &&
	    sscanf(env, " %31s", env_bdf) == 1 && is_bdf(env_bdf))
		bdf = env_bdf;

	/* Listing or help does not need a device. */
	if (!bdf && argc > 1 &&
	    (!strcmp(argv[1], "-l") || !strcmp(argv[1], "-h")))
		return test_harness_run(argc, argv);

	if (!bdf) {
		fprintf(stderr,
			"No device given, skipping.\n"
			"Usage: %s [harness options] BDF [BDF...]\n"
			"   or: QVP_BDFS=\"BDF [BDF...]\" %s [harness options]\n",
			argv[0], argv[0]);
		return KSFT_SKIP;
	}
	printf("# Device %s\n", bdf);
	return test_harness_run(argc, argv);
}
