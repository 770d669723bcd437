"""Guest side of kata-npu: the OCI hook that equips containers with NPU devices.

Everything under this package imports only the standard library, because the
hook runs on every container start inside the Kata guest (see docs/guest-hook.md).
"""
