"""How accurate int8 GPT-2 is on this CPU, per quantized engine and weight range (lib_clipcap.quant).

For each engine PyTorch has here (fbgemm, x86, qnnpack) and each weight range (full int8, and the [-64, 64] range
that cannot saturate a 16-bit accumulator), it reports whether lib_clipcap's exact-product probe passes and the
relative error of GPT-2 small's next-token logits against fp32 (random weights: the arithmetic of the trained model;
embeddings of a 10-token prefix, 3 rows), and marks the kernel ``int8_kernel()`` chooses. Run it on a CPU class
before quoting int8 figures for it:

    python tools/int8_accuracy.py            # prints a Markdown table; JSON to artifacts/int8_accuracy.json
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

import _bench_common as common  # first: puts the repository on sys.path
from lib_clipcap import quant
from lib_clipcap.gpt2 import GPT2Config, GPT2LMHead


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--out", default=str(common.ROOT / "artifacts" / "int8_accuracy.json"))
    args = ap.parse_args()
    chosen = quant.int8_kernel()
    torch.manual_seed(0)
    gpt = GPT2LMHead(GPT2Config()).eval()
    emb = torch.randn(3, 10, 768) * 0.1
    with torch.inference_mode():
        ref = gpt(emb, last_only=True)
    supported = list(getattr(torch.backends.quantized, "supported_engines", []))
    rows = []
    for engine in (e for e in quant._ENGINES if e in supported):
        for weight_max in quant._WEIGHT_RANGES:
            exact = quant._probe(engine, weight_max)
            kernel = quant.Int8Kernel(engine, weight_max, chosen.cpu if chosen else "unknown")
            # Quantize with this kernel forced (the probe result is reported, not obeyed, so a saturating
            # kernel's error shows too).
            quant.int8_kernel.cache_clear()
            original = quant.int8_kernel
            quant.int8_kernel = lambda k=kernel: k  # type: ignore[assignment]
            try:
                q = quant.quantize_gpt2_(copy.deepcopy(gpt))
                with torch.inference_mode():
                    got = q(emb, last_only=True)
            finally:
                quant.int8_kernel = original
            rel = float((got - ref).norm() / ref.norm())
            rows.append({"engine": engine, "weight_max": weight_max, "probe_exact": exact,
                         "logits_relative_error": rel,
                         "chosen": chosen is not None and (engine, weight_max) == (chosen.engine, chosen.weight_max)})
            print(rows[-1], flush=True)
    quant.int8_kernel.cache_clear()
    result = {"hardware": common.hardware(torch.device("cpu")), "cpu_capability": chosen.cpu if chosen else None,
              "chosen": chosen.describe() if chosen else None, "rows": rows}
    common.write_json(Path(args.out), result)
    common.print_table(f"int8 GPT-2 small logits vs fp32, {result['hardware']} ({result['cpu_capability']})",
                       ["engine", "weights", "probe", "logits relative error", "chosen"],
                       [[r["engine"], f"[-{r['weight_max']}, {r['weight_max']}]",
                         "exact" if r["probe_exact"] else "saturates", f"{r['logits_relative_error']:.4f}",
                         "yes" if r["chosen"] else ""] for r in rows])


if __name__ == "__main__":
    main()
