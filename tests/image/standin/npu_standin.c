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
#define MAX_CHIPS 4
#define NR_SHARED ARRAY_SIZE(shared_nodes)
#define NR_MINORS (MAX_CHIPS + NR_SHARED)

struct chip {
	struct pci_dev *pdev;
	int index;
	bool created;
	struct delayed_work work;
};

static dev_t base;
static struct cdev npu_cdev;
static struct class *npu_class;
static struct chip chips[MAX_CHIPS];

static int npu_open(struct inode *inode, struct file *file) { return 0; }
static const struct file_operations npu_fops = { .owner = THIS_MODULE, .open = npu_open };

/* davinciN appears delay_ms after probe, like a chip finishing its firmware bring-up */
static void create_chip_node(struct work_struct *w)
{
	struct chip *c = container_of(to_delayed_work(w), struct chip, work);

	device_create(npu_class, &c->pdev->dev, MKDEV(MAJOR(base), c->index), NULL, "davinci%d", c->index);
	c->created = true;
	dev_info(&c->pdev->dev, "npu_standin: davinci%d ready after %u ms\n", c->index, delay_ms);
}

static int npu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	int i, rc;

	for (i = 0; i < MAX_CHIPS && chips[i].pdev; i++)
		;
	if (i == MAX_CHIPS)
		return -ENOSPC;
	rc = pci_enable_device(pdev);
	if (rc)
		return rc;
	chips[i].pdev = pdev;
	chips[i].index = i;
	pci_set_drvdata(pdev, &chips[i]);
	INIT_DELAYED_WORK(&chips[i].work, create_chip_node);
	schedule_delayed_work(&chips[i].work, msecs_to_jiffies(delay_ms));
	return 0;
}

static void npu_remove(struct pci_dev *pdev)
{
	struct chip *c = pci_get_drvdata(pdev);

	cancel_delayed_work_sync(&c->work);
	if (c->created)
		device_destroy(npu_class, MKDEV(MAJOR(base), c->index));
	c->created = false;
	c->pdev = NULL;
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
	int i, rc = alloc_chrdev_region(&base, 0, NR_MINORS, "npu_standin");

	if (rc)
		return rc;
	cdev_init(&npu_cdev, &npu_fops);
	rc = cdev_add(&npu_cdev, base, NR_MINORS);
	if (rc)
		goto unreg;
	npu_class = class_create(THIS_MODULE, "npu_standin");
	if (IS_ERR(npu_class)) {
		rc = PTR_ERR(npu_class);
		goto del;
	}
	for (i = 0; i < NR_SHARED; i++)
		device_create(npu_class, NULL, MKDEV(MAJOR(base), MAX_CHIPS + i), NULL, "%s", shared_nodes[i]);
	rc = pci_register_driver(&npu_driver);
	if (rc)
		goto cls;
	return 0;
cls:
	for (i = 0; i < NR_SHARED; i++)
		device_destroy(npu_class, MKDEV(MAJOR(base), MAX_CHIPS + i));
	class_destroy(npu_class);
del:
	cdev_del(&npu_cdev);
unreg:
	unregister_chrdev_region(base, NR_MINORS);
	return rc;
}

static void __exit npu_exit(void)
{
	int i;

	pci_unregister_driver(&npu_driver);
	for (i = 0; i < NR_SHARED; i++)
		device_destroy(npu_class, MKDEV(MAJOR(base), MAX_CHIPS + i));
	class_destroy(npu_class);
	cdev_del(&npu_cdev);
	unregister_chrdev_region(base, NR_MINORS);
}

module_init(npu_init);
module_exit(npu_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kata-npu test stand-in for the Ascend NPU driver");
