/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Helpers shared by the qemu-vfio-pci kselftests: finding a device's VFIO cdev from its PCI
 * address and querying regions.
 */
#ifndef QVP_VFIO_UTIL_H
#define QVP_VFIO_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/vfio.h>

static inline bool is_bdf(const char *str)
{
	unsigned int s, b, d, f;
	int len = 0;

	if (sscanf(str, "%4x:%2x:%2x.%1x%n", &s, &b, &d, &f, &len) != 4)
		return false;
	return len > 0 && (size_t)len == strlen(str);
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

#endif /* QVP_VFIO_UTIL_H */
