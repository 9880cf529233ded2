# shellcheck shell=bash
# Installs what shardweb's builds and tests need, skipping whatever is already present.
# Sourced by scripts/test and scripts/relay; every step is idempotent.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1
  fi
}

# The wasm32 target, named by rust-toolchain.toml.
setup_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
}

# wasm-bindgen's CLI must match the wasm-bindgen crate in Cargo.lock exactly.
locked_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock
}

setup_wasm_bindgen() {
  local want have
  want=$(locked_version wasm-bindgen)
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" != "$want" ] || ! command -v wasm-bindgen-test-runner >/dev/null; then
    log "installing wasm-bindgen-cli $want (Cargo.lock has it; found '${have:-none}')"
    cargo install wasm-bindgen-cli --version "$want" --locked --force \
      || cargo install wasm-bindgen-cli --version "$want" --force
  fi
}

# Debian's Chromium and its WebDriver, for the browser tests.
setup_chromium() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    log "installing chromium and chromium-driver"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver
  fi
}

# The npm packages of one folder, exactly as its package-lock.json says, unless present.
setup_npm_dir() {
  local dir=$1
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    log "installing npm packages in $dir"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
}

# npm packages the builds and tests use: TypeScript for the package, a js-libp2p peer for
# interop, Playwright for the browser tests, Vite for the packaging test.
setup_npm() {
  setup_npm_dir web
  setup_npm_dir tests/interop
  setup_npm_dir tests/browser
  setup_npm_dir tests/browser/vite-app
}

setup_all() {
  export PATH="$HOME/.cargo/bin:$PATH"
  setup_wasm_target
  setup_wasm_bindgen
  setup_chromium
  setup_npm
}
