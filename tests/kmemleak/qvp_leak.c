// SPDX-License-Identifier: GPL-2.0
/*
 * qvp_leak: leaks on purpose, for the kmemleak self-check of tests/guest-tests.sh. Loading it
 * allocates @count objects of @size bytes with kmalloc() and forgets them: nothing the kernel
 * scans refers to them afterwards, so the next kmemleak scan must report every one, with
 * qvp_leak_init() in its backtrace. A check that reports nothing here cannot be trusted to have
 * found no leak of qemu-vfio-pci either.
 *
 * Not part of the driver; built only for the test guest (scripts/check.sh).
 */
#include <linux/compiler.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

static unsigned int count = 16;
module_param(count, uint, 0444);
MODULE_PARM_DESC(count, "how many objects to leak (default 16)");

static unsigned int size = 128;
module_param(size, uint, 0444);
MODULE_PARM_DESC(size, "their size in bytes (default 128)");

static noinline void qvp_leak_one(void)
{
	void *p = kmalloc(size, GFP_KERNEL);

	if (!p)
		return;
	/* No pointer-like bytes inside, so the objects do not refer to each other. */
	memset(p, 0x5a, size);
	/* The compiler must not drop the allocation: it cannot see that nothing uses it. */
	OPTIMIZER_HIDE_VAR(p);
}

static int __init qvp_leak_init(void)
{
	unsigned int i;

	for (i = 0; i < count; i++)
		qvp_leak_one();
	pr_info("qvp_leak: leaked %u objects of %u bytes on purpose\n", count, size);
	return 0;
}

static void __exit qvp_leak_exit(void)
{
}

module_init(qvp_leak_init);
module_exit(qvp_leak_exit);
MODULE_DESCRIPTION("Leaks memory on purpose, to prove the test guest's kmemleak check");
MODULE_LICENSE("GPL");
