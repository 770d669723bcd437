"""kata-npu: NPU passthrough for Kata Containers."""

__version__ = "0.1.0"
