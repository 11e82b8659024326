"""CuPy GPU kernels (CUDA sources + launchers): the devices under test. Never imported by refsim."""
