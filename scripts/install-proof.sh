#!/usr/bin/env bash
# Proves the install path of the published packages, here and now: packs the
# root package and the linux-x64-gnu platform package (with the binary built
# by `npm install`), installs both tarballs in an empty directory, and runs
# `for await` over a real tun device from there, in a network namespace, with
# no cargo and no C compiler on PATH. Prints "install-proof: ok" on success.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
triple=linux-x64-gnu
[ "$(uname -m)" = x86_64 ] || { echo "install-proof: only for x86_64 hosts (this is $(uname -m))"; exit 2; }
binary="$root/native/tunnel-gso.$triple.node"
[ -f "$binary" ] || { echo "install-proof: $binary is missing: run npm install first"; exit 1; }

work="$(mktemp -d)"
ns="tgso-proof-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The platform package, with its binary, as the release workflow assembles it.
cp -r "$root/npm/$triple" "$work/platform"
cp "$binary" "$work/platform/"
(cd "$work/platform" && npm pack --silent --pack-destination "$work" >/dev/null)
# The root package, without running its build.
(cd "$root" && npm pack --silent --ignore-scripts --pack-destination "$work" >/dev/null)

root_tgz="$(ls "$work"/tunnel-gso-[0-9]*.tgz)"
# What ships: built JavaScript, types, the loader; no sources, tests or binaries.
contents="$(tar -tzf "$root_tgz")"
if grep -E '\.(rs|node)$|__test__/|/ts/|Cargo|/crates/|/target/' <<<"$contents"; then
  echo "install-proof: the root tarball holds files it should not (above)"; exit 1
fi
for f in package/bin/tunnel-gso package/dist/cli.js package/dist/index.js package/dist/index.d.ts package/esm/index.mjs package/native/index.js; do
  grep -qx "$f" <<<"$contents" || { echo "install-proof: $f missing from the tarball"; exit 1; }
done

mkdir "$work/app"
cd "$work/app"
echo '{"name":"app","version":"1.0.0","private":true}' > package.json
npm install --silent --no-audit --no-fund "$root_tgz" "$work"/tunnel-gso-linux-x64-gnu-*.tgz >/dev/null

# A PATH with node and ip only: no cargo, no cc, no gcc.
mkdir "$work/bin"
ln -s "$(command -v node)" "$work/bin/node"
ln -s "$(command -v ip)" "$work/bin/ip"
cat > "$work/app/main.mjs" <<'JS'
import { Tun } from 'tunnel-gso'
import { createRequire } from 'node:module'
import * as dgram from 'node:dgram'
const cjs = createRequire(import.meta.url)('tunnel-gso')
if (cjs.Tun !== Tun) throw new Error('ESM and CommonJS entries differ')
const tun = await Tun.open({ addresses: ['198.18.60.1/24'] })
const sock = dgram.createSocket('udp4')
sock.bind(0, '198.18.60.1', () => sock.send('proof', 9999, '198.18.60.2'))
for await (const packet of tun) {
  if (packet[9] === 17 && packet.subarray(28).toString() === 'proof') break
}
sock.close()
await tun.close()
console.log('install-proof: ok', tun.name)
JS
for tool in cargo rustc cc gcc; do
  if PATH="$work/bin" command -v "$tool" >/dev/null 2>&1; then echo "install-proof: $tool is on PATH"; exit 1; fi
done
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" env -i PATH="$work/bin" HOME="$work" node main.mjs
# The installed command, as the kernel runs it (sh, then node with the CLI's V8 flags).
ip netns exec "$ns" env -i PATH="$work/bin" HOME="$work" "$work/app/node_modules/.bin/tunnel-gso" info | grep -q '^/dev/net/tun  *yes$' \
  || { echo "install-proof: the installed tunnel-gso command did not run"; exit 1; }
