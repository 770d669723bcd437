"""Kata Containers configuration for NPU passthrough: render, drop-in, check, glue."""
