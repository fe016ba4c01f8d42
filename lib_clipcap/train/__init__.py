"""Training: CLIP features, ClipCap (MLP/transformer mapper), the SBG generator, the CLIP-S grammar head and CLIP-S
reinforcement learning, with the same model code inference uses.

    python -m lib_clipcap train features|clipcap|sbg|grammar|rl ...

Modules (imported lazily; importing this package is cheap): :mod:`.features`, :mod:`.data`, :mod:`.loop` (the step
bookkeeping the trainers share), :mod:`.validation` (held-out split, validation metrics, best checkpoint, early
stopping), :mod:`.clipcap`, :mod:`.sbg`, :mod:`.rl`, :mod:`.grammar`, :mod:`.cli`, and :mod:`.worlds` (a harder
synthetic captioning world in Flickr8k's layout, and the training recipe measured on it).
"""
