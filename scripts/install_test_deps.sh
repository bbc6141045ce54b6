#!/usr/bin/env bash
# Installs the Debian packages the source tests need: vlc (RTSP server, run as nobody),
# ffmpeg (UDP/HLS senders), chromium + chromium-driver (the web page's browser tests) and
# mosquitto (MQTT broker for the alert tests; the tests start their own on a free port, the
# system service is not needed). Idempotent and quiet: does nothing when they are present.
set -euo pipefail

PKGS=(vlc-bin vlc-plugin-base ffmpeg chromium chromium-driver mosquitto)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "install_test_deps: apt-get not found; install ${missing[*]} yourself (stream tests will be skipped)" >&2
    exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_test_deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo -n)
fi
echo "install_test_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
