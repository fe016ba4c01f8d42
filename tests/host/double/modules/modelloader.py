"""modules/modelloader.py: no network in the double. ``load_file_from_url`` serves files registered in ``served``."""

import os
import shutil

served = {}  # url -> local file


def load_file_from_url(url, *, model_dir, progress=True, file_name=None, hash_prefix=None):
    os.makedirs(model_dir, exist_ok=True)
    file_name = file_name or os.path.basename(url.split("?")[0])
    cached = os.path.join(model_dir, file_name)
    if not os.path.exists(cached):
        if url not in served:
            raise RuntimeError(f"the host double has no network; not serving {url}")
        shutil.copyfile(served[url], cached)
    return cached


def load_models(model_path, model_url=None, command_path=None, ext_filter=None, download_name=None, ext_blacklist=None, hash_prefix=None):
    output = []
    if os.path.isdir(model_path):
        for name in sorted(os.listdir(model_path)):
            if ext_filter is None or any(name.endswith(e) for e in ext_filter):
                output.append(os.path.join(model_path, name))
    if model_url is not None and not output:
        output.append(load_file_from_url(model_url, model_dir=model_path, file_name=download_name, hash_prefix=hash_prefix))
    return output
