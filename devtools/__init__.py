"""Code for tests and benchmarks only: not part of the installed ``lib_clipcap`` package and not loaded by the WebUI.

- :mod:`.reference`: the original ClipCap decoding loops (per image, no KV cache), the baseline the benchmarks and the
  decoding tests compare against;
- :mod:`.local_cluster`: a throwaway local Ray cluster (head + worker processes) for the distributed tests and
  tools/bench_ray.py.

Importable from the repository root (``python -m pytest`` and the tools put it on ``sys.path``).
"""
