#!/usr/bin/env bash
# Install the Debian/Ubuntu libraries that Qt 6 (xcb platform) and napari's OpenGL canvas need,
# plus Xvfb for a virtual display. Installs only what is missing; does nothing when all are present.
set -euo pipefail

packages=(
  xvfb xauth
  libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri
  libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0
  libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-system-deps: not a Debian-like system; install Xvfb and Qt's xcb libraries yourself." >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-system-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
