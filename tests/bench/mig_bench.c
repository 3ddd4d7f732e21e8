// SPDX-License-Identifier: GPL-2.0-only
/*
 * Migration throughput benchmark: saves the complete state of one bochs-display (STOP_COPY) and
 * resumes it into another (RESUMING), through the VFIO v2 migration uAPI, and prints the
 * throughput next to plain memory copies of the same size measured in the same run:
 *
 *   - memcpy RAM -> RAM (what a copy costs on this CPU),
 *   - memcpy from the VRAM mapping (BAR0 mmap) -> RAM (what reading the device costs; under TCG
 *     every access to device memory is emulated).
 *
 *   mig_bench SRC_BDF DST_BDF
 *
 * The stream is read in 1 MiB reads (as QEMU does) and written in 32 KiB writes (QEMU's
 * IO_BUF_SIZE). It checks that the destination's VRAM equals the source's afterwards.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
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

static int open_device(const char *bdf)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };
	char path[512];
	struct dirent *e;
	int fd = -1;
	DIR *d;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	d = opendir(path);
	CHECK(d);
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, "vfio", 4)) {
			snprintf(path, sizeof(path), "/dev/vfio/devices/%.64s", e->d_name);
			fd = open(path, O_RDWR);
		}
	closedir(d);
	CHECK(fd >= 0);
	bind.iommufd = open("/dev/iommu", O_RDWR);
	CHECK((int)bind.iommufd >= 0);
	CHECK(!ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, &bind));
	CHECK(!ioctl(bind.iommufd, IOMMU_IOAS_ALLOC, &alloc));
	attach.pt_id = alloc.out_ioas_id;
	CHECK(!ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach));
	return fd;
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
	struct vfio_device_feature_mig_state s = { .device_state = state };

	CHECK(!feature(fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
		       &s, sizeof(s)));
	return s.data_fd;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static double mibps(size_t bytes, double seconds)
{
	return bytes / seconds / (1 << 20);
}

static uint8_t *map_vram(int fd, size_t *size)
{
	struct vfio_region_info ri = { .argsz = sizeof(ri),
				       .index = VFIO_PCI_BAR0_REGION_INDEX };
	uint8_t *p;

	CHECK(!ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &ri));
	p = mmap(NULL, ri.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, ri.offset);
	CHECK(p != MAP_FAILED);
	*size = ri.size;
	return p;
}

int main(int argc, char **argv)
{
	struct vfio_device_feature_mig_data_size ds = { 0 };
	size_t vram, vram_b, n = 0, off = 0;
	uint8_t *va, *vb, *stream, *ram_a, *ram_b;
	double t0, t_save, t_resume, t_memcpy, t_vram;
	int a, b, dfd;
	ssize_t k;

	if (argc != 3) {
		fprintf(stderr, "usage: %s SRC_BDF DST_BDF\n", argv[0]);
		return 2;
	}
	a = open_device(argv[1]);
	b = open_device(argv[2]);
	va = map_vram(a, &vram);
	vb = map_vram(b, &vram_b);
	CHECK(vram == vram_b);

	/* Baselines: plain memory copies of the same size, in this run. */
	ram_a = malloc(vram);
	ram_b = malloc(vram);
	CHECK(ram_a && ram_b);
	for (size_t i = 0; i < vram; i++)
		ram_a[i] = (uint8_t)(i * 2654435761u >> 13);
	memcpy(ram_b, ram_a, vram); /* fault the pages in */
	t0 = now();
	memcpy(ram_b, ram_a, vram);
	t_memcpy = now() - t0;
	memcpy(va, ram_a, vram); /* a pattern in the source VRAM */
	memset(vb, 0, vram);
	t0 = now();
	memcpy(ram_b, va, vram);
	t_vram = now() - t0;

	CHECK(!feature(a, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
		       &ds, sizeof(ds)));
	stream = malloc(ds.stop_copy_length);
	CHECK(stream);
	/* Fault the buffer in: QEMU reads into a buffer it reuses. */
	memset(stream, 0, ds.stop_copy_length);

	/* Save: RUNNING -> STOP_COPY, read to the end. */
	t0 = now();
	dfd = set_state(a, VFIO_DEVICE_STATE_STOP_COPY);
	CHECK(dfd >= 0);
	while ((k = read(dfd, stream + n, ds.stop_copy_length - n < (1 << 20) ?
					      ds.stop_copy_length - n : (1 << 20))) > 0)
		n += k;
	CHECK(k == 0);
	t_save = now() - t0;
	CHECK(n == ds.stop_copy_length);
	close(dfd);
	set_state(a, VFIO_DEVICE_STATE_RUNNING);

	/* Resume: RUNNING -> RESUMING, write in 32 KiB pieces, RESUMING -> STOP. */
	t0 = now();
	dfd = set_state(b, VFIO_DEVICE_STATE_RESUMING);
	CHECK(dfd >= 0);
	while (off < n) {
		k = write(dfd, stream + off, n - off < 32768 ? n - off : 32768);
		CHECK(k > 0);
		off += k;
	}
	set_state(b, VFIO_DEVICE_STATE_STOP);
	t_resume = now() - t0;
	close(dfd);
	set_state(b, VFIO_DEVICE_STATE_RUNNING);
	CHECK(!memcmp(va, vb, vram));

	printf("vram %zu MiB, stream %zu bytes (%.4f%% overhead)\n", vram >> 20, n,
	       100.0 * (n - vram) / vram);
	printf("  save   (STOP_COPY, 1 MiB reads):   %8.1f MiB/s  %7.3f s\n",
	       mibps(vram, t_save), t_save);
	printf("  resume (RESUMING, 32 KiB writes):  %8.1f MiB/s  %7.3f s\n",
	       mibps(vram, t_resume), t_resume);
	printf("  memcpy RAM -> RAM:                 %8.1f MiB/s  %7.3f s\n",
	       mibps(vram, t_memcpy), t_memcpy);
	printf("  memcpy VRAM mmap -> RAM:           %8.1f MiB/s  %7.3f s\n",
	       mibps(vram, t_vram), t_vram);
	printf("  destination VRAM equals source: yes\n");
	return 0;
}
