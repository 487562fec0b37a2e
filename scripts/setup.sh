#!/usr/bin/env bash
# Set up everything Sluice needs on a fresh Debian 12 machine, skipping what is already
# there: system packages (GStreamer 1.22 + plugins and its Python bindings, ffmpeg for
# validation, PostgreSQL for the scale-out tests), the watch page's player (hls.js, from
# npm), the Python and Node test clients, Garage (S3-compatible store for the S3 tests), and
# the build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  pkg-config
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  ffmpeg python3-venv postgresql
  # GStreamer from the system Python, for the hlssink2 live-push test (tests/e2e/tools/)
  python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
)
# npm installs hls.js, which the build embeds in the binary for the watch page.
if ! command -v npm >/dev/null 2>&1; then
  APT_PACKAGES+=(nodejs npm)
fi
if [ -n "${SLUICE_SETUP_TEST_CLIENTS:-}" ]; then
  # Headless browser for the hls.js playback tests (driven by Playwright, tests/e2e), and
  # nginx for the caching-edge tests (the configuration `sluice edge nginx` writes,
  # which the watch page is tested through too).
  APT_PACKAGES+=(chromium nginx)
  # Redis for the shared (distributed) rate-limit tests (scripts/redis.sh).
  APT_PACKAGES+=(redis-server)
fi
if [ -n "${SLUICE_SETUP_TEST_CLIENTS:-}" ]; then
  # rclone lists the tier tests' S3 stores (usage must equal what is really stored).
  APT_PACKAGES+=(rclone)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The watch page's player, from gateway/web/package-lock.json (gateway/build.rs embeds it).
# Reinstalled whenever the lock file changed since the last install (a stamp copy of it).
if ! cmp -s gateway/web/package-lock.json gateway/web/node_modules/.sluice-lock; then
  echo "==> installing the watch page's player (hls.js)"
  (cd gateway/web && npm ci --silent --no-audit --no-fund && cp package-lock.json node_modules/.sluice-lock)
fi

if [ "${SLUICE_SETUP_TEST_CLIENTS:-0}" = "1" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    python3 -m venv .venv
  fi
  # Reinstalled whenever the requirements changed since the last install (a stamp copy).
  if ! cmp -s tests/e2e/requirements.txt .venv/.sluice-requirements \
    || ! .venv/bin/python -c "import tusclient, pytest, pytest_timeout, requests, playwright, hcl2" 2>/dev/null; then
    echo "==> installing Python test clients"
    .venv/bin/pip install -q -r tests/e2e/requirements.txt
    cp tests/e2e/requirements.txt .venv/.sluice-requirements
  fi
  # checkov (tests/e2e/test_terraform.py) in its own venv: its pinned dependencies would
  # fight the test clients'. Reinstalled whenever its requirements changed (a stamp copy).
  if [ ! -x .venv-checkov/bin/python ]; then
    echo "==> creating .venv-checkov"
    python3 -m venv .venv-checkov
  fi
  if ! cmp -s tests/e2e/requirements-checkov.txt .venv-checkov/.sluice-requirements \
    || [ ! -x .venv-checkov/bin/checkov ]; then
    echo "==> installing checkov"
    .venv-checkov/bin/pip install -q -r tests/e2e/requirements-checkov.txt
    cp tests/e2e/requirements-checkov.txt .venv-checkov/.sluice-requirements
  fi
  # terraform (fmt and templatefile rendering, offline) for the terraform/ checks, from
  # HashiCorp's apt repository when missing.
  if ! command -v terraform >/dev/null 2>&1; then
    echo "==> installing terraform"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends gnupg curl
    curl -fsSL https://apt.releases.hashicorp.com/gpg \
      | $SUDO gpg --dearmor --yes -o /usr/share/keyrings/hashicorp-archive-keyring.gpg
    echo "deb [signed-by=/usr/share/keyrings/hashicorp-archive-keyring.gpg] https://apt.releases.hashicorp.com $(. /etc/os-release && echo "$VERSION_CODENAME") main" \
      | $SUDO tee /etc/apt/sources.list.d/hashicorp.list >/dev/null
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends terraform=1.11.4-1
  fi
  # Garage, the S3-compatible store the S3 tests run against (a cargo build, once).
  scripts/garage.sh install
  # Reinstalled whenever the lock file changed since the last install (a stamp copy of it).
  if ! cmp -s tests/e2e/js/package-lock.json tests/e2e/js/node_modules/.sluice-lock; then
    echo "==> installing the Node test clients (tus-js-client, Uppy)"
    (cd tests/e2e/js && npm ci --silent --no-audit --no-fund && cp package-lock.json node_modules/.sluice-lock)
  fi
fi

echo "==> building sluice"
if [ -n "${SLUICE_SETUP_TEST_CLIENTS:-}" ]; then
  # Everything the test run needs, with the same feature unification as `cargo test
  # --workspace` (dev-dependencies included), so the test step reuses these artifacts
  # instead of compiling the dependency graph a second time.
  cargo build --locked --workspace --all-targets
else
  # What users run is what must be fast: an optimised build (the playback path in a debug
  # build serves a fraction of the requests).
  cargo build --locked --release --bin sluice
fi
