"""Serve the WebUI double with this extension on 127.0.0.1 until stdin closes (used by test_webui_browser.py).

    python serve_double.py MODE PORT ROOT IMAGE...   # IMAGEs: what the fake txt2img "Generate" shows

Launched as the host launches (:meth:`webui_double.WebUI.launch`: gradio's launch, the host's middleware, then
``on_app_started``), so the page runs behind the extension's request guard like the real WebUI's.
Prints ``READY <url>`` once the page is served.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import webui_double as wd  # noqa: E402

mode, port, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
root.mkdir(parents=True, exist_ok=True)
(root / "config.json").write_text(json.dumps({"clipcap_model": "shapes-demo", "clipcap_decoding": "greedy"}))
webui = wd.WebUI(mode, root).boot()
from PIL import Image  # noqa: E402
from modules import ui  # noqa: E402

ui.fake_outputs[:] = [Image.open(p).convert("RGB") for p in sys.argv[4:]]
webui.create_ui()
webui.launch(port)
print(f"READY http://127.0.0.1:{port}/", flush=True)
sys.stdin.read()
webui.close()
