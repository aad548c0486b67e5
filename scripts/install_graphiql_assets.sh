#!/usr/bin/env bash
# Install GraphiQL's JavaScript and CSS locally so `GET /graphql` works offline, and the
# studio's one third-party file (graphql-ws's browser build, for its progress subscription).
#
# The asset list (package, version, file, SRI hash) is read from the graphiql.html
# template of the installed strawberry-graphql package, so the local copies are
# exactly the files that template loads from unpkg. Each package is fetched with
# `npm pack` (tarball only, no dependency install, no scripts) and the needed files
# are copied to graphql_api/static/vendor/<package>@<version>/<path>, which mirrors
# the unpkg URL layout (the directory is git-ignored).
#
# Never fails the caller: when npm is missing or the registry is unreachable it
# prints a warning (GraphiQL will then load from the CDN) and exits 0. A second
# run is a quick no-op when everything is already installed; pass --force to
# fetch again.
#
# graphql-ws is pinned below (and in graphql_api/studio); it has no CDN fallback: without it
# the studio polls for progress instead of subscribing.
#
# Environment overrides: PYTHON (interpreter with strawberry installed),
# GRAPHIQL_VENDOR_DIR (destination), NPM (npm executable), NPM_TIMEOUT (seconds).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="${GRAPHIQL_VENDOR_DIR:-$ROOT/graphql_api/static/vendor}"
STAMP="$VENDOR/.installed"
NPM="${NPM:-npm}"
NPM_TIMEOUT="${NPM_TIMEOUT:-180}"

FORCE=0
case "${1:-}" in
  --force) FORCE=1 ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

log() { echo "install_graphiql_assets: $*"; }
warn() { echo "install_graphiql_assets: WARNING: $*" >&2; }
cdn_warning() { warn "$* -- GraphiQL will load its JavaScript/CSS from the CDN (unpkg.com) instead."; }

# Python interpreter that can import strawberry (the project's virtualenv first).
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for candidate in "$ROOT/.venv/bin/python" python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("strawberry") is None)' >/dev/null 2>&1; then
      PY="$candidate"
      break
    fi
  done
fi

# Assets as "<package>@<version> <path> <integrity>" lines, read from strawberry's template.
read -r -d '' LIST_ASSETS_PY <<'EOF'
import importlib.util
import pathlib
import re

# Locate the package without importing it (importing strawberry is slow).
spec = importlib.util.find_spec("strawberry")
html = (pathlib.Path(spec.origin).parent / "static" / "graphiql.html").read_text("utf-8")

tag_re = re.compile(r"<(?:script|link)\b[^>]*>", re.S)
url_re = re.compile(r'\b(?:src|href)="https://unpkg\.com/((?:@[^/"]+/)?[^/@"]+@[^/"]+)/([^"]+)"')
sri_re = re.compile(r'\bintegrity="([^"]+)"')
for tag in tag_re.findall(html):
    url = url_re.search(tag)
    if url:
        sri = sri_re.search(tag)
        print(url.group(1), url.group(2), sri.group(1) if sri else "-")
EOF

# Used only when no Python with strawberry is available (strawberry 0.341's graphiql.html).
FALLBACK_ASSETS="react@18.2.0 umd/react.production.min.js sha384-tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8
react-dom@18.2.0 umd/react-dom.production.min.js sha384-bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh
js-cookie@3.0.5 dist/js.cookie.min.js sha384-/vxhYfM1LENRhdpZ8dwEsQn/X4VhpbEZSiU4m/FwR+PVpzar4fkEOw8FP9Y+OfQN
graphiql@3.8.3 graphiql.min.css sha384-Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM
@graphiql/plugin-explorer@1.0.2 dist/style.css sha384-5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi
graphiql@3.8.3 graphiql.min.js sha384-HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie
@graphiql/plugin-explorer@1.0.2 dist/index.umd.js sha384-2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9"

# The studio's asset, in the same "<package>@<version> <path> <integrity>" form (graphql_api/studio pins it too).
STUDIO_ASSETS="graphql-ws@6.4.2 umd/graphql-ws.min.js sha384-mxvR4Mzbsb6QVx/9xI2gtQikQA6m8zMDBFnu3l//4/ROsWt7y2sUGWd+/tYQqDm7"

if [[ -n "$PY" ]]; then
  if ! ASSETS="$("$PY" -c "$LIST_ASSETS_PY")"; then
    cdn_warning "could not read strawberry's graphiql.html with $PY"
    exit 0
  fi
  [[ -n "$ASSETS" ]] || log "strawberry's graphiql.html loads nothing from unpkg.com; installing the studio's asset only."
else
  warn "no Python with strawberry-graphql found; using the built-in asset list (strawberry 0.341)."
  ASSETS="$FALLBACK_ASSETS"
fi
ASSETS="$(printf '%s\n%s' "$ASSETS" "$STUDIO_ASSETS" | sed '/^$/d')"

# Quick no-op: same asset list as the last successful run and every file present.
if [[ $FORCE -eq 0 && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$ASSETS" ]]; then
  missing=0
  while read -r spec path _; do
    [[ -f "$VENDOR/$spec/$path" ]] || { missing=1; break; }
  done <<<"$ASSETS"
  if [[ $missing -eq 0 ]]; then
    log "GraphiQL assets already installed in $VENDOR"
    exit 0
  fi
fi

if ! command -v "$NPM" >/dev/null 2>&1; then
  cdn_warning "npm not found, GraphiQL assets not installed"
  exit 0
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/graphiql-assets.XXXXXX")" || { cdn_warning "cannot create a temporary directory"; exit 0; }
trap 'rm -rf "$TMP"' EXIT

run_npm() {
  if command -v timeout >/dev/null 2>&1; then
    timeout "$NPM_TIMEOUT" "$NPM" "$@"
  else
    "$NPM" "$@"
  fi
}

# sha384 SRI string of a file ("sha384-<base64>"), empty when no tool is available.
sri_of() {
  if [[ -n "$PY" ]]; then
    "$PY" -c 'import base64, hashlib, sys; print("sha384-" + base64.b64encode(hashlib.sha384(open(sys.argv[1], "rb").read()).digest()).decode())' "$1"
  elif command -v openssl >/dev/null 2>&1; then
    echo "sha384-$(openssl dgst -sha384 -binary "$1" | openssl base64 -A)"
  fi
}

failed=0
installed=0
declare -A fetched=()
while read -r spec path integrity; do
  [[ -n "$spec" ]] || continue
  pkgdir="$TMP/$(echo "$spec" | tr '/@' '__')"
  if [[ -z "${fetched[$spec]:-}" ]]; then
    fetched[$spec]=1
    mkdir -p "$pkgdir"
    log "fetching $spec from the npm registry"
    if ! (cd "$pkgdir" && run_npm pack "$spec" --ignore-scripts --no-audit --no-fund --prefer-offline \
            --fetch-retries=1 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000 \
            --loglevel=error >npm.log 2>&1) \
       || ! tgz="$(ls "$pkgdir"/*.tgz 2>/dev/null | head -n 1)" || [[ -z "$tgz" ]] \
       || ! tar -xzf "$tgz" -C "$pkgdir"; then
      warn "could not fetch $spec: $(tail -n 3 "$pkgdir/npm.log" 2>/dev/null | tr '\n' ' ')"
      fetched[$spec]=failed
    fi
  fi
  if [[ "${fetched[$spec]}" == failed ]]; then
    failed=1
    continue
  fi
  src="$pkgdir/package/$path"
  dest="$VENDOR/$spec/$path"
  if [[ ! -f "$src" ]]; then
    warn "$spec has no file $path"
    failed=1
    continue
  fi
  if [[ "$integrity" != "-" ]]; then
    actual="$(sri_of "$src")"
    if [[ -z "$actual" ]]; then
      warn "cannot compute sha384 (no python or openssl); $spec/$path not verified"
    elif [[ "$actual" != "$integrity" ]]; then
      warn "$spec/$path does not match its pinned integrity hash (expected $integrity, got $actual);" \
           "browsers will reject the local copy"
    fi
  fi
  mkdir -p "$(dirname "$dest")" && cp "$src" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest" || { warn "cannot write $dest"; failed=1; continue; }
  installed=$((installed + 1))
done <<<"$ASSETS"

if [[ $failed -ne 0 ]]; then
  rm -f "$STAMP"
  cdn_warning "some GraphiQL assets could not be installed ($installed copied; missing ones load from unpkg.com)"
  exit 0
fi

printf '%s\n' "$ASSETS" >"$STAMP.tmp.$$" && mv -f "$STAMP.tmp.$$" "$STAMP"
log "installed $installed GraphiQL asset files into $VENDOR"
exit 0
