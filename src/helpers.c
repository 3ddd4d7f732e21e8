// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for qemu-vfio-pci: wrappers for static inline functions of the kernel C API, and the
 * migration callbacks with their exact C prototypes for kCFI.
 */
#include <linux/build_bug.h>
#include <linux/container_of.h>
#include <linux/mm.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>
#include <linux/wait.h>
#include "qvp_helpers.h"

void qvp_vfio_put_device(struct vfio_device *device)
{
	vfio_put_device(device);
}

bool qvp_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

void qvp_cond_resched(void)
{
	cond_resched();
}

#if IS_ENABLED(CONFIG_KUNIT)
int qvp_test_raise_fatal_signal(void)
{
	if (!(current->flags & PF_KTHREAD))
		return -EPERM;
	allow_signal(SIGKILL);
	send_sig(SIGKILL, current, 1);
	return fatal_signal_pending(current) ? 0 : -EIO;
}

void qvp_test_clear_fatal_signal(void)
{
	flush_signals(current);
	disallow_signal(SIGKILL);
}
#endif

/*
 * The vfio core calls migration_set_state() and migration_get_state() through pointers whose
 * prototypes use enum vfio_device_mig_state. kCFI hashes the mangled prototype, which spells the
 * enum by name, while Rust only knows the enum as a u32: a Rust function in these slots would
 * carry another hash and fail the check. These two functions have the C prototypes exactly and
 * forward to the driver's callbacks, whose prototypes use u32 in C and in Rust alike.
 */
static_assert(sizeof(enum vfio_device_mig_state) == sizeof(u32));

static const struct qvp_migration_ops *qvp_mig_ops(struct vfio_device *vdev)
{
	return container_of(vdev->mig_ops, struct qvp_migration_ops, ops);
}

struct file *qvp_migration_set_state(struct vfio_device *vdev,
				     enum vfio_device_mig_state new_state)
{
	return qvp_mig_ops(vdev)->set_state(vdev, new_state);
}

int qvp_migration_get_state(struct vfio_device *vdev, enum vfio_device_mig_state *curr_state)
{
	u32 state;
	int ret = qvp_mig_ops(vdev)->get_state(vdev, &state);

	if (!ret)
		*curr_state = state;
	return ret;
}

/*
 * Write tracking of a BAR mapping (src/vfio/dirty.rs, src/vfio/device.rs).
 */

/*
 * vmf_insert_pfn() with the VMA's page protection, or, if @writable, with it made writable as far
 * as the VMA allows (a write-notify VMA's vm_page_prot is read-only): pgprot_modify() keeps the
 * cache and encryption bits vfio-pci-core set, as vma_set_page_prot() does.
 */
vm_fault_t qvp_vmf_insert_pfn(struct vm_fault *vmf, unsigned long pfn, bool writable)
{
	struct vm_area_struct *vma = vmf->vma;
	pgprot_t prot = vma->vm_page_prot;

	if (writable)
		prot = pgprot_modify(prot, vm_get_page_prot(vma->vm_flags));
	return vmf_insert_pfn_prot(vma, vmf->address, pfn, prot);
}

/*
 * A huge entry of @order (PMD or PUD) for a fault on a mapping of the BAR whose first page is
 * @bar_pfn, made writable as far as the VMA allows, as vfio-pci-core's huge_fault maps it (whose
 * entry a write-notify VMA would leave read-only: vmf_insert_pfn_pmd(.., false) takes the VMA's
 * vm_page_prot). VM_FAULT_FALLBACK when the kernel cannot map a PFN at that order or the range is
 * not aligned to it. The caller holds memory_lock for reading and saw memory decode on.
 */
vm_fault_t qvp_vmf_insert_pfn_huge(struct vm_fault *vmf, unsigned long bar_pfn, unsigned int order)
{
	struct vm_area_struct *vma = vmf->vma;
	unsigned long addr = vmf->address & ~((PAGE_SIZE << order) - 1);
	unsigned long pfn;

	if (!order || addr < vma->vm_start)
		return VM_FAULT_FALLBACK;
	pfn = bar_pfn + (vma->vm_pgoff & (VFIO_PCI_OFFSET_MASK >> PAGE_SHIFT)) +
	      ((addr - vma->vm_start) >> PAGE_SHIFT);
	if (!is_aligned_for_order(vma, addr, pfn, order))
		return VM_FAULT_FALLBACK;
#ifdef CONFIG_ARCH_SUPPORTS_PMD_PFNMAP
	if (order == PMD_ORDER)
		return vmf_insert_pfn_pmd(vmf, pfn, true);
#endif
#ifdef CONFIG_ARCH_SUPPORTS_PUD_PFNMAP
	if (order == PUD_ORDER)
		return vmf_insert_pfn_pud(vmf, pfn, true);
#endif
	return VM_FAULT_FALLBACK;
}

void qvp_init_waitqueue_head(struct wait_queue_head *wq)
{
	init_waitqueue_head(wq);
}

void qvp_poll_wait(struct file *file, struct wait_queue_head *wq, struct poll_table_struct *pt)
{
	poll_wait(file, wq, pt);
}

/* wake_up_poll(), only if somebody waits (wq_has_sleeper() has the barrier poll_wait() pairs with). */
void qvp_wake_up_poll(struct wait_queue_head *wq, __poll_t mask)
{
	if (wq_has_sleeper(wq))
		wake_up_poll(wq, mask);
}
