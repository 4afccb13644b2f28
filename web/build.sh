#!/usr/bin/env bash
# Rebuilds the web dashboard's assets, which the hub embeds (crates/custos-hub/web/), from the WebAssembly core
# (crates/custos-web) and the page's sources (web/). Run it after changing either; CI runs it into a scratch
# directory and fails if the result differs from what is committed.
#
#   web/build.sh [OUT_DIR]        # default: crates/custos-hub/web
#
# Needs the wasm32-unknown-unknown target (`rustup target add wasm32-unknown-unknown`) and wasm-bindgen-cli at
# exactly the version of the wasm-bindgen crate in Cargo.lock (`cargo install wasm-bindgen-cli --version V`).
# The build is reproducible: paths are remapped, so the same sources give the same bytes on any machine with the
# same toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-crates/custos-hub/web}
mkdir -p "$out"

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
    echo "web/build.sh: needs wasm-bindgen-cli $want (found: ${have:-none}):" >&2
    echo "    cargo install wasm-bindgen-cli --version $want" >&2
    exit 2
fi

# Its own target directory: RUSTFLAGS differ from the workspace's, and must not invalidate its cache.
export CARGO_TARGET_DIR="$root/target/web"
export RUSTFLAGS="--remap-path-prefix=$root=/custos --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
cargo build -p custos-web --locked --target wasm32-unknown-unknown --profile web
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wasm-bindgen --target no-modules --no-typescript --out-dir "$tmp" \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/custos_web.wasm"

cp "$tmp/custos_web.js" "$tmp/custos_web_bg.wasm" "$out/"
cp web/app.js web/style.css web/icon.svg "$out/"

sri() { printf 'sha384-%s' "$(openssl dgst -sha384 -binary "$1" | openssl base64 -A)"; }
sed -e "s|@APP_SRI@|$(sri "$out/app.js")|" \
    -e "s|@GLUE_SRI@|$(sri "$out/custos_web.js")|" \
    -e "s|@WASM_SRI@|$(sri "$out/custos_web_bg.wasm")|" \
    -e "s|@STYLE_SRI@|$(sri "$out/style.css")|" \
    -e "s|@ICON_SRI@|$(sri "$out/icon.svg")|" \
    web/index.html.in > "$out/index.html"

wasm=$(wc -c < "$out/custos_web_bg.wasm")
gz=$(gzip -9 -n -c "$out/custos_web_bg.wasm" | wc -c)
echo "web/build.sh: $out: wasm $wasm bytes ($gz gzipped)"
