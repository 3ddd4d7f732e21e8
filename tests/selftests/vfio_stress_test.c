// SPDX-License-Identifier: GPL-2.0-only
/*
 * Stress and hardening selftest for qemu-vfio-pci (issue "Hardening"):
 *
 *  uffd:   a transfer stalled in the middle of a user copy (a userfaultfd page
 *          in the buffer of a resume write() or a save read()) while the
 *          device is closed and reopened, or reset.  Nothing of the old
 *          stream may reach the new session's device memory, and the old
 *          read may not return the new session's memory; the stalled call
 *          ends with ENODEV (or a short count, then ENODEV).  Closing or
 *          resetting the device must not wait for the stalled copy.
 *  memcg:  a data file's kernel buffer is charged to the memory cgroup of
 *          its user while it is in use and freed once the file is disabled
 *          (the fd still open); cycling STOP -> STOP_COPY -> STOP and
 *          RESUMING -> reset with every fd kept stays bounded, inside a
 *          cgroup with a small memory.max and in the whole machine.
 *  fault:  every allocation and user copy of STOP -> STOP_COPY,
 *          STOP -> RESUMING, a save read() and a resume write() fails once in
 *          turn (/proc/thread-self/fail-nth, failslab, fail_page_alloc,
 *          fail_usercopy): a clear errno, the state unchanged, the stream
 *          continues or fails cleanly, and a full migration works after.
 *  conc:   two migrations at once on four devices, both directions, in
 *          threads; resets racing a save and a resume.
 *
 * Every test also reads the kernel log written meanwhile (/dev/kmsg) and
 * fails on a warning, BUG, KASAN, UBSAN, lockdep, CFI or hang report.
 *
 * Usage: vfio_stress_test [harness options] BDF BDF [BDF BDF]
 *        QVP_BDFS="BDF BDF [BDF BDF]" vfio_stress_test [harness options]
 *
 * uffd, memcg and fault use the first two devices, conc needs four (with
 * fewer it reports SKIP).  In the test guest:
 *	tests/vm/run --devices 4 -- sh -c
 *	'tests/selftests/vfio_stress_test $QVP_BDFS 2>&1'
 */

#include <errno.h>
#include <fcntl.h>
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <linux/userfaultfd.h>
#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "vfio_util.h"
#include "bochs_regs.h"

#define MAX_DEVS		4

/* One MEMORY record of the stop-copy stream: MAX_CHUNK of data */
#define MAX_CHUNK		SZ_256K
#define MEM_REC_LEN		(REC_HDR + 8 + MAX_CHUNK + 4)

/* How long a stalled transfer is held before the watchdog releases it */
#define STALL_LIMIT_SECS	30

static const char *bdfs[MAX_DEVS];
static unsigned int nbdfs;

/* ---------------------------------------------------------------------- */
/* Small helpers                                                          */
/* ---------------------------------------------------------------------- */

/* Length of the stream record at @off of @buf, or 0 if not complete there. */
static size_t rec_len_at(const __u8 *buf, size_t len, size_t off)
{
	__u64 plen;

	if (len - off < REC_HDR || memcmp(buf + off, "QVPR", 4))
		return 0;
	plen = get_le64(buf + off + 16);
	if (plen > len - off - REC_HDR || len - off - REC_HDR - plen < 4)
		return 0;
	return REC_HDR + plen + 4;
}

/*
 * Check the MEMORY records in @buf[0, @len) (a stream prefix, the last record
 * possibly cut) against @pat, the VRAM they came from.  Returns the number of
 * data bytes checked, or -1 with *@bad_off the VRAM offset of a mismatch.
 */
static ssize_t check_mem_records(const __u8 *buf, size_t len, const __u8 *pat,
				 size_t vram_size, size_t *bad_off)
{
	size_t off = 0, checked = 0;

	while (len - off >= REC_HDR) {
		__u64 plen = get_le64(buf + off + 16);
		size_t have = len - off - REC_HDR;

		if (memcmp(buf + off, "QVPR", 4))
			return checked;	/* not the format: stop here */
		if (get_le32(buf + off + 4) == REC_MEMORY && plen >= 8 &&
		    have >= 8) {
			__u64 moff = get_le64(buf + off + REC_HDR);
			size_t n = plen - 8 < have - 8 ? plen - 8 : have - 8;
			ssize_t d;

			if (moff > vram_size || n > vram_size - moff) {
				*bad_off = moff;
				return -1;
			}
			d = first_diff(buf + off + REC_HDR + 8, pat + moff, n);
			if (d >= 0) {
				*bad_off = moff + d;
				return -1;
			}
			checked += n;
		}
		if (plen > have || have - plen < 4)
			break;
		off += REC_HDR + plen + 4;
	}
	return checked;
}

/* ---------------------------------------------------------------------- */
/* Devices                                                                */
/* ---------------------------------------------------------------------- */

/*
 * Open @n devices (ASSERT), check they migrate, are RUNNING and have the
 * same VRAM size; save their registers for the teardown.
 */
static void devs_setup(struct __test_metadata *_metadata, struct qdev *dev,
		       unsigned int n)
{
	const char *step;
	unsigned int i;
	__u64 flags;
	int ret;

	for (i = 0; i < MAX_DEVS; i++) {
		dev[i].fd = -1;
		dev[i].iommufd = -1;
		dev[i].vram = MAP_FAILED;
		dev[i].saved_valid = false;
	}
	for (i = 0; i < n; i++) {
		struct qdev *d = &dev[i];

		ret = dev_open(d, bdfs[i], &step);
		ASSERT_EQ(0, ret) {
			TH_LOG("%s: %s: %s", bdfs[i], step, strerror(-ret));
		}
		ret = mig_flags(d->fd, &flags);
		ASSERT_EQ(0, ret) {
			TH_LOG("%s: VFIO_DEVICE_FEATURE_MIGRATION: %s", d->bdf,
			       strerror(-ret));
		}
		expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING,
			     "after open");
		ASSERT_EQ(0, regs_read(d, &d->saved));
		d->saved_valid = true;
		ASSERT_EQ(dev[0].vram_size, d->vram_size) {
			TH_LOG("%s: all devices need the same VRAM size",
			       d->bdf);
		}
	}
}

static void devs_teardown(struct __test_metadata *_metadata, struct qdev *dev)
{
	unsigned int i;

	for (i = 0; i < MAX_DEVS; i++) {
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

/* Reopen @d (a new session): ASSERT. */
static void dev_reopen(struct __test_metadata *_metadata, struct qdev *d)
{
	const char *bdf = d->bdf, *step;
	int ret;

	dev_close(d);
	ret = dev_open(d, bdf, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: reopen: %s: %s", bdf, step, strerror(-ret));
	}
}

/*
 * Read the first @len bytes of @d's stop-copy stream into @buf: RUNNING ->
 * STOP_COPY, read, close the fd, STOP, RUNNING.
 */
static void save_prefix(struct __test_metadata *_metadata, struct qdev *d,
			__u8 *buf, size_t len)
{
	size_t done = 0;
	int dfd;

	dfd = go_state(_metadata, d, VFIO_DEVICE_STATE_STOP_COPY);
	while (done < len) {
		ssize_t n = read(dfd, buf + done, len - done);

		ASSERT_LT(0, n) {
			TH_LOG("%s: read at %zu: %s", d->bdf, done,
			       n < 0 ? strerror(errno) : "end of stream");
			close(dfd);
		}
		done += n;
	}
	close(dfd);
	go_state(_metadata, d, VFIO_DEVICE_STATE_STOP);
	go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING);
}

/* ---------------------------------------------------------------------- */
/* 1. A transfer stalled on a userfaultfd page                            */
/* ---------------------------------------------------------------------- */

/*
 * The buffer of the stalled call: page 0 is ordinary memory, the pages after
 * it are registered with userfaultfd (missing mode) and get @fill's bytes
 * when the fault is resolved.
 */
struct stall {
	int uffd;
	__u8 *area;
	size_t area_len, page;
	__u8 *fill;			/* area_len - page bytes */
	/* the stalled call */
	int fd;
	bool is_write;
	size_t len;
	ssize_t ret;
	int err;
	/* handshake */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool faulted, release, resolved, watchdog, call_done;
	int handler_err;
	const char *handler_step;
	double fault_time, resolve_time;
};

static int uffd_create(void)
{
	int fd = syscall(__NR_userfaultfd, O_CLOEXEC);
	char old[16];

	if (fd >= 0 || errno != EPERM)
		return fd;
	/* faults from kernel copies need privilege, or this knob */
	if (read_file("/proc/sys/vm/unprivileged_userfaultfd", old,
		      sizeof(old)) || write_file("/proc/sys/vm/unprivileged_userfaultfd", "1"))
		return -1;
	fd = syscall(__NR_userfaultfd, O_CLOEXEC);
	write_file("/proc/sys/vm/unprivileged_userfaultfd", old);
	return fd;
}

static int stall_init(struct stall *s, size_t len, const char **step)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->page = sysconf(_SC_PAGESIZE);
	s->area_len = (len + 2 * s->page - 1) / s->page * s->page;
	s->uffd = -1;
	*step = "mmap";
	s->area = mmap(NULL, s->area_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->area == MAP_FAILED)
		return -errno;
	s->fill = calloc(1, s->area_len - s->page);
	if (!s->fill)
		return -ENOMEM;
	memset(s->area, 0, s->page);	/* page 0 is present */
	*step = "userfaultfd()";
	s->uffd = uffd_create();
	if (s->uffd < 0)
		return -errno;
	*step = "UFFDIO_API";
	if (ioctl(s->uffd, UFFDIO_API, &api))
		return -errno;
	*step = "UFFDIO_REGISTER";
	reg.range.start = (unsigned long)s->area + s->page;
	reg.range.len = s->area_len - s->page;
	if (ioctl(s->uffd, UFFDIO_REGISTER, &reg))
		return -errno;
	return 0;
}

static void stall_destroy(struct stall *s)
{
	if (s->uffd >= 0)
		close(s->uffd);
	if (s->area && s->area != MAP_FAILED)
		munmap(s->area, s->area_len);
	free(s->fill);
}

/* Waits for the fault, then for the release (or the watchdog), resolves. */
static void *stall_handler(void *arg)
{
	struct stall *s = arg;
	struct pollfd pfd = { .fd = s->uffd, .events = POLLIN };
	struct uffdio_copy copy = { 0 };
	struct uffd_msg msg;
	struct timespec dl;
	int ret = 0;

	ret = poll(&pfd, 1, STALL_LIMIT_SECS * 1000);
	if (ret <= 0) {
		s->handler_step = ret ? "poll" : "no fault within the limit";
		s->handler_err = ret ? errno : ETIMEDOUT;
		goto resolve;
	}
	if (read(s->uffd, &msg, sizeof(msg)) != sizeof(msg) ||
	    msg.event != UFFD_EVENT_PAGEFAULT) {
		s->handler_step = "read the fault event";
		s->handler_err = errno ? errno : EIO;
		goto resolve;
	}
	pthread_mutex_lock(&s->lock);
	s->faulted = true;
	s->fault_time = now_sec();
	pthread_cond_broadcast(&s->cond);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += STALL_LIMIT_SECS;
	ret = 0;
	while (!s->release && !ret)
		ret = pthread_cond_timedwait(&s->cond, &s->lock, &dl);
	if (!s->release)
		s->watchdog = true;
	pthread_mutex_unlock(&s->lock);
resolve:
	copy.dst = (unsigned long)s->area + s->page;
	copy.src = (unsigned long)s->fill;
	copy.len = s->area_len - s->page;
	if (ioctl(s->uffd, UFFDIO_COPY, &copy) && !s->handler_err) {
		s->handler_step = "UFFDIO_COPY";
		s->handler_err = errno;
	}
	pthread_mutex_lock(&s->lock);
	s->resolved = true;
	s->resolve_time = now_sec();
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void *stall_call(void *arg)
{
	struct stall *s = arg;

	if (s->is_write)
		s->ret = write(s->fd, s->area, s->len);
	else
		s->ret = read(s->fd, s->area, s->len);
	s->err = s->ret < 0 ? errno : 0;
	pthread_mutex_lock(&s->lock);
	s->call_done = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Wait until the handler saw the fault or gave up; true if it faulted. */
static bool stall_wait_fault(struct stall *s)
{
	pthread_mutex_lock(&s->lock);
	while (!s->faulted && !s->resolved && !s->call_done)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	return s->faulted;
}

static void stall_release(struct stall *s)
{
	pthread_mutex_lock(&s->lock);
	s->release = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

enum stall_action { ACT_CLOSE_REOPEN, ACT_RESET };

FIXTURE(uffd) {
	struct qdev dev[MAX_DEVS];
	int kmsg;
};

FIXTURE_VARIANT(uffd) {
	bool resume;
	enum stall_action action;
};

FIXTURE_VARIANT_ADD(uffd, resume_close_reopen) {
	.resume = true, .action = ACT_CLOSE_REOPEN,
};
FIXTURE_VARIANT_ADD(uffd, resume_reset) {
	.resume = true, .action = ACT_RESET,
};
FIXTURE_VARIANT_ADD(uffd, save_close_reopen) {
	.resume = false, .action = ACT_CLOSE_REOPEN,
};
FIXTURE_VARIANT_ADD(uffd, save_reset) {
	.resume = false, .action = ACT_RESET,
};

FIXTURE_SETUP(uffd)
{
	self->kmsg = kmsg_open();
	if (nbdfs < 2)
		SKIP(return, "needs two devices, %u given", nbdfs);
	devs_setup(_metadata, self->dev, 2);
}

FIXTURE_TEARDOWN(uffd)
{
	devs_teardown(_metadata, self->dev);
	expect_clean_kmsg(_metadata, self->kmsg);
	if (self->kmsg >= 0)
		close(self->kmsg);
}

/*
 * Resume: device B gets HEADER and DEVICE_REGS of A's stream, then one
 * write() of A's first MEMORY record whose payload lies on userfaultfd pages.
 * Save: A's data fd is read into such a buffer.  While the copy is stalled
 * the device is closed and reopened (or reset) and its VRAM filled with a new
 * pattern; then the fault is resolved.
 */
TEST_F_TIMEOUT(uffd, stalled_copy, 150)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	struct qdev *d = variant->resume ? b : a;
	const size_t vram = a->vram_size;
	const size_t prefix_cap = SZ_1M;
	__u8 *old_pat, *new_pat, *prefix;
	size_t hdr_len = 0, rec_len, off;
	pthread_t handler, caller;
	struct regs regs;
	struct stall s;
	double t0, act_secs;
	const char *step;
	ssize_t bad;
	int dfd, ret, i;

	old_pat = malloc(vram);
	new_pat = malloc(vram);
	prefix = malloc(prefix_cap);
	ASSERT_TRUE(old_pat && new_pat && prefix);
	fill_pattern(old_pat, vram, fresh_seed());
	fill_pattern(new_pat, vram, fresh_seed());
	regs_make(&regs, 0, fresh_seed());

	/* A's VRAM: the old pattern; the start of its stream */
	memcpy(a->vram, old_pat, vram);
	ASSERT_EQ(0, regs_write(a, &regs));
	save_prefix(_metadata, a, prefix, prefix_cap);
	/* HEADER, DEVICE_REGS, then MEMORY(0) */
	for (off = 0, i = 0; i < 2; i++) {
		size_t n = rec_len_at(prefix, prefix_cap, off);

		ASSERT_NE(0, n) {
			TH_LOG("record %d of the stream is not complete in %zu bytes",
			       i, prefix_cap);
		}
		off += n;
	}
	hdr_len = off;
	rec_len = rec_len_at(prefix, prefix_cap, hdr_len);
	ASSERT_EQ(MEM_REC_LEN, rec_len) {
		TH_LOG("the third record is %zu bytes, not a full MEMORY record",
		       rec_len);
	}
	ASSERT_EQ(REC_MEMORY, get_le32(prefix + hdr_len + 4));
	ASSERT_EQ(0, get_le64(prefix + hdr_len + REC_HDR));

	ret = stall_init(&s, variant->resume ? rec_len : SZ_1M, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("userfaultfd: %s: %s", step, strerror(-ret));
	}

	if (variant->resume) {
		/* B: RESUMING, HEADER and DEVICE_REGS written normally */
		dfd = go_state(_metadata, b, VFIO_DEVICE_STATE_RESUMING);
		ASSERT_EQ(hdr_len, write(dfd, prefix, hdr_len)) {
			TH_LOG("write of HEADER + DEVICE_REGS: %s",
			       strerror(errno));
		}
		/* the record: its first page present, the rest faults */
		memcpy(s.area, prefix + hdr_len, s.page);
		memcpy(s.fill, prefix + hdr_len + s.page, rec_len - s.page);
		s.is_write = true;
		s.len = rec_len;
	} else {
		dfd = go_state(_metadata, a, VFIO_DEVICE_STATE_STOP_COPY);
		s.is_write = false;
		s.len = SZ_1M;
	}
	s.fd = dfd;

	ASSERT_EQ(0, pthread_create(&handler, NULL, stall_handler, &s));
	ASSERT_EQ(0, pthread_create(&caller, NULL, stall_call, &s));
	if (!stall_wait_fault(&s)) {
		pthread_join(handler, NULL);
		pthread_join(caller, NULL);
		ASSERT_TRUE(s.faulted) {
			TH_LOG("the %s never touched the userfaultfd pages (%s: %s); returned %zd",
			       variant->resume ? "write" : "read",
			       s.handler_step ? s.handler_step : "?",
			       strerror(s.handler_err), s.ret);
		}
	}
	TH_LOG("%s stalled on the userfaultfd page", variant->resume ?
	       "write() of the MEMORY record" : "read() of the stream");

	/* the device's session ends while the copy is stalled */
	t0 = now_sec();
	if (variant->action == ACT_CLOSE_REOPEN) {
		dev_reopen(_metadata, d);
		expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING,
			     "reopened during a stalled transfer");
	} else {
		ret = device_reset(d);
		EXPECT_EQ(0, ret) {
			TH_LOG("VFIO_DEVICE_RESET during a stalled transfer: %s",
			       strerror(-ret));
		}
		expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING,
			     "reset during a stalled transfer");
	}
	act_secs = now_sec() - t0;
	EXPECT_FALSE(s.watchdog || s.resolved) {
		TH_LOG("%s waited for the stalled transfer (%.1f s, released by the watchdog)",
		       variant->action == ACT_RESET ? "the reset" : "close and reopen",
		       act_secs);
	}
	/* the new session's memory */
	memcpy(d->vram, new_pat, vram);
	stall_release(&s);
	ASSERT_EQ(0, pthread_join(handler, NULL));
	ASSERT_EQ(0, pthread_join(caller, NULL));
	EXPECT_EQ(0, s.handler_err) {
		TH_LOG("fault handler: %s: %s", s.handler_step,
		       strerror(s.handler_err));
	}
	TH_LOG("%s %.3f s; stalled call returned %zd%s%s",
	       variant->action == ACT_RESET ? "reset" : "close + reopen",
	       act_secs, s.ret, s.ret < 0 ? ": " : "",
	       s.ret < 0 ? strerror(s.err) : "");

	if (variant->resume) {
		/* ENODEV, or a short count and then ENODEV */
		if (s.ret >= 0) {
			ssize_t n;

			EXPECT_GT(rec_len, s.ret) {
				TH_LOG("the whole record was accepted after the session ended");
			}
			n = write(dfd, prefix + hdr_len + s.ret,
				  rec_len - s.ret);
			EXPECT_EQ(-1, n);
			EXPECT_EQ(ENODEV, errno) {
				TH_LOG("write after the short count: %s",
				       n < 0 ? strerror(errno) : "accepted");
			}
		} else {
			EXPECT_EQ(ENODEV, s.err) {
				TH_LOG("stalled write failed with %s, want ENODEV",
				       strerror(s.err));
			}
		}
		/* the new session's VRAM holds its own pattern only */
		TH_LOG("comparing the new session's VRAM");
		bad = first_diff(d->vram, new_pat, vram);
		EXPECT_EQ(-1, bad) {
			TH_LOG("the new session's VRAM changed at %#zx: %#x, want %#x (%s)",
			       bad, d->vram[bad], new_pat[bad],
			       d->vram[bad] == old_pat[bad] ?
			       "the old session's record landed" : "other data");
		}
		if (bad >= 0) {
			size_t n = 0;

			while (n < MAX_CHUNK && d->vram[n] == old_pat[n])
				n++;
			TH_LOG("VRAM [0, %#zx) holds the old session's MEMORY record",
			       n);
		}
	} else {
		size_t checked = 0, bad_off = 0;
		ssize_t c;

		if (s.ret >= 0) {
			ssize_t n;

			/* only bytes of the old session: its old VRAM */
			c = check_mem_records(s.area, s.ret, old_pat, vram,
					      &bad_off);
			EXPECT_LE(0, c) {
				TH_LOG("the old stream carries VRAM at %#zx that is not the old session's (%s)",
				       bad_off, s.area[0] ? "" : "empty");
			}
			checked = c > 0 ? c : 0;
			n = read(dfd, prefix, 4096);
			EXPECT_EQ(-1, n);
			EXPECT_EQ(ENODEV, errno) {
				TH_LOG("read after the session ended: %s",
				       n < 0 ? strerror(errno) : "data");
			}
		} else {
			EXPECT_EQ(ENODEV, s.err) {
				TH_LOG("stalled read failed with %s, want ENODEV",
				       strerror(s.err));
			}
		}
		TH_LOG("%zu bytes of VRAM in the old stream, all the old session's",
		       checked);
		bad = first_diff(d->vram, new_pat, vram);
		EXPECT_EQ(-1, bad) {
			TH_LOG("the new session's VRAM changed at %#zx", bad);
		}
	}
	close(dfd);
	stall_destroy(&s);
	free(prefix);
	free(old_pat);
	free(new_pat);

	/* both devices still migrate */
	TH_LOG("migrating %s -> %s", a->bdf, b->bdf);
	migrate_simple(_metadata, a, b);
}

/* ---------------------------------------------------------------------- */
/* 2. Memory cgroup accounting of the data files                          */
/* ---------------------------------------------------------------------- */

#define CG_ROOT			"/sys/fs/cgroup"
#define CG_MAX			(16 * SZ_1M)
/* a data file's buffer is one record: SCRATCH_LEN, about 256 KiB */
#define CHARGE_MIN		(200 * 1024L)
#define CHARGE_SLACK		(128 * 1024L)
#define MEMCG_CYCLES		64

struct cg_stat {
	long long current, peak, kernel, slab, vmalloc;
};

FIXTURE(memcg) {
	struct qdev dev[MAX_DEVS];
	int kmsg;
	char path[PATH_MAX];
	char origin[PATH_MAX + 64];	/* the cgroup the test came from */
	bool moved;
};

static long long stat_field(const char *stat, const char *key)
{
	size_t klen = strlen(key);
	const char *p = stat;

	while (p && *p) {
		if (!strncmp(p, key, klen) && p[klen] == ' ')
			return atoll(p + klen + 1);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

/*
 * The cgroup's figures.  memory.stat is flushed every 2 s; wait for that,
 * and take the charge counters from it (memory.current moves in per-CPU
 * batches of 64 pages).
 */
static int cg_read(const char *cg, struct cg_stat *st)
{
	static char buf[16384];
	char path[PATH_MAX + 32];
	int ret;

	sleep_ms(2300);
	snprintf(path, sizeof(path), "%s/memory.stat", cg);
	ret = read_file(path, buf, sizeof(buf));
	if (ret)
		return ret;
	st->kernel = stat_field(buf, "kernel");
	st->slab = stat_field(buf, "slab_unreclaimable");
	st->vmalloc = stat_field(buf, "vmalloc");
	snprintf(path, sizeof(path), "%s/memory.current", cg);
	ret = read_file(path, buf, sizeof(buf));
	if (ret)
		return ret;
	st->current = atoll(buf);
	snprintf(path, sizeof(path), "%s/memory.peak", cg);
	st->peak = read_file(path, buf, sizeof(buf)) ? -1 : atoll(buf);
	return st->kernel < 0 ? -ENOENT : 0;
}

static long long meminfo_kib(const char *key)
{
	static char buf[8192];
	const char *p;

	if (read_file("/proc/meminfo", buf, sizeof(buf)))
		return -1;
	p = strstr(buf, key);
	return p ? atoll(p + strlen(key) + 1) : -1;
}

static void log_cg(struct __test_metadata *_metadata, const char *what,
		   const struct cg_stat *st, const struct cg_stat *base)
{
	TH_LOG("%-34s kernel %+6lld KiB (slab %+lld, vmalloc %+lld), current %+lld KiB, peak %lld KiB",
	       what, (st->kernel - base->kernel) / 1024,
	       (st->slab - base->slab) / 1024,
	       (st->vmalloc - base->vmalloc) / 1024,
	       (st->current - base->current) / 1024, st->peak / 1024);
}

FIXTURE_SETUP(memcg)
{
	char buf[PATH_MAX + 16], line[512];
	int ret;

	self->kmsg = kmsg_open();
	self->moved = false;
	self->path[0] = 0;
	if (nbdfs < 2)
		SKIP(return, "needs two devices, %u given", nbdfs);
	devs_setup(_metadata, self->dev, 2);

	if (access(CG_ROOT "/cgroup.controllers", F_OK)) {
		mkdir(CG_ROOT, 0755);
		ASSERT_EQ(0, mount("none", CG_ROOT, "cgroup2", 0, NULL)) {
			TH_LOG("mount cgroup2 on %s: %s", CG_ROOT,
			       strerror(errno));
		}
	}
	ASSERT_EQ(0, read_file(CG_ROOT "/cgroup.controllers", line,
			       sizeof(line)));
	if (!strstr(line, "memory"))
		SKIP(return, "no memory controller in cgroup2 (%s)", line);
	ret = write_file(CG_ROOT "/cgroup.subtree_control", "+memory");
	ASSERT_EQ(0, ret) {
		TH_LOG("enable the memory controller: %s", strerror(-ret));
	}
	/* where we are: "0::/path" */
	ASSERT_EQ(0, read_file("/proc/self/cgroup", line, sizeof(line)));
	ASSERT_EQ(0, strncmp(line, "0::", 3)) {
		TH_LOG("not a cgroup2 process: %s", line);
	}
	snprintf(self->origin, sizeof(self->origin), "%s%s", CG_ROOT,
		 line + 3);
	snprintf(self->path, sizeof(self->path), "%s/vfio_stress_%d",
		 CG_ROOT, getpid());
	ASSERT_EQ(0, mkdir(self->path, 0755)) {
		TH_LOG("mkdir %s: %s", self->path, strerror(errno));
	}
	snprintf(buf, sizeof(buf), "%s/memory.max", self->path);
	snprintf(line, sizeof(line), "%lu", CG_MAX);
	ASSERT_EQ(0, write_file(buf, line));
	snprintf(buf, sizeof(buf), "%s/cgroup.procs", self->path);
	snprintf(line, sizeof(line), "%d", getpid());
	ret = write_file(buf, line);
	ASSERT_EQ(0, ret) {
		TH_LOG("move into %s: %s", self->path, strerror(-ret));
	}
	self->moved = true;
}

FIXTURE_TEARDOWN(memcg)
{
	char buf[PATH_MAX + 128], pid[16];

	devs_teardown(_metadata, self->dev);
	if (self->moved) {
		snprintf(buf, sizeof(buf), "%s/cgroup.procs", self->origin);
		snprintf(pid, sizeof(pid), "%d", getpid());
		EXPECT_EQ(0, write_file(buf, pid));
	}
	if (self->path[0])
		rmdir(self->path);
	expect_clean_kmsg(_metadata, self->kmsg);
	if (self->kmsg >= 0)
		close(self->kmsg);
}

/*
 * A save file and a resume file in use: their buffer is charged to the
 * cgroup; once the file is disabled (state left, reset) it is freed,
 * although the fd stays open.
 */
TEST_F_TIMEOUT(memcg, charged_while_used_freed_when_disabled, 120)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	struct cg_stat base, used, left;
	__u8 hdr[16] = "QVPR";
	char c;
	int dfd;

	/* saving */
	ASSERT_EQ(0, cg_read(self->path, &base));
	dfd = go_state(_metadata, a, VFIO_DEVICE_STATE_STOP_COPY);
	ASSERT_EQ(1, read(dfd, &c, 1));
	ASSERT_EQ(0, cg_read(self->path, &used));
	go_state(_metadata, a, VFIO_DEVICE_STATE_STOP);
	EXPECT_EQ(-1, read(dfd, &c, 1));
	EXPECT_EQ(ENODEV, errno);
	ASSERT_EQ(0, cg_read(self->path, &left));
	log_cg(_metadata, "save fd in use:", &used, &base);
	log_cg(_metadata, "save fd disabled, still open:", &left, &base);
	EXPECT_LE(CHARGE_MIN, used.kernel - base.kernel) {
		TH_LOG("a save file in use is charged %lld KiB to the cgroup, want >= %lu KiB",
		       (used.kernel - base.kernel) / 1024, CHARGE_MIN / 1024);
	}
	EXPECT_GE(CHARGE_SLACK, left.kernel - base.kernel) {
		TH_LOG("a disabled save file still holds %lld KiB",
		       (left.kernel - base.kernel) / 1024);
	}
	close(dfd);
	go_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING);

	/* resuming: the first bytes of a record header */
	ASSERT_EQ(0, cg_read(self->path, &base));
	dfd = go_state(_metadata, b, VFIO_DEVICE_STATE_RESUMING);
	ASSERT_EQ(sizeof(hdr), write(dfd, hdr, sizeof(hdr)));
	ASSERT_EQ(0, cg_read(self->path, &used));
	ASSERT_EQ(0, device_reset(b));
	EXPECT_EQ(-1, write(dfd, hdr, sizeof(hdr)));
	EXPECT_EQ(ENODEV, errno);
	ASSERT_EQ(0, cg_read(self->path, &left));
	log_cg(_metadata, "resume fd in use:", &used, &base);
	log_cg(_metadata, "resume fd disabled, still open:", &left, &base);
	EXPECT_LE(CHARGE_MIN, used.kernel - base.kernel) {
		TH_LOG("a resume file in use is charged %lld KiB to the cgroup, want >= %lu KiB",
		       (used.kernel - base.kernel) / 1024, CHARGE_MIN / 1024);
	}
	EXPECT_GE(CHARGE_SLACK, left.kernel - base.kernel) {
		TH_LOG("a disabled resume file still holds %lld KiB",
		       (left.kernel - base.kernel) / 1024);
	}
	close(dfd);
}

/*
 * MEMCG_CYCLES times STOP -> STOP_COPY (read a byte) -> STOP and RESUMING
 * (write a few bytes) -> reset, keeping every fd: each step succeeds inside
 * memory.max, the cgroup's charge and the machine's free memory stay within
 * a few MiB.  Today's driver keeps 256 KiB per fd outside the cgroup.
 */
TEST_F_TIMEOUT(memcg, cycles_with_fds_kept_stay_bounded, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	int save_fds[MEMCG_CYCLES], resume_fds[MEMCG_CYCLES];
	const long long bound = 4 * SZ_1M;
	long long avail0, avail1, drop;
	struct cg_stat base, after;
	__u8 hdr[16] = "QVPR";
	unsigned int i, errors = 0;
	double t0 = now_sec();
	char c;

	ASSERT_EQ(0, cg_read(self->path, &base));
	avail0 = meminfo_kib("MemAvailable:");
	go_state(_metadata, a, VFIO_DEVICE_STATE_STOP);
	for (i = 0; i < MEMCG_CYCLES; i++) {
		int ret = mig_set(a->fd, VFIO_DEVICE_STATE_STOP_COPY,
				  &save_fds[i]);

		if (ret) {
			save_fds[i] = -1;
			if (!errors++)
				TH_LOG("cycle %u: STOP -> STOP_COPY: %s", i,
				       strerror(-ret));
			continue;
		}
		if (read(save_fds[i], &c, 1) != 1 && !errors++)
			TH_LOG("cycle %u: read: %s", i, strerror(errno));
		ret = mig_set(a->fd, VFIO_DEVICE_STATE_STOP, NULL);
		if (ret && !errors++)
			TH_LOG("cycle %u: STOP_COPY -> STOP: %s", i,
			       strerror(-ret));
	}
	for (i = 0; i < MEMCG_CYCLES; i++) {
		int ret = mig_set(b->fd, VFIO_DEVICE_STATE_RESUMING,
				  &resume_fds[i]);

		if (ret) {
			resume_fds[i] = -1;
			if (!errors++)
				TH_LOG("cycle %u: -> RESUMING: %s", i,
				       strerror(-ret));
			continue;
		}
		if (write(resume_fds[i], hdr, sizeof(hdr)) != sizeof(hdr) &&
		    !errors++)
			TH_LOG("cycle %u: write: %s", i, strerror(errno));
		ret = device_reset(b);
		if (ret && !errors++)
			TH_LOG("cycle %u: reset: %s", i, strerror(-ret));
	}
	ASSERT_EQ(0, cg_read(self->path, &after));
	avail1 = meminfo_kib("MemAvailable:");
	drop = (avail0 - avail1) * 1024;
	TH_LOG("%u save and %u resume cycles, all %u fds open, in %.1f s",
	       MEMCG_CYCLES, MEMCG_CYCLES, 2 * MEMCG_CYCLES, now_sec() - t0);
	log_cg(_metadata, "after the cycles:", &after, &base);
	TH_LOG("machine: MemAvailable dropped by %lld KiB (%lld KiB per fd)",
	       drop / 1024, drop / 1024 / (2 * MEMCG_CYCLES));
	EXPECT_EQ(0, errors) {
		TH_LOG("%u steps failed inside memory.max = %lu MiB", errors,
		       CG_MAX / SZ_1M);
	}
	EXPECT_GE(bound, after.kernel - base.kernel);
	EXPECT_GE(bound, after.current - base.current);
	/* what the cgroup does not see must not pile up elsewhere */
	EXPECT_GT((long long)(MEMCG_CYCLES * SZ_256K), drop) {
		TH_LOG("%u kept fds hold %lld KiB of the machine's memory outside the cgroup's charge",
		       2 * MEMCG_CYCLES, drop / 1024);
	}
	for (i = 0; i < MEMCG_CYCLES; i++) {
		if (save_fds[i] >= 0)
			close(save_fds[i]);
		if (resume_fds[i] >= 0)
			close(resume_fds[i]);
	}
	go_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING);
}

/* ---------------------------------------------------------------------- */
/* 3. Fault injection                                                     */
/* ---------------------------------------------------------------------- */

#define DEBUGFS			"/sys/kernel/debug"
#define FI_MAX_SITES		400
#define FI_PREFIX		(2 * SZ_1M)	/* reference stream bytes */

enum fi_call { FI_STOP_COPY, FI_RESUMING, FI_READ, FI_WRITE };

static const char *const fi_knobs[][2] = {
	{ "failslab/ignore-gfp-wait", "N" },
	{ "failslab/cache-filter", "N" },
	{ "fail_page_alloc/ignore-gfp-wait", "N" },
	{ "fail_page_alloc/min-order", "0" },
	{ "failslab/task-filter", "Y" },
	{ "fail_page_alloc/task-filter", "Y" },
	{ "fail_usercopy/task-filter", "Y" },
	{ "failslab/verbose", "1" },
	{ "fail_page_alloc/verbose", "1" },
	{ "fail_usercopy/verbose", "1" },
	{ "failslab/space", "0" },
	{ "fail_page_alloc/space", "0" },
	{ "fail_usercopy/space", "0" },
};

FIXTURE(fault) {
	struct qdev dev[MAX_DEVS];
	int kmsg;
	int nth;		/* /proc/thread-self/fail-nth */
	char saved[ARRAY_SIZE(fi_knobs)][32];
	bool knob_saved[ARRAY_SIZE(fi_knobs)];
	__u8 *ref;		/* the first FI_PREFIX bytes of A's stream */
	__u8 *pat;		/* A's VRAM */
	__u8 *buf;
	size_t hdr_len;		/* HEADER + DEVICE_REGS */
};

FIXTURE_VARIANT(fault) {
	enum fi_call call;
};

FIXTURE_VARIANT_ADD(fault, stop_to_stop_copy) { .call = FI_STOP_COPY };
FIXTURE_VARIANT_ADD(fault, stop_to_resuming) { .call = FI_RESUMING };
FIXTURE_VARIANT_ADD(fault, save_read) { .call = FI_READ };
FIXTURE_VARIANT_ADD(fault, resume_write) { .call = FI_WRITE };

FIXTURE_SETUP(fault)
{
	char path[PATH_MAX];
	struct regs regs;
	unsigned int i;
	size_t off;

	self->kmsg = kmsg_open();
	self->nth = -1;
	self->ref = self->pat = self->buf = NULL;
	memset(self->knob_saved, 0, sizeof(self->knob_saved));
	if (nbdfs < 2)
		SKIP(return, "needs two devices, %u given", nbdfs);
	if (access(DEBUGFS "/failslab", F_OK))
		mount("none", DEBUGFS, "debugfs", 0, NULL);
	for (i = 0; i < 3; i++) {
		static const char *const dirs[] = {
			"failslab", "fail_page_alloc", "fail_usercopy",
		};

		snprintf(path, sizeof(path), DEBUGFS "/%s", dirs[i]);
		if (access(path, F_OK))
			SKIP(return, "%s/%s missing: kernel without CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC, CONFIG_FAULT_INJECTION_USERCOPY and CONFIG_FAULT_INJECTION_DEBUG_FS",
			     DEBUGFS, dirs[i]);
	}
	self->nth = open("/proc/thread-self/fail-nth", O_RDWR | O_CLOEXEC);
	if (self->nth < 0)
		SKIP(return, "/proc/thread-self/fail-nth: %s", strerror(errno));
	for (i = 0; i < ARRAY_SIZE(fi_knobs); i++) {
		snprintf(path, sizeof(path), DEBUGFS "/%s", fi_knobs[i][0]);
		ASSERT_EQ(0, read_file(path, self->saved[i],
				       sizeof(self->saved[i]))) {
			TH_LOG("%s: %s", path, strerror(errno));
		}
		self->knob_saved[i] = true;
		ASSERT_EQ(0, write_file(path, fi_knobs[i][1])) {
			TH_LOG("%s = %s", path, fi_knobs[i][1]);
		}
	}
	devs_setup(_metadata, self->dev, 2);

	/* A's stream, the reference for every continuation */
	self->pat = malloc(self->dev[0].vram_size);
	self->ref = malloc(FI_PREFIX);
	self->buf = malloc(FI_PREFIX);
	ASSERT_TRUE(self->pat && self->ref && self->buf);
	memset(self->buf, 0, FI_PREFIX);	/* no page faults while armed */
	fill_pattern(self->pat, self->dev[0].vram_size, fresh_seed());
	memcpy(self->dev[0].vram, self->pat, self->dev[0].vram_size);
	regs_make(&regs, 1, fresh_seed());
	ASSERT_EQ(0, regs_write(&self->dev[0], &regs));
	save_prefix(_metadata, &self->dev[0], self->ref, FI_PREFIX);
	off = rec_len_at(self->ref, FI_PREFIX, 0);
	ASSERT_NE(0, off);
	self->hdr_len = off + rec_len_at(self->ref, FI_PREFIX, off);
	ASSERT_LT(off, self->hdr_len);
	kmsg_mark("fault injection begins (failures and allocation warnings below are injected)");
}

FIXTURE_TEARDOWN(fault)
{
	char path[PATH_MAX];
	unsigned int i;

	if (self->nth >= 0) {
		if (write(self->nth, "0", 1) < 0)
			TH_LOG("disarm fail-nth: %s", strerror(errno));
		close(self->nth);
	}
	for (i = 0; i < ARRAY_SIZE(fi_knobs); i++) {
		if (!self->knob_saved[i])
			continue;
		snprintf(path, sizeof(path), DEBUGFS "/%s", fi_knobs[i][0]);
		write_file(path, self->saved[i]);
	}
	kmsg_mark("fault injection ends");
	devs_teardown(_metadata, self->dev);
	expect_clean_kmsg(_metadata, self->kmsg);
	if (self->kmsg >= 0)
		close(self->kmsg);
	free(self->pat);
	free(self->ref);
	free(self->buf);
}

static void fi_arm(struct __test_metadata *_metadata, int nth, unsigned int n)
{
	char num[16];
	int len = snprintf(num, sizeof(num), "%u", n);

	ASSERT_EQ(len, pwrite(nth, num, len, 0));
}

/*
 * True if the armed fault was injected during the call (fail-nth reads 0);
 * disarms.  Reading fail-nth is itself a fault site (its copy_to_user): if the
 * call left the count at 1, this read is the one that fails (EFAULT), so the
 * call was not reached by the fault.  The write that disarms may fail the
 * same way once; then the count is 0 already.
 */
static bool fi_injected(struct __test_metadata *_metadata, int nth)
{
	char num[16] = { 0 };
	bool hit;
	int i;

	if (pread(nth, num, sizeof(num) - 1, 0) < 0) {
		ASSERT_EQ(EFAULT, errno);
		hit = false;
	} else {
		hit = atoi(num) == 0;
	}
	for (i = 0; i < 3; i++)
		if (pwrite(nth, "0", 1, 0) == 1)
			break;
	ASSERT_GT(3, i) {
		TH_LOG("disarm fail-nth: %s", strerror(errno));
	}
	return hit;
}

/* Whatever state @d is in: to STOP (out of RESUMING by a reset). */
static void back_to_stop(struct __test_metadata *_metadata, struct qdev *d)
{
	__u32 state;

	ASSERT_EQ(0, mig_get(d->fd, &state));
	if (state == VFIO_DEVICE_STATE_RESUMING) {
		ASSERT_EQ(0, device_reset(d));
		state = VFIO_DEVICE_STATE_RUNNING;
	}
	if (state != VFIO_DEVICE_STATE_STOP)
		go_state(_metadata, d, VFIO_DEVICE_STATE_STOP);
}

static bool fi_errno_ok(int e)
{
	return e == ENOMEM || e == EFAULT;
}

/*
 * Read @len bytes of the saving stream @dfd, expected to equal ref[@pos...];
 * 0, or -errno of the failing read, or -EBADMSG on different data.
 */
static int fi_read_check(int dfd, __u8 *buf, const __u8 *ref, size_t pos,
			 size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(dfd, buf, len - done);

		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		if (memcmp(buf, ref + pos + done, n))
			return -EBADMSG;
		done += n;
	}
	return 0;
}

TEST_F_TIMEOUT(fault, each_site_once, 900)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	const __u32 before = variant->call == FI_READ ?
		VFIO_DEVICE_STATE_STOP_COPY : variant->call == FI_WRITE ?
		VFIO_DEVICE_STATE_RESUMING : VFIO_DEVICE_STATE_STOP;
	struct qdev *d = variant->call == FI_STOP_COPY ||
			 variant->call == FI_READ ? a : b;
	unsigned int k, injected = 0, tolerated = 0, failed = 0;
	unsigned int core_changed = 0, last_clean_fail = 0;
	unsigned int first_core_changed = 0;
	unsigned int errs[3] = { 0 };	/* ENOMEM, EFAULT, other */
	struct kmsg_stats ks = { 0 };
	double t0 = now_sec();
	bool done = false;

	kmsg_drain(_metadata, self->kmsg, &ks);
	memset(&ks, 0, sizeof(ks));

	for (k = 1; k <= FI_MAX_SITES && !done; k++) {
		int dfd = -1, newfd = -1, ret, err = 0;
		ssize_t n = 0;
		bool hit;
		__u32 state;

		/* the state before the call */
		back_to_stop(_metadata, d);
		if (variant->call == FI_WRITE)
			memset(d->vram, 0x5a, FI_PREFIX);
		if (variant->call == FI_READ || variant->call == FI_WRITE)
			dfd = go_state(_metadata, d, before);
		if (variant->call == FI_WRITE) {
			ASSERT_EQ(self->hdr_len,
				  write(dfd, self->ref, self->hdr_len));
		}

		/* the call, with the k-th fault armed */
		fi_arm(_metadata, self->nth, k);
		switch (variant->call) {
		case FI_STOP_COPY:
			ret = mig_set(d->fd, VFIO_DEVICE_STATE_STOP_COPY,
				      &newfd);
			err = -ret;
			break;
		case FI_RESUMING:
			ret = mig_set(d->fd, VFIO_DEVICE_STATE_RESUMING,
				      &newfd);
			err = -ret;
			break;
		case FI_READ:
			n = read(dfd, self->buf, SZ_1M);
			err = n < 0 ? errno : 0;
			ret = n < 0 ? -err : 0;
			break;
		case FI_WRITE:
		default:
			n = write(dfd, self->ref + self->hdr_len, SZ_1M);
			err = n < 0 ? errno : 0;
			ret = n < 0 ? -err : 0;
			break;
		}
		hit = fi_injected(_metadata, self->nth);
		kmsg_drain(_metadata, self->kmsg, &ks);
		if (!hit)
			done = true;	/* no k-th site: a clean run */
		else
			injected++;

		ASSERT_EQ(0, mig_get(d->fd, &state));
		if (!ret) {
			if (hit)
				tolerated++;
		} else {
			failed++;
			errs[err == ENOMEM ? 0 : err == EFAULT ? 1 : 2]++;
			EXPECT_TRUE(fi_errno_ok(err)) {
				TH_LOG("site %u: failed with %s (%d), want ENOMEM or EFAULT",
				       k, strerror(err), err);
			}
			EXPECT_TRUE(hit) {
				TH_LOG("site %u: failed with %s without an injected fault",
				       k, strerror(err));
			}
		}

		switch (variant->call) {
		case FI_STOP_COPY:
		case FI_RESUMING: {
			const __u32 to = variant->call == FI_STOP_COPY ?
				VFIO_DEVICE_STATE_STOP_COPY :
				VFIO_DEVICE_STATE_RESUMING;

			if (!ret) {
				EXPECT_EQ(to, state);
				EXPECT_LE(0, newfd) {
					TH_LOG("site %u: success without a data fd", k);
				}
				if (newfd >= 0 && to == VFIO_DEVICE_STATE_STOP_COPY) {
					ret = fi_read_check(newfd, self->buf,
							    self->ref, 0, SZ_64K);
					EXPECT_EQ(0, ret) {
						TH_LOG("site %u: the new stream: %s",
						       k, strerror(-ret));
					}
				} else if (newfd >= 0) {
					EXPECT_EQ(self->hdr_len,
						  write(newfd, self->ref,
							self->hdr_len)) {
						TH_LOG("site %u: write to the new resume fd: %s",
						       k, strerror(errno));
					}
				}
			} else if (state == to) {
				/*
				 * The driver's set_state succeeded and vfio
				 * core failed after it (a fd, copy_to_user):
				 * the fd is lost, the state stays changed.
				 * Only the last sites of the call may do that.
				 */
				core_changed++;
				if (!first_core_changed)
					first_core_changed = k;
				TH_LOG("site %u: %s, but the state is %s (vfio core failed after the driver's set_state)",
				       k, strerror(err), state_name(state));
			} else {
				last_clean_fail = k;
				EXPECT_EQ(VFIO_DEVICE_STATE_STOP, state) {
					TH_LOG("site %u: %s left the state %s, want STOP",
					       k, strerror(err),
					       state_name(state));
				}
			}
			if (newfd >= 0)
				close(newfd);
			/* back to STOP: from RESUMING only by reset */
			if (state == VFIO_DEVICE_STATE_RESUMING)
				ASSERT_EQ(0, device_reset(d));
			break;
		}
		case FI_READ: {
			size_t pos = n > 0 ? n : 0;

			EXPECT_EQ(VFIO_DEVICE_STATE_STOP_COPY, state) {
				TH_LOG("site %u: state %s after the read", k,
				       state_name(state));
			}
			if (n > 0) {
				EXPECT_EQ(0, memcmp(self->buf, self->ref, n)) {
					TH_LOG("site %u: the %zd bytes read differ from the stream",
					       k, n);
				}
			}
			/* the stream continues, or fails cleanly */
			ret = fi_read_check(dfd, self->buf, self->ref, pos,
					    FI_PREFIX - pos);
			if (ret) {
				EXPECT_NE(-EBADMSG, ret) {
					TH_LOG("site %u: the stream continues with wrong bytes",
					       k);
				}
				EXPECT_NE(-ENODATA, ret) {
					TH_LOG("site %u: the stream ends early", k);
				}
				TH_LOG("site %u: the stream failed after the fault: %s",
				       k, strerror(-ret));
			}
			close(dfd);
			break;
		}
		case FI_WRITE: {
			size_t pos = self->hdr_len + (n > 0 ? n : 0);
			size_t len = FI_PREFIX - pos, applied;
			ssize_t w = 0;

			EXPECT_EQ(VFIO_DEVICE_STATE_RESUMING, state) {
				TH_LOG("site %u: state %s after the write", k,
				       state_name(state));
			}
			while (len) {
				w = write(dfd, self->ref + pos, len);
				if (w <= 0)
					break;
				pos += w;
				len -= w;
			}
			if (len) {
				TH_LOG("site %u: the stream failed after the fault: %s",
				       k, w < 0 ? strerror(errno) : "no progress");
				/* failed cleanly: it stays failed */
				EXPECT_EQ(-1, write(dfd, self->ref + pos, 16));
				EXPECT_NE(0, mig_set(d->fd,
						     VFIO_DEVICE_STATE_STOP,
						     NULL));
			} else {
				/* the complete records went into VRAM */
				applied = (FI_PREFIX - self->hdr_len) /
					  MEM_REC_LEN * MAX_CHUNK;
				EXPECT_EQ(-1, first_diff(d->vram, self->pat,
							 applied)) {
					TH_LOG("site %u: VRAM differs after the stream continued",
					       k);
				}
			}
			close(dfd);
			ASSERT_EQ(0, device_reset(d));
			break;
		}
		}
	}
	TH_LOG("%s: %u sites in %.1f s: %u injected (failslab %u, fail_page_alloc %u, fail_usercopy %u), %u tolerated, %u failed (ENOMEM %u, EFAULT %u, other %u); %u allocation warnings",
	       variant->call == FI_STOP_COPY ? "STOP -> STOP_COPY" :
	       variant->call == FI_RESUMING ? "STOP -> RESUMING" :
	       variant->call == FI_READ ? "save read()" : "resume write()",
	       k - 1, now_sec() - t0, injected, ks.failslab,
	       ks.fail_page_alloc, ks.fail_usercopy, tolerated, failed,
	       errs[0], errs[1], errs[2], ks.alloc_warnings);
	EXPECT_TRUE(done) {
		TH_LOG("the call still fails after %u injected faults",
		       FI_MAX_SITES);
	}
	EXPECT_LT(0, injected) {
		TH_LOG("no fault was injected: fail-nth has no effect");
	}
	if (core_changed) {
		TH_LOG("%u sites changed the state and then failed in vfio core",
		       core_changed);
		EXPECT_GT(first_core_changed, last_clean_fail) {
			TH_LOG("site %u changed the state and failed before site %u failed cleanly: the driver changed its state on a failure",
			       first_core_changed, last_clean_fail);
		}
	}

	/* a complete migration, VRAM checked */
	back_to_stop(_metadata, a);
	back_to_stop(_metadata, b);
	go_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING);
	go_state(_metadata, b, VFIO_DEVICE_STATE_RUNNING);
	migrate_simple(_metadata, a, b);
}

/* ---------------------------------------------------------------------- */
/* 4. Concurrency                                                         */
/* ---------------------------------------------------------------------- */

/* Errors a call racing a reset may see. */
#define RESET_RACE_ERRNO_OK(e)	((e) == ENODEV || (e) == EINVAL || \
				 (e) == EAGAIN)

FIXTURE(conc) {
	struct qdev dev[MAX_DEVS];
	int kmsg;
};

FIXTURE_SETUP(conc)
{
	self->kmsg = kmsg_open();
	if (nbdfs < 4)
		SKIP(return, "needs four devices (tests/vm/run --devices 4), %u given",
		     nbdfs);
	devs_setup(_metadata, self->dev, 4);
}

FIXTURE_TEARDOWN(conc)
{
	devs_teardown(_metadata, self->dev);
	expect_clean_kmsg(_metadata, self->kmsg);
	if (self->kmsg >= 0)
		close(self->kmsg);
}

/*
 * One migration, run in its own thread: no harness ASSERTs there, the first
 * failure goes into @err.  The source's data fd is read in 256 KiB pieces
 * and each is written to the destination at once (as QEMU does).
 */
struct mig_job {
	struct qdev *src, *dst;
	__u64 seed;
	pthread_barrier_t *start;
	size_t len;
	double secs;
	char err[256];
};

static int job_set(struct mig_job *j, struct qdev *d, __u32 state, int *fd)
{
	int ret = mig_set(d->fd, state, fd);

	if (ret)
		snprintf(j->err, sizeof(j->err), "%s: -> %s: %s", d->bdf,
			 state_name(state), strerror(-ret));
	return ret;
}

static void *mig_job_run(void *arg)
{
	struct mig_job *j = arg;
	const size_t vram = j->src->vram_size;
	struct regs want, got;
	int sfd = -1, rfd = -1;
	__u8 *pat, *buf;
	double t0;
	ssize_t bad;

	pat = malloc(vram);
	buf = malloc(SZ_256K);
	if (!pat || !buf) {
		snprintf(j->err, sizeof(j->err), "malloc");
	} else {
		fill_pattern(pat, vram, j->seed);
		memcpy(j->src->vram, pat, vram);
		memset(j->dst->vram, 0xa5, vram);
		regs_make(&want, j->seed & 1, j->seed);
		if (regs_write(j->src, &want))
			snprintf(j->err, sizeof(j->err), "%s: registers",
				 j->src->bdf);
	}
	/* both migrations start together */
	pthread_barrier_wait(j->start);
	if (j->err[0])
		goto out;
	t0 = now_sec();
	if (job_set(j, j->src, VFIO_DEVICE_STATE_STOP_COPY, &sfd) ||
	    job_set(j, j->dst, VFIO_DEVICE_STATE_RESUMING, &rfd))
		goto out;
	for (;;) {
		ssize_t n = read(sfd, buf, SZ_256K), w = 0;

		if (n < 0) {
			snprintf(j->err, sizeof(j->err), "%s: read at %zu: %s",
				 j->src->bdf, j->len, strerror(errno));
			goto out;
		}
		if (!n)
			break;
		while (w < n) {
			ssize_t m = write(rfd, buf + w, n - w);

			if (m <= 0) {
				snprintf(j->err, sizeof(j->err),
					 "%s: write at %zu: %s", j->dst->bdf,
					 j->len + w,
					 m < 0 ? strerror(errno) : "0");
				goto out;
			}
			w += m;
		}
		j->len += n;
	}
	if (job_set(j, j->dst, VFIO_DEVICE_STATE_STOP, NULL) ||
	    job_set(j, j->dst, VFIO_DEVICE_STATE_RUNNING, NULL) ||
	    job_set(j, j->src, VFIO_DEVICE_STATE_STOP, NULL) ||
	    job_set(j, j->src, VFIO_DEVICE_STATE_RUNNING, NULL))
		goto out;
	j->secs = now_sec() - t0;
	bad = first_diff(j->dst->vram, pat, vram);
	if (bad >= 0) {
		snprintf(j->err, sizeof(j->err),
			 "%s -> %s: destination VRAM differs at %#zx",
			 j->src->bdf, j->dst->bdf, bad);
		goto out;
	}
	if (regs_read(j->dst, &got) || memcmp(&got, &want, sizeof(got)))
		snprintf(j->err, sizeof(j->err),
			 "%s -> %s: destination registers differ",
			 j->src->bdf, j->dst->bdf);
out:
	if (sfd >= 0)
		close(sfd);
	if (rfd >= 0)
		close(rfd);
	free(pat);
	free(buf);
	return NULL;
}

/* Two migrations at once: A -> B with D -> C, then B -> A with C -> D. */
TEST_F_TIMEOUT(conc, two_migrations_at_once, 600)
{
	struct qdev *dv = self->dev;
	struct qdev *pairs[2][2][2] = {
		{ { &dv[0], &dv[1] }, { &dv[3], &dv[2] } },
		{ { &dv[1], &dv[0] }, { &dv[2], &dv[3] } },
	};
	unsigned int round, i;

	for (round = 0; round < 2; round++) {
		struct mig_job jobs[2];
		pthread_barrier_t start;
		pthread_t th[2];
		double t0 = now_sec();

		ASSERT_EQ(0, pthread_barrier_init(&start, NULL, 2));
		for (i = 0; i < 2; i++) {
			memset(&jobs[i], 0, sizeof(jobs[i]));
			jobs[i].src = pairs[round][i][0];
			jobs[i].dst = pairs[round][i][1];
			jobs[i].seed = fresh_seed();
			jobs[i].start = &start;
			ASSERT_EQ(0, pthread_create(&th[i], NULL, mig_job_run,
						    &jobs[i]));
		}
		for (i = 0; i < 2; i++)
			ASSERT_EQ(0, pthread_join(th[i], NULL));
		pthread_barrier_destroy(&start);
		for (i = 0; i < 2; i++) {
			EXPECT_EQ(0, jobs[i].err[0]) {
				TH_LOG("%s", jobs[i].err);
			}
			TH_LOG("round %u: %s -> %s: %zu bytes in %.2f s",
			       round, jobs[i].src->bdf, jobs[i].dst->bdf,
			       jobs[i].len, jobs[i].secs);
		}
		TH_LOG("round %u: both in %.2f s", round, now_sec() - t0);
	}
}

struct resetter {
	struct qdev *d;
	volatile bool stop;
	unsigned long resets, errors, pauses;
	int bad_errno;
};

static void *reset_loop(void *arg)
{
	struct resetter *r = arg;
	__u64 rng = fresh_seed();

	while (!r->stop) {
		if (ioctl(r->d->fd, VFIO_DEVICE_RESET)) {
			r->errors++;
			if (!RESET_RACE_ERRNO_OK(errno) && !r->bad_errno)
				r->bad_errno = errno;
		} else {
			r->resets++;
		}
		/* mostly every few ms; now and then long enough for a stream */
		r->pauses++;
		sleep_ms(r->pauses % 8 ? rng_next(&rng) % 20 : 1500);
	}
	return NULL;
}

struct race_stats {
	unsigned long sessions, complete, interrupted, bytes, errors;
	int bad_errno;
	const char *bad_op;
};

static void race_errno(struct race_stats *st, const char *op, int e)
{
	st->errors++;
	if (!RESET_RACE_ERRNO_OK(e) && !st->bad_errno) {
		st->bad_errno = e;
		st->bad_op = op;
	}
}

/*
 * Resets of A race saving sessions of A (their VRAM data checked), resets
 * of B race resuming sessions of B; then a clean migration A -> B.
 */
TEST_F_TIMEOUT(conc, resets_race_transfers, 600)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	const size_t vram = a->vram_size;
	struct resetter ra = { .d = a }, rb = { .d = b };
	struct race_stats ss = { 0 }, rs = { 0 };
	struct stream s = { 0 };
	pthread_t ta, tb;
	__u8 *pat, *buf;
	__u64 size;
	double t0;

	pat = malloc(vram);
	ASSERT_NE(NULL, pat);
	fill_pattern(pat, vram, fresh_seed());
	memcpy(a->vram, pat, vram);
	ASSERT_EQ(0, get_data_size(a->fd, &size));
	buf = malloc(size + SZ_1M);
	ASSERT_NE(NULL, buf);
	/* a valid stream for B's sessions */
	save_and_run(_metadata, a, &s);

	ASSERT_EQ(0, pthread_create(&ta, NULL, reset_loop, &ra));
	ASSERT_EQ(0, pthread_create(&tb, NULL, reset_loop, &rb));
	t0 = now_sec();
	while (now_sec() - t0 < 20) {
		size_t len = 0, checked_bad = 0;
		int sfd = -1, rfd = -1, ret;
		bool ok = true;

		/* a saving session of A */
		ret = mig_set(a->fd, VFIO_DEVICE_STATE_STOP_COPY, &sfd);
		if (ret) {
			race_errno(&ss, "-> STOP_COPY", -ret);
		} else {
			ss.sessions++;
			for (;;) {
				ssize_t n = read(sfd, buf + len,
						 size + SZ_1M - len < SZ_256K ?
						 size + SZ_1M - len : SZ_256K);

				if (n < 0) {
					race_errno(&ss, "read", errno);
					ok = false;
					break;
				}
				if (!n)
					break;
				len += n;
			}
			ss.bytes += len;
			if (ok) {
				ss.complete++;
				if (len != size ||
				    check_mem_records(buf, len, pat, vram,
						      &checked_bad) < 0) {
					if (!ss.bad_op)
						ss.bad_op = "complete stream with wrong length or VRAM data";
					ss.bad_errno = ss.bad_errno ?: EBADMSG;
				}
			} else {
				ss.interrupted++;
				if (check_mem_records(buf, len, pat, vram,
						      &checked_bad) < 0 &&
				    !ss.bad_op) {
					ss.bad_op = "interrupted stream with wrong VRAM data";
					ss.bad_errno = EBADMSG;
				}
			}
			close(sfd);
			ret = mig_set(a->fd, VFIO_DEVICE_STATE_RUNNING, NULL);
			if (ret)
				race_errno(&ss, "-> RUNNING", -ret);
		}

		/* a resuming session of B */
		ok = true;
		ret = mig_set(b->fd, VFIO_DEVICE_STATE_RESUMING, &rfd);
		if (ret) {
			race_errno(&rs, "-> RESUMING", -ret);
			continue;
		}
		rs.sessions++;
		for (len = 0; len < s.len; ) {
			size_t chunk = s.len - len < SZ_256K ? s.len - len :
							       SZ_256K;
			ssize_t n = write(rfd, s.buf + len, chunk);

			if (n <= 0) {
				race_errno(&rs, "write", n < 0 ? errno : EIO);
				ok = false;
				break;
			}
			len += n;
		}
		rs.bytes += len;
		ret = mig_set(b->fd, VFIO_DEVICE_STATE_STOP, NULL);
		if (ret) {
			race_errno(&rs, "RESUMING -> STOP", -ret);
			ok = false;
		}
		if (ok)
			rs.complete++;
		else
			rs.interrupted++;
		close(rfd);
		ret = mig_set(b->fd, VFIO_DEVICE_STATE_RUNNING, NULL);
		if (ret && ioctl(b->fd, VFIO_DEVICE_RESET))
			race_errno(&rs, "reset after a session", errno);
	}
	ra.stop = rb.stop = true;
	ASSERT_EQ(0, pthread_join(ta, NULL));
	ASSERT_EQ(0, pthread_join(tb, NULL));

	TH_LOG("save vs reset: %lu sessions (%lu complete, %lu interrupted), %lu MiB, %lu errors; %lu resets of %s (%lu failed)",
	       ss.sessions, ss.complete, ss.interrupted, ss.bytes / SZ_1M,
	       ss.errors, ra.resets, a->bdf, ra.errors);
	TH_LOG("resume vs reset: %lu sessions (%lu complete, %lu interrupted), %lu MiB, %lu errors; %lu resets of %s (%lu failed)",
	       rs.sessions, rs.complete, rs.interrupted, rs.bytes / SZ_1M,
	       rs.errors, rb.resets, b->bdf, rb.errors);
	EXPECT_EQ(0, ss.bad_errno) {
		TH_LOG("save: %s: %s", ss.bad_op, strerror(ss.bad_errno));
	}
	EXPECT_EQ(0, rs.bad_errno) {
		TH_LOG("resume: %s: %s", rs.bad_op, strerror(rs.bad_errno));
	}
	EXPECT_EQ(0, ra.bad_errno) {
		TH_LOG("reset of %s: %s", a->bdf, strerror(ra.bad_errno));
	}
	EXPECT_EQ(0, rb.bad_errno) {
		TH_LOG("reset of %s: %s", b->bdf, strerror(rb.bad_errno));
	}
	EXPECT_LT(0, ss.sessions + rs.sessions);

	/* afterwards: a clean migration, data checked */
	ASSERT_EQ(0, device_reset(a));
	ASSERT_EQ(0, device_reset(b));
	migrate_simple(_metadata, a, b);
	free(s.buf);
	free(buf);
	free(pat);
}

int main(int argc, char *argv[])
{
	nbdfs = take_bdfs(&argc, argv, bdfs, MAX_DEVS);
	if (nbdfs) {
		unsigned int i;

		printf("# Devices:");
		for (i = 0; i < nbdfs; i++)
			printf(" %s", bdfs[i]);
		printf("\n");
	} else {
		printf("# No devices given: every test skips.  Usage: %s [harness options] BDF BDF [BDF BDF]\n",
		       argv[0]);
	}
	return test_harness_run(argc, argv);
}
