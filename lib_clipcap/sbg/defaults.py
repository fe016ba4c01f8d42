"""The Selective Blind Guessing procedure's defaults, in one place and torch-free (the CLI reads them for ``--help``
and to fill in what the user did not set; :class:`~lib_clipcap.sbg.guesser.BlindGuesser` uses them as its defaults).

The procedure (Huynh et al.): keywords whose softmax(100 cos) mass passes 0.5, a prompt of them, k candidates
*sampled* from the generator (the original used ``pipeline(do_sample=True)``, i.e. HF's default top-k 50), and CLIP
picks the best candidate.
"""

from __future__ import annotations

DEFAULT_DECODING = "sample"  # the original sampled its candidates
DEFAULT_CANDIDATES = 5  # k: the paper's best row (top-1, top-2, top-5)
DEFAULT_TOP_K = 50  # HF generate's default top_k, which the original's pipeline(do_sample=True) sampled with
DEFAULT_THRESHOLD = 0.5  # keywords are taken until their probability mass passes this
DEFAULT_MAX_KEYWORDS = 16  # cap on vocabulary keywords (a flat softmax would otherwise overflow the prompt)
DEFAULT_RERANK = "clip"  # the candidate CLIP scores best wins
DEFAULT_MAX_NEW_TOKENS = 67  # the length limit the original captioning code decoded with

#: The procedure's decoding defaults, over the options table's (:func:`lib_clipcap.options_table.resolve_decoding`);
#: ``beam_size`` None: k beams in beam search.
DECODING_DEFAULTS = {"decoding": DEFAULT_DECODING, "num_candidates": DEFAULT_CANDIDATES, "top_k": DEFAULT_TOP_K,
                     "max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "beam_size": None}
