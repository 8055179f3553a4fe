#!/usr/bin/env bash
# System tools some tests drive: headless Chromium and its driver (the report's and the app's browser
# tests) and exiftool (XMP sidecars read back). Installed with apt-get when missing and this runs as
# root on Debian; otherwise says which are missing (their tests then skip).
set -uo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v exiftool >/dev/null || need+=(libimage-exiftool-perl)
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  log=$(mktemp)
  if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >"$log" 2>&1; then
    echo "installed ${need[*]}"
  else
    echo "warning: apt-get install ${need[*]} failed (their tests will skip):"; tail -20 "$log"
  fi
  rm -f "$log"
else
  echo "note: ${need[*]} missing and not installable here (needs root and apt-get): the browser and exiftool tests will skip"
fi
exit 0
