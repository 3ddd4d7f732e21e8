// SPDX-License-Identifier: GPL-2.0-only
/*
 * Faults in every migration state (hardening issue, "Faults in every state"):
 * a device of qemu-vfio-pci is taken to each state of the VFIO v2 migration
 * FSM, then its device or its data fd is taken away in each way userspace and
 * the administrator can, and the driver must end the session cleanly.
 *
 * States (the fixture's variants):
 *   running, running_p2p, stop   the data fd is the saving fd of a STOP_COPY
 *                                session just left (4 KiB read), already dead
 *   stop_copy_start              STOP_COPY, nothing read
 *   stop_copy_mid                STOP_COPY, half of the stream read
 *   stop_copy_end                STOP_COPY, all of it read, read() == 0
 *   resuming_start               RESUMING, nothing written
 *   resuming_mid                 RESUMING, half of a valid stream written
 *
 * Actions (the tests):
 *   reset          VFIO_DEVICE_RESET: the device is RUNNING at once
 *   close_data_fd  the state stays; STOP_COPY is left to STOP, RESUMING ->
 *                  STOP is refused with ENODATA (incomplete stream) and a
 *                  reset recovers
 *   close_device   the device fd (with its iommufd and VRAM mapping)
 *   kill           SIGKILL to a process that holds the device, its VRAM
 *                  mapping and the data fd; it must be reaped promptly
 *   unbind         the driver's unbind with both fds open: it waits for the
 *                  device fd; after closing it, the unbind completes, and the
 *                  device is bound again through drivers_probe
 *   remove         /sys/bus/pci/devices/BDF/remove with both fds open, the
 *                  same, then /sys/bus/pci/rescan and driver_override again
 *   rmmod          delete_module() is refused with EAGAIN while any fd is
 *                  open, the data fd alone included (it pins the module, whose
 *                  code releases the device when the fd closes); it works once
 *                  all are closed; modprobe loads it again and the devices are
 *                  bound again
 *
 * What the driver answers on a data fd whose session ended (a reset, closing
 * the device, which unbind, remove and rmmod all wait for; the kill closes
 * both): read() of a saving fd and write() of a resuming fd fail with ENODEV,
 * and poll() reports POLLERR.  It is ENODEV even at the end of the stream: the
 * session is checked before the end (SaveFile::read_into), so read() == 0 is
 * seen only while the session lasts.  A fd of an ended session stays dead
 * when the device is opened again (a new session).
 *
 * Every case (fault.STATE.ACTION) then checks that the device is RUNNING when
 * opened again, that a full migration each way between the two devices moves
 * VRAM and registers byte for byte (migrate_simple), and that the kernel log
 * has no warning, BUG, KASAN, UBSAN, lockdep, CFI, list corruption, hang
 * report or stack dump since the case began.  The teardown restores what a
 * case changed (the module loaded, both devices present and bound to
 * qemu-vfio-pci), and every setup makes sure of it again, so that a failed
 * case does not fail the ones after it.
 *
 * The first device is the one the faults hit (the victim); the second, the
 * peer, is the source of the stream resuming_mid writes and the other end of
 * the migrations after the fault.
 *
 * Usage: vfio_fault_test [harness options] BDF BDF
 *        QVP_BDFS="BDF BDF" vfio_fault_test [harness options]
 *
 * Root, in the test guest (the module installed in /tmp/qvp-modules):
 *	tests/vm/run -- sh -c 'tests/selftests/vfio_fault_test $QVP_BDFS 2>&1'
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "vfio_util.h"

#define DRIVER		"qemu-vfio-pci"
#define MODULE_NAME	"qemu_vfio_pci"
#define MODPROBE	"modprobe -d /tmp/qvp-modules " DRIVER

/* A blocked unbind or remove must still wait after this long ... */
#define BLOCK_CHECK_MS	500
/* ... and complete, like the holder's exit, this soon after the close. */
#define RELEASE_SECS	30

#define PEEK_LEN	SZ_4K
#define IO_LEN		SZ_1M

static const char *bdfs[2];
static unsigned int nbdfs;

enum fstate {
	ST_RUNNING,
	ST_RUNNING_P2P,
	ST_STOP,
	ST_SAVE_START,
	ST_SAVE_MID,
	ST_SAVE_END,
	ST_RESUME_START,
	ST_RESUME_MID,
};

/* ---------------------------------------------------------------------- */
/* Helpers                                                                */
/* ---------------------------------------------------------------------- */

static bool module_loaded(void)
{
	return !access("/sys/module/" MODULE_NAME, F_OK);
}

/* delete_module(2) as rmmod does it: 0 or -errno. */
static int module_unload(void)
{
	return syscall(SYS_delete_module, MODULE_NAME, O_NONBLOCK) ? -errno : 0;
}

/* modprobe: its exit status, or -1. */
static int module_load(void)
{
	int status = system(MODPROBE " >/dev/null 2>&1");

	return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*
 * Put back what a case may have taken away: the module loaded, both devices
 * present and bound to the driver.  0 or -errno with @step naming what failed.
 */
static int restore_env(const char **step)
{
	unsigned int i;
	int ret;

	if (!module_loaded()) {
		*step = MODPROBE;
		if (module_load())
			return -EIO;
	}
	for (i = 0; i < nbdfs; i++) {
		if (!pci_dev_exists(bdfs[i])) {
			*step = "write /sys/bus/pci/rescan";
			ret = write_file("/sys/bus/pci/rescan", "1");
			if (ret)
				return ret;
			*step = "the device is back after the rescan";
			if (!pci_dev_exists(bdfs[i]))
				return -ENOENT;
		}
		ret = pci_bind(bdfs[i], DRIVER, step);
		if (ret)
			return ret;
	}
	return 0;
}

/* read() exactly @len bytes: 0, -errno, or -ENODATA at the end of stream. */
static int read_exact(int fd, __u8 *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t n = len - done < IO_LEN ? len - done : IO_LEN;
		ssize_t ret = read(fd, buf, n);

		if (ret < 0)
			return -errno;
		if (ret == 0)
			return -ENODATA;
		done += ret;
	}
	return 0;
}

/* write() all of @buf: 0 or -errno (-EIO without progress). */
static int write_exact(int fd, const __u8 *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t n = len - done < IO_LEN ? len - done : IO_LEN;
		ssize_t ret = write(fd, buf + done, n);

		if (ret < 0)
			return -errno;
		if (ret == 0)
			return -EIO;
		done += ret;
	}
	return 0;
}

/*
 * Open @bdf as @d and take it to @st (migration state @mig) with its data fd
 * in *@dfd (see the top of the file); @s is the stream resuming_mid writes
 * half of.  Plain calls only, no harness checks, so that a forked holder can
 * use it.  Returns 0 or -errno, with @step naming what failed.
 */
static int enter_state(struct qdev *d, const char *bdf, enum fstate st,
		       __u32 mig, const struct stream *s, int *dfd,
		       const char **step)
{
	__u8 *buf;
	__u32 now;
	__u64 size;
	ssize_t n;
	int ret;

	*dfd = -1;
	ret = dev_open(d, bdf, step);
	if (ret)
		return ret;
	*step = "MIG_DATA_SIZE";
	ret = get_data_size(d->fd, &size);
	if (ret)
		return ret;
	buf = malloc(IO_LEN);
	if (!buf)
		return -ENOMEM;

	switch (st) {
	case ST_RUNNING:
	case ST_RUNNING_P2P:
	case ST_STOP:
		*step = "RUNNING -> STOP_COPY";
		ret = mig_set(d->fd, VFIO_DEVICE_STATE_STOP_COPY, dfd);
		if (ret)
			break;
		*step = "read the start of the stream";
		ret = read_exact(*dfd, buf, PEEK_LEN);
		if (ret)
			break;
		*step = "leave STOP_COPY";
		ret = mig_set(d->fd, mig, NULL);
		if (ret)
			break;
		*step = "read the saving fd after STOP_COPY was left (want ENODEV)";
		n = read(*dfd, buf, PEEK_LEN);
		if (n >= 0 || errno != ENODEV)
			ret = n < 0 ? -errno : -EPROTO;
		break;
	case ST_SAVE_START:
	case ST_SAVE_MID:
	case ST_SAVE_END:
		*step = "RUNNING -> STOP_COPY";
		ret = mig_set(d->fd, VFIO_DEVICE_STATE_STOP_COPY, dfd);
		if (ret || st == ST_SAVE_START)
			break;
		*step = "read the stream up to MIG_DATA_SIZE (or half of it)";
		for (size = st == ST_SAVE_MID ? size / 2 : size; size; ) {
			size_t len = size < IO_LEN ? size : IO_LEN;

			ret = read_exact(*dfd, buf, len);
			if (ret)
				break;
			size -= len;
		}
		if (ret || st == ST_SAVE_MID)
			break;
		*step = "read at the end of the stream (want 0, twice)";
		if (read(*dfd, buf, PEEK_LEN) || read(*dfd, buf, PEEK_LEN))
			ret = -EPROTO;
		break;
	case ST_RESUME_START:
	case ST_RESUME_MID:
		*step = "RUNNING -> RESUMING";
		ret = mig_set(d->fd, VFIO_DEVICE_STATE_RESUMING, dfd);
		if (ret || st == ST_RESUME_START)
			break;
		*step = "write half of the peer's stream";
		ret = write_exact(*dfd, s->buf, s->len / 2);
		break;
	}
	free(buf);
	if (ret)
		return ret;
	*step = "MIG_DEVICE_STATE GET (want the state entered)";
	ret = mig_get(d->fd, &now);
	if (!ret && now != mig)
		ret = -EPROTO;
	return ret;
}

/*
 * The data fd of an ended session: read() (saving) or write() (resuming)
 * fails with ENODEV, poll() reports POLLERR.
 */
static void expect_dead_fd(struct __test_metadata *_metadata, int dfd,
			   bool saving, const char *when)
{
	struct pollfd pfd = { .fd = dfd, .events = saving ? POLLIN : POLLOUT };
	__u8 buf[PEEK_LEN] = { 0 };
	ssize_t n;
	int ret;

	if (dfd < 0)
		return;
	n = saving ? read(dfd, buf, sizeof(buf)) : write(dfd, buf, sizeof(buf));
	EXPECT_EQ(-1, n) {
		TH_LOG("%s: %s() of the data fd returned %zd, want ENODEV",
		       when, saving ? "read" : "write", n);
	}
	if (n < 0) {
		EXPECT_EQ(ENODEV, errno) {
			TH_LOG("%s: %s() of the data fd: %s, want ENODEV", when,
			       saving ? "read" : "write", strerror(errno));
		}
	}
	ret = poll(&pfd, 1, 0);
	EXPECT_EQ(1, ret);
	EXPECT_TRUE(pfd.revents & POLLERR) {
		TH_LOG("%s: poll() of the data fd: revents %#x, want POLLERR",
		       when, pfd.revents);
	}
}

/* A sysfs write that blocks until the device is released, in a thread. */
struct writer {
	pthread_t thread;
	bool active;		/* started, not joined */
	char path[PATH_MAX];
	char val[32];
	int err;
	double secs;		/* how long the write took */
};

static void *writer_run(void *arg)
{
	struct writer *w = arg;
	double t0 = now_sec();

	w->err = write_file(w->path, w->val);
	w->secs = now_sec() - t0;
	return NULL;
}

static int writer_start(struct writer *w, const char *path, const char *val)
{
	int ret;

	snprintf(w->path, sizeof(w->path), "%s", path);
	snprintf(w->val, sizeof(w->val), "%s", val);
	w->err = 0;
	ret = pthread_create(&w->thread, NULL, writer_run, w);
	w->active = !ret;
	return -ret;
}

/* Whether the write returned, waiting up to @secs for it; joins it if so. */
static bool writer_done(struct writer *w, double secs)
{
	struct timespec ts;
	long ns;

	if (!w->active)
		return true;
	clock_gettime(CLOCK_REALTIME, &ts);
	ns = ts.tv_nsec + (long)((secs - (long)secs) * 1e9);
	ts.tv_sec += (long)secs + ns / 1000000000L;
	ts.tv_nsec = ns % 1000000000L;
	if (secs > 0 ? pthread_timedjoin_np(w->thread, NULL, &ts) :
		       pthread_tryjoin_np(w->thread, NULL))
		return false;
	w->active = false;
	return true;
}

/* Reap @pid within @secs: its wait status, or -1. */
static int reap(pid_t pid, double secs)
{
	double end = now_sec() + secs;
	int status;

	do {
		pid_t ret = waitpid(pid, &status, WNOHANG);

		if (ret == pid)
			return status;
		if (ret < 0)
			return -1;
		sleep_ms(20);
	} while (now_sec() < end);
	return -1;
}

/* ---------------------------------------------------------------------- */
/* The fixture                                                            */
/* ---------------------------------------------------------------------- */

FIXTURE(fault) {
	struct qdev dev[2];	/* the victim, the peer */
	int kmsg;
	int dfd;		/* the victim's data fd */
	struct stream s;	/* the peer's stream, for resuming_mid */
	pid_t holder;		/* kill: the process holding the victim */
	struct writer w;	/* unbind, remove */
};

FIXTURE_VARIANT(fault) {
	const char *name;
	enum fstate state;
	__u32 mig;
};

FIXTURE_VARIANT_ADD(fault, running) {
	.name = "running", .state = ST_RUNNING,
	.mig = VFIO_DEVICE_STATE_RUNNING,
};
FIXTURE_VARIANT_ADD(fault, running_p2p) {
	.name = "running_p2p", .state = ST_RUNNING_P2P,
	.mig = VFIO_DEVICE_STATE_RUNNING_P2P,
};
FIXTURE_VARIANT_ADD(fault, stop) {
	.name = "stop", .state = ST_STOP,
	.mig = VFIO_DEVICE_STATE_STOP,
};
FIXTURE_VARIANT_ADD(fault, stop_copy_start) {
	.name = "stop_copy_start", .state = ST_SAVE_START,
	.mig = VFIO_DEVICE_STATE_STOP_COPY,
};
FIXTURE_VARIANT_ADD(fault, stop_copy_mid) {
	.name = "stop_copy_mid", .state = ST_SAVE_MID,
	.mig = VFIO_DEVICE_STATE_STOP_COPY,
};
FIXTURE_VARIANT_ADD(fault, stop_copy_end) {
	.name = "stop_copy_end", .state = ST_SAVE_END,
	.mig = VFIO_DEVICE_STATE_STOP_COPY,
};
FIXTURE_VARIANT_ADD(fault, resuming_start) {
	.name = "resuming_start", .state = ST_RESUME_START,
	.mig = VFIO_DEVICE_STATE_RESUMING,
};
FIXTURE_VARIANT_ADD(fault, resuming_mid) {
	.name = "resuming_mid", .state = ST_RESUME_MID,
	.mig = VFIO_DEVICE_STATE_RESUMING,
};

static bool is_saving(const FIXTURE_VARIANT(fault) *variant)
{
	return variant->state < ST_RESUME_START;
}

FIXTURE_SETUP(fault)
{
	struct qdev *peer = &self->dev[1];
	const char *step;
	char mark[128];
	unsigned int i;
	int ret;

	self->kmsg = kmsg_open();
	self->dfd = -1;
	self->holder = -1;
	self->s.buf = NULL;
	self->w.active = false;
	for (i = 0; i < 2; i++) {
		self->dev[i].fd = -1;
		self->dev[i].iommufd = -1;
		self->dev[i].vram = MAP_FAILED;
	}
	if (nbdfs < 2)
		SKIP(return, "needs two devices, %u given", nbdfs);
	snprintf(mark, sizeof(mark), "fault.%s.%s begins", variant->name,
		 _metadata->name);
	kmsg_mark(mark);

	ret = restore_env(&step);
	ASSERT_EQ(0, ret) {
		TH_LOG("the devices cannot be bound to %s: %s: %s", DRIVER,
		       step, strerror(-ret));
	}
	ret = dev_open(peer, bdfs[1], &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: %s: %s", bdfs[1], step, strerror(-ret));
	}
	expect_state(_metadata, peer, VFIO_DEVICE_STATE_RUNNING, "after open");
	if (variant->state == ST_RESUME_MID)
		save_and_run(_metadata, peer, &self->s);
}

FIXTURE_TEARDOWN(fault)
{
	const char *step;
	int ret;

	if (self->dfd >= 0)
		close(self->dfd);
	self->dfd = -1;
	dev_close(&self->dev[0]);
	dev_close(&self->dev[1]);
	if (self->holder > 0) {
		kill(self->holder, SIGKILL);
		EXPECT_NE(-1, reap(self->holder, RELEASE_SECS)) {
			TH_LOG("the holder process %d does not exit",
			       self->holder);
		}
	}
	if (!writer_done(&self->w, RELEASE_SECS)) {
		TH_LOG("%s still blocks with every fd closed", self->w.path);
		_metadata->exit_code = KSFT_FAIL;
	} else if (nbdfs >= 2) {
		ret = restore_env(&step);
		EXPECT_EQ(0, ret) {
			TH_LOG("restore: %s: %s", step, strerror(-ret));
		}
	}
	free(self->s.buf);
	expect_clean_kmsg(_metadata, self->kmsg);
	if (self->kmsg >= 0)
		close(self->kmsg);
}

/* Take the victim to the variant's state, in this process. */
static void victim_enter(struct __test_metadata *_metadata,
			 FIXTURE_DATA(fault) *self,
			 const FIXTURE_VARIANT(fault) *variant)
{
	const char *step;
	int ret;

	ret = enter_state(&self->dev[0], bdfs[0], variant->state, variant->mig,
			  &self->s, &self->dfd, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: %s: %s: %s", bdfs[0], variant->name, step,
		       strerror(-ret));
	}
}

/* Open the victim again (a new session): it starts in RUNNING. */
static void victim_reopen(struct __test_metadata *_metadata,
			  FIXTURE_DATA(fault) *self)
{
	const char *step;
	int ret;

	dev_close(&self->dev[0]);
	ret = dev_open(&self->dev[0], bdfs[0], &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: open again: %s: %s", bdfs[0], step,
		       strerror(-ret));
	}
	expect_state(_metadata, &self->dev[0], VFIO_DEVICE_STATE_RUNNING,
		     "after opening again");
}

/* The peer as well, after the module was reloaded. */
static void peer_reopen(struct __test_metadata *_metadata,
			FIXTURE_DATA(fault) *self)
{
	const char *step;
	int ret;

	dev_close(&self->dev[1]);
	ret = dev_open(&self->dev[1], bdfs[1], &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: open again: %s: %s", bdfs[1], step,
		       strerror(-ret));
	}
	expect_state(_metadata, &self->dev[1], VFIO_DEVICE_STATE_RUNNING,
		     "after opening again");
}

static void close_dfd(FIXTURE_DATA(fault) *self)
{
	if (self->dfd >= 0)
		close(self->dfd);
	self->dfd = -1;
}

/* The victim migrates both ways with the peer. */
static void verify_migrations(struct __test_metadata *_metadata,
			      FIXTURE_DATA(fault) *self)
{
	migrate_simple(_metadata, &self->dev[0], &self->dev[1]);
	migrate_simple(_metadata, &self->dev[1], &self->dev[0]);
}

/* ---------------------------------------------------------------------- */
/* The actions                                                            */
/* ---------------------------------------------------------------------- */

TEST_F_TIMEOUT(fault, reset, 120)
{
	int ret;

	victim_enter(_metadata, self, variant);
	ret = device_reset(&self->dev[0]);
	ASSERT_EQ(0, ret) {
		TH_LOG("VFIO_DEVICE_RESET in %s: %s", variant->name,
		       strerror(-ret));
	}
	expect_state(_metadata, &self->dev[0], VFIO_DEVICE_STATE_RUNNING,
		     "after the reset");
	expect_dead_fd(_metadata, self->dfd, is_saving(variant),
		       "after the reset");
	close_dfd(self);
	verify_migrations(_metadata, self);
}

TEST_F_TIMEOUT(fault, close_data_fd, 120)
{
	struct qdev *v = &self->dev[0];
	int ret;

	victim_enter(_metadata, self, variant);
	close_dfd(self);
	expect_state(_metadata, v, variant->mig, "after closing the data fd");

	if (variant->mig == VFIO_DEVICE_STATE_RESUMING) {
		/* what was written is all the device will ever get */
		ret = mig_set(v->fd, VFIO_DEVICE_STATE_STOP, NULL);
		EXPECT_EQ(-ENODATA, ret) {
			TH_LOG("RESUMING -> STOP with an incomplete stream: %s, want ENODATA",
			       ret ? strerror(-ret) : "succeeded");
		}
		expect_state(_metadata, v, VFIO_DEVICE_STATE_RESUMING,
			     "after RESUMING -> STOP was refused");
		ret = device_reset(v);
		ASSERT_EQ(0, ret) {
			TH_LOG("VFIO_DEVICE_RESET: %s", strerror(-ret));
		}
		expect_state(_metadata, v, VFIO_DEVICE_STATE_RUNNING,
			     "after the reset");
	} else {
		go_state(_metadata, v, VFIO_DEVICE_STATE_RUNNING);
	}
	verify_migrations(_metadata, self);
}

TEST_F_TIMEOUT(fault, close_device, 120)
{
	victim_enter(_metadata, self, variant);
	dev_close(&self->dev[0]);
	expect_dead_fd(_metadata, self->dfd, is_saving(variant),
		       "after closing the device");
	victim_reopen(_metadata, self);
	expect_dead_fd(_metadata, self->dfd, is_saving(variant),
		       "after opening the device again");
	close_dfd(self);
	verify_migrations(_metadata, self);
}

struct holder_msg {
	int err;
	char step[112];
};

TEST_F_TIMEOUT(fault, kill, 120)
{
	struct pollfd pfd = { .events = POLLIN };
	struct holder_msg msg = { 0 };
	int pipefd[2], status;
	ssize_t n;
	pid_t pid;

	ASSERT_EQ(0, pipe2(pipefd, O_CLOEXEC));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		const char *step = "fork";
		struct qdev d;
		int dfd;

		/* no harness calls here: this is not the test's process */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(pipefd[0]);
		msg.err = enter_state(&d, bdfs[0], variant->state, variant->mig,
				      &self->s, &dfd, &step);
		snprintf(msg.step, sizeof(msg.step), "%s", step);
		if (write(pipefd[1], &msg, sizeof(msg)) != sizeof(msg))
			_exit(1);
		for (;;)
			pause();
	}
	self->holder = pid;
	close(pipefd[1]);
	pfd.fd = pipefd[0];
	n = poll(&pfd, 1, RELEASE_SECS * 1000) == 1 ?
		read(pipefd[0], &msg, sizeof(msg)) : -1;
	close(pipefd[0]);
	ASSERT_EQ(sizeof(msg), n) {
		TH_LOG("the holder process did not report its state");
	}
	ASSERT_EQ(0, msg.err) {
		TH_LOG("holder: %s: %s: %s: %s", bdfs[0], variant->name,
		       msg.step, strerror(-msg.err));
	}

	ASSERT_EQ(0, kill(pid, SIGKILL));
	status = reap(pid, RELEASE_SECS);
	self->holder = -1;
	ASSERT_NE(-1, status) {
		TH_LOG("the killed holder is not reaped after %d s (its fds do not close?)",
		       RELEASE_SECS);
		self->holder = pid;
	}
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
		TH_LOG("holder wait status %#x", status);
	}
	victim_reopen(_metadata, self);
	verify_migrations(_metadata, self);
}

/*
 * Start the sysfs write @val > @path that takes the victim away, check that
 * it waits while the device fd is open, close the device and check that it
 * completes.
 */
static void blocked_write(struct __test_metadata *_metadata,
			  FIXTURE_DATA(fault) *self, const char *path,
			  const char *val)
{
	int ret;

	ret = writer_start(&self->w, path, val);
	ASSERT_EQ(0, ret) {
		TH_LOG("pthread_create: %s", strerror(-ret));
	}
	sleep_ms(BLOCK_CHECK_MS);
	EXPECT_FALSE(writer_done(&self->w, 0)) {
		TH_LOG("%s returned (%s) with the device fd open",
		       path, strerror(-self->w.err));
	}
	dev_close(&self->dev[0]);
	ASSERT_TRUE(writer_done(&self->w, RELEASE_SECS)) {
		TH_LOG("%s still waits %d s after the device fd was closed",
		       path, RELEASE_SECS);
	}
	EXPECT_EQ(0, self->w.err) {
		TH_LOG("write %s > %s: %s", val, path, strerror(-self->w.err));
	}
	TH_LOG("%s returned after %.2f s", path, self->w.secs);
}

TEST_F_TIMEOUT(fault, unbind, 120)
{
	const char *bdf = bdfs[0], *step;
	int ret;

	victim_enter(_metadata, self, variant);
	blocked_write(_metadata, self,
		      "/sys/bus/pci/drivers/" DRIVER "/unbind", bdf);
	EXPECT_FALSE(pci_bound_to(bdf, DRIVER)) {
		TH_LOG("%s is still bound after unbind", bdf);
	}
	expect_dead_fd(_metadata, self->dfd, is_saving(variant),
		       "after unbind");

	ret = pci_bind(bdf, DRIVER, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: bind again: %s: %s", bdf, step, strerror(-ret));
	}
	victim_reopen(_metadata, self);
	expect_dead_fd(_metadata, self->dfd, is_saving(variant),
		       "after binding and opening again");
	close_dfd(self);
	verify_migrations(_metadata, self);
}

TEST_F_TIMEOUT(fault, remove, 120)
{
	const char *bdf = bdfs[0], *step;
	char path[PATH_MAX];
	int ret;

	victim_enter(_metadata, self, variant);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/remove", bdf);
	blocked_write(_metadata, self, path, "1");
	EXPECT_FALSE(pci_dev_exists(bdf)) {
		TH_LOG("%s still exists after remove", bdf);
	}
	expect_dead_fd(_metadata, self->dfd, is_saving(variant),
		       "after remove");

	ret = write_file("/sys/bus/pci/rescan", "1");
	ASSERT_EQ(0, ret) {
		TH_LOG("rescan: %s", strerror(-ret));
	}
	ASSERT_TRUE(pci_dev_exists(bdf)) {
		TH_LOG("%s is not back after the rescan", bdf);
	}
	ret = pci_bind(bdf, DRIVER, &step);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: bind after the rescan: %s: %s", bdf, step,
		       strerror(-ret));
	}
	victim_reopen(_metadata, self);
	expect_dead_fd(_metadata, self->dfd, is_saving(variant),
		       "after the rescan, binding and opening again");
	close_dfd(self);
	verify_migrations(_metadata, self);
}

TEST_F_TIMEOUT(fault, rmmod, 180)
{
	const char *step;
	unsigned int i;
	int ret;

	victim_enter(_metadata, self, variant);
	ret = module_unload();
	ASSERT_NE(0, ret) {
		TH_LOG("the module unloaded with its devices and a data fd open");
	}
	EXPECT_EQ(-EAGAIN, ret) {
		TH_LOG("delete_module with the devices and the data fd open: %s, want EAGAIN",
		       strerror(-ret));
	}
	dev_close(&self->dev[1]);
	ret = module_unload();
	ASSERT_NE(0, ret);
	EXPECT_EQ(-EAGAIN, ret) {
		TH_LOG("delete_module with the victim and its data fd open: %s, want EAGAIN",
		       strerror(-ret));
	}
	dev_close(&self->dev[0]);
	expect_dead_fd(_metadata, self->dfd, is_saving(variant),
		       "after closing the device");
	ret = module_unload();
	ASSERT_NE(0, ret) {
		TH_LOG("the module unloaded with a data fd open");
	}
	EXPECT_EQ(-EAGAIN, ret) {
		TH_LOG("delete_module with the data fd open: %s, want EAGAIN",
		       strerror(-ret));
	}
	close_dfd(self);
	ret = module_unload();
	ASSERT_EQ(0, ret) {
		TH_LOG("delete_module with every fd closed: %s",
		       strerror(-ret));
	}
	EXPECT_FALSE(module_loaded());
	for (i = 0; i < 2; i++) {
		EXPECT_FALSE(pci_bound_to(bdfs[i], DRIVER)) {
			TH_LOG("%s is still bound after rmmod", bdfs[i]);
		}
	}

	ret = module_load();
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: exit status %d", MODPROBE, ret);
	}
	for (i = 0; i < 2; i++) {
		/* driver_override is kept: loading binds them again */
		EXPECT_TRUE(pci_bound_to(bdfs[i], DRIVER)) {
			TH_LOG("%s is not bound after modprobe", bdfs[i]);
		}
		ret = pci_bind(bdfs[i], DRIVER, &step);
		ASSERT_EQ(0, ret) {
			TH_LOG("%s: bind after modprobe: %s: %s", bdfs[i],
			       step, strerror(-ret));
		}
	}
	victim_reopen(_metadata, self);
	peer_reopen(_metadata, self);
	verify_migrations(_metadata, self);
}

int main(int argc, char *argv[])
{
	nbdfs = take_bdfs(&argc, argv, bdfs, 2);
	if (nbdfs == 2 && !strcmp(bdfs[0], bdfs[1])) {
		fprintf(stderr, "%s: the two devices are the same\n", argv[0]);
		return KSFT_FAIL;
	}
	if (nbdfs == 2)
		printf("# Victim %s, peer %s\n", bdfs[0], bdfs[1]);
	else
		printf("# Needs two devices, %u given: every test skips.  Usage: %s [harness options] BDF BDF\n",
		       nbdfs, argv[0]);
	return test_harness_run(argc, argv);
}
