"""`kata-npu image build`: a reproducible, chiselled Kata guest image with the NPU driver and the hook.

One module per stage: base (mmdebstrap, cached), driver (vendor .run installers),
pysubset (the stdlib the hook needs), chisel (keep only what runs), initrd/disk
(deterministic writers), manifest; build.py plans and applies them in order.
"""
