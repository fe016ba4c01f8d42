#!/usr/bin/env bash
# Create or refresh the host-double virtualenvs: .venv-a1111 (tools/requirements-a1111.txt: gradio 3.41.2,
# fastapi 0.94, pydantic 1, transformers 4.30.2, open-clip-torch 2.20.0), .venv-forge
# (tools/requirements-forge.txt: gradio 4.40.0, pydantic 2.8.2, fastapi 0.104.1, transformers 4.46.1), .venv-neo
# (tools/requirements-neo.txt, Forge Neo: gradio 4.40.0, numpy 2.3.5, pydantic 2.10.6, transformers 4.57.6,
# protobuf 4.25.9) and .venv-classic (tools/requirements-classic.txt, Forge Classic: gradio 3.43.2, pydantic 1.10.22,
# transformers 4.30.2, numpy 1.26.4). "#launcher:" lines of a requirements file are what the host's launcher installs
# before its requirements (gradio for Neo and Classic): they are installed first, in their own pip call, as the host does.
# A second run is instant: a venv is rebuilt only when its requirements file or this script changed (hash stamp).
#
# torch is the one deliberate deviation from the hosts' pins (2.14.1 instead of 2.1.2 / 2.3.1 / 2.11.0 / 2.9.1: the
# only torch that imports torchvision here); Python is 3.11 for every host (Neo recommends 3.13, not installable here;
# its launcher accepts 3.11 with a warning). Each requirements file's header names its other deviations.
# torch is a 5.5 GB CUDA build, so instead of unpacking it again per host it is seeded from the
# main .venv by hard links when that venv holds the same version on the same filesystem (pip then sees it installed;
# if pip ever replaces it, it only unlinks the venv's own names). Otherwise pip installs it like everything else.
#
# Usage: bash tools/host_envs.sh [a1111] [forge] [neo] [classic]   (default: all; prints "HOST=<venv python>" lines)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/env.sh"   # the main .venv ($PY, $ROOT): torch is seeded from it
MAIN_SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

seed_torch() {  # $1 = target venv python, $2 = requirements file
  local site
  site="$("$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$PY" - "$MAIN_SITE" "$site" "$2" <<'EOF'
"""Hard-link torch, torchvision and their dependency closure from the main venv into a host venv."""
import importlib.metadata as md
import os
import sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

src_site, dst_site, req_file = sys.argv[1:]
pins = {}
for line in open(req_file):
    line = line.split("#")[0].strip()
    if line:
        r = Requirement(line)
        pins[canonicalize_name(r.name)] = r
if os.stat(src_site).st_dev != os.stat(dst_site).st_dev:
    sys.exit(0)  # different filesystems: no hard links, pip installs torch
dists = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions(path=[src_site])}
present = {canonicalize_name(d.metadata["Name"]) for d in md.distributions(path=[dst_site])}
todo, seen, linked = [("torch", ()), ("torchvision", ())], set(), []
while todo:
    name, extras = todo.pop()
    name = canonicalize_name(name)
    if (name, extras) in seen or name in present:
        continue
    first = not any(n == name for n, _ in seen)
    seen.add((name, extras))
    d = dists.get(name)
    if d is None:
        continue
    pin = pins.get(name)
    if pin is not None and not pin.specifier.contains(d.version, prereleases=True):
        continue  # the host pins another version (numpy, Pillow...): pip installs that one
    for r in map(Requirement, d.requires or []):  # follow extras too: cuda-toolkit[cublas,...] brings the CUDA libs
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("",) + extras):
            todo.append((r.name, tuple(sorted(r.extras))))
    if not first:
        continue
    done = []
    try:
        for f in d.files or []:
            rel = str(f)
            if rel.startswith(".."):
                continue  # console scripts under bin/: not needed by the tests
            src, dst = os.path.join(src_site, rel), os.path.join(dst_site, rel)
            if not os.path.isfile(src) or os.path.exists(dst):
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.link(src, dst)
            done.append(dst)
    except OSError as e:  # no hard links here: undo this package (pip must not see half of it) and let pip work
        for dst in done:
            os.unlink(dst)
        print(f"clipcap: cannot hard-link from the main venv ({e}); pip installs torch instead", file=sys.stderr)
        break
    linked.append(f"{name} {d.version}")
if linked:
    print(f"clipcap: hard-linked {len(linked)} packages from the main venv: {', '.join(sorted(linked))}",
          file=sys.stderr)
EOF
}

build() {  # $1 = a1111 | forge | neo | classic
  local host="$1" venv="$ROOT/.venv-$1" req="$ROOT/tools/requirements-$1.txt"
  local stamp="$venv/.requirements.sha256" want
  want="$(cat "$req" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
    echo "$host=$venv/bin/python"
    return 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "clipcap: creating the $host host-double virtualenv in $venv" >&2
    "$(command -v python3.11 || command -v python3)" -m venv "$venv"
  fi
  rm -f "$stamp"
  seed_torch "$venv/bin/python" "$req"
  local launcher
  launcher="$(sed -n 's/^#launcher://p' "$req" | tr '\n' ' ')"
  if [ -n "${launcher// /}" ]; then  # what the host's launcher installs before its requirements (gradio)
    echo "clipcap: installing the $host launcher packages: $launcher" >&2
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install -q --disable-pip-version-check $launcher 2>&1 \
      | { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
  fi
  echo "clipcap: installing the $host pins from $req (first run takes a few minutes)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
  # Prove the pins resolved to what the host runs, and that the stack imports together.
  "$venv/bin/python" -W ignore - "$req" <<'EOF' >&2
import importlib.metadata as md, sys
from packaging.requirements import Requirement
bad = []
lines = []
for line in open(sys.argv[1]):
    lines += line[len("#launcher:"):].split() if line.startswith("#launcher:") else [line.split("#")[0].strip()]
for line in lines:
    if line:
        r = Requirement(line)
        v = md.version(r.name)
        if not r.specifier.contains(v, prereleases=True):
            bad.append(f"{r.name} {v} does not match {r.specifier}")
if bad:
    sys.exit("clipcap: host pins not honoured: " + "; ".join(bad))
import fastapi, gradio, open_clip, pydantic, torch, torchvision, transformers  # noqa: F401
print(f"clipcap: host env ok: gradio {gradio.__version__}, fastapi {fastapi.__version__}, pydantic {pydantic.VERSION}, "
      f"transformers {transformers.__version__}, open_clip {md.version('open-clip-torch')}, torch {torch.__version__}")
EOF
  echo "$want" > "$stamp"
  echo "$host=$venv/bin/python"
}

hosts=("$@")
[ ${#hosts[@]} -eq 0 ] && hosts=(a1111 forge neo classic)
for h in "${hosts[@]}"; do
  case "$h" in
    a1111|forge|neo|classic) build "$h" ;;
    *) echo "clipcap: unknown host '$h' (expected a1111, forge, neo or classic)" >&2; exit 2 ;;
  esac
done
