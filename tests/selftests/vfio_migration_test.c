// SPDX-License-Identifier: GPL-2.0-only
/*
 * VFIO v2 live-migration uAPI selftest for qemu-vfio-pci and QEMU's
 * bochs-display (1234:1111).
 *
 * Two devices bound to the driver are opened through the VFIO device cdev
 * and iommufd (like vfio_bochs_test).  The tests drive the migration FSM
 * (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE), the saving and resuming data FDs
 * and VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, and check end to end that a device
 * state (VRAM and the DISPI/byte-order registers) moves from one device to
 * the other byte for byte, that bad streams are refused without touching the
 * destination, and that reset, early closes and races do not break anything.
 *
 * The migration stream is opaque to these tests except in one place: the
 * bad_stream.smaller_vram case rebuilds a valid stream for a device with half
 * the VRAM following Documentation/stream-format.rst (and skips if the stream
 * does not look like that format).
 *
 * Usage: vfio_migration_test [harness options] SRC_BDF DST_BDF
 *        QVP_BDFS="SRC_BDF DST_BDF" vfio_migration_test [harness options]
 *
 * In the test guest: tests/vm/run -- sh -c
 *	'tests/selftests/vfio_migration_test $QVP_BDFS 2>&1'
 * (2>&1 keeps the harness' stderr logs in order with the TAP lines).
 */

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
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
#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "vfio_util.h"
#include "bochs_regs.h"

/* Errors the racing threads may see. */
#define RACE_ERRNO_OK(e)	((e) == ENODEV || (e) == EBADF || \
				 (e) == EINVAL || (e) == EAGAIN)

/* Fixed seeds for the reproducible split and garbage patterns. */
#define SPLIT_SEED		0x5eed0f5011705ULL
#define GARBAGE_SEED		0x9a3ba9eULL

static const char *src_bdf, *dst_bdf;

/* ---------------------------------------------------------------------- */
/* Fixtures                                                               */
/* ---------------------------------------------------------------------- */

static void pair_setup(struct __test_metadata *_metadata, struct qdev *dev)
{
	const char *bdfs[2] = { src_bdf, dst_bdf };
	const char *step;
	unsigned int i;
	__u64 flags;
	__u32 state;
	int ret;

	for (i = 0; i < 2; i++) {
		dev[i].fd = -1;
		dev[i].iommufd = -1;
		dev[i].vram = MAP_FAILED;
	}
	for (i = 0; i < 2; i++) {
		struct qdev *d = &dev[i];

		ret = dev_open(d, bdfs[i], &step);
		ASSERT_EQ(0, ret) {
			TH_LOG("%s: %s: %s", bdfs[i], step, strerror(-ret));
		}
		ret = mig_flags(d->fd, &flags);
		ASSERT_EQ(0, ret) {
			TH_LOG("%s: VFIO_DEVICE_FEATURE_MIGRATION: %s: the driver does not implement migration",
			       d->bdf, strerror(-ret));
		}
		ret = mig_get(d->fd, &state);
		ASSERT_EQ(0, ret) {
			TH_LOG("%s: MIG_DEVICE_STATE GET: %s", d->bdf,
			       strerror(-ret));
		}
		ASSERT_EQ(VFIO_DEVICE_STATE_RUNNING, state) {
			TH_LOG("%s: state after open is %s, want RUNNING",
			       d->bdf, state_name(state));
		}
		ASSERT_EQ(0, regs_read(d, &d->saved));
		d->saved_valid = true;
	}
	ASSERT_EQ(dev[0].vram_size, dev[1].vram_size) {
		TH_LOG("the two devices need the same VRAM size");
	}
}

/* Reset both devices (whatever state a test left), restore, close. */
static void pair_teardown(struct __test_metadata *_metadata, struct qdev *dev)
{
	unsigned int i;

	for (i = 0; i < 2; i++) {
		struct qdev *d = &dev[i];

		if (d->fd < 0)
			continue;
		EXPECT_EQ(0, device_reset(d)) {
			TH_LOG("%s: teardown reset: %s", d->bdf,
			       strerror(errno));
		}
		if (d->saved_valid)
			regs_write(d, &d->saved);
		dev_close(d);
	}
}

FIXTURE(mig) {
	struct qdev dev[2];
};

FIXTURE_SETUP(mig)
{
	pair_setup(_metadata, self->dev);
}

FIXTURE_TEARDOWN(mig)
{
	pair_teardown(_metadata, self->dev);
}

/* ---------------------------------------------------------------------- */
/* Capabilities and the FSM                                               */
/* ---------------------------------------------------------------------- */

TEST_F(mig, feature_flags)
{
	const __u64 need = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P;
	const __u64 known = need | VFIO_MIGRATION_PRE_COPY;
	static const __u32 probes[] = {
		VFIO_DEVICE_FEATURE_MIGRATION | VFIO_DEVICE_FEATURE_GET,
		VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE | VFIO_DEVICE_FEATURE_GET |
			VFIO_DEVICE_FEATURE_SET,
		VFIO_DEVICE_FEATURE_MIG_DATA_SIZE | VFIO_DEVICE_FEATURE_GET,
	};
	unsigned int i, j;
	__u64 flags;

	for (i = 0; i < 2; i++) {
		struct qdev *d = &self->dev[i];

		ASSERT_EQ(0, mig_flags(d->fd, &flags));
		TH_LOG("%s: migration flags %#llx", d->bdf,
		       (unsigned long long)flags);
		EXPECT_EQ(need, flags & need);
		EXPECT_EQ(0, flags & ~known);
		if (flags & VFIO_MIGRATION_PRE_COPY)
			TH_LOG("PRE_COPY is advertised: vfio_precopy_test exercises it");

		for (j = 0; j < ARRAY_SIZE(probes); j++) {
			__u64 dummy = 0;

			EXPECT_EQ(0, device_feature(d->fd, probes[j] |
						    VFIO_DEVICE_FEATURE_PROBE,
						    &dummy, 0)) {
				TH_LOG("PROBE flags %#x", probes[j]);
			}
		}
		/* MIGRATION and MIG_DATA_SIZE are GET-only */
		EXPECT_EQ(-EINVAL, device_feature(d->fd,
					VFIO_DEVICE_FEATURE_MIGRATION |
					VFIO_DEVICE_FEATURE_SET,
					&flags, sizeof(flags)));
	}
}

TEST_F(mig, initial_state)
{
	const char *step;
	unsigned int i;
	__u64 size;
	int ret;

	for (i = 0; i < 2; i++) {
		struct qdev *d = &self->dev[i];

		expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING,
			     "after open");
		ASSERT_EQ(0, get_data_size(d->fd, &size));
		TH_LOG("%s: VRAM %zu MiB, stop-copy length %llu", d->bdf,
		       d->vram_size / SZ_1M, (unsigned long long)size);
		EXPECT_LT(d->vram_size, size);
	}

	/* Leave one device in STOP, close it: it opens in RUNNING again. */
	go_state(_metadata, &self->dev[0], VFIO_DEVICE_STATE_STOP);
	dev_close(&self->dev[0]);
	ret = dev_open(&self->dev[0], src_bdf, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("reopen: %s: %s", step, strerror(-ret));
	}
	expect_state(_metadata, &self->dev[0], VFIO_DEVICE_STATE_RUNNING,
		     "after reopen from STOP");
}

/* Unsupported or undefined target states fail with EINVAL in every state. */
TEST_F_TIMEOUT(mig, invalid_states, 120)
{
	struct qdev *d = &self->dev[0];
	__u32 bad[8];
	unsigned int nbad = 0, i, j;
	__u64 flags;

	ASSERT_EQ(0, mig_flags(d->fd, &flags));
	bad[nbad++] = VFIO_DEVICE_STATE_ERROR;
	if (!(flags & VFIO_MIGRATION_PRE_COPY)) {
		bad[nbad++] = VFIO_DEVICE_STATE_PRE_COPY;
		bad[nbad++] = VFIO_DEVICE_STATE_PRE_COPY_P2P;
	}
	bad[nbad++] = VFIO_DEVICE_STATE_NR;
	bad[nbad++] = 0x100;
	bad[nbad++] = 0x80000000;
	bad[nbad++] = 0xffffffff;

	for (i = 0; i < ARRAY_SIZE(fsm_states); i++) {
		__u32 from = fsm_states[i];
		int dfd = go_state(_metadata, d, from);

		for (j = 0; j < nbad; j++) {
			int fd = -2;
			int ret = mig_set(d->fd, bad[j], &fd);

			EXPECT_EQ(-EINVAL, ret) {
				TH_LOG("%s -> %#x (%s): %s", state_name(from),
				       bad[j], state_name(bad[j]),
				       ret ? strerror(-ret) : "succeeded");
			}
			EXPECT_EQ(-1, fd);
			if (!ret && fd >= 0)
				close(fd);
			expect_state(_metadata, d, from,
				     "after an invalid request");
		}
		if (from == VFIO_DEVICE_STATE_STOP_COPY) {
			char buf[4096];

			/* the saving session is untouched */
			EXPECT_LT(0, read(dfd, buf, sizeof(buf))) {
				TH_LOG("read after invalid requests: %s",
				       strerror(errno));
			}
		}
		if (dfd >= 0)
			close(dfd);
		if (from == VFIO_DEVICE_STATE_RESUMING) {
			ASSERT_EQ(0, device_reset(d));
		} else {
			go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING);
		}
	}
}

/*
 * Every arc between the supported states, including the multi-step ones.
 * Arcs out of RESUMING get a valid stream (saved from the other device)
 * first; a device left in RESUMING is reset back to RUNNING.
 */
TEST_F_TIMEOUT(mig, fsm_arcs, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	struct stream s;
	unsigned int i, j, arcs = 0;
	double t0 = now_sec();

	save_and_run(_metadata, a, &s);

	for (i = 0; i < ARRAY_SIZE(fsm_states); i++) {
		for (j = 0; j < ARRAY_SIZE(fsm_states); j++) {
			__u32 from = fsm_states[i], to = fsm_states[j];
			int dfd_from, dfd_to;
			char c;

			expect_state(_metadata, b, VFIO_DEVICE_STATE_RUNNING,
				     "start of arc");
			dfd_from = go_state(_metadata, b, from);
			if (from == VFIO_DEVICE_STATE_RESUMING && to != from) {
				struct io_plan w = {
					.mode = IO_CHUNK, .chunk = 4 * SZ_1M,
				};
				size_t done;
				int ret = stream_write(dfd_from, s.buf, s.len,
						       &w, &done);

				ASSERT_EQ(0, ret) {
					TH_LOG("write at %zu: %s", done,
					       strerror(-ret));
				}
			}
			dfd_to = go_state(_metadata, b, to);
			arcs++;

			if (from == VFIO_DEVICE_STATE_STOP_COPY) {
				ssize_t n = read(dfd_from, &c, 1);

				if (to == from) {
					/* same session, still readable */
					EXPECT_EQ(1, n);
				} else {
					EXPECT_EQ(-1, n);
					EXPECT_EQ(ENODEV, errno) {
						TH_LOG("read after STOP_COPY -> %s: %s",
						       state_name(to),
						       strerror(errno));
					}
				}
			}
			if (dfd_from >= 0)
				close(dfd_from);
			if (dfd_to >= 0)
				close(dfd_to);

			if (to == VFIO_DEVICE_STATE_RESUMING) {
				ASSERT_EQ(0, device_reset(b));
			} else {
				go_state(_metadata, b,
					 VFIO_DEVICE_STATE_RUNNING);
			}
		}
	}
	TH_LOG("%u arcs in %.1f s", arcs, now_sec() - t0);
	free(s.buf);
}

/* Without a stream, every way out of RESUMING fails; a reset recovers. */
TEST_F(mig, leave_resuming_without_stream)
{
	static const __u32 targets[] = {
		VFIO_DEVICE_STATE_STOP, VFIO_DEVICE_STATE_RUNNING,
		VFIO_DEVICE_STATE_RUNNING_P2P, VFIO_DEVICE_STATE_STOP_COPY,
	};
	struct qdev *d = &self->dev[1];
	unsigned int i;
	__u32 state;
	int dfd, fd, ret;

	for (i = 0; i < ARRAY_SIZE(targets); i++) {
		dfd = go_state(_metadata, d, VFIO_DEVICE_STATE_RESUMING);
		fd = -2;
		ret = mig_set(d->fd, targets[i], &fd);
		EXPECT_NE(0, ret) {
			TH_LOG("RESUMING -> %s without data succeeded",
			       state_name(targets[i]));
		}
		EXPECT_EQ(-1, fd);
		if (!ret && fd >= 0)
			close(fd);
		TH_LOG("RESUMING -> %s without data: %s",
		       state_name(targets[i]),
		       ret ? strerror(-ret) : "succeeded");
		ASSERT_EQ(0, mig_get(d->fd, &state));
		EXPECT_TRUE(state == VFIO_DEVICE_STATE_RESUMING ||
			    state == VFIO_DEVICE_STATE_ERROR) {
			TH_LOG("state %s", state_name(state));
		}
		close(dfd);
		ASSERT_EQ(0, device_reset(d));
		expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING,
			     "after reset");
	}
}

/* MIG_DATA_SIZE works in every state and is the exact stream length. */
TEST_F_TIMEOUT(mig, data_size, 120)
{
	struct qdev *d = &self->dev[0];
	struct io_plan plan = { .mode = IO_CHUNK, .chunk = SZ_1M };
	struct stream s;
	unsigned int i;
	__u64 size, len;
	int ret;

	ASSERT_EQ(0, get_data_size(d->fd, &size));
	ASSERT_LT(0, size);
	save_stream(_metadata, d, &plan, &s, NULL);	/* checks the length */
	free(s.buf);
	ASSERT_EQ(0, get_data_size(d->fd, &len));
	EXPECT_EQ(size, len) {
		TH_LOG("in STOP_COPY at end of stream");
	}
	go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING);

	for (i = 0; i < ARRAY_SIZE(fsm_states); i++) {
		__u32 state = fsm_states[i];
		int dfd = go_state(_metadata, d, state);

		ret = get_data_size(d->fd, &len);
		EXPECT_EQ(0, ret) {
			TH_LOG("MIG_DATA_SIZE in %s: %s", state_name(state),
			       strerror(-ret));
		}
		EXPECT_EQ(size, len) {
			TH_LOG("MIG_DATA_SIZE in %s", state_name(state));
		}
		if (dfd >= 0)
			close(dfd);
		if (state == VFIO_DEVICE_STATE_RESUMING) {
			ASSERT_EQ(0, device_reset(d));
		} else {
			go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING);
		}
	}
}

/* ---------------------------------------------------------------------- */
/* Data FD semantics                                                      */
/* ---------------------------------------------------------------------- */

TEST_F_TIMEOUT(mig, save_fd_ops, 120)
{
	struct qdev *d = &self->dev[0];
	struct pollfd pfd = { .events = POLLIN };
	struct vfio_precopy_info info = { .argsz = sizeof(info) };
	size_t cap, total = 0;
	__u64 size;
	__u8 *buf;
	ssize_t n;
	int dfd, i;

	ASSERT_EQ(0, get_data_size(d->fd, &size));
	cap = size + SZ_1M;
	buf = malloc(cap);
	ASSERT_NE(NULL, buf);

	dfd = go_state(_metadata, d, VFIO_DEVICE_STATE_STOP_COPY);
	EXPECT_EQ(O_RDONLY, fcntl(dfd, F_GETFL) & O_ACCMODE);
	pfd.fd = dfd;
	ASSERT_EQ(1, poll(&pfd, 1, 5000));
	EXPECT_TRUE(pfd.revents & POLLIN);

	/* a stream: no position */
	EXPECT_EQ(-1, lseek(dfd, 0, SEEK_SET));
	EXPECT_EQ(ESPIPE, errno);
	EXPECT_EQ(-1, lseek(dfd, 0, SEEK_CUR));
	EXPECT_EQ(ESPIPE, errno);
	EXPECT_EQ(-1, pread(dfd, buf, 16, 0));
	EXPECT_EQ(ESPIPE, errno);
	EXPECT_EQ(-1, pwrite(dfd, buf, 16, 0));
	EXPECT_EQ(ESPIPE, errno);
	/* read-only */
	EXPECT_EQ(-1, write(dfd, buf, 16));
	EXPECT_EQ(EBADF, errno);
	/* a plain STOP_COPY file: the pre-copy ioctl is refused (EINVAL) */
	EXPECT_EQ(-1, ioctl(dfd, VFIO_MIG_GET_PRECOPY_INFO, &info));
	EXPECT_EQ(EINVAL, errno);

	/* reads of 1, 3 and 4095 bytes, then everything in huge reads */
	for (i = 0; i < 3; i++) {
		static const size_t lens[] = { 1, 3, 4095 };

		n = read(dfd, buf + total, lens[i]);
		ASSERT_LT(0, n) {
			TH_LOG("read(%zu): %s", lens[i], strerror(errno));
		}
		ASSERT_GE(lens[i], n);
		total += n;
	}
	for (;;) {
		n = read(dfd, buf + total, cap - total);
		ASSERT_LE(0, n) {
			TH_LOG("read at %zu: %s", total, strerror(errno));
		}
		if (!n)
			break;
		total += n;
		ASSERT_GE(size, total);
	}
	EXPECT_EQ(size, total);
	/* end of stream stays end of stream, and is readable for poll */
	for (i = 0; i < 3; i++) {
		EXPECT_EQ(0, read(dfd, buf, 4096));
	}
	pfd.revents = 0;
	EXPECT_EQ(1, poll(&pfd, 1, 5000));
	EXPECT_TRUE(pfd.revents & POLLIN);

	/* leaving STOP_COPY ends the session */
	go_state(_metadata, d, VFIO_DEVICE_STATE_STOP);
	EXPECT_EQ(-1, read(dfd, buf, 4096));
	EXPECT_EQ(ENODEV, errno) {
		TH_LOG("read after STOP_COPY -> STOP: %s", strerror(errno));
	}
	close(dfd);
	go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING);
	free(buf);
}

TEST_F(mig, resume_fd_ops)
{
	struct qdev *d = &self->dev[1];
	struct pollfd pfd = { .events = POLLOUT };
	char buf[64] = { 0 };
	int dfd;

	dfd = go_state(_metadata, d, VFIO_DEVICE_STATE_RESUMING);
	EXPECT_EQ(O_WRONLY, fcntl(dfd, F_GETFL) & O_ACCMODE);
	pfd.fd = dfd;
	ASSERT_EQ(1, poll(&pfd, 1, 5000));
	EXPECT_TRUE(pfd.revents & POLLOUT);

	EXPECT_EQ(-1, read(dfd, buf, sizeof(buf)));
	EXPECT_EQ(EBADF, errno);
	EXPECT_EQ(-1, lseek(dfd, 0, SEEK_SET));
	EXPECT_EQ(ESPIPE, errno);
	EXPECT_EQ(-1, pwrite(dfd, buf, sizeof(buf), 0));
	EXPECT_EQ(ESPIPE, errno);
	EXPECT_EQ(-1, pread(dfd, buf, sizeof(buf), 0));
	EXPECT_EQ(ESPIPE, errno);

	/* RESUMING can only be aborted by a reset */
	ASSERT_EQ(0, device_reset(d));
	expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING, "after reset");
	EXPECT_EQ(-1, write(dfd, buf, sizeof(buf)));
	EXPECT_EQ(ENODEV, errno);
	close(dfd);
}

/* ---------------------------------------------------------------------- */
/* Migration                                                              */
/* ---------------------------------------------------------------------- */

/*
 * A -> B: 1 MiB reads, one write of the whole stream.  B -> A: random read
 * and write sizes from a fixed seed.
 */
TEST_F_TIMEOUT(mig, migrate_both_ways, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	struct io_plan r1 = { .mode = IO_CHUNK, .chunk = SZ_1M };
	struct io_plan w1 = { .mode = IO_CHUNK, .chunk = SIZE_MAX };
	struct io_plan r2 = { .mode = IO_RANDOM, .rng = SPLIT_SEED };
	struct io_plan w2 = { .mode = IO_RANDOM, .rng = ~SPLIT_SEED };
	struct mig_stats st;

	migrate_verify(_metadata, a, b, 0, &r1, &w1, false, &st);
	TH_LOG("%s -> %s: %zu byte stream (VRAM %zu MiB)", a->bdf, b->bdf,
	       st.len, a->vram_size / SZ_1M);
	TH_LOG("save (-> STOP_COPY + read, 1 MiB reads): %.3f s, %.1f MiB/s",
	       st.save_secs, mib_per_sec(st.len, st.save_secs));
	TH_LOG("resume (-> RESUMING + one write + -> STOP): %.3f s, %.1f MiB/s",
	       st.resume_secs, mib_per_sec(st.len, st.resume_secs));
	TH_LOG("verify (memcmp of both VRAMs via mmap): %.3f s, %.1f MiB/s",
	       st.verify_secs,
	       mib_per_sec(2 * a->vram_size, st.verify_secs));

	TH_LOG("%s -> %s: random read/write sizes, seed %#llx", b->bdf,
	       a->bdf, (unsigned long long)SPLIT_SEED);
	migrate_verify(_metadata, b, a, 1, &r2, &w2, false, &st);
	TH_LOG("save (random reads): %.3f s, %.1f MiB/s", st.save_secs,
	       mib_per_sec(st.len, st.save_secs));
	TH_LOG("resume (random writes): %.3f s, %.1f MiB/s", st.resume_secs,
	       mib_per_sec(st.len, st.resume_secs));
}

/*
 * One byte per read() and write() for the first and last 64 KiB of the
 * stream (header, register and END records, record boundaries), 1 MiB in
 * between; the resume data fd is closed before RESUMING -> STOP, as QEMU
 * does.
 */
TEST_F_TIMEOUT(mig, byte_io, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	struct io_plan r = { .mode = IO_BYTE_EDGES };
	struct io_plan w = { .mode = IO_BYTE_EDGES };
	struct mig_stats st;
	double t0, per_byte;
	size_t i;
	int dfd;
	char c;

	/* the cost of a 1-byte read, to judge whole-stream 1-byte I/O */
	dfd = go_state(_metadata, a, VFIO_DEVICE_STATE_STOP_COPY);
	t0 = now_sec();
	for (i = 0; i < 4096; i++) {
		ASSERT_EQ(1, read(dfd, &c, 1));
	}
	per_byte = (now_sec() - t0) / 4096;
	close(dfd);
	go_state(_metadata, a, VFIO_DEVICE_STATE_STOP);
	go_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING);

	migrate_verify(_metadata, a, b, 1, &r, &w, true, &st);
	TH_LOG("1-byte read: %.1f us; a whole %zu byte stream byte by byte would take %.0f s",
	       per_byte * 1e6, st.len, per_byte * st.len);
	TH_LOG("save: %.3f s, resume: %.3f s (2 x %lu KiB byte by byte each)",
	       st.save_secs, st.resume_secs, BYTE_IO_EDGE / 1024);
}

/* ---------------------------------------------------------------------- */
/* Reset, early close, device close                                       */
/* ---------------------------------------------------------------------- */

TEST_F_TIMEOUT(mig, reset_each_state, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	struct stream s;
	unsigned int i;
	__u64 size;

	save_and_run(_metadata, b, &s);

	for (i = 0; i < ARRAY_SIZE(fsm_states); i++) {
		__u32 state = fsm_states[i];
		int dfd = go_state(_metadata, a, state);
		__u8 buf[SZ_4K];
		int ret;

		if (state == VFIO_DEVICE_STATE_STOP_COPY) {
			ASSERT_EQ(sizeof(buf), read(dfd, buf, sizeof(buf)));
		}
		if (state == VFIO_DEVICE_STATE_RESUMING) {
			ASSERT_EQ(s.len / 2, write(dfd, s.buf, s.len / 2));
		}

		ret = device_reset(a);
		ASSERT_EQ(0, ret) {
			TH_LOG("VFIO_DEVICE_RESET in %s: %s",
			       state_name(state), strerror(-ret));
		}
		expect_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING,
			     state_name(state));
		if (state == VFIO_DEVICE_STATE_STOP_COPY) {
			EXPECT_EQ(-1, read(dfd, buf, sizeof(buf)));
			EXPECT_EQ(ENODEV, errno) {
				TH_LOG("read after reset: %s",
				       strerror(errno));
			}
		}
		if (state == VFIO_DEVICE_STATE_RESUMING) {
			EXPECT_EQ(-1, write(dfd, s.buf + s.len / 2, 4096));
			EXPECT_EQ(ENODEV, errno) {
				TH_LOG("write after reset: %s",
				       strerror(errno));
			}
		}
		if (dfd >= 0)
			close(dfd);
		EXPECT_EQ(0, get_data_size(a->fd, &size));
	}
	free(s.buf);

	migrate_simple(_metadata, a, b);
}

TEST_F_TIMEOUT(mig, close_data_fd_early, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	struct io_plan plan = { .mode = IO_CHUNK, .chunk = SZ_1M };
	struct stream s;
	__u32 state;
	__u64 size;
	__u8 *buf;
	size_t done;
	int dfd, ret;

	/* saving: close after half the stream; the FSM goes on */
	ASSERT_EQ(0, get_data_size(a->fd, &size));
	buf = malloc(size / 2);
	ASSERT_NE(NULL, buf);
	dfd = go_state(_metadata, a, VFIO_DEVICE_STATE_STOP_COPY);
	for (done = 0; done < size / 2; ) {
		ssize_t n = read(dfd, buf + done, size / 2 - done);

		ASSERT_LT(0, n);
		done += n;
	}
	close(dfd);
	free(buf);
	go_state(_metadata, a, VFIO_DEVICE_STATE_STOP);
	go_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING);

	/* a new session starts from the beginning: full length again */
	save_stream(_metadata, a, &plan, &s, NULL);
	go_state(_metadata, a, VFIO_DEVICE_STATE_STOP);
	go_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING);

	/* resuming: close after half; RESUMING -> STOP must then fail */
	dfd = go_state(_metadata, b, VFIO_DEVICE_STATE_RESUMING);
	ret = stream_write(dfd, s.buf, s.len / 2, &plan, &done);
	ASSERT_EQ(0, ret);
	close(dfd);
	ret = mig_set(b->fd, VFIO_DEVICE_STATE_STOP, NULL);
	EXPECT_NE(0, ret) {
		TH_LOG("RESUMING -> STOP accepted half a stream");
	}
	TH_LOG("RESUMING -> STOP after half a stream: %s",
	       ret ? strerror(-ret) : "succeeded");
	ASSERT_EQ(0, mig_get(b->fd, &state));
	EXPECT_TRUE(state == VFIO_DEVICE_STATE_RESUMING ||
		    state == VFIO_DEVICE_STATE_ERROR) {
		TH_LOG("state %s", state_name(state));
	}
	ASSERT_EQ(0, device_reset(b));
	expect_state(_metadata, b, VFIO_DEVICE_STATE_RUNNING, "after reset");
	free(s.buf);

	migrate_simple(_metadata, a, b);
}

/*
 * Close the device (and its iommufd) while a saving data fd is half read
 * and while a resuming data fd is half written.
 */
TEST_F_TIMEOUT(mig, close_device_mid_stream, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	const char *step;
	__u8 *buf;
	__u64 size;
	size_t done;
	ssize_t n;
	int dfd, ret;

	ASSERT_EQ(0, get_data_size(a->fd, &size));
	buf = malloc(size / 2);
	ASSERT_NE(NULL, buf);

	dfd = go_state(_metadata, a, VFIO_DEVICE_STATE_STOP_COPY);
	for (done = 0; done < size / 2; done += n) {
		n = read(dfd, buf + done, size / 2 - done);
		ASSERT_LT(0, n);
	}
	dev_close(a);
	n = read(dfd, buf, 4096);
	EXPECT_EQ(-1, n);
	EXPECT_EQ(ENODEV, errno) {
		TH_LOG("read after the device was closed: %s",
		       n < 0 ? strerror(errno) : "succeeded");
	}
	ret = dev_open(a, src_bdf, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("reopen: %s: %s", step, strerror(-ret));
	}
	expect_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING, "after reopen");
	/* the old session does not come back with the new open */
	n = read(dfd, buf, 4096);
	EXPECT_EQ(-1, n);
	EXPECT_EQ(ENODEV, errno);
	close(dfd);

	/* the same on the resuming side, with half a stream (a prefix) */
	dfd = go_state(_metadata, b, VFIO_DEVICE_STATE_RESUMING);
	n = write(dfd, buf, size / 2);
	EXPECT_EQ(size / 2, n) {
		TH_LOG("write of half a stream: %s",
		       n < 0 ? strerror(errno) : "short");
	}
	dev_close(b);
	n = write(dfd, buf, 4096);
	EXPECT_EQ(-1, n);
	EXPECT_EQ(ENODEV, errno) {
		TH_LOG("write after the device was closed: %s",
		       n < 0 ? strerror(errno) : "accepted");
	}
	ret = dev_open(b, dst_bdf, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("reopen: %s: %s", step, strerror(-ret));
	}
	expect_state(_metadata, b, VFIO_DEVICE_STATE_RUNNING, "after reopen");
	/* the old session does not come back with the new open */
	n = write(dfd, buf, 4096);
	EXPECT_EQ(-1, n);
	EXPECT_EQ(ENODEV, errno) {
		TH_LOG("write after the device was reopened: %s",
		       n < 0 ? strerror(errno) : "accepted");
	}
	close(dfd);
	expect_works(_metadata, b, 1280);
	free(buf);

	migrate_simple(_metadata, a, b);
}

/* Closing the device in any state: it opens in RUNNING, old fds are dead. */
TEST_F_TIMEOUT(mig, close_device_each_state, 300)
{
	struct qdev *a = &self->dev[0];
	struct io_plan plan = { .mode = IO_CHUNK, .chunk = SZ_1M };
	struct stream s;
	const char *step;
	unsigned int i;
	char buf[64] = { 0 };
	int dfd, ret;

	for (i = 0; i < ARRAY_SIZE(fsm_states); i++) {
		__u32 state = fsm_states[i];

		dfd = go_state(_metadata, a, state);
		dev_close(a);
		ret = dev_open(a, src_bdf, &step);
		ASSERT_EQ(0, ret) {
			TH_LOG("reopen: %s: %s", step, strerror(-ret));
		}
		expect_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING,
			     state_name(state));
		if (state == VFIO_DEVICE_STATE_STOP_COPY) {
			EXPECT_EQ(-1, read(dfd, buf, sizeof(buf)));
			EXPECT_EQ(ENODEV, errno);
		}
		if (state == VFIO_DEVICE_STATE_RESUMING) {
			EXPECT_EQ(-1, write(dfd, buf, sizeof(buf)));
			EXPECT_EQ(ENODEV, errno);
		}
		if (dfd >= 0)
			close(dfd);
	}
	/* the reopened device saves a full stream */
	save_stream(_metadata, a, &plan, &s, NULL);
	free(s.buf);
}

/* ---------------------------------------------------------------------- */
/* Racing state changes against reads                                     */
/* ---------------------------------------------------------------------- */

struct race {
	pthread_mutex_t lock;
	int shared_fd;			/* dup of the current data fd or -1 */
	int dev_fd;
	volatile bool stop;
	/* reader results */
	unsigned long reads, bytes, errors, sessions;
	int bad_errno;
	const char *bad_op;
};

static void race_err(struct race *r, const char *op, int err)
{
	r->errors++;
	if (!RACE_ERRNO_OK(err) && !r->bad_errno) {
		r->bad_errno = err;
		r->bad_op = op;
	}
}

static void *race_reader(void *arg)
{
	struct race *r = arg;
	char *buf = malloc(SZ_64K);

	if (!buf) {
		r->bad_errno = ENOMEM;
		r->bad_op = "malloc";
		return NULL;
	}
	while (!r->stop) {
		__u32 state;
		__u64 size;
		int fd;

		pthread_mutex_lock(&r->lock);
		fd = r->shared_fd >= 0 ? dup(r->shared_fd) : -1;
		pthread_mutex_unlock(&r->lock);

		if (mig_get(r->dev_fd, &state))
			race_err(r, "GET state", errno);
		if (get_data_size(r->dev_fd, &size))
			race_err(r, "MIG_DATA_SIZE", errno);
		if (fd < 0) {
			sched_yield();
			continue;
		}
		r->sessions++;
		while (!r->stop) {
			ssize_t n = read(fd, buf, SZ_64K);

			if (n < 0) {
				race_err(r, "read", errno);
				break;
			}
			if (n == 0)
				break;
			r->reads++;
			r->bytes += n;
		}
		close(fd);
	}
	free(buf);
	return NULL;
}

TEST_F_TIMEOUT(mig, race_state_vs_read, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	static const __u32 back[] = {
		VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_STATE_STOP,
		VFIO_DEVICE_STATE_RUNNING_P2P,
	};
	struct race r = {
		.lock = PTHREAD_MUTEX_INITIALIZER,
		.shared_fd = -1,
		.dev_fd = a->fd,
	};
	unsigned long w_errors = 0, w_bytes = 0;
	int w_bad = 0;
	const char *w_bad_op = NULL;
	double t0 = now_sec();
	pthread_t thread;
	unsigned int i;
	__u32 state;
	char *buf;

	buf = malloc(SZ_256K);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, pthread_create(&thread, NULL, race_reader, &r));

	for (i = 0; i < 200 && now_sec() - t0 < 10; i++) {
		int dfd = -1, ret, old;
		ssize_t n;

		ret = mig_set(a->fd, VFIO_DEVICE_STATE_STOP_COPY, &dfd);
		if (ret) {
			w_errors++;
			if (!RACE_ERRNO_OK(-ret) && !w_bad) {
				w_bad = -ret;
				w_bad_op = "-> STOP_COPY";
			}
			continue;
		}
		pthread_mutex_lock(&r.lock);
		old = r.shared_fd;
		r.shared_fd = dup(dfd);
		pthread_mutex_unlock(&r.lock);
		if (old >= 0)
			close(old);

		n = read(dfd, buf, SZ_64K * (1 + i % 4));
		if (n < 0) {
			w_errors++;
			if (!RACE_ERRNO_OK(errno) && !w_bad) {
				w_bad = errno;
				w_bad_op = "read";
			}
		} else {
			w_bytes += n;
		}
		if (i & 1)
			close(dfd);
		ret = mig_set(a->fd, back[i % ARRAY_SIZE(back)], NULL);
		if (ret) {
			w_errors++;
			if (!RACE_ERRNO_OK(-ret) && !w_bad) {
				w_bad = -ret;
				w_bad_op = "leave STOP_COPY";
			}
		}
		if (!(i & 1))
			close(dfd);
		/* make sure the next round starts from a non-data state */
		if (!mig_get(a->fd, &state) &&
		    state == VFIO_DEVICE_STATE_STOP_COPY)
			mig_set(a->fd, VFIO_DEVICE_STATE_STOP, NULL);
	}
	r.stop = true;
	ASSERT_EQ(0, pthread_join(thread, NULL));
	if (r.shared_fd >= 0)
		close(r.shared_fd);
	free(buf);

	TH_LOG("%u rounds in %.1f s; writer: %lu bytes, %lu errors; reader: %lu sessions, %lu reads, %lu bytes, %lu errors",
	       i, now_sec() - t0, w_bytes, w_errors, r.sessions, r.reads,
	       r.bytes, r.errors);
	EXPECT_EQ(0, w_bad) {
		TH_LOG("writer: %s failed with %s", w_bad_op, strerror(w_bad));
	}
	EXPECT_EQ(0, r.bad_errno) {
		TH_LOG("reader: %s failed with %s", r.bad_op,
		       strerror(r.bad_errno));
	}

	ASSERT_EQ(0, mig_get(a->fd, &state));
	if (state != VFIO_DEVICE_STATE_RUNNING)
		go_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING);
	migrate_simple(_metadata, a, b);
}

/* ---------------------------------------------------------------------- */
/* Bad streams                                                            */
/* ---------------------------------------------------------------------- */

enum bad_kind {
	BAD_EMPTY,
	BAD_TRUNCATED_HALF,
	BAD_TRUNCATED_END,
	BAD_FLIP_VRAM,
	BAD_FLIP_HEADER,
	BAD_FLIP_END,
	BAD_TRAILING_BYTES,
	BAD_TWO_STREAMS,
	BAD_SMALLER_VRAM,
	BAD_GARBAGE,
};

FIXTURE(bad_stream) {
	struct qdev dev[2];
};

FIXTURE_VARIANT(bad_stream) {
	enum bad_kind kind;
};

FIXTURE_VARIANT_ADD(bad_stream, empty) { .kind = BAD_EMPTY };
FIXTURE_VARIANT_ADD(bad_stream, truncated_half) { .kind = BAD_TRUNCATED_HALF };
FIXTURE_VARIANT_ADD(bad_stream, truncated_end) { .kind = BAD_TRUNCATED_END };
FIXTURE_VARIANT_ADD(bad_stream, flip_vram) { .kind = BAD_FLIP_VRAM };
FIXTURE_VARIANT_ADD(bad_stream, flip_header) { .kind = BAD_FLIP_HEADER };
FIXTURE_VARIANT_ADD(bad_stream, flip_end) { .kind = BAD_FLIP_END };
FIXTURE_VARIANT_ADD(bad_stream, trailing_bytes) { .kind = BAD_TRAILING_BYTES };
FIXTURE_VARIANT_ADD(bad_stream, two_streams) { .kind = BAD_TWO_STREAMS };
FIXTURE_VARIANT_ADD(bad_stream, smaller_vram) { .kind = BAD_SMALLER_VRAM };
FIXTURE_VARIANT_ADD(bad_stream, garbage) { .kind = BAD_GARBAGE };

FIXTURE_SETUP(bad_stream)
{
	pair_setup(_metadata, self->dev);
}

FIXTURE_TEARDOWN(bad_stream)
{
	pair_teardown(_metadata, self->dev);
}

/*
 * Rebuild @in (a stop-copy stream of a device with @mem bytes of VRAM) as a
 * valid stream of a device with @mem / 2: HEADER with the smaller size, the
 * same registers, the MEMORY records of the lower half, a matching END; all
 * CRCs valid.  Returns NULL with @why set if @in is not in the documented
 * format.
 */
static __u8 *make_smaller_stream(const struct stream *in, size_t mem,
				 size_t *out_len, const char **why)
{
	const size_t half = mem / 2;
	size_t off = 0, len = 0, records = 0;
	bool have_end = false;
	__u8 *out = malloc(in->len);

	*why = "malloc";
	if (!out)
		return NULL;
	while (off < in->len && !have_end) {
		const __u8 *rec = in->buf + off;
		__u32 type;
		__u64 plen;
		size_t rlen;

		*why = "record header";
		if (in->len - off < REC_HDR + 4 || memcmp(rec, "QVPR", 4))
			goto bad;
		type = get_le32(rec + 4);
		plen = get_le64(rec + 16);
		if (plen > in->len - off - REC_HDR - 4)
			goto bad;
		rlen = REC_HDR + plen + 4;
		*why = "record CRC";
		if (crc32c(rec, REC_HDR + plen) != get_le32(rec + REC_HDR + plen))
			goto bad;

		switch (type) {
		case REC_HEADER:
			*why = "HEADER payload";
			if (records || plen < 24 ||
			    memcmp(rec + REC_HDR, "QVFIOMIG", 8) ||
			    get_le64(rec + REC_HDR + 16) != mem)
				goto bad;
			memcpy(out + len, rec, rlen);
			put_le64(out + len + REC_HDR + 16, half);
			put_le32(out + len + REC_HDR + plen,
				 crc32c(out + len, REC_HDR + plen));
			break;
		case REC_MEMORY: {
			__u64 moff;

			*why = "MEMORY payload";
			if (plen < 8)
				goto bad;
			moff = get_le64(rec + REC_HDR);
			if (moff >= half) {
				off += rlen;
				continue;	/* dropped */
			}
			if (moff + plen - 8 > half)
				goto bad;	/* straddles the half */
			memcpy(out + len, rec, rlen);
			break;
		}
		case REC_END:
			*why = "END payload";
			if (plen != 16)
				goto bad;
			memcpy(out + len, rec, rlen);
			put_le64(out + len + REC_HDR, records);
			put_le64(out + len + REC_HDR + 8, len);
			put_le32(out + len + REC_HDR + plen,
				 crc32c(out + len, REC_HDR + plen));
			have_end = true;
			break;
		default:
			memcpy(out + len, rec, rlen);
			break;
		}
		off += rlen;
		len += rlen;
		records++;
	}
	*why = "END record";
	if (!have_end || off != in->len)
		goto bad;
	*out_len = len;
	return out;
bad:
	free(out);
	return NULL;
}

/*
 * A destination gets a bad stream: RESUMING -> STOP must fail (a write may
 * fail first), the registers must be untouched, a reset must recover it,
 * and a valid stream must then still go in.
 */
TEST_F_TIMEOUT(bad_stream, rejected, 120)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	struct io_plan plan = { .mode = IO_CHUNK, .chunk = SZ_1M };
	const __u64 seed = fresh_seed();
	struct regs src_regs, before, got;
	struct stream s, bad = { 0 };
	int dfd, werr = 0, serr;
	const char *why = NULL;
	size_t done = 0, i;
	__u32 state;
	__u64 rng;

	/* the source: a register state unlike the destination's */
	regs_make(&src_regs, 0, seed);
	ASSERT_EQ(0, regs_write(a, &src_regs));
	save_and_run(_metadata, a, &s);

	switch (variant->kind) {
	case BAD_EMPTY:
		bad.len = 0;
		break;
	case BAD_TRUNCATED_HALF:
		bad.len = s.len / 2;
		break;
	case BAD_TRUNCATED_END:
		bad.len = s.len - 1;
		break;
	case BAD_FLIP_VRAM:
	case BAD_FLIP_HEADER:
	case BAD_FLIP_END:
		bad.buf = malloc(s.len);
		ASSERT_NE(NULL, bad.buf);
		memcpy(bad.buf, s.buf, s.len);
		bad.len = s.len;
		if (variant->kind == BAD_FLIP_VRAM)
			i = s.len / 2 + 1234;	/* in the middle of VRAM */
		else if (variant->kind == BAD_FLIP_HEADER)
			i = 30;			/* within the first record */
		else
			i = s.len - 16;		/* within the last record */
		bad.buf[i] ^= 0x10;
		TH_LOG("bit 4 of byte %zu of %zu flipped", i, s.len);
		break;
	case BAD_TRAILING_BYTES:
		bad.buf = malloc(s.len + 16);
		ASSERT_NE(NULL, bad.buf);
		memcpy(bad.buf, s.buf, s.len);
		memset(bad.buf + s.len, 0x5a, 16);
		bad.len = s.len + 16;
		break;
	case BAD_TWO_STREAMS:
		bad.buf = malloc(2 * s.len);
		ASSERT_NE(NULL, bad.buf);
		memcpy(bad.buf, s.buf, s.len);
		memcpy(bad.buf + s.len, s.buf, s.len);
		bad.len = 2 * s.len;
		break;
	case BAD_SMALLER_VRAM:
		bad.buf = make_smaller_stream(&s, a->vram_size, &bad.len,
					      &why);
		if (!bad.buf) {
			free(s.buf);
			SKIP(return, "stream not in the documented format (%s): cannot build one for a smaller VRAM",
			     why);
		}
		TH_LOG("valid %zu byte stream for %zu MiB of VRAM", bad.len,
		       a->vram_size / 2 / SZ_1M);
		break;
	case BAD_GARBAGE:
		bad.len = SZ_1M;
		bad.buf = malloc(bad.len);
		ASSERT_NE(NULL, bad.buf);
		rng = GARBAGE_SEED;
		for (i = 0; i < bad.len; i += 8) {
			__u64 v = rng_next(&rng);

			memcpy(bad.buf + i, &v, 8);
		}
		TH_LOG("1 MiB of garbage, seed %#llx",
		       (unsigned long long)GARBAGE_SEED);
		break;
	}
	if (!bad.buf)
		bad.buf = s.buf;	/* a prefix of the valid stream */

	regs_make_other(&before, &src_regs);
	ASSERT_EQ(0, regs_write(b, &before));
	ASSERT_EQ(0, regs_read(b, &before));

	dfd = go_state(_metadata, b, VFIO_DEVICE_STATE_RESUMING);
	werr = stream_write(dfd, bad.buf, bad.len, &plan, &done);
	serr = mig_set(b->fd, VFIO_DEVICE_STATE_STOP, NULL);
	close(dfd);
	TH_LOG("wrote %zu of %zu bytes%s%s; RESUMING -> STOP: %s", done,
	       bad.len, werr ? ", then write failed: " : "",
	       werr ? strerror(-werr) : "", serr ? strerror(-serr) :
						   "SUCCEEDED");
	ASSERT_NE(0, serr) {
		TH_LOG("the bad stream was accepted");
	}
	ASSERT_EQ(0, mig_get(b->fd, &state));
	EXPECT_TRUE(state == VFIO_DEVICE_STATE_RESUMING ||
		    state == VFIO_DEVICE_STATE_ERROR) {
		TH_LOG("state after the failed RESUMING -> STOP: %s",
		       state_name(state));
	}
	TH_LOG("state after the failure: %s", state_name(state));

	/* nothing of the stream reached the registers */
	ASSERT_EQ(0, regs_read(b, &got));
	expect_regs(_metadata, &before, &got, "destination after a bad stream");

	ASSERT_EQ(0, device_reset(b));
	expect_state(_metadata, b, VFIO_DEVICE_STATE_RUNNING, "after reset");
	expect_works(_metadata, b, 1152);

	/* the failure does not stick: the valid stream goes in */
	resume_stream(_metadata, b, &s, &plan, false, NULL);
	go_state(_metadata, b, VFIO_DEVICE_STATE_RUNNING);
	ASSERT_EQ(0, regs_read(b, &got));
	expect_regs(_metadata, &src_regs, &got, "destination after a good stream");

	if (bad.buf != s.buf)
		free(bad.buf);
	free(s.buf);
}

int main(int argc, char *argv[])
{
	const char *env;
	static char bdfs[2][32];

	if (argc > 2 && is_bdf(argv[argc - 1]) && is_bdf(argv[argc - 2])) {
		src_bdf = argv[argc - 2];
		dst_bdf = argv[argc - 1];
		argc -= 2;
	} else if (argc > 1 && is_bdf(argv[argc - 1])) {
		argc--;		/* one device: not enough */
	} else if ((env = getenv("QVP_BDFS"))) {
		if (sscanf(env, "%31s %31s", bdfs[0], bdfs[1]) == 2 &&
		    is_bdf(bdfs[0]) && is_bdf(bdfs[1])) {
			src_bdf = bdfs[0];
			dst_bdf = bdfs[1];
		}
	}

	/* Listing or help does not need devices. */
	if (!src_bdf && argc > 1 &&
	    (!strcmp(argv[1], "-l") || !strcmp(argv[1], "-h")))
		return test_harness_run(argc, argv);

	if (!src_bdf) {
		fprintf(stderr,
			"Migration needs two devices, skipping.\n"
			"Usage: %s [harness options] SRC_BDF DST_BDF\n"
			"   or: QVP_BDFS=\"SRC_BDF DST_BDF\" %s [harness options]\n",
			argv[0], argv[0]);
		return KSFT_SKIP;
	}
	if (!strcmp(src_bdf, dst_bdf)) {
		fprintf(stderr, "%s: source and destination are the same device\n",
			argv[0]);
		return KSFT_FAIL;
	}
	printf("# Source %s, destination %s\n", src_bdf, dst_bdf);

	return test_harness_run(argc, argv);
}
