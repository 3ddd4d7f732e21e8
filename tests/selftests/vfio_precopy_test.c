// SPDX-License-Identifier: GPL-2.0-only
/*
 * PRE_COPY selftest for qemu-vfio-pci and QEMU's bochs-display (1234:1111).
 *
 * The driver advertises VFIO_MIGRATION_PRE_COPY with exact dirty tracking of
 * VRAM (BAR0): stores through a user mapping and region writes through the
 * device fd mark 4 KiB pages dirty, and the saving data fd yields the stream
 * of Documentation/stream-format.rst ("PRE_COPY"):
 *
 *   PRE_COPY:   HEADER, the initial pass (all of VRAM in 256 KiB MEMORY
 *               records, in order), then dirty runs (maximal runs of
 *               consecutive dirty pages, at most 64, from a rotating cursor)
 *   STOP_COPY:  the rest of the initial pass, one lap of dirty runs,
 *               DEVICE_REGS, END
 *
 * The tests hold the driver to exact numbers: VFIO_MIG_GET_PRECOPY_INFO's
 * initial_bytes and dirty_bytes and MIG_DATA_SIZE are computed here from a
 * model of the source's dirty bitmap and cursor and compared byte for byte,
 * and the records the stream carries are compared with the model's.  They also
 * check every FSM arc touching PRE_COPY / PRE_COPY_P2P and what it does to the
 * data fd, reset and close in PRE_COPY, poll() wake-ups, a guest-like writer
 * racing the reads (the destination must end up equal to the source), and that
 * a destination with another VRAM size refuses a stream at its HEADER.
 *
 * Usage: vfio_precopy_test [harness options] SRC_BDF DST_BDF [BDF...]
 *        QVP_BDFS="SRC_BDF DST_BDF [BDF...]" vfio_precopy_test [harness options]
 *
 * SRC and DST need the same VRAM size; other_vram_size_rejected looks for a
 * device with another VRAM size among the further BDFs (tests/vm/run
 * --vgamem 16M,16M,16M,8M) and skips without one.  In the test guest:
 *	tests/vm/run --devices 4 -- sh -c
 *	'tests/selftests/vfio_precopy_test $QVP_BDFS 2>&1'
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
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "vfio_util.h"
#include "bochs_regs.h"

#define MAX_DEVS		8

/* Documentation/stream-format.rst */
#define PAGE_SZ			SZ_4K
#define MAX_CHUNK		SZ_256K
#define MAX_RUN			(MAX_CHUNK / PAGE_SZ)	/* pages of one record */
#define LEN_HEADER		60
#define LEN_MEM			36	/* a MEMORY record without its data */
#define LEN_REGS		52	/* bochs-display: regs_len 24 */
#define LEN_END			44
#define LEN_TAIL		(LEN_REGS + LEN_END)
#define REGS_BLOB		24
#define KIND_BOCHS		1

#define PRECOPY_INFO_MINSZ	24

/* Wake-up of a blocked poll(): the event comes after WAKE_DELAY_MS. */
#define POLL_TIMEOUT_MS		5000
#define WAKE_DELAY_MS		200
#define WAKE_LATE_SEC		2.5

static const char *bdfs[MAX_DEVS];
static unsigned int nbdfs;

/* ---------------------------------------------------------------------- */
/* Migration uAPI with PRE_COPY                                           */
/* ---------------------------------------------------------------------- */

static const __u32 all_states[] = {
	VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_STATE_STOP,
	VFIO_DEVICE_STATE_STOP_COPY, VFIO_DEVICE_STATE_RESUMING,
	VFIO_DEVICE_STATE_RUNNING_P2P, VFIO_DEVICE_STATE_PRE_COPY,
	VFIO_DEVICE_STATE_PRE_COPY_P2P,
};

static bool is_precopy(__u32 s)
{
	return s == VFIO_DEVICE_STATE_PRE_COPY ||
	       s == VFIO_DEVICE_STATE_PRE_COPY_P2P;
}

/* The saving group: one data fd serves all three. */
static bool is_saving(__u32 s)
{
	return is_precopy(s) || s == VFIO_DEVICE_STATE_STOP_COPY;
}

static bool arc_refused(__u32 from, __u32 to)
{
	return from == VFIO_DEVICE_STATE_STOP_COPY && is_precopy(to);
}

/* Does @from -> @to (possibly several steps) hand out a new data fd? */
static bool arc_new_fd(__u32 from, __u32 to)
{
	if (from == to || arc_refused(from, to))
		return false;
	if (is_saving(to))
		return !is_saving(from);
	return to == VFIO_DEVICE_STATE_RESUMING;
}

/* Does the data fd of @from stay the same session after @from -> @to? */
static bool arc_keeps_fd(__u32 from, __u32 to)
{
	return is_saving(from) && (is_saving(to) || arc_refused(from, to));
}

/*
 * go_state() with the PRE_COPY rules: move @d to @to, check a new data fd
 * exactly when the arc starts one, GET reports @to.  Returns the fd or -1.
 */
static int pc_go(struct __test_metadata *_metadata, struct qdev *d, __u32 to)
{
	__u32 from, now;
	int dfd, ret;

	ASSERT_EQ(0, mig_get(d->fd, &from));
	ret = mig_set(d->fd, to, &dfd);
	ASSERT_EQ(0, ret) {
		TH_LOG("%s: %s -> %s: %s", d->bdf, state_name(from),
		       state_name(to), strerror(-ret));
	}
	if (arc_new_fd(from, to)) {
		ASSERT_LE(0, dfd) {
			TH_LOG("%s: %s -> %s returned data_fd %d, want a new fd",
			       d->bdf, state_name(from), state_name(to), dfd);
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

/* Back to RUNNING from anywhere (RESUMING and ERROR through a reset). */
static void back_to_running(struct __test_metadata *_metadata, struct qdev *d)
{
	__u32 state;

	ASSERT_EQ(0, mig_get(d->fd, &state));
	if (state == VFIO_DEVICE_STATE_RESUMING ||
	    state == VFIO_DEVICE_STATE_ERROR) {
		ASSERT_EQ(0, device_reset(d));
	} else if (state != VFIO_DEVICE_STATE_RUNNING) {
		ASSERT_EQ(0, mig_set(d->fd, VFIO_DEVICE_STATE_RUNNING, NULL));
	}
	expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING, "back to RUNNING");
}

struct pc_info {
	__u32 flags;
	__u64 initial, dirty;
};

/* VFIO_MIG_GET_PRECOPY_INFO with @argsz and input @flags; 0 or -errno. */
static int precopy_info_raw(int dfd, __u32 argsz, __u32 flags,
			    struct pc_info *out)
{
	struct vfio_precopy_info info = {
		.argsz = argsz,
		.flags = flags,
		.initial_bytes = 0x1111111111111111ULL,
		.dirty_bytes = 0x2222222222222222ULL,
	};
	int ret = ioctl(dfd, VFIO_MIG_GET_PRECOPY_INFO, &info) ? -errno : 0;

	out->flags = info.flags;
	out->initial = info.initial_bytes;
	out->dirty = info.dirty_bytes;
	return ret;
}

static int precopy_info(int dfd, struct pc_info *out)
{
	return precopy_info_raw(dfd, sizeof(struct vfio_precopy_info), 0, out);
}

/*
 * EXPECT PRECOPY_INFO == (@initial, @dirty) on @dfd and MIG_DATA_SIZE ==
 * @initial + @dirty + DEVICE_REGS + END on @d.  True if all three hold.
 */
static bool expect_counts(struct __test_metadata *_metadata, struct qdev *d,
			  int dfd, __u64 initial, __u64 dirty, const char *what)
{
	struct pc_info info;
	__u64 size = 0;
	bool ok = true;
	int ret;

	ret = precopy_info(dfd, &info);
	EXPECT_EQ(0, ret) {
		TH_LOG("%s: VFIO_MIG_GET_PRECOPY_INFO: %s", what,
		       strerror(-ret));
		return false;
	}
	if (info.initial != initial || info.dirty != dirty) {
		ok = false;
		EXPECT_TRUE(false) {
			TH_LOG("%s: PRECOPY_INFO (initial %llu, dirty %llu), want (%llu, %llu)",
			       what, (unsigned long long)info.initial,
			       (unsigned long long)info.dirty,
			       (unsigned long long)initial,
			       (unsigned long long)dirty);
		}
	}
	ret = get_data_size(d->fd, &size);
	EXPECT_EQ(0, ret) {
		TH_LOG("%s: MIG_DATA_SIZE: %s", what, strerror(-ret));
		return false;
	}
	if (size != initial + dirty + LEN_TAIL) {
		ok = false;
		EXPECT_TRUE(false) {
			TH_LOG("%s: MIG_DATA_SIZE %llu, want %llu = %llu + %llu + %u",
			       what, (unsigned long long)size,
			       (unsigned long long)(initial + dirty + LEN_TAIL),
			       (unsigned long long)initial,
			       (unsigned long long)dirty, LEN_TAIL);
		}
	}
	return ok;
}

static int poll_in(int fd, int timeout_ms, short *revents)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int ret = poll(&p, 1, timeout_ms);

	*revents = p.revents;
	return ret < 0 ? -errno : ret;
}

/* read() @len bytes, going on after short reads; the bytes read or -errno. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(fd, (__u8 *)buf + done, len - done);

		if (n < 0)
			return -errno;
		if (!n)
			break;
		done += n;
	}
	return done;
}

/*
 * A session that ended: read() ENODEV, poll() POLLERR; PRECOPY_INFO fails,
 * with EINVAL while @d (if open) is not in PRE_COPY / PRE_COPY_P2P (the
 * uAPI's rule), else EINVAL or ENODEV (the device has a new session).
 */
static void expect_dead(struct __test_metadata *_metadata, struct qdev *d,
			int dfd, const char *what)
{
	struct pc_info info;
	__u32 state = VFIO_DEVICE_STATE_ERROR;
	bool precopy_now;
	short rev = 0;
	ssize_t n;
	char c;
	int err, ret;

	n = read(dfd, &c, 1);
	err = errno;
	EXPECT_EQ(-1, n) {
		TH_LOG("%s: read() on the old data fd returned %zd", what, n);
	}
	if (n < 0) {
		EXPECT_EQ(ENODEV, err) {
			TH_LOG("%s: read() on the old data fd: %s, want ENODEV",
			       what, strerror(err));
		}
	}
	ret = poll_in(dfd, 0, &rev);
	EXPECT_EQ(1, ret) {
		TH_LOG("%s: poll() on the old data fd returned %d", what, ret);
	}
	EXPECT_TRUE(rev & POLLERR) {
		TH_LOG("%s: poll() on the old data fd: revents %#x, want POLLERR",
		       what, rev);
	}
	precopy_now = !d || d->fd < 0 || mig_get(d->fd, &state) ||
		      is_precopy(state);
	ret = precopy_info(dfd, &info);
	if (precopy_now) {
		EXPECT_TRUE(ret == -EINVAL || ret == -ENODEV) {
			TH_LOG("%s: PRECOPY_INFO on the old data fd: %s, want EINVAL or ENODEV",
			       what, ret ? strerror(-ret) : "succeeded");
		}
	} else {
		EXPECT_EQ(-EINVAL, ret) {
			TH_LOG("%s: PRECOPY_INFO on the old data fd, device in %s: %s, want EINVAL",
			       what, state_name(state),
			       ret ? strerror(-ret) : "succeeded");
		}
	}
}

/* ---------------------------------------------------------------------- */
/* Stream bytes, records and the model of the source                      */
/* ---------------------------------------------------------------------- */

/* Stream length at PRE_COPY entry up to the end of the initial pass. */
static __u64 initial_len(size_t mem)
{
	return LEN_HEADER + (mem + MAX_CHUNK - 1) / MAX_CHUNK * LEN_MEM + mem;
}

struct sbuf {
	__u8 *buf;
	size_t len, cap;
};

static int sbuf_reserve(struct sbuf *s, size_t more)
{
	size_t cap = s->cap ? s->cap : SZ_1M;
	__u8 *p;

	if (s->len + more <= s->cap)
		return 0;
	while (cap < s->len + more)
		cap *= 2;
	p = realloc(s->buf, cap);
	if (!p)
		return -ENOMEM;
	s->buf = p;
	s->cap = cap;
	return 0;
}

/* read() up to @n bytes onto @s; the read's result (bytes, or -errno). */
static ssize_t sbuf_read(int fd, struct sbuf *s, size_t n)
{
	ssize_t got;

	if (sbuf_reserve(s, n))
		return -ENOMEM;
	got = read(fd, s->buf + s->len, n);
	if (got < 0)
		return -errno;
	s->len += got;
	return got;
}

/* sbuf_read() going on after short reads */
static ssize_t sbuf_read_full(int fd, struct sbuf *s, size_t n)
{
	ssize_t got;

	if (sbuf_reserve(s, n))
		return -ENOMEM;
	got = read_full(fd, s->buf + s->len, n);
	if (got > 0)
		s->len += got;
	return got;
}

struct rec {
	__u32 type;
	__u64 off;	/* MEMORY: where the data goes */
	__u64 len;	/* payload bytes; MEMORY: data bytes */
};

struct recs {
	struct rec *v;
	size_t n, cap;
};

static void recs_add(struct recs *r, __u32 type, __u64 off, __u64 len)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 256;
		r->v = realloc(r->v, r->cap * sizeof(*r->v));
		if (!r->v)
			abort();
	}
	r->v[r->n++] = (struct rec){ .type = type, .off = off, .len = len };
}

/*
 * Split the stream @buf into records, checking tags and CRCs, the HEADER
 * (@mem), MEMORY bounds and END's counters.  NULL, or what is wrong.
 */
static const char *parse_stream(const __u8 *buf, size_t len, size_t mem,
				struct recs *out)
{
	static char why[160];
	size_t off = 0;

	while (off < len) {
		const __u8 *rec = buf + off;
		__u32 type;
		__u64 plen;

		if (len - off < REC_HDR + 4 || memcmp(rec, "QVPR", 4)) {
			snprintf(why, sizeof(why), "no record header at %zu", off);
			return why;
		}
		type = get_le32(rec + 4);
		plen = get_le64(rec + 16);
		if (get_le32(rec + 8) || get_le32(rec + 12) ||
		    plen > len - off - REC_HDR - 4) {
			snprintf(why, sizeof(why),
				 "record at %zu: flags %#x, reserved %#x, payload %llu",
				 off, get_le32(rec + 8), get_le32(rec + 12),
				 (unsigned long long)plen);
			return why;
		}
		if (crc32c(rec, REC_HDR + plen) != get_le32(rec + REC_HDR + plen)) {
			snprintf(why, sizeof(why), "record at %zu (type %#x): bad CRC",
				 off, type);
			return why;
		}
		switch (type) {
		case REC_HEADER:
			if (plen != 32 || memcmp(rec + REC_HDR, "QVFIOMIG", 8) ||
			    get_le32(rec + REC_HDR + 8) != 1 ||
			    get_le32(rec + REC_HDR + 12) != KIND_BOCHS ||
			    get_le64(rec + REC_HDR + 16) != mem ||
			    get_le32(rec + REC_HDR + 24) != REGS_BLOB) {
				snprintf(why, sizeof(why), "bad HEADER payload at %zu", off);
				return why;
			}
			recs_add(out, type, 0, plen);
			break;
		case REC_MEMORY: {
			__u64 moff;

			if (plen < 8) {
				snprintf(why, sizeof(why), "short MEMORY at %zu", off);
				return why;
			}
			moff = get_le64(rec + REC_HDR);
			if (moff + plen - 8 > mem) {
				snprintf(why, sizeof(why), "MEMORY at %zu beyond VRAM", off);
				return why;
			}
			recs_add(out, type, moff, plen - 8);
			break;
		}
		case REC_END:
			if (plen != 16 || get_le64(rec + REC_HDR) != out->n ||
			    get_le64(rec + REC_HDR + 8) != off) {
				snprintf(why, sizeof(why),
					 "END at %zu: counters %llu records, %llu bytes; want %zu, %zu",
					 off,
					 (unsigned long long)get_le64(rec + REC_HDR),
					 (unsigned long long)get_le64(rec + REC_HDR + 8),
					 out->n, off);
				return why;
			}
			recs_add(out, type, 0, plen);
			if (off + REC_HDR + plen + 4 != len) {
				snprintf(why, sizeof(why), "%llu bytes after END",
					 (unsigned long long)(len - (off + REC_HDR + plen + 4)));
				return why;
			}
			return NULL;
		default:
			recs_add(out, type, 0, plen);
			break;
		}
		off += REC_HDR + plen + 4;
	}
	snprintf(why, sizeof(why), "no END record in %zu bytes", len);
	return why;
}

static const char *rec_name(__u32 type)
{
	switch (type) {
	case REC_HEADER: return "HEADER";
	case REC_REGS: return "DEVICE_REGS";
	case REC_MEMORY: return "MEMORY";
	case REC_END: return "END";
	default: return "?";
	}
}

/* EXPECT the records of @got to be those of @want; logs the first differences. */
static void expect_recs(struct __test_metadata *_metadata,
			const struct recs *want, const struct recs *got)
{
	unsigned int shown = 0;
	size_t i;

	EXPECT_EQ(want->n, got->n) {
		TH_LOG("the stream has %zu records, want %zu", got->n, want->n);
	}
	for (i = 0; i < want->n && i < got->n && shown < 4; i++) {
		const struct rec *w = &want->v[i], *g = &got->v[i];

		if (w->type == g->type && w->off == g->off && w->len == g->len)
			continue;
		shown++;
		EXPECT_TRUE(false) {
			TH_LOG("record %zu is %s(offset %#llx, %llu bytes), want %s(offset %#llx, %llu bytes)",
			       i, rec_name(g->type), (unsigned long long)g->off,
			       (unsigned long long)g->len, rec_name(w->type),
			       (unsigned long long)w->off,
			       (unsigned long long)w->len);
		}
	}
}

/* Check the 60-byte HEADER record at @p for a device with @mem bytes. */
static void expect_header(struct __test_metadata *_metadata, const __u8 *p,
			  size_t mem)
{
	struct recs r = { 0 };
	__u8 tmp[LEN_HEADER + LEN_END];
	const char *why;

	/* a HEADER and an END that makes a complete "stream" of it */
	memcpy(tmp, p, LEN_HEADER);
	memcpy(tmp + LEN_HEADER, "QVPR", 4);
	put_le32(tmp + LEN_HEADER + 4, REC_END);
	put_le32(tmp + LEN_HEADER + 8, 0);
	put_le32(tmp + LEN_HEADER + 12, 0);
	put_le64(tmp + LEN_HEADER + 16, 16);
	put_le64(tmp + LEN_HEADER + 24, 1);
	put_le64(tmp + LEN_HEADER + 32, LEN_HEADER);
	put_le32(tmp + LEN_HEADER + 40, crc32c(tmp + LEN_HEADER, 40));
	why = parse_stream(tmp, sizeof(tmp), mem, &r);
	EXPECT_EQ(NULL, why) {
		TH_LOG("the first %u bytes are not a HEADER record: %s",
		       LEN_HEADER, why);
	}
	if (!why) {
		EXPECT_EQ(REC_HEADER, r.v[0].type);
	}
	free(r.v);
}

/*
 * What the source's VRAM holds and which pages the driver must see dirty,
 * following Documentation/stream-format.rst: one bit per page, set by a
 * write to a page the initial pass has sent (@sent_pages: the pages behind
 * it), cleared when a run is sent; runs are searched from @cursor to the end,
 * then from page 0 up to the cursor, and are at most MAX_RUN pages.
 */
struct model {
	size_t mem, npages, sent_pages, cursor;
	__u8 *bits;
	__u8 *vram;
};

static int model_init(struct model *m, const struct qdev *d)
{
	m->mem = d->vram_size;
	m->npages = m->mem / PAGE_SZ;
	m->sent_pages = 0;
	m->cursor = 0;
	m->bits = calloc(m->npages, 1);
	m->vram = malloc(m->mem);
	if (!m->bits || !m->vram)
		return -ENOMEM;
	memcpy(m->vram, d->vram, m->mem);
	return 0;
}

static void model_free(struct model *m)
{
	free(m->bits);
	free(m->vram);
}

static size_t run_len(const __u8 *bits, size_t s, size_t limit)
{
	size_t n = 0;

	while (s + n < limit && n < MAX_RUN && bits[s + n])
		n++;
	return n;
}

static bool next_run(const __u8 *bits, size_t npages, size_t cursor,
		     size_t *s, size_t *len)
{
	size_t p;

	for (p = cursor; p < npages; p++) {
		if (bits[p]) {
			*s = p;
			*len = run_len(bits, p, npages);
			return true;
		}
	}
	for (p = 0; p < cursor; p++) {
		if (bits[p]) {
			*s = p;
			*len = run_len(bits, p, cursor);
			return true;
		}
	}
	return false;
}

/*
 * Send every dirty run from the cursor on (on @bits), as the driver will:
 * the records go to @out (if any); returns their bytes.
 */
static __u64 drain_runs(__u8 *bits, size_t npages, size_t *cursor,
			struct recs *out)
{
	size_t s, len;
	__u64 bytes = 0;

	while (next_run(bits, npages, *cursor, &s, &len)) {
		memset(bits + s, 0, len);
		*cursor = (s + len) % npages;
		bytes += LEN_MEM + len * PAGE_SZ;
		if (out)
			recs_add(out, REC_MEMORY, s * PAGE_SZ, len * PAGE_SZ);
	}
	return bytes;
}

/* dirty_bytes as the driver must report it now */
static __u64 model_dirty_bytes(const struct model *m)
{
	__u8 *bits = malloc(m->npages);
	size_t cursor = m->cursor;
	__u64 bytes;

	if (!bits)
		abort();
	memcpy(bits, m->bits, m->npages);
	bytes = drain_runs(bits, m->npages, &cursor, NULL);
	free(bits);
	return bytes;
}

static __u64 model_send(struct model *m, struct recs *out)
{
	return drain_runs(m->bits, m->npages, &m->cursor, out);
}

static void model_mark(struct model *m, size_t off, size_t len)
{
	size_t p;

	for (p = off / PAGE_SZ; p <= (off + len - 1) / PAGE_SZ; p++)
		if (p < m->sent_pages)
			m->bits[p] = 1;
}

/* Store @len bytes at VRAM offset @off through the mapping. */
static void vram_store(struct model *m, struct qdev *d, size_t off,
		       const void *data, size_t len)
{
	memcpy(d->vram + off, data, len);
	memcpy(m->vram + off, data, len);
	model_mark(m, off, len);
}

/* The same through the device fd (a BAR0 region write). */
static int vram_pwrite(struct model *m, struct qdev *d, size_t off,
		       const void *data, size_t len)
{
	ssize_t n = pwrite(d->fd, data, len, d->bar0.offset + off);

	if (n != (ssize_t)len)
		return n < 0 ? -errno : -EIO;
	memcpy(m->vram + off, data, len);
	model_mark(m, off, len);
	return 0;
}

/* Fresh pseudo-random data for a page. */
static void page_data(__u8 *buf, __u64 *rng)
{
	fill_pattern(buf, PAGE_SZ, rng_next(rng));
}

/* Give @src's VRAM a fresh pattern and registers; @dst other registers. */
static void setup_pair(struct __test_metadata *_metadata, struct qdev *src,
		       struct qdev *dst, __u64 seed, struct regs *want)
{
	struct regs other;

	fill_pattern(src->vram, src->vram_size, seed);
	regs_make(want, 0, seed);
	ASSERT_EQ(0, regs_write(src, want));
	if (dst) {
		regs_make_other(&other, want);
		ASSERT_EQ(0, regs_write(dst, &other));
		memset(dst->vram, 0xa5, SZ_4K);
		memset(dst->vram + dst->vram_size - SZ_4K, 0x5a, SZ_4K);
	}
}

/* Resume @s into @dst, bring it to RUNNING; its VRAM must equal @want. */
static void resume_check(struct __test_metadata *_metadata, struct qdev *dst,
			 const __u8 *buf, size_t len, const __u8 *want_vram,
			 const struct regs *want_regs, const char *what)
{
	struct io_plan plan = { .mode = IO_CHUNK, .chunk = SZ_1M };
	struct stream s = { .buf = (__u8 *)buf, .len = len };
	struct regs got;

	resume_stream(_metadata, dst, &s, &plan, false, NULL);
	go_state(_metadata, dst, VFIO_DEVICE_STATE_RUNNING);
	expect_vram(_metadata, dst, want_vram, what);
	if (want_regs) {
		ASSERT_EQ(0, regs_read(dst, &got));
		expect_regs(_metadata, want_regs, &got, what);
	}
}

/* Read a STOP_COPY data fd to its end onto @s; returns the bytes read. */
static size_t read_to_end(struct __test_metadata *_metadata, int dfd,
			  struct sbuf *s, size_t chunk)
{
	size_t total = 0;

	for (;;) {
		ssize_t n = sbuf_read(dfd, s, chunk);

		ASSERT_LE(0, n) {
			TH_LOG("read in STOP_COPY after %zu bytes: %s", total,
			       strerror(-n));
		}
		if (!n)
			break;
		total += n;
	}
	return total;
}

/* ---------------------------------------------------------------------- */
/* Fixture: two devices, source and destination                          */
/* ---------------------------------------------------------------------- */

static void pair_setup(struct __test_metadata *_metadata, struct qdev *dev)
{
	const char *step;
	unsigned int i;
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
		ASSERT_EQ(0, mig_get(d->fd, &state));
		ASSERT_EQ(VFIO_DEVICE_STATE_RUNNING, state) {
			TH_LOG("%s: state after open is %s", d->bdf,
			       state_name(state));
		}
		ASSERT_EQ(0, regs_read(d, &d->saved));
		d->saved_valid = true;
	}
	ASSERT_EQ(dev[0].vram_size, dev[1].vram_size) {
		TH_LOG("source and destination need the same VRAM size");
	}
	ASSERT_EQ(0, dev[0].vram_size % MAX_CHUNK);
	ASSERT_LE(1024 * PAGE_SZ, dev[0].vram_size) {
		TH_LOG("the tests need at least 4 MiB of VRAM");
	}
}

static void pair_teardown(struct __test_metadata *_metadata, struct qdev *dev)
{
	unsigned int i;
	int ret;

	for (i = 0; i < 2; i++) {
		struct qdev *d = &dev[i];

		if (d->fd < 0)
			continue;
		/*
		 * No EXPECT block: after a failed ASSERT the harness runs the
		 * teardown with its trigger still set, which would run the
		 * block even for a reset that worked.
		 */
		ret = device_reset(d);
		if (ret)
			TH_LOG("%s: teardown reset: %s", d->bdf, strerror(-ret));
		EXPECT_EQ(0, ret);
		if (d->saved_valid)
			regs_write(d, &d->saved);
		dev_close(d);
	}
}

FIXTURE(pc) {
	struct qdev dev[2];
};

FIXTURE_SETUP(pc)
{
	pair_setup(_metadata, self->dev);
}

FIXTURE_TEARDOWN(pc)
{
	pair_teardown(_metadata, self->dev);
}

/* ---------------------------------------------------------------------- */
/* 1. Capabilities                                                        */
/* ---------------------------------------------------------------------- */

static int try_ioeventfd(struct qdev *d, __u64 off, int fd)
{
	struct vfio_device_ioeventfd ev = {
		.argsz = sizeof(ev),
		.flags = VFIO_DEVICE_IOEVENTFD_32,
		.offset = off,
		.data = 0x12345678,
		.fd = fd,
	};

	return ioctl(d->fd, VFIO_DEVICE_IOEVENTFD, &ev) ? -errno : 0;
}

/*
 * PRE_COPY is advertised with STOP_COPY and P2P; VFIO_DEVICE_IOEVENTFD (a
 * kernel-side writer the tracking would not see) is refused with
 * EOPNOTSUPP, in RUNNING and in PRE_COPY.
 */
TEST_F_TIMEOUT(pc, flags, 60)
{
	const __u64 want = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P |
			   VFIO_MIGRATION_PRE_COPY;
	unsigned int i;
	__u64 flags;
	int efd, ret, dfd;

	for (i = 0; i < 2; i++) {
		struct qdev *d = &self->dev[i];

		ASSERT_EQ(0, mig_flags(d->fd, &flags));
		TH_LOG("%s: migration flags %#llx", d->bdf,
		       (unsigned long long)flags);
		EXPECT_EQ(want, flags);
#ifdef VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2
		EXPECT_EQ(0, device_feature(d->fd,
					    VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 |
					    VFIO_DEVICE_FEATURE_SET |
					    VFIO_DEVICE_FEATURE_PROBE, &flags, 0));
#endif
	}
	ASSERT_EQ(want, flags & want) {
		TH_LOG("the driver does not advertise PRE_COPY");
	}

	efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, efd);
	for (i = 0; i < 2; i++) {
		struct qdev *d = &self->dev[0];
		const char *st = i ? "PRE_COPY" : "RUNNING";

		dfd = i ? pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY) : -1;
		ret = try_ioeventfd(d, d->bar0.offset + 0x1000, efd);
		EXPECT_EQ(-EOPNOTSUPP, ret) {
			TH_LOG("%s: IOEVENTFD on BAR0: %s", st,
			       ret ? strerror(-ret) : "accepted");
		}
		ret = try_ioeventfd(d, d->bar0.offset + 0x1000, -1);
		EXPECT_EQ(-EOPNOTSUPP, ret) {
			TH_LOG("%s: IOEVENTFD de-assign on BAR0: %s", st,
			       ret ? strerror(-ret) : "accepted");
		}
		ret = try_ioeventfd(d, d->bar2.offset + DISPI_REG(DISPI_INDEX_X_OFFSET),
				    efd);
		EXPECT_EQ(-EOPNOTSUPP, ret) {
			TH_LOG("%s: IOEVENTFD on BAR2: %s", st,
			       ret ? strerror(-ret) : "accepted");
		}
		if (dfd >= 0) {
			expect_counts(_metadata, d, dfd,
				      initial_len(d->vram_size), 0,
				      "PRE_COPY after IOEVENTFD attempts");
			close(dfd);
			back_to_running(_metadata, d);
		}
	}
	close(efd);
}

/* ---------------------------------------------------------------------- */
/* 2. Exact counts                                                        */
/* ---------------------------------------------------------------------- */

/* Odd read sizes: around a byte, a page, a record and beyond. */
static const size_t odd_sizes[] = {
	1, 35, 37, 4095, 4097, 262179, 262181, 2 * 262180 + 7, 999983,
};

/*
 * The counts PRE_COPY must report, as a test reads: a read of n bytes takes
 * them from initial_bytes first, then from dirty_bytes (the unread part of
 * a staged record stays in the count it belongs to).  Also how many reads
 * there were and how many came back short with more data to come (allowed,
 * only logged).
 */
struct counter {
	__u64 initial, dirty;
	unsigned long reads, short_reads;
};

static void counter_consume(struct counter *c, __u64 n)
{
	if (n <= c->initial) {
		c->initial -= n;
	} else {
		c->dirty -= n - c->initial;
		c->initial = 0;
	}
}

/*
 * Exact accounting of a PRE_COPY stream.  After PRE_COPY entry the counts are
 * (initial_len, 0) and MIG_DATA_SIZE that + 96; the initial pass (read in odd
 * sizes) lowers initial_bytes by exactly what was read; during it a write
 * to a page not yet sent changes nothing and one to a page already sent adds
 * one run; after it the temporary end (0, 0), ENOMSG, not readable.  Then
 * scattered pages (two adjacent, one twice, one through pwrite) make exactly
 * the runs the model predicts, a DISPI register write makes none; they are
 * read up to ENOMSG.  Then 70 pages (two runs: 64 + 6), a pwrite across a page
 * boundary and a one-byte store; PRE_COPY_P2P (the same fd, counts still
 * exact), part of a record read there; STOP_COPY continues the fd with no new
 * one: PRECOPY_INFO is EINVAL and exactly MIG_DATA_SIZE bytes follow.  The
 * whole stream has exactly the records the model predicts and, resumed into
 * the destination, gives the source's VRAM and its registers of the moment of
 * STOP_COPY.
 */
TEST_F_TIMEOUT(pc, exact_counts, 240)
{
	struct qdev *src = &self->dev[0], *dst = &self->dev[1];
	const __u64 seed = fresh_seed();
	struct recs want_recs = { 0 }, got_recs = { 0 };
	struct sbuf s = { 0 };
	struct counter c = { 0 };
	struct model m;
	struct regs regs0, regs1;
	__u8 page[PAGE_SZ], byte;
	const char *why;
	__u64 size, dirty, stop_bytes, rng = seed;
	size_t npages, nchunks, i, k, p_adj, p_a, p_b, p_pw, p_last, p_long, p_x,
	       p_one, sent_at_pc, total;
	bool hooked = false;
	short rev;
	ssize_t n;
	int dfd, ret;

	setup_pair(_metadata, src, dst, seed, &regs0);
	ASSERT_EQ(0, model_init(&m, src));
	npages = m.npages;
	nchunks = m.mem / MAX_CHUNK;

	dfd = pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY);
	c.initial = initial_len(m.mem);
	TH_LOG("VRAM %zu MiB: initial_bytes at entry must be %llu, MIG_DATA_SIZE %llu",
	       m.mem / SZ_1M, (unsigned long long)c.initial,
	       (unsigned long long)(c.initial + LEN_TAIL));
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, c.initial, 0,
				  "at PRE_COPY entry"));
	ASSERT_EQ(1, poll_in(dfd, 0, &rev));
	EXPECT_TRUE(rev & POLLIN);

	/* the HEADER in two odd pieces */
	recs_add(&want_recs, REC_HEADER, 0, 32);
	n = sbuf_read(dfd, &s, 7);
	ASSERT_EQ(7, n);
	counter_consume(&c, n);
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, c.initial, 0,
				  "after 7 bytes"));
	n = sbuf_read(dfd, &s, LEN_HEADER - 7);
	ASSERT_EQ(LEN_HEADER - 7, n);
	counter_consume(&c, n);
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, c.initial, 0,
				  "after the HEADER"));
	expect_header(_metadata, s.buf, m.mem);
	for (k = 0; k < nchunks; k++)
		recs_add(&want_recs, REC_MEMORY, k * MAX_CHUNK, MAX_CHUNK);

	/* the initial pass, with writes behind and ahead of it half-way */
	for (i = 0; c.initial || c.dirty; i++) {
		size_t want = odd_sizes[i % ARRAY_SIZE(odd_sizes)];
		__u64 avail = c.initial + c.dirty;
		size_t done_chunks = (s.len - LEN_HEADER) / (LEN_MEM + MAX_CHUNK);
		char what[96];

		if (!hooked && done_chunks >= nchunks / 2) {
			hooked = true;
			m.sent_pages = done_chunks * MAX_RUN;
			/* behind: chunk 0 is sent (twice: one run) */
			page_data(page, &rng);
			vram_store(&m, src, 5 * PAGE_SZ, page, PAGE_SZ);
			vram_store(&m, src, 5 * PAGE_SZ + 100, page, 8);
			/* ahead: the last chunk is not staged yet */
			page_data(page, &rng);
			vram_store(&m, src, (npages - 3) * PAGE_SZ, page,
				   PAGE_SZ);
			page_data(page, &rng);
			ASSERT_EQ(0, vram_pwrite(&m, src,
						 (npages - 40) * PAGE_SZ + 24,
						 page, 1000));
			c.dirty = model_dirty_bytes(&m);
			EXPECT_EQ(LEN_MEM + PAGE_SZ, c.dirty);
			TH_LOG("initial pass at %zu of %zu chunks: a page behind written twice, two ahead: dirty_bytes must be %llu",
			       done_chunks, nchunks,
			       (unsigned long long)c.dirty);
			ASSERT_TRUE(expect_counts(_metadata, src, dfd,
						  c.initial, c.dirty,
						  "writes during the initial pass"));
			avail = c.initial + c.dirty;
		}
		n = sbuf_read(dfd, &s, want);
		ASSERT_LT(0, n) {
			TH_LOG("read(%zu) with (%llu, %llu) left: %s", want,
			       (unsigned long long)c.initial,
			       (unsigned long long)c.dirty,
			       n < 0 ? strerror(-n) : "0 (end of stream)");
		}
		ASSERT_GE(want < avail ? want : avail, (size_t)n);
		c.reads++;
		if ((size_t)n < want && (size_t)n < avail)
			c.short_reads++;
		counter_consume(&c, n);
		snprintf(what, sizeof(what), "read %zu of %zu (total %zu)",
			 (size_t)n, want, s.len);
		ASSERT_TRUE(expect_counts(_metadata, src, dfd, c.initial,
					  c.dirty, what));
	}
	m.sent_pages = npages;
	model_send(&m, &want_recs);	/* page 5 */
	TH_LOG("initial pass: %lu reads (%lu short before the end), %zu bytes",
	       c.reads, c.short_reads, s.len);

	/* the temporary end */
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, 0, 0, "temporary end"));
	n = sbuf_read(dfd, &s, 4096);
	EXPECT_EQ(-ENOMSG, n) {
		TH_LOG("read at the temporary end: %s",
		       n < 0 ? strerror(-n) : "returned data");
	}
	EXPECT_EQ(0, poll_in(dfd, 0, &rev)) {
		TH_LOG("poll at the temporary end: revents %#x", rev);
	}

	/*
	 * Round A: two adjacent pages, one page twice, the last page, one by
	 * pwrite; a register write is not VRAM.
	 */
	p_adj = 10;
	p_a = npages / 6;
	p_b = npages / 2 + 1;
	p_pw = npages / 3 + 3;
	p_last = npages - 1;
	page_data(page, &rng);
	vram_store(&m, src, p_adj * PAGE_SZ, page, PAGE_SZ);
	page_data(page, &rng);
	vram_store(&m, src, (p_adj + 1) * PAGE_SZ, page, PAGE_SZ);
	page_data(page, &rng);
	vram_store(&m, src, p_a * PAGE_SZ, page, PAGE_SZ);
	page_data(page, &rng);
	vram_store(&m, src, p_b * PAGE_SZ, page, PAGE_SZ);
	page_data(page, &rng);
	vram_store(&m, src, p_b * PAGE_SZ + 1000, page, 100);
	page_data(page, &rng);
	vram_store(&m, src, p_last * PAGE_SZ, page, PAGE_SZ);
	page_data(page, &rng);
	ASSERT_EQ(0, vram_pwrite(&m, src, p_pw * PAGE_SZ, page, PAGE_SZ));
	regs_make(&regs1, 1, seed >> 7);
	ASSERT_EQ(0, regs_write(src, &regs1));
	dirty = model_dirty_bytes(&m);
	EXPECT_EQ(5 * LEN_MEM + 6 * PAGE_SZ, dirty);
	TH_LOG("round A: pages %zu+%zu, %zu, %zu (twice), %zu, %zu (pwrite): dirty_bytes must be %llu",
	       p_adj, p_adj + 1, p_a, p_b, p_last, p_pw,
	       (unsigned long long)dirty);
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, 0, dirty, "round A"));
	EXPECT_EQ(1, poll_in(dfd, 0, &rev));
	EXPECT_TRUE(rev & POLLIN);
	for (total = 0, c.reads = 0;;) {
		n = sbuf_read(dfd, &s, SZ_1M);
		if (n == -ENOMSG)
			break;
		ASSERT_LT(0, n) {
			TH_LOG("round A: read after %zu bytes: %s", total,
			       n < 0 ? strerror(-n) : "0 (end of stream)");
		}
		total += n;
		c.reads++;
		ASSERT_GE(dirty, total);
	}
	EXPECT_EQ(dirty, total) {
		TH_LOG("round A: %zu bytes up to ENOMSG, dirty_bytes said %llu",
		       total, (unsigned long long)dirty);
	}
	TH_LOG("round A: %zu bytes in %lu reads, then ENOMSG", total, c.reads);
	model_send(&m, &want_recs);
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, 0, 0, "after round A"));
	EXPECT_EQ(0, poll_in(dfd, 0, &rev));

	/* Round B: 70 pages in a row, a pwrite across two pages, one byte */
	p_long = 100;
	p_x = (3 * npages) / 4 - 72;
	p_one = npages - 96;
	for (k = 0; k < 70; k++) {
		page_data(page, &rng);
		vram_store(&m, src, (p_long + k) * PAGE_SZ, page, PAGE_SZ);
	}
	page_data(page, &rng);
	ASSERT_EQ(0, vram_pwrite(&m, src, p_x * PAGE_SZ + PAGE_SZ - 50, page,
				 100));
	byte = ~m.vram[p_one * PAGE_SZ + 123];
	vram_store(&m, src, p_one * PAGE_SZ + 123, &byte, 1);
	dirty = model_dirty_bytes(&m);
	EXPECT_EQ(4 * LEN_MEM + 73 * PAGE_SZ, dirty);
	TH_LOG("round B: pages %zu..%zu, %zu+%zu (one pwrite), %zu (one byte): dirty_bytes must be %llu",
	       p_long, p_long + 69, p_x, p_x + 1, p_one,
	       (unsigned long long)dirty);
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, 0, dirty, "round B"));

	/* PRE_COPY_P2P: the same fd, part of a record read there */
	pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY_P2P);
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, 0, dirty,
				  "round B in PRE_COPY_P2P"));
	n = sbuf_read(dfd, &s, 1000);
	ASSERT_EQ(1000, n);
	dirty -= 1000;
	ASSERT_TRUE(expect_counts(_metadata, src, dfd, 0, dirty,
				  "1000 bytes read in PRE_COPY_P2P"));
	ASSERT_EQ(0, get_data_size(src->fd, &size));
	sent_at_pc = s.len;

	/* STOP_COPY: same fd, no new one; the rest is exactly MIG_DATA_SIZE */
	pc_go(_metadata, src, VFIO_DEVICE_STATE_STOP_COPY);
	{
		struct pc_info info;

		ret = precopy_info(dfd, &info);
		EXPECT_EQ(-EINVAL, ret) {
			TH_LOG("PRECOPY_INFO in STOP_COPY: %s",
			       ret ? strerror(-ret) : "succeeded");
		}
	}
	EXPECT_EQ(1, poll_in(dfd, 0, &rev));
	EXPECT_TRUE(rev & POLLIN);
	stop_bytes = read_to_end(_metadata, dfd, &s, 77777);
	EXPECT_EQ(size, stop_bytes) {
		TH_LOG("STOP_COPY gave %llu bytes, MIG_DATA_SIZE before it said %llu",
		       (unsigned long long)stop_bytes,
		       (unsigned long long)size);
	}
	EXPECT_EQ(0, read(dfd, page, sizeof(page)));
	EXPECT_EQ(1, poll_in(dfd, 0, &rev));
	EXPECT_TRUE(rev & POLLIN);
	model_send(&m, &want_recs);
	recs_add(&want_recs, REC_REGS, 0, REGS_BLOB);
	recs_add(&want_recs, REC_END, 0, 16);
	TH_LOG("stream: %zu bytes in PRE_COPY, %llu in STOP_COPY, %zu records expected",
	       sent_at_pc, (unsigned long long)stop_bytes, want_recs.n);

	why = parse_stream(s.buf, s.len, m.mem, &got_recs);
	EXPECT_EQ(NULL, why) {
		TH_LOG("the stream is not valid: %s", why);
	}
	expect_recs(_metadata, &want_recs, &got_recs);
	close(dfd);

	/* the source is what the model says, the destination too */
	go_state(_metadata, src, VFIO_DEVICE_STATE_STOP);
	go_state(_metadata, src, VFIO_DEVICE_STATE_RUNNING);
	expect_vram(_metadata, src, m.vram, "source after PRE_COPY");
	resume_check(_metadata, dst, s.buf, s.len, m.vram, &regs1,
		     "destination after PRE_COPY");

	free(want_recs.v);
	free(got_recs.v);
	free(s.buf);
	model_free(&m);
}

/* ---------------------------------------------------------------------- */
/* 3. PRECOPY_INFO argsz, states and the v2 flags                         */
/* ---------------------------------------------------------------------- */

/*
 * argsz below 24 is EINVAL, more is fine; a bad pointer EFAULT.  Without the
 * VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 opt-in, flags comes back as passed;
 * with it, 0 (REINIT never set).  Outside PRE_COPY / PRE_COPY_P2P: EINVAL, on
 * a plain STOP -> STOP_COPY fd, on the PRE_COPY fd once in STOP_COPY, and on
 * an ended session's fd with the device RUNNING.
 */
TEST_F_TIMEOUT(pc, argsz_and_v2, 120)
{
	struct qdev *d = &self->dev[0];
	static const __u32 bad_argsz[] = { 0, 8, 16, 23 };
	static const __u32 echo[] = { 0, VFIO_PRECOPY_INFO_REINIT, 0xa5a5a5a5,
				      0xfffffffe };
	const __u64 init0 = initial_len(d->vram_size);
	struct pc_info info;
	unsigned int i;
	int dfd, dfd2, ret;

	dfd = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
	for (i = 0; i < ARRAY_SIZE(bad_argsz); i++) {
		ret = precopy_info_raw(dfd, bad_argsz[i], 0, &info);
		EXPECT_EQ(-EINVAL, ret) {
			TH_LOG("argsz %u: %s", bad_argsz[i],
			       ret ? strerror(-ret) : "accepted");
		}
	}
	ret = precopy_info_raw(dfd, PRECOPY_INFO_MINSZ, 0, &info);
	EXPECT_EQ(0, ret);
	EXPECT_EQ(init0, info.initial);
	EXPECT_EQ(0, info.dirty);
	ret = precopy_info_raw(dfd, 4096, 0, &info);
	EXPECT_EQ(0, ret) {
		TH_LOG("argsz 4096: %s", strerror(-ret));
	}
	EXPECT_EQ(init0, info.initial);
	EXPECT_EQ(-1, ioctl(dfd, VFIO_MIG_GET_PRECOPY_INFO, NULL));
	EXPECT_EQ(EFAULT, errno);

	/* v1: flags are not output, they come back as passed */
	for (i = 0; i < ARRAY_SIZE(echo); i++) {
		ret = precopy_info_raw(dfd, sizeof(struct vfio_precopy_info),
				       echo[i], &info);
		EXPECT_EQ(0, ret);
		EXPECT_EQ(echo[i], info.flags) {
			TH_LOG("without the v2 opt-in: flags %#x in, %#x out",
			       echo[i], info.flags);
		}
		EXPECT_EQ(init0, info.initial);
	}

#ifdef VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2
	EXPECT_EQ(-EINVAL, device_feature(d->fd,
					  VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 |
					  VFIO_DEVICE_FEATURE_GET, &info, 0));
	ret = device_feature(d->fd, VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 |
			     VFIO_DEVICE_FEATURE_SET, &info, 0);
	ASSERT_EQ(0, ret) {
		TH_LOG("MIG_PRECOPY_INFOv2 SET: %s", strerror(-ret));
	}
	for (i = 0; i < ARRAY_SIZE(echo); i++) {
		ret = precopy_info_raw(dfd, sizeof(struct vfio_precopy_info),
				       echo[i], &info);
		EXPECT_EQ(0, ret);
		EXPECT_EQ(0, info.flags) {
			TH_LOG("with the v2 opt-in: flags %#x in, %#x out, want 0",
			       echo[i], info.flags);
		}
		EXPECT_EQ(init0, info.initial);
		EXPECT_EQ(0, info.dirty);
	}
	/* still v2 in a new session of the same open */
	ASSERT_EQ(0, mig_set(d->fd, VFIO_DEVICE_STATE_RUNNING, NULL));
	dfd2 = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
	ret = precopy_info_raw(dfd2, sizeof(struct vfio_precopy_info),
			       0xa5a5a5a5, &info);
	EXPECT_EQ(0, ret);
	EXPECT_EQ(0, info.flags);
	close(dfd2);
#else
	TH_LOG("linux/vfio.h has no VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2: the v2 flags are not tested");
	ASSERT_EQ(0, mig_set(d->fd, VFIO_DEVICE_STATE_RUNNING, NULL));
#endif

	/* the ended session, the device in RUNNING */
	ASSERT_EQ(0, mig_set(d->fd, VFIO_DEVICE_STATE_RUNNING, NULL));
	ret = precopy_info(dfd, &info);
	EXPECT_EQ(-EINVAL, ret) {
		TH_LOG("PRECOPY_INFO with the device in RUNNING: %s",
		       ret ? strerror(-ret) : "succeeded");
	}
	close(dfd);

	/* a plain STOP -> STOP_COPY data fd */
	go_state(_metadata, d, VFIO_DEVICE_STATE_STOP);
	dfd = go_state(_metadata, d, VFIO_DEVICE_STATE_STOP_COPY);
	ret = precopy_info(dfd, &info);
	EXPECT_EQ(-EINVAL, ret) {
		TH_LOG("PRECOPY_INFO on a STOP -> STOP_COPY fd: %s",
		       ret ? strerror(-ret) : "succeeded");
	}
	ret = precopy_info_raw(dfd, 8, 0, &info);
	EXPECT_EQ(-EINVAL, ret);
	close(dfd);
	go_state(_metadata, d, VFIO_DEVICE_STATE_STOP);

	/* a resuming data fd */
	dfd = go_state(_metadata, d, VFIO_DEVICE_STATE_RESUMING);
	ret = precopy_info(dfd, &info);
	EXPECT_NE(0, ret);
	TH_LOG("PRECOPY_INFO on a RESUMING fd: %s",
	       ret ? strerror(-ret) : "succeeded");
	close(dfd);
	ASSERT_EQ(0, device_reset(d));

	/* the PRE_COPY fd once in STOP_COPY (PRE_COPY_P2P -> STOP_COPY) */
	dfd = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
	pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY_P2P);
	ret = precopy_info(dfd, &info);
	EXPECT_EQ(0, ret);
	EXPECT_EQ(init0, info.initial);
	pc_go(_metadata, d, VFIO_DEVICE_STATE_STOP_COPY);
	ret = precopy_info(dfd, &info);
	EXPECT_EQ(-EINVAL, ret) {
		TH_LOG("PRECOPY_INFO in STOP_COPY: %s",
		       ret ? strerror(-ret) : "succeeded");
	}
	close(dfd);
	back_to_running(_metadata, d);
}

/* ---------------------------------------------------------------------- */
/* 4. Arcs, reset, close                                                  */
/* ---------------------------------------------------------------------- */

/*
 * Every arc from or to PRE_COPY / PRE_COPY_P2P (24 of them, the core's
 * multi-step ones included): a new data fd exactly when the saving group or
 * RESUMING is entered from outside; the saving fd goes on inside the group
 * (a byte more can be read) and ends when the group is left (ENODEV,
 * POLLERR); STOP_COPY -> PRE_COPY* is EINVAL and changes nothing; a new
 * PRE_COPY fd starts with a HEADER and the full counts.
 */
TEST_F_TIMEOUT(pc, arcs, 300)
{
	struct qdev *a = &self->dev[0], *b = &self->dev[1];
	const __u64 init0 = initial_len(a->vram_size);
	struct stream s;
	unsigned int i, j, arcs = 0;
	double t0 = now_sec();

	save_and_run(_metadata, b, &s);	/* for arcs out of RESUMING */

	for (i = 0; i < ARRAY_SIZE(all_states); i++) {
		for (j = 0; j < ARRAY_SIZE(all_states); j++) {
			__u32 from = all_states[i], to = all_states[j];
			char what[64];
			int dfd_from, dfd_to = -2, ret;
			__u32 now;
			__u8 buf[LEN_HEADER];

			if (!is_precopy(from) && !is_precopy(to))
				continue;
			snprintf(what, sizeof(what), "%s -> %s",
				 state_name(from), state_name(to));
			expect_state(_metadata, a, VFIO_DEVICE_STATE_RUNNING,
				     "start of an arc");
			dfd_from = pc_go(_metadata, a, from);
			if (from == VFIO_DEVICE_STATE_RESUMING) {
				struct io_plan w = {
					.mode = IO_CHUNK, .chunk = 4 * SZ_1M,
				};
				size_t done;

				ret = stream_write(dfd_from, s.buf, s.len, &w,
						   &done);
				ASSERT_EQ(0, ret);
			}
			if (is_precopy(from)) {
				/* a session with something read already */
				ASSERT_EQ(7, read_full(dfd_from, buf, 7));
			}
			arcs++;
			if (arc_refused(from, to)) {
				ret = mig_set(a->fd, to, &dfd_to);
				EXPECT_EQ(-EINVAL, ret) {
					TH_LOG("%s: %s", what,
					       ret ? strerror(-ret) : "succeeded");
				}
				EXPECT_EQ(-1, dfd_to);
				if (!ret && dfd_to >= 0)
					close(dfd_to);
				dfd_to = -1;
				ASSERT_EQ(0, mig_get(a->fd, &now));
				EXPECT_EQ(from, now) {
					TH_LOG("%s refused, state %s", what,
					       state_name(now));
				}
			} else {
				dfd_to = pc_go(_metadata, a, to);
			}

			if (is_saving(from)) {
				if (arc_keeps_fd(from, to)) {
					ssize_t n = read(dfd_from, buf, 1);

					EXPECT_EQ(1, n) {
						TH_LOG("%s: the data fd does not go on: %s",
						       what, n < 0 ? strerror(errno) : "EOF");
					}
				} else {
					expect_dead(_metadata, a, dfd_from, what);
				}
			}
			if (is_precopy(to) && dfd_to >= 0) {
				expect_counts(_metadata, a, dfd_to, init0, 0,
					      what);
				EXPECT_EQ(LEN_HEADER, read_full(dfd_to, buf, LEN_HEADER));
				expect_header(_metadata, buf, a->vram_size);
			}
			if (dfd_from >= 0)
				close(dfd_from);
			if (dfd_to >= 0)
				close(dfd_to);
			back_to_running(_metadata, a);
		}
	}
	TH_LOG("%u arcs in %.1f s", arcs, now_sec() - t0);
	free(s.buf);
}

/*
 * One session across PRE_COPY <-> PRE_COPY_P2P and into STOP_COPY: reads go on
 * where they stopped, STOP_COPY returns no fd and exactly MIG_DATA_SIZE more
 * bytes, and the concatenation is one valid stream that migrates the device.
 * Once PRE_COPY -> STOP_COPY (the core goes through PRE_COPY_P2P), once
 * RUNNING_P2P -> PRE_COPY_P2P -> STOP_COPY.
 */
TEST_F_TIMEOUT(pc, stream_continues, 240)
{
	struct qdev *src = &self->dev[0], *dst = &self->dev[1];
	unsigned int round;

	for (round = 0; round < 2; round++) {
		const __u64 seed = fresh_seed();
		struct recs recs = { 0 };
		struct sbuf s = { 0 };
		struct regs regs;
		const char *why;
		__u64 size, rest;
		int dfd;

		setup_pair(_metadata, src, dst, seed, &regs);
		if (!round) {
			dfd = pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY);
			ASSERT_EQ(7, sbuf_read_full(dfd, &s, 7));
			pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY_P2P);
			ASSERT_EQ(100, sbuf_read_full(dfd, &s, 100));
			pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY);
			ASSERT_EQ(SZ_1M, sbuf_read_full(dfd, &s, SZ_1M));
			expect_counts(_metadata, src, dfd,
				      initial_len(src->vram_size) - s.len, 0,
				      "PRE_COPY after PRE_COPY_P2P");
		} else {
			go_state(_metadata, src, VFIO_DEVICE_STATE_RUNNING_P2P);
			dfd = pc_go(_metadata, src,
				    VFIO_DEVICE_STATE_PRE_COPY_P2P);
			ASSERT_EQ(3 * SZ_1M + 5,
				  sbuf_read_full(dfd, &s, 3 * SZ_1M + 5));
		}
		ASSERT_EQ(0, get_data_size(src->fd, &size));
		EXPECT_EQ(initial_len(src->vram_size) - s.len + LEN_TAIL, size);
		pc_go(_metadata, src, VFIO_DEVICE_STATE_STOP_COPY);
		rest = read_to_end(_metadata, dfd, &s, SZ_1M + 3);
		EXPECT_EQ(size, rest) {
			TH_LOG("round %u: STOP_COPY gave %llu bytes, MIG_DATA_SIZE said %llu",
			       round, (unsigned long long)rest,
			       (unsigned long long)size);
		}
		close(dfd);
		why = parse_stream(s.buf, s.len, src->vram_size, &recs);
		EXPECT_EQ(NULL, why) {
			TH_LOG("round %u: %s", round, why);
		}
		TH_LOG("round %u: %zu byte stream, %zu records", round, s.len,
		       recs.n);
		go_state(_metadata, src, VFIO_DEVICE_STATE_STOP);
		go_state(_metadata, src, VFIO_DEVICE_STATE_RUNNING);
		resume_check(_metadata, dst, s.buf, s.len, src->vram, &regs,
			     "destination");
		free(recs.v);
		free(s.buf);
	}
}

/*
 * The data fd's read() copies to user memory with its file mutex held, and
 * the tracker's fault handlers take memory_lock: a read whose buffer is the
 * BAR0 mapping of the very device being saved (and PRECOPY_INFO into it) must
 * neither deadlock nor lose a write.  Every page the reads store into is a
 * write through the mapping: it is dirty afterwards and the destination ends
 * up equal to the source.  Lockdep in the test kernel checks the lock order.
 */
/*
 * A page that was read first is mapped read-only while tracking is armed; its
 * first write then takes a second fault (pfn_mkwrite).  KVM takes that path for
 * a guest's read-then-write: it finds the read-only PTE, emulates the store and
 * writes with copy_to_user().  Here the kernel's copy_to_user() of a read() from
 * a pipe does the same into pages just read through the mapping: each must be
 * counted dirty, exactly once, and the data must reach the destination.
 */
TEST_F_TIMEOUT(pc, read_then_kernel_write, 240)
{
	struct qdev *src = &self->dev[0], *dst = &self->dev[1];
	static const size_t pages[] = { 5, 6, 700, 2049 };
	struct sbuf all = { 0 };
	__u8 data[64];
	volatile __u8 sink = 0;
	int dfd, pfd[2];
	size_t i;

	dfd = pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY);
	for (;;) {
		ssize_t n = sbuf_read(dfd, &all, SZ_1M);

		if (n == -ENOMSG)
			break;
		ASSERT_LT(0, n) {
			TH_LOG("initial pass: %s", n < 0 ? strerror(-n) : "end");
		}
	}
	expect_counts(_metadata, src, dfd, 0, 0, "caught up");
	ASSERT_EQ(0, pipe(pfd));
	for (i = 0; i < ARRAY_SIZE(pages); i++) {
		size_t off = pages[i] * PAGE_SZ + 100 * i;
		ssize_t n;

		/* a read first: a read-only PTE */
		sink += src->vram[off];
		memset(data, 0x60 + i, sizeof(data));
		ASSERT_EQ(sizeof(data), write(pfd[1], data, sizeof(data)));
		/* the kernel writes the page: copy_to_user() on that PTE */
		n = read(pfd[0], src->vram + off, sizeof(data));
		ASSERT_EQ(sizeof(data), n) {
			TH_LOG("read() from a pipe into page %zu: %s",
			       pages[i], n < 0 ? strerror(errno) : "short");
		}
		EXPECT_EQ(0, memcmp(src->vram + off, data, sizeof(data)));
	}
	(void)sink;
	close(pfd[0]);
	close(pfd[1]);
	/* runs: {5, 6}, {700}, {2049} */
	expect_counts(_metadata, src, dfd, 0,
		      (LEN_MEM + 2 * PAGE_SZ) + 2 * (LEN_MEM + PAGE_SZ),
		      "after read-then-kernel-write of four pages");
	for (;;) {
		ssize_t n = sbuf_read(dfd, &all, SZ_1M);

		if (n == -ENOMSG)
			break;
		ASSERT_LT(0, n);
	}
	pc_go(_metadata, src, VFIO_DEVICE_STATE_STOP_COPY);
	read_to_end(_metadata, dfd, &all, SZ_1M);
	close(dfd);
	resume_check(_metadata, dst, all.buf, all.len, src->vram, NULL,
		     "after read-then-kernel-write");
	free(all.buf);
	back_to_running(_metadata, src);
}

/* Minor faults of this process so far. */
static long minor_faults(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return -1;
	return ru.ru_minflt;
}

/* Store a byte into every page of @map (@len bytes); the minor faults it took. */
static long touch_pages(__u8 *map, size_t len, __u8 v)
{
	long before = minor_faults();
	size_t off;

	for (off = 0; off < len; off += PAGE_SZ)
		((volatile __u8 *)map)[off] = v;
	return minor_faults() - before;
}

/*
 * Huge mappings of BAR0, where the kernel maps PFNs huge: while tracking is
 * off, a 2 MiB-aligned mapping takes one fault per 2 MiB, as under plain
 * vfio-pci; in PRE_COPY the BAR is tracked per 4 KiB page (one fault per
 * page written after the initial pass, exact dirty counts, even for the huge
 * entries that existed when tracking started); after PRE_COPY, at most one
 * fault per page, then none, and a new mapping is huge again.
 */
TEST_F_TIMEOUT(pc, huge_mapping, 240)
{
	struct qdev *src = &self->dev[0], *dst = &self->dev[1];
	static const size_t pages[] = { 3, 600, 2500 };
	const size_t len = src->vram_size, huge = SZ_1M * 2;
	const size_t npages = len / PAGE_SZ, nhuge = len / huge;
	struct sbuf all = { 0 };
	struct stat st;
	__u8 *area, *map;
	long faults;
	size_t i;
	int dfd;

	if (stat("/sys/kernel/mm/transparent_hugepage", &st))
		SKIP(return, "the kernel has no transparent huge pages, so it maps no PFN huge");
	/* a window aligned to 2 MiB for a second mapping of BAR0 */
	area = mmap(NULL, len + huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, area);
	map = (__u8 *)(((uintptr_t)area + huge - 1) & ~(uintptr_t)(huge - 1));
	ASSERT_EQ(map, mmap(map, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			    src->fd, src->bar0.offset)) {
		TH_LOG("mmap BAR0 at %p: %s", map, strerror(errno));
	}

	/* not tracking: huge entries */
	faults = touch_pages(map, len, 0x11);
	TH_LOG("RUNNING: %ld faults for %zu pages in %zu huge ranges", faults, npages, nhuge);
	EXPECT_GE(2 * nhuge + 8, faults);
	EXPECT_EQ(0x11, src->vram[len - PAGE_SZ]);

	/* PRE_COPY: the initial pass takes every page, zapping the huge entries */
	dfd = pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY);
	for (;;) {
		ssize_t n = sbuf_read(dfd, &all, SZ_1M);

		if (n == -ENOMSG)
			break;
		ASSERT_LT(0, n);
	}
	expect_counts(_metadata, src, dfd, 0, 0, "caught up");
	faults = touch_pages(map, len, 0x22);
	TH_LOG("PRE_COPY: %ld faults for %zu pages", faults, npages);
	EXPECT_LE(npages, faults);
	/* every page is dirty: one run of MAX_RUN pages per record */
	expect_counts(_metadata, src, dfd, 0, npages / MAX_RUN * LEN_MEM + len,
		      "after a store into every page");
	for (;;) {
		ssize_t n = sbuf_read(dfd, &all, SZ_1M);

		if (n == -ENOMSG)
			break;
		ASSERT_LT(0, n);
	}
	for (i = 0; i < ARRAY_SIZE(pages); i++)
		map[pages[i] * PAGE_SZ + 7] = 0x33 + i;
	expect_counts(_metadata, src, dfd, 0, ARRAY_SIZE(pages) * (LEN_MEM + PAGE_SZ),
		      "after three stores through the huge-aligned mapping");
	pc_go(_metadata, src, VFIO_DEVICE_STATE_STOP_COPY);
	read_to_end(_metadata, dfd, &all, SZ_1M);
	close(dfd);
	resume_check(_metadata, dst, all.buf, all.len, src->vram, NULL,
		     "after stores through the huge-aligned mapping");
	free(all.buf);
	back_to_running(_metadata, src);

	/*
	 * Tracking over: a range mapped page by page keeps its page table (the
	 * kernel does not fold PFN PTEs back into a huge entry), so each page the
	 * PRE_COPY reads zapped faults once more, then is writable for good; a
	 * new mapping is huge again.
	 */
	faults = touch_pages(map, len, 0x44);
	TH_LOG("RUNNING again: %ld faults", faults);
	EXPECT_GE(npages + 8, faults);
	faults = touch_pages(map, len, 0x45);
	TH_LOG("RUNNING again, second pass: %ld faults", faults);
	EXPECT_GE(8, faults);
	EXPECT_EQ(0x45, src->vram[PAGE_SZ]);
	ASSERT_EQ(map, mmap(map, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			    src->fd, src->bar0.offset));
	faults = touch_pages(map, len, 0x55);
	TH_LOG("RUNNING, a new mapping: %ld faults", faults);
	EXPECT_GE(2 * nhuge + 8, faults);
	EXPECT_EQ(0x55, src->vram[len - PAGE_SZ]);
	munmap(area, len + huge);
}

TEST_F_TIMEOUT(pc, read_into_own_mapping, 240)
{
	struct qdev *src = &self->dev[0], *dst = &self->dev[1];
	const size_t half = src->vram_size / 2;
	struct vfio_precopy_info *info;
	struct pc_info counts;
	struct sbuf all = { 0 };
	size_t got = 0, i;
	int dfd, ret;

	dfd = pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY);
	/*
	 * The initial pass, read into the upper half of VRAM in reads of up to
	 * 1 MiB and copied out.  The stores dirty pages (sent already or not),
	 * so the stream never runs dry while reads land in VRAM: read until
	 * the initial data is consumed, then a few dirty reads.
	 */
	do {
		ssize_t n = read(dfd, src->vram + half + got % half,
				 SZ_1M - got % SZ_1M);

		ASSERT_LT(0, n) {
			TH_LOG("read into the mapping at %zu: %s", got,
			       n < 0 ? strerror(errno) : "end of stream");
		}
		ASSERT_EQ(0, sbuf_reserve(&all, n));
		memcpy(all.buf + all.len, src->vram + half + got % half, n);
		all.len += n;
		got += n;
		ASSERT_EQ(0, precopy_info(dfd, &counts));
	} while (counts.initial);
	EXPECT_LT(0, counts.dirty) {
		TH_LOG("the reads into the mapping dirtied nothing");
	}
	for (i = 0; i < 8; i++) {
		ssize_t n = read(dfd, src->vram + half, SZ_256K);

		ASSERT_LT(0, n) {
			TH_LOG("dirty read into the mapping: %s",
			       n < 0 ? strerror(errno) : "end of stream");
		}
		ASSERT_EQ(0, sbuf_reserve(&all, n));
		memcpy(all.buf + all.len, src->vram + half, n);
		all.len += n;
		got += n;
	}
	/* PRECOPY_INFO with its struct in the mapping, too */
	info = (void *)(src->vram + 3 * PAGE_SZ + 8);
	for (i = 0; i < 4; i++) {
		memset(info, 0, sizeof(*info));
		info->argsz = sizeof(*info);
		ret = ioctl(dfd, VFIO_MIG_GET_PRECOPY_INFO, info);
		ASSERT_EQ(0, ret) {
			TH_LOG("PRECOPY_INFO into the mapping: %s",
			       strerror(errno));
		}
		EXPECT_EQ(0, info->initial_bytes);
		/* page 3 was just written: at least its run is dirty */
		EXPECT_LE(PAGE_SZ + LEN_MEM, info->dirty_bytes);
	}
	/* Reads into RAM write nothing: the stream catches up (ENOMSG). */
	for (;;) {
		ssize_t n;

		ASSERT_EQ(0, sbuf_reserve(&all, SZ_1M));
		n = read(dfd, all.buf + all.len, SZ_1M);
		if (n < 0 && errno == ENOMSG)
			break;
		ASSERT_LT(0, n) {
			TH_LOG("read into RAM: %s",
			       n < 0 ? strerror(errno) : "end of stream");
		}
		all.len += n;
	}
	ASSERT_EQ(0, precopy_info(dfd, &counts));
	EXPECT_EQ(0, counts.initial);
	EXPECT_EQ(0, counts.dirty);
	/* the rest in STOP_COPY, and the destination must match */
	pc_go(_metadata, src, VFIO_DEVICE_STATE_STOP_COPY);
	read_to_end(_metadata, dfd, &all, SZ_1M);
	close(dfd);
	TH_LOG("%zu stream bytes, %zu of them read into the mapping", all.len,
	       got);
	resume_check(_metadata, dst, all.buf, all.len, src->vram, NULL,
		     "after reads into the source's own mapping");
	free(all.buf);
	back_to_running(_metadata, src);
}

/*
 * PRE_COPY -> RUNNING and PRE_COPY_P2P -> RUNNING_P2P end the session (read
 * ENODEV, poll POLLERR); entering again gives a new, complete session while
 * the old fds stay dead.
 */
TEST_F_TIMEOUT(pc, abort_and_reenter, 120)
{
	struct qdev *d = &self->dev[0];
	const __u64 init0 = initial_len(d->vram_size);
	__u8 *buf = malloc(SZ_1M);
	int fd1, fd2, fd3, fd4;
	__u64 size;

	ASSERT_NE(NULL, buf);
	fd1 = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
	ASSERT_EQ(SZ_1M, read_full(fd1, buf, SZ_1M));
	pc_go(_metadata, d, VFIO_DEVICE_STATE_RUNNING);
	expect_dead(_metadata, d, fd1, "PRE_COPY -> RUNNING");
	ASSERT_EQ(0, get_data_size(d->fd, &size));
	EXPECT_EQ(init0 + LEN_TAIL, size);
	/* VRAM writes go through untracked */
	memset(d->vram + 7 * PAGE_SZ, 0x3c, PAGE_SZ);

	fd2 = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
	expect_counts(_metadata, d, fd2, init0, 0, "PRE_COPY again");
	ASSERT_EQ(LEN_HEADER, read_full(fd2, buf, LEN_HEADER));
	expect_header(_metadata, buf, d->vram_size);
	expect_dead(_metadata, d, fd1, "the first fd, with a second session");

	/* the same through the P2P states */
	pc_go(_metadata, d, VFIO_DEVICE_STATE_RUNNING);
	expect_dead(_metadata, d, fd2, "PRE_COPY -> RUNNING (2)");
	go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING_P2P);
	fd3 = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY_P2P);
	ASSERT_EQ(12345, read_full(fd3, buf, 12345));
	pc_go(_metadata, d, VFIO_DEVICE_STATE_RUNNING_P2P);
	expect_dead(_metadata, d, fd3, "PRE_COPY_P2P -> RUNNING_P2P");
	fd4 = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY_P2P);
	expect_counts(_metadata, d, fd4, init0, 0, "PRE_COPY_P2P again");
	ASSERT_EQ(LEN_HEADER, read_full(fd4, buf, LEN_HEADER));
	expect_header(_metadata, buf, d->vram_size);
	expect_dead(_metadata, d, fd3, "the third fd, with a fourth session");
	expect_dead(_metadata, d, fd1, "the first fd, with a fourth session");

	close(fd1);
	close(fd2);
	close(fd3);
	close(fd4);
	back_to_running(_metadata, d);
	free(buf);
}

/*
 * VFIO_DEVICE_RESET in PRE_COPY and in PRE_COPY_P2P (with part of the
 * stream read and a dirty page) ends the session like PRE_COPY -> RUNNING:
 * the device is RUNNING, the fd dead; a new session is complete.
 */
TEST_F_TIMEOUT(pc, reset_in_precopy, 120)
{
	static const __u32 states[] = {
		VFIO_DEVICE_STATE_PRE_COPY, VFIO_DEVICE_STATE_PRE_COPY_P2P,
	};
	struct qdev *d = &self->dev[0];
	const __u64 init0 = initial_len(d->vram_size);
	__u8 *buf = malloc(SZ_1M);
	unsigned int i;
	int dfd, ret;

	ASSERT_NE(NULL, buf);
	for (i = 0; i < ARRAY_SIZE(states); i++) {
		if (states[i] == VFIO_DEVICE_STATE_PRE_COPY_P2P)
			go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING_P2P);
		dfd = pc_go(_metadata, d, states[i]);
		ASSERT_EQ(SZ_1M, read_full(dfd, buf, SZ_1M));
		d->vram[PAGE_SZ + i] ^= 0xff;	/* a page already sent */
		ret = device_reset(d);
		ASSERT_EQ(0, ret) {
			TH_LOG("VFIO_DEVICE_RESET in %s: %s",
			       state_name(states[i]), strerror(-ret));
		}
		expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING,
			     "after reset");
		expect_dead(_metadata, d, dfd, state_name(states[i]));
		close(dfd);

		dfd = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
		expect_counts(_metadata, d, dfd, init0, 0,
			      "PRE_COPY after a reset");
		ASSERT_EQ(LEN_HEADER, read_full(dfd, buf, LEN_HEADER));
		expect_header(_metadata, buf, d->vram_size);
		close(dfd);
		back_to_running(_metadata, d);
	}
	free(buf);
}

/*
 * Closing the device (its last fd, and the iommufd) in PRE_COPY and in
 * PRE_COPY_P2P ends the session: the old data fd is dead, the device opens
 * in RUNNING and saves a new, complete session.
 */
TEST_F_TIMEOUT(pc, close_in_precopy, 120)
{
	static const __u32 states[] = {
		VFIO_DEVICE_STATE_PRE_COPY, VFIO_DEVICE_STATE_PRE_COPY_P2P,
	};
	struct qdev *d = &self->dev[0];
	const __u64 init0 = initial_len(d->vram_size);
	__u8 *buf = malloc(SZ_1M);
	const char *step;
	unsigned int i;
	int dfd, ret;

	ASSERT_NE(NULL, buf);
	for (i = 0; i < ARRAY_SIZE(states); i++) {
		if (states[i] == VFIO_DEVICE_STATE_PRE_COPY_P2P)
			go_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING_P2P);
		dfd = pc_go(_metadata, d, states[i]);
		ASSERT_EQ(100000, read_full(dfd, buf, 100000));
		d->vram[2 * PAGE_SZ] ^= 0xff;
		dev_close(d);
		expect_dead(_metadata, d, dfd, "after closing the device");
		ret = dev_open(d, bdfs[0], &step);
		ASSERT_EQ(0, ret) {
			TH_LOG("reopen: %s: %s", step, strerror(-ret));
		}
		expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING,
			     "after reopen");
		expect_dead(_metadata, d, dfd, "after reopening the device");
		close(dfd);

		dfd = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
		expect_counts(_metadata, d, dfd, init0, 0,
			      "PRE_COPY after reopen");
		ASSERT_EQ(LEN_HEADER, read_full(dfd, buf, LEN_HEADER));
		expect_header(_metadata, buf, d->vram_size);
		close(dfd);
		back_to_running(_metadata, d);
	}
	free(buf);
}

/* ---------------------------------------------------------------------- */
/* 5. poll()                                                              */
/* ---------------------------------------------------------------------- */

struct waker {
	struct qdev *d;
	int mode;		/* 0: store, 1: pwrite, 2: PRE_COPY -> RUNNING */
	size_t off;
	int err;
};

static void *waker_fn(void *arg)
{
	struct waker *w = arg;
	__u8 data[64];
	ssize_t n;

	usleep(WAKE_DELAY_MS * 1000);
	memset(data, 0x6b, sizeof(data));
	switch (w->mode) {
	case 0:
		memcpy(w->d->vram + w->off, data, sizeof(data));
		break;
	case 1:
		n = pwrite(w->d->fd, data, sizeof(data),
			   w->d->bar0.offset + w->off);
		if (n != sizeof(data))
			w->err = n < 0 ? errno : EIO;
		break;
	case 2:
		w->err = -mig_set(w->d->fd, VFIO_DEVICE_STATE_RUNNING, NULL);
		break;
	}
	return NULL;
}

/* Block in poll() on @dfd while @w acts after WAKE_DELAY_MS; return revents. */
static short poll_woken(struct __test_metadata *_metadata, int dfd,
			struct waker *w, const char *what)
{
	pthread_t thread;
	double t0, dt;
	short rev = 0;
	int ret;

	ASSERT_EQ(0, pthread_create(&thread, NULL, waker_fn, w));
	t0 = now_sec();
	ret = poll_in(dfd, POLL_TIMEOUT_MS, &rev);
	dt = now_sec() - t0;
	ASSERT_EQ(0, pthread_join(thread, NULL));
	EXPECT_EQ(0, w->err) {
		TH_LOG("%s: the waker failed: %s", what, strerror(w->err));
	}
	TH_LOG("%s: poll returned %d, revents %#x after %.3f s", what, ret,
	       rev, dt);
	EXPECT_EQ(1, ret) {
		TH_LOG("%s: poll was not woken (%d after %.3f s)", what, ret,
		       dt);
	}
	EXPECT_GT(WAKE_LATE_SEC, dt) {
		TH_LOG("%s: woken only after %.3f s", what, dt);
	}
	EXPECT_LT(WAKE_DELAY_MS / 2000.0, dt) {
		TH_LOG("%s: poll did not block (%.3f s)", what, dt);
	}
	return rev;
}

/*
 * poll(POLLIN) in PRE_COPY: readable while there is data, not at the
 * temporary end; a poll blocked there wakes up when a page already sent is
 * written through the mapping or by pwrite(), and when the session ends
 * (POLLERR).  In STOP_COPY always readable, also at the end of the stream.
 */
TEST_F_TIMEOUT(pc, poll_wakes, 120)
{
	struct qdev *d = &self->dev[0];
	const __u64 init0 = initial_len(d->vram_size);
	__u8 *buf = malloc(SZ_1M);
	struct waker w = { .d = d };
	size_t total = 0;
	short rev;
	ssize_t n;
	int dfd;

	ASSERT_NE(NULL, buf);
	dfd = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
	ASSERT_EQ(1, poll_in(dfd, 0, &rev));
	EXPECT_TRUE(rev & POLLIN);
	while (total < init0) {
		n = read(dfd, buf, SZ_1M);
		ASSERT_LT(0, n) {
			TH_LOG("read at %zu: %s", total,
			       n < 0 ? strerror(errno) : "EOF");
		}
		total += n;
	}
	ASSERT_EQ(init0, total);
	ASSERT_TRUE(expect_counts(_metadata, d, dfd, 0, 0, "initial pass read"));
	EXPECT_EQ(0, poll_in(dfd, 0, &rev));
	EXPECT_EQ(-1, read(dfd, buf, 1));
	EXPECT_EQ(ENOMSG, errno);

	/* a store through the mapping */
	w.mode = 0;
	w.off = 77 * PAGE_SZ + 64;
	rev = poll_woken(_metadata, dfd, &w, "store through the mmap");
	EXPECT_TRUE(rev & POLLIN);
	expect_counts(_metadata, d, dfd, 0, LEN_MEM + PAGE_SZ, "one store");
	EXPECT_EQ(LEN_MEM + PAGE_SZ, read(dfd, buf, SZ_1M));
	EXPECT_EQ(-1, read(dfd, buf, 1));
	EXPECT_EQ(ENOMSG, errno);

	/* a region write */
	w.mode = 1;
	w.off = (d->vram_size / PAGE_SZ - 200) * PAGE_SZ + PAGE_SZ - 32;
	rev = poll_woken(_metadata, dfd, &w, "pwrite on BAR0");
	EXPECT_TRUE(rev & POLLIN);
	expect_counts(_metadata, d, dfd, 0, LEN_MEM + 2 * PAGE_SZ,
		      "one pwrite across two pages");
	EXPECT_EQ(LEN_MEM + 2 * PAGE_SZ, read(dfd, buf, SZ_1M));
	EXPECT_EQ(-1, read(dfd, buf, 1));
	EXPECT_EQ(ENOMSG, errno);

	/* the end of the session */
	w.mode = 2;
	rev = poll_woken(_metadata, dfd, &w, "PRE_COPY -> RUNNING");
	EXPECT_TRUE(rev & POLLERR);
	expect_dead(_metadata, d, dfd, "PRE_COPY -> RUNNING");
	close(dfd);
	expect_state(_metadata, d, VFIO_DEVICE_STATE_RUNNING, "after the abort");

	/* STOP_COPY: readable, to the end and after */
	dfd = pc_go(_metadata, d, VFIO_DEVICE_STATE_PRE_COPY);
	ASSERT_EQ(SZ_1M, read_full(dfd, buf, SZ_1M));
	pc_go(_metadata, d, VFIO_DEVICE_STATE_STOP_COPY);
	EXPECT_EQ(1, poll_in(dfd, 0, &rev));
	EXPECT_TRUE(rev & POLLIN);
	for (;;) {
		n = read(dfd, buf, SZ_1M);
		ASSERT_LE(0, n) {
			TH_LOG("read in STOP_COPY: %s", strerror(errno));
		}
		if (!n)
			break;
	}
	EXPECT_EQ(1, poll_in(dfd, 0, &rev));
	EXPECT_TRUE(rev & POLLIN);
	EXPECT_EQ(0, read(dfd, buf, 1));
	close(dfd);
	back_to_running(_metadata, d);
	free(buf);
}

/* ---------------------------------------------------------------------- */
/* 6. A writer racing the reads                                           */
/* ---------------------------------------------------------------------- */

#define WRITER_PHASE_SEC	5.0
#define WRITER_ROUND_SEC	1.0
#define WRITER_MIN_ROUNDS	4	/* after the initial pass */
#define WRITER_AFTER_SEC	2.0	/* at least, after the initial pass */
#define WRITER_MODE_SEC		0.5	/* flat out and bursty in turn */
#define HOT_PAGES		192
/* bursty mode: this many writes, then a pause the reader can catch up in */
#define BURST_WRITES		128
#define BURST_PAUSE_US		200000

struct writer {
	struct qdev *d;
	__u64 rng;
	volatile bool stop;
	volatile bool bursty;
	unsigned long stores, pwrites, partial, bursts;
	int err;
};

static void *writer_fn(void *arg)
{
	struct writer *w = arg;
	const size_t npages = w->d->vram_size / PAGE_SZ;
	const size_t hot0 = npages / 3;
	__u8 page[PAGE_SZ];

	while (!w->stop) {
		__u64 r = rng_next(&w->rng);
		size_t p = (r & 1) ? hot0 + (r >> 8) % HOT_PAGES :
				     (r >> 8) % npages;
		size_t off = p * PAGE_SZ, len = PAGE_SZ;

		fill_pattern(page, PAGE_SZ, rng_next(&w->rng));
		if (((r >> 40) & 7) == 0) {
			/* a few bytes anywhere in the page */
			off += (r >> 44) % (PAGE_SZ - 64);
			len = 1 + (r >> 56) % 64;
			w->partial++;
		}
		if (((r >> 4) & 15) == 0) {
			ssize_t n = pwrite(w->d->fd, page, len,
					   w->d->bar0.offset + off);

			if (n != (ssize_t)len) {
				w->err = n < 0 ? errno : EIO;
				break;
			}
			w->pwrites++;
		} else {
			memcpy(w->d->vram + off, page, len);
			w->stores++;
		}
		if (w->bursty && !((w->stores + w->pwrites) % BURST_WRITES)) {
			w->bursts++;
			usleep(BURST_PAUSE_US);
		} else if (!((w->stores + w->pwrites) & 15)) {
			sched_yield();
		}
	}
	return NULL;
}

/* Write @len bytes to the resuming fd @rfd. */
static int forward(int rfd, const __u8 *buf, size_t len)
{
	struct io_plan plan = { .mode = IO_CHUNK, .chunk = SIZE_MAX };
	size_t done;

	return stream_write(rfd, buf, len, &plan, &done);
}

/*
 * A guest-like writer stores random data into random VRAM pages (half of
 * them in a hot range, some partial, one in 16 by pwrite) through the whole
 * PRE_COPY phase while the stream is read in rounds (up to ENOMSG or a
 * second) and forwarded to the destination at once, as QEMU does: flat out
 * during the initial pass, then in turn flat out and in bursts with pauses
 * (so that the reader reaches the temporary end now and then).  Then the
 * writer stops; from there on the counts are exact: MIG_DATA_SIZE is
 * initial + dirty + 96 and the number of bytes STOP_COPY yields.  The destination keeps its registers
 * until RESUMING -> STOP, then has the source's, and its VRAM must equal the
 * source's final VRAM byte for byte.
 */
TEST_F_TIMEOUT(pc, writer_thread, 240)
{
	struct qdev *src = &self->dev[0], *dst = &self->dev[1];
	const __u64 seed = fresh_seed();
	const size_t rbuf = SZ_1M;
	struct writer w = { .d = src, .rng = seed ^ 0x77 };
	unsigned long rounds = 0, rounds_after = 0, enomsg = 0, reads = 0;
	__u64 pre_bytes = 0, stop_bytes = 0, size, last_initial;
	struct pc_info info;
	struct regs regs, other, got;
	pthread_t thread;
	double t0, t_init = 0;
	ssize_t bad;
	__u8 *buf;
	int sfd, rfd, ret;

	buf = malloc(rbuf);
	ASSERT_NE(NULL, buf);
	setup_pair(_metadata, src, dst, seed, &regs);
	rfd = go_state(_metadata, dst, VFIO_DEVICE_STATE_RESUMING);
	sfd = pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY);
	last_initial = initial_len(src->vram_size);

	t0 = now_sec();
	ASSERT_EQ(0, pthread_create(&thread, NULL, writer_fn, &w));
	while (now_sec() - t0 < WRITER_PHASE_SEC || !t_init ||
	       now_sec() - t0 - t_init < WRITER_AFTER_SEC ||
	       rounds_after < WRITER_MIN_ROUNDS) {
		double r0 = now_sec();

		/* one round: up to the temporary end or a second */
		for (;;) {
			ssize_t n = read(sfd, buf, rbuf);
			int err = errno;

			if (n < 0 && err == ENOMSG) {
				enomsg++;
				break;
			}
			if (n <= 0) {
				w.stop = true;
				pthread_join(thread, NULL);
			}
			ASSERT_LT(0, n) {
				TH_LOG("read in PRE_COPY after %llu bytes: %s",
				       (unsigned long long)pre_bytes,
				       n < 0 ? strerror(err) : "EOF");
			}
			reads++;
			pre_bytes += n;
			ret = forward(rfd, buf, n);
			if (ret) {
				w.stop = true;
				pthread_join(thread, NULL);
			}
			ASSERT_EQ(0, ret) {
				TH_LOG("destination write after %llu bytes: %s",
				       (unsigned long long)pre_bytes,
				       strerror(-ret));
			}
			if (now_sec() - r0 > WRITER_ROUND_SEC)
				break;
		}
		rounds++;
		ret = precopy_info(sfd, &info);
		if (ret) {
			w.stop = true;
			pthread_join(thread, NULL);
		}
		ASSERT_EQ(0, ret);
		EXPECT_GE(last_initial, info.initial) {
			TH_LOG("initial_bytes grew from %llu to %llu",
			       (unsigned long long)last_initial,
			       (unsigned long long)info.initial);
		}
		last_initial = info.initial;
		if (!info.initial && !t_init)
			t_init = now_sec() - t0;
		if (t_init) {
			rounds_after++;
			w.bursty = !((long)((now_sec() - t0 - t_init) /
					    WRITER_MODE_SEC) & 1);
		}
		if (rounds <= 3 || !(rounds % 10))
			TH_LOG("round %lu at %.2f s: %llu bytes read, %lu ENOMSG, PRECOPY_INFO (%llu, %llu), writer %lu stores, %lu pwrites",
			       rounds, now_sec() - t0,
			       (unsigned long long)pre_bytes, enomsg,
			       (unsigned long long)info.initial,
			       (unsigned long long)info.dirty, w.stores,
			       w.pwrites);
		usleep(50 * 1000);
	}
	w.stop = true;
	ASSERT_EQ(0, pthread_join(thread, NULL));
	EXPECT_EQ(0, w.err) {
		TH_LOG("writer: pwrite: %s", strerror(w.err));
	}

	/* the writer is done: exact from here */
	ASSERT_EQ(0, precopy_info(sfd, &info));
	ASSERT_EQ(0, get_data_size(src->fd, &size));
	EXPECT_EQ(info.initial + info.dirty + LEN_TAIL, size) {
		TH_LOG("after the writer: PRECOPY_INFO (%llu, %llu), MIG_DATA_SIZE %llu",
		       (unsigned long long)info.initial,
		       (unsigned long long)info.dirty,
		       (unsigned long long)size);
	}
	pc_go(_metadata, src, VFIO_DEVICE_STATE_PRE_COPY_P2P);
	pc_go(_metadata, src, VFIO_DEVICE_STATE_STOP_COPY);
	for (;;) {
		ssize_t n = read(sfd, buf, rbuf);

		ASSERT_LE(0, n) {
			TH_LOG("read in STOP_COPY after %llu bytes: %s",
			       (unsigned long long)stop_bytes, strerror(errno));
		}
		if (!n)
			break;
		stop_bytes += n;
		ASSERT_EQ(0, forward(rfd, buf, n));
	}
	EXPECT_EQ(size, stop_bytes) {
		TH_LOG("STOP_COPY gave %llu bytes, MIG_DATA_SIZE said %llu",
		       (unsigned long long)stop_bytes,
		       (unsigned long long)size);
	}
	close(sfd);
	/* the whole stream went in: the registers only change at STOP */
	regs_make_other(&other, &regs);
	ASSERT_EQ(0, regs_read(dst, &got));
	expect_regs(_metadata, &other, &got, "destination in RESUMING");
	ret = mig_set(dst->fd, VFIO_DEVICE_STATE_STOP, NULL);
	close(rfd);
	ASSERT_EQ(0, ret) {
		TH_LOG("destination RESUMING -> STOP: %s", strerror(-ret));
	}
	TH_LOG("%.1f s of PRE_COPY (initial pass read after %.2f s): %lu rounds, %lu reads, %lu ENOMSG, %llu bytes; STOP_COPY %llu bytes; writer: %lu stores, %lu pwrites (%lu partial), %lu bursts",
	       now_sec() - t0, t_init, rounds, reads, enomsg,
	       (unsigned long long)pre_bytes, (unsigned long long)stop_bytes,
	       w.stores, w.pwrites, w.partial, w.bursts);
	EXPECT_LT(0, w.stores + w.pwrites);

	go_state(_metadata, dst, VFIO_DEVICE_STATE_RUNNING);
	go_state(_metadata, src, VFIO_DEVICE_STATE_STOP);
	go_state(_metadata, src, VFIO_DEVICE_STATE_RUNNING);
	bad = first_diff(dst->vram, src->vram, src->vram_size);
	EXPECT_EQ(-1, bad) {
		TH_LOG("destination differs from the source at %#zx (page %zu): %#x, source %#x",
		       bad, bad / PAGE_SZ, dst->vram[bad], src->vram[bad]);
	}
	ASSERT_EQ(0, regs_read(dst, &got));
	expect_regs(_metadata, &regs, &got, "destination");
	free(buf);
}

/* ---------------------------------------------------------------------- */
/* 7. Another VRAM size                                                   */
/* ---------------------------------------------------------------------- */

/*
 * RESUMING on @to with the first bytes of @from's PRE_COPY stream: a write of
 * part of the HEADER is accepted, the write that completes it fails (ENODEV:
 * the stream is for another memory size) and so does the next; RESUMING ->
 * STOP fails; the registers are untouched; a reset recovers the device.  The
 * HEADER in one write never goes in whole.
 */
static void expect_header_refused(struct __test_metadata *_metadata,
				  struct qdev *from, struct qdev *to)
{
	__u8 hdr[LEN_HEADER + 4096];
	struct regs before, got;
	int sfd, rfd, err, ret;
	ssize_t n;

	sfd = pc_go(_metadata, from, VFIO_DEVICE_STATE_PRE_COPY);
	ASSERT_EQ(sizeof(hdr), read_full(sfd, hdr, sizeof(hdr)));
	close(sfd);
	back_to_running(_metadata, from);
	expect_header(_metadata, hdr, from->vram_size);

	ASSERT_EQ(0, regs_read(to, &before));
	rfd = go_state(_metadata, to, VFIO_DEVICE_STATE_RESUMING);
	n = write(rfd, hdr, 24);
	EXPECT_EQ(24, n) {
		TH_LOG("%s -> %s: a partial HEADER: %s", from->bdf, to->bdf,
		       n < 0 ? strerror(errno) : "short write");
	}
	n = write(rfd, hdr + 24, LEN_HEADER - 24);
	err = errno;
	EXPECT_EQ(-1, n) {
		TH_LOG("%s (%zu MiB) -> %s (%zu MiB): the write completing the HEADER returned %zd",
		       from->bdf, from->vram_size / SZ_1M, to->bdf,
		       to->vram_size / SZ_1M, n);
	}
	if (n < 0) {
		EXPECT_EQ(ENODEV, err) {
			TH_LOG("the write completing the HEADER: %s, want ENODEV",
			       strerror(err));
		}
		TH_LOG("%s (%zu MiB) -> %s (%zu MiB): HEADER refused: %s",
		       from->bdf, from->vram_size / SZ_1M, to->bdf,
		       to->vram_size / SZ_1M, strerror(err));
	}
	n = write(rfd, hdr + LEN_HEADER, 4096);
	EXPECT_EQ(-1, n);
	ret = mig_set(to->fd, VFIO_DEVICE_STATE_STOP, NULL);
	EXPECT_NE(0, ret) {
		TH_LOG("RESUMING -> STOP succeeded after a refused HEADER");
	}
	close(rfd);
	ASSERT_EQ(0, regs_read(to, &got));
	expect_regs(_metadata, &before, &got, "after a refused HEADER");
	ASSERT_EQ(0, device_reset(to));
	expect_state(_metadata, to, VFIO_DEVICE_STATE_RUNNING, "after reset");

	/*
	 * The same HEADER in a single write: refused there, or (write(2)'s
	 * short count) fewer than its 60 bytes taken and the refusal comes
	 * with the next write, which starts inside the HEADER.
	 */
	rfd = go_state(_metadata, to, VFIO_DEVICE_STATE_RESUMING);
	n = write(rfd, hdr, LEN_HEADER);
	err = errno;
	if (n > 0 && n < LEN_HEADER) {
		TH_LOG("one write of the %u-byte HEADER took %zd bytes; the next one:",
		       LEN_HEADER, n);
		n = write(rfd, hdr + n, LEN_HEADER - n);
		err = errno;
	}
	EXPECT_EQ(-1, n) {
		TH_LOG("the HEADER for %zu MiB went into a device with %zu MiB (write returned %zd)",
		       from->vram_size / SZ_1M, to->vram_size / SZ_1M, n);
	}
	if (n < 0) {
		EXPECT_EQ(ENODEV, err) {
			TH_LOG("the HEADER in one write: %s, want ENODEV",
			       strerror(err));
		}
	}
	close(rfd);
	ASSERT_EQ(0, device_reset(to));
}

/*
 * A PRE_COPY stream goes only into a device with the same VRAM size: the
 * destination refuses it at the first write() that completes its HEADER,
 * before switch-over, both ways.  Needs a third bound device with another
 * BAR0 size (tests/vm/run --vgamem 16M,16M,16M,8M); skips without one.
 */
TEST_F_TIMEOUT(pc, other_vram_size_rejected, 120)
{
	struct qdev *src = &self->dev[0];
	struct qdev other = { .fd = -1, .iommufd = -1, .vram = MAP_FAILED };
	char sizes[256] = "";
	const char *step;
	unsigned int i;
	int ret;

	for (i = 2; i < nbdfs; i++) {
		size_t len = strlen(sizes);

		ret = dev_open(&other, bdfs[i], &step);
		ASSERT_EQ(0, ret) {
			TH_LOG("%s: %s: %s", bdfs[i], step, strerror(-ret));
		}
		snprintf(sizes + len, sizeof(sizes) - len, "%s%s %zu MiB",
			 len ? ", " : "", bdfs[i], other.vram_size / SZ_1M);
		if (other.vram_size != src->vram_size)
			break;
		dev_close(&other);
	}
	if (other.fd < 0) {
		SKIP(return, "no bound device with a VRAM size other than %zu MiB (%s%s); run with e.g. tests/vm/run --devices 4 --vgamem 16M,16M,16M,8M",
		     src->vram_size / SZ_1M, nbdfs > 2 ? "others: " : "no third device",
		     sizes);
	}
	TH_LOG("%s: %zu MiB of VRAM, %s: %zu MiB", src->bdf,
	       src->vram_size / SZ_1M, other.bdf, other.vram_size / SZ_1M);
	ASSERT_EQ(0, mig_flags(other.fd, &(__u64){ 0 }));

	expect_header_refused(_metadata, src, &other);
	expect_header_refused(_metadata, &other, src);

	ASSERT_EQ(0, device_reset(&other));
	dev_close(&other);
}

int main(int argc, char *argv[])
{
	unsigned int i;

	nbdfs = take_bdfs(&argc, argv, bdfs, MAX_DEVS);

	/* Listing or help does not need devices. */
	if (nbdfs < 2 && argc > 1 &&
	    (!strcmp(argv[1], "-l") || !strcmp(argv[1], "-h")))
		return test_harness_run(argc, argv);

	if (nbdfs < 2) {
		fprintf(stderr,
			"PRE_COPY needs two devices, skipping.\n"
			"Usage: %s [harness options] SRC_BDF DST_BDF [BDF...]\n"
			"   or: QVP_BDFS=\"SRC_BDF DST_BDF [BDF...]\" %s [harness options]\n",
			argv[0], argv[0]);
		return KSFT_SKIP;
	}
	if (!strcmp(bdfs[0], bdfs[1])) {
		fprintf(stderr, "%s: source and destination are the same device\n",
			argv[0]);
		return KSFT_FAIL;
	}
	printf("# Source %s, destination %s", bdfs[0], bdfs[1]);
	for (i = 2; i < nbdfs; i++)
		printf("%s%s", i == 2 ? ", others: " : " ", bdfs[i]);
	printf("\n");

	return test_harness_run(argc, argv);
}
