// SPDX-License-Identifier: GPL-2.0
/*
 * Stand-in for the Ascend NPU driver, for kata-npu's guest-image tests only.
 * Binds QEMU's "edu" PCI device (1234:11e8) and, after an optional delay
 * (to exercise "NPU still coming up"), creates the char devices the Ascend
 * driver creates, through the driver model so devtmpfs makes the nodes and
 * /sys/dev/char/M:m/device points at the PCI function.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/fs.h>
#include <linux/workqueue.h>

static unsigned int delay_ms;
module_param(delay_ms, uint, 0444);
MODULE_PARM_DESC(delay_ms, "milliseconds before the device nodes appear");

static const char *const shared_nodes[] = { "davinci_manager", "devmm_svm", "hisi_hdc" };
#define NR_NODES 4

static dev_t base;
static struct cdev npu_cdev;
static struct class *npu_class;
static struct pci_dev *bound;
static bool created;
static struct delayed_work create_work;

static int npu_open(struct inode *inode, struct file *file) { return 0; }
static const struct file_operations npu_fops = { .owner = THIS_MODULE, .open = npu_open };

static void create_nodes(struct work_struct *w)
{
	int i;

	device_create(npu_class, &bound->dev, MKDEV(MAJOR(base), 0), NULL, "davinci%d", 0);
	for (i = 0; i < ARRAY_SIZE(shared_nodes); i++)
		device_create(npu_class, NULL, MKDEV(MAJOR(base), i + 1), NULL, "%s", shared_nodes[i]);
	created = true;
	dev_info(&bound->dev, "npu_standin: device nodes created after %u ms\n", delay_ms);
}

static int npu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	int rc = pci_enable_device(pdev);

	if (rc)
		return rc;
	if (bound)
		return -EBUSY;
	bound = pdev;
	schedule_delayed_work(&create_work, msecs_to_jiffies(delay_ms));
	return 0;
}

static void npu_remove(struct pci_dev *pdev)
{
	int i;

	cancel_delayed_work_sync(&create_work);
	if (created)
		for (i = 0; i < NR_NODES; i++)
			device_destroy(npu_class, MKDEV(MAJOR(base), i));
	created = false;
	bound = NULL;
	pci_disable_device(pdev);
}

static const struct pci_device_id npu_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },
	{ 0 }
};
MODULE_DEVICE_TABLE(pci, npu_ids);

static struct pci_driver npu_driver = {
	.name = "npu_standin",
	.id_table = npu_ids,
	.probe = npu_probe,
	.remove = npu_remove,
};

static int __init npu_init(void)
{
	int rc = alloc_chrdev_region(&base, 0, NR_NODES, "npu_standin");

	if (rc)
		return rc;
	cdev_init(&npu_cdev, &npu_fops);
	rc = cdev_add(&npu_cdev, base, NR_NODES);
	if (rc)
		goto unreg;
	npu_class = class_create(THIS_MODULE, "npu_standin");
	if (IS_ERR(npu_class)) {
		rc = PTR_ERR(npu_class);
		goto del;
	}
	INIT_DELAYED_WORK(&create_work, create_nodes);
	rc = pci_register_driver(&npu_driver);
	if (rc)
		goto cls;
	return 0;
cls:
	class_destroy(npu_class);
del:
	cdev_del(&npu_cdev);
unreg:
	unregister_chrdev_region(base, NR_NODES);
	return rc;
}

static void __exit npu_exit(void)
{
	pci_unregister_driver(&npu_driver);
	class_destroy(npu_class);
	cdev_del(&npu_cdev);
	unregister_chrdev_region(base, NR_NODES);
}

module_init(npu_init);
module_exit(npu_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kata-npu test stand-in for the Ascend NPU driver");
