"""The CUDA fast paths (kernels/src, built by the top-level CMakeLists.txt) as torch ops.

`ilo.kernels.library.load_library()` finds and checks the built library; `ilo.kernels.ops`
wraps its kernels as autograd-aware torch functions; `ilo.kernels.fast_path.KernelOps` is the
fast implementation the StyleGAN2 layers of `ilo.generators.ops` take explicitly
(`ops.with_fast_layers`). Without a library nothing here is used and
the torch reference ops run.
"""
