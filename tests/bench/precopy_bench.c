// SPDX-License-Identifier: GPL-2.0-only
/*
 * PRE_COPY benchmark: what live migration with PRE_COPY leaves for the downtime, against
 * STOP_COPY alone, while a writer thread dirties VRAM pages through the BAR0 mapping at a fixed
 * rate (as a guest drawing on its display would).
 *
 *   precopy_bench SRC_BDF DST_BDF [RATE_PERCENT...]
 *
 * For each rate (percent of VRAM pages written per second; default 1 and 10):
 *
 *   1. baseline: the writer runs for a while with tracking off (RUNNING): its faults per second
 *      and time per page store;
 *   2. STOP_COPY alone: the writer stops (the VM stops), RUNNING -> STOP -> STOP_COPY, the whole
 *      stream is read: bytes and time;
 *   3. PRE_COPY: the writer runs, RUNNING -> PRE_COPY, the initial pass is read (throughput),
 *      then dirty data is read in rounds until the stream caught up (ENOMSG) for a few seconds,
 *      as QEMU iterates; the writer's faults per second and time per store are measured while
 *      tracking; then the writer stops, PRE_COPY_P2P -> STOP_COPY, and the rest is read: its
 *      bytes and time, against the dirty pages it carries (parsed from the stream), the
 *      registers and the framing;
 *   4. the whole PRE_COPY stream is resumed into the destination, and its VRAM must equal the
 *      source's byte for byte.
 *
 * Goals checked (printed as ok/FAIL, the exit status is 1 if one fails):
 *   STOP_COPY bytes after PRE_COPY <= 1.02 x (dirty pages x 4 KiB + registers + framing)
 *   STOP_COPY time after PRE_COPY  <= 0.05 x STOP_COPY time alone
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>

#define CHECK(x)                                                            \
	do {                                                                \
		if (!(x)) {                                                 \
			fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, \
				__LINE__, #x, strerror(errno));             \
			exit(1);                                            \
		}                                                           \
	} while (0)

#define PAGE		4096UL
#define READ_LEN	(1UL << 20)
#define WRITE_LEN	(32UL << 10)
/* Stream framing (Documentation/stream-format.rst). */
#define REC_HDR		24
#define REC_MEMORY	3
#define REGS_LEN	24
#define REGS_REC	(28 + REGS_LEN)
#define END_REC		44
#define MEMORY_OVERHEAD	36

struct dev {
	int fd;
	uint8_t *vram;
	size_t size;
	off_t bar0;
};

static void open_device(struct dev *d, const char *bdf)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };
	struct vfio_region_info ri = { .argsz = sizeof(ri),
				       .index = VFIO_PCI_BAR0_REGION_INDEX };
	char path[512];
	struct dirent *e;
	DIR *dir;

	d->fd = -1;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	dir = opendir(path);
	CHECK(dir);
	while ((e = readdir(dir)))
		if (!strncmp(e->d_name, "vfio", 4)) {
			snprintf(path, sizeof(path), "/dev/vfio/devices/%.64s", e->d_name);
			d->fd = open(path, O_RDWR);
		}
	closedir(dir);
	CHECK(d->fd >= 0);
	bind.iommufd = open("/dev/iommu", O_RDWR);
	CHECK((int)bind.iommufd >= 0);
	CHECK(!ioctl(d->fd, VFIO_DEVICE_BIND_IOMMUFD, &bind));
	CHECK(!ioctl(bind.iommufd, IOMMU_IOAS_ALLOC, &alloc));
	attach.pt_id = alloc.out_ioas_id;
	CHECK(!ioctl(d->fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach));
	CHECK(!ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &ri));
	d->vram = mmap(NULL, ri.size, PROT_READ | PROT_WRITE, MAP_SHARED, d->fd, ri.offset);
	CHECK(d->vram != MAP_FAILED);
	d->size = ri.size;
	d->bar0 = ri.offset;
}

static int feature(int fd, uint32_t flags, void *data, size_t len)
{
	uint64_t buf[(sizeof(struct vfio_device_feature) + 64) / 8] = { 0 };
	struct vfio_device_feature *f = (void *)buf;
	int ret;

	f->argsz = sizeof(*f) + len;
	f->flags = flags;
	memcpy(f->data, data, len);
	ret = ioctl(fd, VFIO_DEVICE_FEATURE, f);
	memcpy(data, f->data, len);
	return ret;
}

static int set_state(int fd, uint32_t state)
{
	struct vfio_device_feature_mig_state s = { .device_state = state, .data_fd = -1 };

	CHECK(!feature(fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
		       &s, sizeof(s)));
	return s.data_fd;
}

static uint64_t data_size(int fd)
{
	struct vfio_device_feature_mig_data_size ds = { 0 };

	CHECK(!feature(fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
		       &ds, sizeof(ds)));
	return ds.stop_copy_length;
}

static void precopy_info(int dfd, uint64_t *initial, uint64_t *dirty)
{
	struct vfio_precopy_info info = { .argsz = sizeof(info) };

	CHECK(!ioctl(dfd, VFIO_MIG_GET_PRECOPY_INFO, &info));
	*initial = info.initial_bytes;
	*dirty = info.dirty_bytes;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static double mibps(size_t bytes, double seconds)
{
	return seconds > 0 ? bytes / seconds / (1 << 20) : 0;
}

/* The stream read so far, grown as needed. */
struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return;
	/* grow by a quarter: the stream of 256 MiB of VRAM must fit a 2 GiB guest */
	b->cap = (b->len + more) + (b->len + more) / 4;
	b->p = realloc(b->p, b->cap);
	CHECK(b->p);
}

/* One read() into @b: its result (0 at the end, -1 with errno). */
static ssize_t read_some(int dfd, struct buf *b)
{
	ssize_t n;

	buf_reserve(b, READ_LEN);
	n = read(dfd, b->p + b->len, READ_LEN);
	if (n > 0)
		b->len += n;
	return n;
}

/*
 * Read until the temporary end (ENOMSG) in PRE_COPY, or the end (0) in STOP_COPY; in PRE_COPY
 * at most until @deadline (0: none): a writer faster than the reads never lets it catch up.
 */
static void read_until(int dfd, struct buf *b, bool precopy, double deadline)
{
	for (;;) {
		ssize_t n;

		if (precopy && deadline && now() > deadline)
			return;
		n = read_some(dfd, b);

		if (n > 0)
			continue;
		if (n == 0 && !precopy)
			return;
		CHECK(precopy && n < 0 && errno == ENOMSG);
		return;
	}
}

static void read_until_end(int dfd, struct buf *b, bool precopy)
{
	read_until(dfd, b, precopy, 0);
}

/* The writer thread: @per_sec random pages a second, one 8-byte store each. */
struct writer {
	pthread_t thread;
	struct dev *d;
	uint64_t per_sec;
	volatile bool stop;
	uint64_t stores;
	double store_secs;	/* time spent in the stores */
	long faults;		/* minor faults of the thread */
	double secs;		/* how long it ran */
	uint64_t rng;
};

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void *writer_run(void *arg)
{
	struct writer *w = arg;
	size_t pages = w->d->size / PAGE;
	/* in batches every 10 ms */
	uint64_t batch = w->per_sec / 100 ? w->per_sec / 100 : 1;
	double period = (double)batch / w->per_sec, t0 = now(), next = t0;
	struct rusage ru0, ru1;

	getrusage(RUSAGE_THREAD, &ru0);
	while (!w->stop) {
		double s = now();
		uint64_t i;

		for (i = 0; i < batch; i++) {
			uint64_t r = rng_next(&w->rng);
			size_t page = r % pages, off = (r >> 32) % (PAGE / 8) * 8;

			*(volatile uint64_t *)(w->d->vram + page * PAGE + off) = r;
		}
		w->store_secs += now() - s;
		w->stores += batch;
		next += period;
		s = now();
		if (next > s) {
			struct timespec ts = { .tv_sec = (time_t)(next - s),
					       .tv_nsec = (long)((next - s - (time_t)(next - s)) * 1e9) };

			nanosleep(&ts, NULL);
		}
	}
	getrusage(RUSAGE_THREAD, &ru1);
	w->faults = ru1.ru_minflt - ru0.ru_minflt;
	w->secs = now() - t0;
	return NULL;
}

static void writer_start(struct writer *w, struct dev *d, uint64_t per_sec, uint64_t seed)
{
	memset(w, 0, sizeof(*w));
	w->d = d;
	w->per_sec = per_sec;
	w->rng = seed;
	CHECK(!pthread_create(&w->thread, NULL, writer_run, w));
}

static void writer_stop(struct writer *w)
{
	w->stop = true;
	CHECK(!pthread_join(w->thread, NULL));
}

static void writer_report(const char *what, struct writer *w)
{
	printf("  writer %-24s %7.0f stores/s, %7.0f faults/s, %6.2f us per store\n", what,
	       w->stores / w->secs, w->faults / w->secs,
	       w->stores ? w->store_secs / w->stores * 1e6 : 0.0);
}

static uint32_t le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Counts the MEMORY records of a stream piece and their data bytes. */
/*
 * Walks the whole stream @p (@len bytes) and counts what lies from offset @from on: the MEMORY
 * records that end there (@records) and their data bytes there (@bytes); @aligned says whether
 * @from is a record boundary (a PRE_COPY round that ended at its deadline may have stopped
 * inside a record, whose rest then comes first in STOP_COPY).
 */
static void count_memory(const uint8_t *p, size_t len, size_t from, uint64_t *records,
			 uint64_t *bytes, bool *aligned)
{
	size_t at = 0;

	*records = *bytes = 0;
	*aligned = from == len;
	/* record header: "QVPR", le32 type, le32 flags, le32 reserved, le64 payload_len */
	while (at + REC_HDR <= len) {
		uint32_t type = le32(p + at + 4);
		uint64_t plen = le32(p + at + 16) | (uint64_t)le32(p + at + 20) << 32;
		size_t end = at + REC_HDR + plen + 4;

		if (at == from)
			*aligned = true;
		if (end > from && type == REC_MEMORY) {
			/* data: after the header and the le64 offset, before the CRC */
			size_t data = at + REC_HDR + 8, data_end = end - 4;
			size_t lo = data > from ? data : from;

			(*records)++;
			if (data_end > lo)
				*bytes += data_end - lo;
		}
		at = end;
	}
}

static void resume_into(struct dev *d, const struct buf *s)
{
	size_t done = 0;
	int dfd;

	set_state(d->fd, VFIO_DEVICE_STATE_STOP);
	dfd = set_state(d->fd, VFIO_DEVICE_STATE_RESUMING);
	CHECK(dfd >= 0);
	while (done < s->len) {
		size_t n = s->len - done < WRITE_LEN ? s->len - done : WRITE_LEN;
		ssize_t w = write(dfd, s->p + done, n);

		CHECK(w > 0);
		done += w;
	}
	close(dfd);
	set_state(d->fd, VFIO_DEVICE_STATE_STOP);
}

static int bench(struct dev *src, struct dev *dst, double percent)
{
	uint64_t per_sec = (uint64_t)(src->size / PAGE * percent / 100);
	uint64_t initial, dirty, size_before, records, bytes;
	bool aligned;
	struct buf alone = { 0 }, pre = { 0 };
	double t0, t_alone, t_initial, t_stop, iter_end;
	size_t at_initial_end, at_stop;
	struct writer w;
	unsigned int rounds = 0;
	int dfd, fails = 0;
	double expect, ratio_bytes, ratio_time;

	if (!per_sec)
		per_sec = 1;
	printf("== %.0f %% of VRAM per second: %llu pages/s of %zu\n", percent,
	       (unsigned long long)per_sec, src->size / PAGE);

	/* 1. baseline: not tracking */
	writer_start(&w, src, per_sec, 1);
	sleep(2);
	writer_stop(&w);
	writer_report("(no tracking)", &w);

	/* 2. STOP_COPY alone */
	set_state(src->fd, VFIO_DEVICE_STATE_STOP);
	t0 = now();
	dfd = set_state(src->fd, VFIO_DEVICE_STATE_STOP_COPY);
	read_until_end(dfd, &alone, false);
	t_alone = now() - t0;
	close(dfd);
	/* only its length is needed from here on */
	free(alone.p);
	alone.p = NULL;
	alone.cap = 0;
	set_state(src->fd, VFIO_DEVICE_STATE_STOP);
	set_state(src->fd, VFIO_DEVICE_STATE_RUNNING);
	printf("  STOP_COPY alone:          %10zu bytes in %7.3f s (%.1f MiB/s)\n", alone.len,
	       t_alone, mibps(alone.len, t_alone));

	/* 3. PRE_COPY with the writer running; room for the initial pass at once */
	buf_reserve(&pre, src->size + (src->size >> 4));
	writer_start(&w, src, per_sec, 2);
	t0 = now();
	dfd = set_state(src->fd, VFIO_DEVICE_STATE_PRE_COPY);
	CHECK(dfd >= 0);
	do {
		CHECK(read_some(dfd, &pre) > 0);
		precopy_info(dfd, &initial, &dirty);
	} while (initial);
	t_initial = now() - t0;
	at_initial_end = pre.len;
	printf("  PRE_COPY initial pass:    %10zu bytes in %7.3f s (%.1f MiB/s), dirty then %llu\n",
	       pre.len, t_initial, mibps(pre.len, t_initial), (unsigned long long)dirty);
	/* QEMU-like iterations: catch up, wait a little, a few seconds in all */
	iter_end = now() + 3;
	while (now() < iter_end) {
		read_until(dfd, &pre, true, iter_end);
		rounds++;
		/* QEMU's next iteration; the VM stops at the end of the last wait */
		usleep(100 * 1000);
	}
	writer_stop(&w);
	writer_report("(tracking, PRE_COPY)", &w);
	printf("  PRE_COPY dirty rounds:    %10zu bytes in %u rounds\n", pre.len - at_initial_end,
	       rounds);

	/* switchover: the VM stopped, what is dirty now goes in STOP_COPY */
	precopy_info(dfd, &initial, &dirty);
	size_before = data_size(src->fd);
	set_state(src->fd, VFIO_DEVICE_STATE_PRE_COPY_P2P);
	at_stop = pre.len;
	t0 = now();
	CHECK(set_state(src->fd, VFIO_DEVICE_STATE_STOP_COPY) == -1);
	read_until_end(dfd, &pre, false);
	t_stop = now() - t0;
	close(dfd);
	count_memory(pre.p, pre.len, at_stop, &records, &bytes, &aligned);
	expect = bytes + REGS_LEN + MEMORY_OVERHEAD * records + REGS_REC - REGS_LEN + END_REC;
	ratio_bytes = (pre.len - at_stop) / (double)(bytes + REGS_LEN + 28 + END_REC);
	ratio_time = t_stop / t_alone;
	printf("  STOP_COPY after PRE_COPY: %10zu bytes in %7.3f s: %llu dirty pages in %llu runs; "
	       "MIG_DATA_SIZE said %llu, PRECOPY_INFO dirty %llu\n",
	       pre.len - at_stop, t_stop, (unsigned long long)(bytes / PAGE),
	       (unsigned long long)records, (unsigned long long)size_before,
	       (unsigned long long)dirty);
	if (!aligned)
		printf("  (the last PRE_COPY round ended inside a record at its deadline: the rest of "
		       "that record came first, its framing is not counted above)\n");
	if (pre.len - at_stop != size_before ||
	    (aligned && (double)(pre.len - at_stop) != expect)) {
		printf("  FAIL: STOP_COPY bytes %zu, MIG_DATA_SIZE %llu, framing says %.0f\n",
		       pre.len - at_stop, (unsigned long long)size_before, expect);
		fails++;
	}
	printf("  %s bytes: %.4f x (dirty pages x 4 KiB + registers + END) (goal <= 1.02; the rest is "
	       "per-run framing)\n", ratio_bytes <= 1.02 ? "ok  " : "FAIL", ratio_bytes);
	printf("  %s time:  %.4f x STOP_COPY alone (goal <= 0.05)\n",
	       ratio_time <= 0.05 ? "ok  " : "FAIL", ratio_time);
	fails += ratio_bytes > 1.02;
	fails += ratio_time > 0.05;

	/* 4. the destination gets exactly the source's final VRAM */
	resume_into(dst, &pre);
	if (memcmp(src->vram, dst->vram, src->size)) {
		printf("  FAIL: destination VRAM differs from the source's\n");
		fails++;
	} else {
		printf("  ok   destination VRAM equals the source's (%zu bytes of stream)\n", pre.len);
	}
	set_state(src->fd, VFIO_DEVICE_STATE_STOP);
	set_state(src->fd, VFIO_DEVICE_STATE_RUNNING);
	set_state(dst->fd, VFIO_DEVICE_STATE_RUNNING);
	free(pre.p);
	return fails;
}

int main(int argc, char **argv)
{
	struct dev src, dst;
	int i, fails = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: %s SRC_BDF DST_BDF [RATE_PERCENT...]\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	open_device(&src, argv[1]);
	open_device(&dst, argv[2]);
	CHECK(src.size == dst.size);
	printf("PRE_COPY benchmark: %s -> %s, VRAM %zu MiB\n", argv[1], argv[2], src.size >> 20);
	if (argc == 3) {
		fails += bench(&src, &dst, 1);
		fails += bench(&src, &dst, 10);
	}
	for (i = 3; i < argc; i++)
		fails += bench(&src, &dst, atof(argv[i]));
	printf("%s\n", fails ? "FAIL" : "PASS");
	return fails ? 1 : 0;
}
