"""Host side: discover PCI accelerators and hand them to vfio-pci."""
