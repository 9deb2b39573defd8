"""ShuffleNetV2's guideline experiments as published (Ma et al., ECCV 2018, Tables 1-4).

GPU: one GeForce GTX 1080Ti with cuDNN 7.0 (benchmark mode), throughput in batches per
second. ARM: a Qualcomm Snapdragon 810 with a NEON implementation, single thread, in images
per second (Tables 2-4 head that column "CPU"). Networks are randomly initialised and timed
over 100 runs (average). Tables 1-3 use 56x56 inputs; Table 4 states no size (56x56 here).

Left unstated by the paper, and our reading:
- x1 / x2 / x4: the tables give channels for x1 only. We read x2 and x4 as channel widths
  times 2 and 4 (compute times 4 and 16): Table 3's 1-fragment row at c = 128 / 256 / 512
  (2446 / 1274 / 434) reproduces Table 2's g = 1 row at x1 / x2 / x4 with c = 128
  (2451 / 1289 / 437), and likewise on the CPU (40.2 / 10.1 / 2.3 vs 40.0 / 10.2 / 2.3).
- GPU batch size: not stated for Tables 1-4; the paper's network comparisons (Figure 1,
  Table 8) use 8 on the GPU and 1 on ARM, which we default to.
- How parallel fragments merge (G3, Appendix Figure 1): not stated in the text; we
  concatenate (see ``networks.g3_network``).
"""

from __future__ import annotations

SCALES = ("x1", "x2", "x4")

#: Table 1 (G1). Ratio -> x1 (c1, c2) and throughput at x1, x2, x4.
G1 = {
    "gpu": {
        "1:1": ((128, 128), (1480, 723, 232)),
        "1:2": ((90, 180), (1296, 586, 206)),
        "1:6": ((52, 312), (876, 489, 189)),
        "1:12": ((36, 432), (748, 392, 163)),
    },
    "cpu": {
        "1:1": ((32, 32), (76.2, 21.7, 5.3)),
        "1:2": ((22, 44), (72.9, 20.5, 5.1)),
        "1:6": ((13, 78), (69.1, 17.9, 4.6)),
        "1:12": ((9, 108), (57.6, 15.1, 4.4)),
    },
}

#: Table 2 (G2). Groups -> x1 channels and throughput at x1, x2, x4.
G2 = {
    "gpu": {1: (128, (2451, 1289, 437)), 2: (180, (1725, 873, 341)),
            4: (256, (1026, 644, 338)), 8: (360, (634, 445, 230))},
    "cpu": {1: (64, (40.0, 10.2, 2.3)), 2: (90, (35.0, 9.5, 2.2)),
            4: (128, (32.9, 8.7, 2.1)), 8: (180, (27.8, 7.5, 1.8))},
}

#: Table 3 (G3). Channels c of the 1-fragment block per column, then throughput per variant.
G3_CHANNELS = {"gpu": (128, 256, 512), "cpu": (64, 128, 256)}
G3 = {
    "gpu": {
        "1-fragment": (2446, 1274, 434),
        "2-fragment-series": (1790, 909, 336),
        "4-fragment-series": (752, 745, 349),
        "2-fragment-parallel": (1537, 803, 320),
        "4-fragment-parallel": (691, 572, 292),
    },
    "cpu": {
        "1-fragment": (40.2, 10.1, 2.3),
        "2-fragment-series": (38.6, 10.1, 2.2),
        "4-fragment-series": (38.4, 10.1, 2.3),
        "2-fragment-parallel": (33.4, 9.1, 2.2),
        "4-fragment-parallel": (35.0, 8.4, 2.1),
    },
}

#: Table 4 (G4). (ReLU, shortcut) -> throughput at c = 32, 64, 128.
G4_CHANNELS = (32, 64, 128)
G4 = {
    "gpu": {(True, True): (2427, 2066, 1436), (True, False): (2647, 2256, 1735),
            (False, True): (2672, 2121, 1458), (False, False): (2842, 2376, 1782)},
    "cpu": {(True, True): (56.7, 16.9, 5.0), (True, False): (61.9, 18.8, 5.2),
            (False, True): (57.3, 18.2, 5.1), (False, False): (66.3, 20.2, 5.4)},
}

UNITS = {"gpu": "batches/s", "cpu": "images/s"}
HARDWARE = {
    "gpu": "GTX 1080Ti, cuDNN 7.0 (batches/s; batch size not stated)",
    "cpu": "Snapdragon 810 ARM, single thread (images/s, batch 1)",
}
