/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for qemu-vfio-pci: wrappers for static inline functions of the kernel C API that
 * bindgen cannot bind, and the kCFI trampolines of the migration callbacks. Nothing else belongs
 * here.
 */
#ifndef QVP_HELPERS_H
#define QVP_HELPERS_H

#include <linux/mm_types.h>
#include <linux/types.h>
#include <linux/vfio.h>

void qvp_vfio_put_device(struct vfio_device *device);

/* fatal_signal_pending(current). */
bool qvp_fatal_signal_pending(void);

/* cond_resched(). */
void qvp_cond_resched(void);

#if IS_ENABLED(CONFIG_KUNIT)
/*
 * For the KUnit tests: queues SIGKILL on the current task, a kernel thread (allow_signal()
 * first, so that it is not dropped), so that fatal_signal_pending(current) is true. -EPERM on a
 * user task (it would die), -EIO if the signal is not pending afterwards.
 */
int qvp_test_raise_fatal_signal(void);
/* Undoes it: flushes the pending signals and ignores SIGKILL again (disallow_signal()). */
void qvp_test_clear_fatal_signal(void);
#endif

/*
 * Write tracking of a BAR mapping: vmf_insert_pfn() with the VMA's protection, made writable (as
 * far as the VMA allows) if @writable; a writable huge entry while tracking is off; the wait queue
 * of poll() on a data file.
 */
struct vm_fault;
struct wait_queue_head;
struct poll_table_struct;
struct file;
vm_fault_t qvp_vmf_insert_pfn(struct vm_fault *vmf, unsigned long pfn, bool writable);
vm_fault_t qvp_vmf_insert_pfn_huge(struct vm_fault *vmf, unsigned long bar_pfn, unsigned int order);
void qvp_init_waitqueue_head(struct wait_queue_head *wq);
void qvp_poll_wait(struct file *file, struct wait_queue_head *wq, struct poll_table_struct *pt);
void qvp_wake_up_poll(struct wait_queue_head *wq, __poll_t mask);

/**
 * struct qvp_migration_ops - the migration ops of a device, with integer-typed callbacks
 * @ops: what vfio_device.mig_ops points at: qvp_migration_set_state(),
 *       qvp_migration_get_state() and the driver's migration_get_data_size()
 * @set_state: the driver's migration_set_state(), with the state as a u32
 * @get_state: the driver's migration_get_state(), with the state as a u32
 */
struct qvp_migration_ops {
	struct vfio_migration_ops ops;
	struct file *(*set_state)(struct vfio_device *vdev, u32 new_state);
	int (*get_state)(struct vfio_device *vdev, u32 *curr_state);
};

struct file *qvp_migration_set_state(struct vfio_device *vdev,
				     enum vfio_device_mig_state new_state);
int qvp_migration_get_state(struct vfio_device *vdev, enum vfio_device_mig_state *curr_state);

#endif /* QVP_HELPERS_H */
