// SPDX-License-Identifier: GPL-2.0-only
/*
 * painter: the /init of the Linux guest that `make demo` live-migrates
 * (tests/demo/live_migration.py).
 *
 * It runs in the L2 guest, whose only PCI display is a bochs-display assigned with vfio-pci, and
 * drives it without any guest driver: the DISPI registers through a mapping of sysfs `resource2`
 * (BAR2) and the frame through a mapping of `resource0` (BAR0, VRAM). It sets 640x480x32, clears
 * the frame, and then every 250 ms (one "tick") paints one more 40x36 tile, redraws the banner
 * with the tick number and prints `tick N` on the console (ttyS0). Every 8 ticks it reads back
 * every tile slot and the mode registers and prints `verify N ok (K tiles)`, or `VERIFY FAIL ...`
 * for the first difference.
 *
 * Tiles are never repainted (until all 192 slots are used and painting wraps around), and a
 * tile's colour depends only on a per-boot random seed and its tick, so after a live migration
 * the destination can show and verify the tiles painted on the source only if the device's VRAM
 * and registers moved with the guest.
 *
 * The layout (banner height, tile size, grid) is shared with tests/demo/live_migration.py,
 * which compares the screendumps tile by tile.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WIDTH		640
#define HEIGHT		480
#define BANNER_H	48
#define TILE_W		40
#define TILE_H		36
#define BORDER		2
#define COLS		(WIDTH / TILE_W)			/* 16 */
#define ROWS		((HEIGHT - BANNER_H) / TILE_H)		/* 12 */
#define SLOTS		(COLS * ROWS)				/* 192 */
#define TICK_NS		250000000L
#define VERIFY_EVERY	8

#define COLOUR_BG	0x202020u
#define COLOUR_BANNER	0x102040u
#define COLOUR_TEXT	0xffffffu
#define COLOUR_BORDER	0x000000u

/* bochs-display BAR2: DISPI registers, 16 bit, index i at 0x500 + 2 * i; QEMU's byte order. */
#define DISPI_REG(i)		(0x500 + 2 * (i))
#define DISPI_ID		0x0
#define DISPI_XRES		0x1
#define DISPI_YRES		0x2
#define DISPI_BPP		0x3
#define DISPI_ENABLE		0x4
#define DISPI_BANK		0x5
#define DISPI_VIRT_WIDTH	0x6
#define DISPI_VIRT_HEIGHT	0x7
#define DISPI_X_OFFSET		0x8
#define DISPI_Y_OFFSET		0x9
#define DISPI_ENABLED		0x01
#define DISPI_LFB_ENABLED	0x40
#define QEXT_BYTEORDER		0x604
#define QEXT_LITTLE_ENDIAN	0x1e1e1e1eu

static volatile uint8_t *mmio;
static volatile uint32_t *fb;
static uint32_t seed;

static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	/* One write per line: a line is never split by another writer. */
	if (write(STDOUT_FILENO, buf, n) < 0)
		return;
}

static int die(const char *what)
{
	say("painter: %s: %s", what, strerror(errno));
	/* init exits: the kernel panics and, with panic=-1 and -no-reboot, QEMU exits. */
	return 1;
}

static uint16_t dispi_read(int index)
{
	return *(volatile uint16_t *)(mmio + DISPI_REG(index));
}

static void dispi_write(int index, uint16_t val)
{
	*(volatile uint16_t *)(mmio + DISPI_REG(index)) = val;
}

static int read_file(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return 0;
}

static int write_file(const char *path, const char *s)
{
	ssize_t n;
	int fd;

	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	n = write(fd, s, strlen(s));
	close(fd);
	return n < 0 ? -1 : 0;
}

/* The sysfs directory of the one bochs-display (1234:1111), or NULL. */
static char *find_device(void)
{
	static char path[300];
	char buf[32], vendor[32];
	struct dirent *d;
	DIR *dir;
	int found = 0;

	dir = opendir("/sys/bus/pci/devices");
	if (!dir)
		return NULL;
	while ((d = readdir(dir))) {
		char p[300];

		if (d->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", d->d_name);
		if (read_file(p, vendor, sizeof(vendor)))
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", d->d_name);
		if (read_file(p, buf, sizeof(buf)))
			continue;
		if (!strncmp(vendor, "0x1234", 6) && !strncmp(buf, "0x1111", 6)) {
			snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s", d->d_name);
			found = 1;
			break;
		}
	}
	closedir(dir);
	return found ? path : NULL;
}

static void *map_resource(const char *dev, int bar, size_t *size)
{
	char path[320];
	struct stat st;
	void *p;
	int fd;

	snprintf(path, sizeof(path), "%s/resource%d", dev, bar);
	fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st)) {
		close(fd);
		return NULL;
	}
	*size = st.st_size;
	p = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

/* A bright colour for the tile painted at tick t (splitmix32 of seed and t). */
static uint32_t tile_colour(unsigned long t)
{
	uint32_t x = seed ^ (uint32_t)(t * 0x9e3779b9u);

	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	x ^= x >> 16;
	/* Each component at least 0x40: never the background nor the border. */
	return (x & 0xffffff) | 0x404040;
}

static void fill(int x0, int y0, int w, int h, uint32_t c)
{
	for (int y = y0; y < y0 + h; y++)
		for (int x = x0; x < x0 + w; x++)
			fb[y * WIDTH + x] = c;
}

/* The colour the tile slot's pixel (x, y), relative to the slot, has when painted with c. */
static uint32_t tile_pixel(int x, int y, uint32_t c)
{
	if (x < BORDER || y < BORDER || x >= TILE_W - BORDER || y >= TILE_H - BORDER)
		return COLOUR_BORDER;
	return c;
}

static void paint_tile(unsigned long t)
{
	int slot = t % SLOTS;
	int x0 = slot % COLS * TILE_W, y0 = BANNER_H + slot / COLS * TILE_H;
	uint32_t c = tile_colour(t);

	for (int y = 0; y < TILE_H; y++)
		for (int x = 0; x < TILE_W; x++)
			fb[(y0 + y) * WIDTH + x0 + x] = tile_pixel(x, y, c);
}

/* 5x7 glyphs, one byte a row, bit 4 leftmost. */
static const uint8_t *glyph(char ch)
{
	static const uint8_t digits[10][7] = {
		{ 0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e },
		{ 0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e },
		{ 0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f },
		{ 0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e },
		{ 0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02 },
		{ 0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e },
		{ 0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e },
		{ 0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08 },
		{ 0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e },
		{ 0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c },
	};
	static const uint8_t t[7] = { 0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04 };
	static const uint8_t i[7] = { 0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e };
	static const uint8_t c[7] = { 0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e };
	static const uint8_t k[7] = { 0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11 };
	static const uint8_t blank[7];

	if (ch >= '0' && ch <= '9')
		return digits[ch - '0'];
	switch (ch) {
	case 'T': return t;
	case 'I': return i;
	case 'C': return c;
	case 'K': return k;
	default: return blank;
	}
}

static void paint_banner(unsigned long t)
{
	const int scale = 5, x0 = 12, y0 = (BANNER_H - 7 * scale) / 2;
	char text[32];

	snprintf(text, sizeof(text), "TICK %07lu", t);
	fill(0, 0, WIDTH, BANNER_H, COLOUR_BANNER);
	for (int n = 0; text[n]; n++) {
		const uint8_t *g = glyph(text[n]);

		for (int row = 0; row < 7; row++)
			for (int col = 0; col < 5; col++)
				if (g[row] & (0x10 >> col))
					fill(x0 + n * 6 * scale + col * scale, y0 + row * scale,
					     scale, scale, COLOUR_TEXT);
	}
}

/* Reads back the mode and every tile slot as painted up to tick t; 0 if all is as painted. */
static int verify(unsigned long t)
{
	static const struct { int index; uint16_t val; const char *name; } mode[] = {
		{ DISPI_XRES, WIDTH, "XRES" },
		{ DISPI_YRES, HEIGHT, "YRES" },
		{ DISPI_BPP, 32, "BPP" },
		{ DISPI_ENABLE, DISPI_ENABLED | DISPI_LFB_ENABLED, "ENABLE" },
		{ DISPI_VIRT_WIDTH, WIDTH, "VIRT_WIDTH" },
		{ DISPI_X_OFFSET, 0, "X_OFFSET" },
		{ DISPI_Y_OFFSET, 0, "Y_OFFSET" },
	};
	unsigned long painted = t + 1 < SLOTS ? t + 1 : SLOTS;

	for (size_t i = 0; i < sizeof(mode) / sizeof(mode[0]); i++) {
		uint16_t v = dispi_read(mode[i].index);

		if (v != mode[i].val) {
			say("VERIFY FAIL %lu: DISPI %s = 0x%x, expected 0x%x", t, mode[i].name, v,
			    mode[i].val);
			return -1;
		}
	}
	for (int slot = 0; slot < SLOTS; slot++) {
		int x0 = slot % COLS * TILE_W, y0 = BANNER_H + slot / COLS * TILE_H;
		/* The last tick that painted this slot, if any. */
		long last = (unsigned long)slot <= t ? (long)(slot + (t - slot) / SLOTS * SLOTS) : -1;
		uint32_t c = last >= 0 ? tile_colour(last) : 0;

		for (int y = 0; y < TILE_H; y++) {
			for (int x = 0; x < TILE_W; x++) {
				uint32_t want = last >= 0 ? tile_pixel(x, y, c) : COLOUR_BG;
				uint32_t got = fb[(y0 + y) * WIDTH + x0 + x] & 0xffffff;

				if (got != want) {
					say("VERIFY FAIL %lu: tile slot %d (tick %ld) pixel (%d,%d) = "
					    "0x%06x, expected 0x%06x", t, slot, last, x0 + x, y0 + y,
					    got, want);
					return -1;
				}
			}
		}
	}
	say("verify %lu ok (%lu tiles)", t, painted);
	return 0;
}

int main(void)
{
	struct timespec next, now;
	char uptime[64] = "?", path[320], *dev, *nl;
	size_t vram_size, mmio_size;
	unsigned long t;

	mount("proc", "/proc", "proc", 0, NULL);
	if (mount("sysfs", "/sys", "sysfs", 0, NULL))
		return die("mount /sys");
	read_file("/proc/uptime", uptime, sizeof(uptime));
	nl = strchr(uptime, '\n');
	if (nl)
		*nl = 0;
	say("painter: start, uptime %s", uptime);

	dev = find_device();
	if (!dev) {
		errno = ENODEV;
		return die("no bochs-display (1234:1111)");
	}
	/* pci_enable_device(): memory decoding on, whatever the firmware left. */
	snprintf(path, sizeof(path), "%s/enable", dev);
	if (write_file(path, "1"))
		return die("enable");
	mmio = map_resource(dev, 2, &mmio_size);
	if (!mmio)
		return die("mmap resource2");
	fb = map_resource(dev, 0, &vram_size);
	if (!fb)
		return die("mmap resource0");
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed)) {
		clock_gettime(CLOCK_REALTIME, &now);
		seed = now.tv_nsec ^ now.tv_sec;
	}
	say("painter: %s id=0x%x vram=%zu MiB mmio=%zu seed=%08x", dev, dispi_read(DISPI_ID),
	    vram_size >> 20, mmio_size, seed);

	*(volatile uint32_t *)(mmio + QEXT_BYTEORDER) = QEXT_LITTLE_ENDIAN;
	dispi_write(DISPI_ENABLE, 0);
	dispi_write(DISPI_XRES, WIDTH);
	dispi_write(DISPI_YRES, HEIGHT);
	dispi_write(DISPI_BPP, 32);
	dispi_write(DISPI_BANK, 0);
	dispi_write(DISPI_VIRT_WIDTH, WIDTH);
	dispi_write(DISPI_VIRT_HEIGHT, HEIGHT);
	dispi_write(DISPI_X_OFFSET, 0);
	dispi_write(DISPI_Y_OFFSET, 0);
	dispi_write(DISPI_ENABLE, DISPI_ENABLED | DISPI_LFB_ENABLED);
	fill(0, BANNER_H, WIDTH, HEIGHT - BANNER_H, COLOUR_BG);
	say("painter: mode %ux%ux%u enable=0x%x", dispi_read(DISPI_XRES), dispi_read(DISPI_YRES),
	    dispi_read(DISPI_BPP), dispi_read(DISPI_ENABLE));

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (t = 0;; t++) {
		paint_tile(t);
		paint_banner(t);
		say("tick %lu", t);
		if (t % VERIFY_EVERY == VERIFY_EVERY - 1)
			verify(t);

		next.tv_nsec += TICK_NS;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		/* Behind (a slow tick, or a stopped VM): go on from now, no burst of ticks. */
		if (now.tv_sec > next.tv_sec ||
		    (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
			next = now;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
	}
}
