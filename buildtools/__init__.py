"""setup.py's helpers: the toolchain (toolchain.py) and the CPU target (cpu_target.py)."""
