"""The application layer: the faces people use, built on the model core one level up.

- :mod:`.cli`: ``python -m lib_clipcap`` / ``clipcap`` (subcommands assembled from each feature's own ``cli`` module;
  :mod:`lib_clipcap.cli_common`, one level down, holds what they share);
- :mod:`.api`: the HTTP API (a FastAPI router both the standalone server and the WebUI mount);
- :mod:`.ui`: the gradio Caption UI (the standalone page and the WebUI tab);
- :mod:`.server`: ``python -m lib_clipcap serve`` (the UI and the API in one app);
- :mod:`.service`: the model cache (:class:`~lib_clipcap.app.service.ModelManager`) and device policy every face
  shares, so a model loaded by one is reused by the others;
- :mod:`.security`: the request policy (host, origin, JSON-only) in front of every HTTP route.

The model core (captioner, model, gpt2, decoding, checkpoint, clip, tokenizer, scoring, grammar, options_table) never
imports from here.
"""
