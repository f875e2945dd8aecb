#!/usr/bin/env bash
# The browser the pages' tests drive (tests/cloud_collector/pages/test_browser.py): Debian's
# chromium package, through Playwright for Python (installed by deploy/python-env.sh).
# Playwright cannot fetch a browser build of its own here, and needs none: the tests give
# it /usr/bin/chromium. Installs the package if it is missing; says so and fails if it
# cannot.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "browser: /usr/bin/chromium is missing and there is no root to install it: run 'apt-get install chromium' as root" >&2; exit 1; fi
}
echo "browser: installing Debian's chromium for the pages' browser tests" >&2
if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
  echo "browser: could not install the chromium package (apt-get install chromium failed):" \
    "the pages' browser tests need it" >&2
  exit 1
fi
[ -x /usr/bin/chromium ] || { echo "browser: chromium installed but /usr/bin/chromium is missing" >&2; exit 1; }
