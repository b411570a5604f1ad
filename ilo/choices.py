"""The names the command line and the library accept, in one module that imports nothing heavy,
so building the `ilo` parser (and `ilo --help`) does not load torch."""

TASKS = ("inpaint", "sr", "denoise", "cs")
CS_MATRICES = ("circulant", "gaussian")
FIT_MODES = ("crop", "resize", "pad")
METHODS = ("ilo", "ilo-auto", "choose", "csgm", "pulse", "bm3d", "encoder", "tv", "wavelet")
# ILO that decides its depth per image by held-out measurements: the default because it stops
# each image before it fits the noise, without the ground truth and without extra rounds
# (benchmarks/results/held_out_selection.md compares it with plain ILO)
DEFAULT_METHOD = "ilo-auto"
BACKENDS = ("torch", "cuda", "onnxruntime", "onnxruntime-tensorrt", "tensorrt")
INPUT_SPACES = ("z", "wplus")
SAVE_FORMATS = {"rosinality": ".pt", "nvidia": ".pkl"}  # written checkpoint formats, by name and implied suffix
LPIPS_NETS = ("vgg", "alex")
# What `--memory-budget auto` lets a solve take of the memory available, by device; why these
# shares is said where the budget is worked out (ilo.engine.runtimes.memory_budget)
DEFAULT_MEMORY_SHARE = {"cpu": 0.2, "cuda": 0.85}
DEFAULT_MAX_PIXELS = 64_000_000  # an 8000x8000 photo: larger images are refused before decoding (--max-pixels)
