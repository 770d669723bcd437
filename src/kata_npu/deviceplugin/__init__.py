"""`kata-npu device-plugin`: kubelet device plugin (v1beta1) advertising vfio-bound IOMMU groups, host CDI for Kata cold-plug."""
