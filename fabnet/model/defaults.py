"""Model constants that the command line needs without importing torch."""

# pix2pix's widths: 64 channels after the first conv, doubling to at most 8x that (512). The
# authors' release uses 16 (at most 128): about 1/16 of the convolution work. Measured on the
# demo data (S = 32, K = 1, batch 16, 2-core CPU, one run after the other): 36.9 vs 9.5 steps/s
# at width 16 vs 64; best validation L1 after 2000 steps 0.0416 vs 0.0408.
DEFAULT_WIDTH = 64
