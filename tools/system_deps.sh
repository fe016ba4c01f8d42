#!/usr/bin/env bash
# System packages the test suite uses, from Debian: a Java runtime (pycocoevalcap's PTB tokenizer and METEOR) and
# Chromium (browser tests, driven by Playwright). Installs only what is missing; needs root and apt-get. Without them
# the tests that need them skip with a reason instead of failing.
set -uo pipefail
missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "clipcap: missing system packages (${missing[*]}); install them to run every test" >&2
  exit 0
fi
echo "clipcap: installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null 2>&1 \
  || echo "clipcap: could not install ${missing[*]}; the tests that need them will be skipped" >&2
exit 0
