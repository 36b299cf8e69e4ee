#!/usr/bin/env bash
# strata's main job on its embedded defaults (default data-root, driver chosen for this machine, no root
# needed): one image shared by two copy-on-write containers that each change the same file.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/cli/main.js ] || npm run build >/dev/null
strata() { ./bin/strata "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/etc" "$work/rootfs/bin" "$work/rootfs/usr/share/doc"
echo "hello from the image" >"$work/rootfs/etc/motd"
echo "documentation" >"$work/rootfs/usr/share/doc/README"
if [ -x /bin/busybox ]; then cp /bin/busybox "$work/rootfs/bin/busybox"; fi
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .

echo "== import a root filesystem as an image"
strata rm -f quickstart-a quickstart-b >/dev/null 2>&1 || true
strata import "$work/rootfs.tar" quickstart:latest
strata images quickstart

echo "== two containers from it, each writing its own value into the same file"
strata create --name quickstart-a quickstart >/dev/null
strata create --name quickstart-b quickstart >/dev/null
for c in a b; do
  root=$(strata mount "quickstart-$c")
  echo "written by $c" >"$root/etc/motd"
  rm -rf "$root/usr/share/doc"
  echo "quickstart-$c sees: $(cat "$root/etc/motd")"
  strata unmount "quickstart-$c"
done

echo "== what changed in quickstart-a (docker diff)"
strata diff quickstart-a

echo "== commit quickstart-a as an image; the image underneath is unchanged"
strata commit -m "motd changed" quickstart-a quickstart:a >/dev/null
strata history quickstart:a
strata ps -a -s
strata system df
