#!/usr/bin/env bash
# Build what infra/serverless.yml deploys and package it, with no AWS account and no network.
#
#   scripts/package_infra.sh [--stage STAGE] [--region REGION] [--param NAME=VALUE]...
#                            [--out DIR] [--offline] [--deps-only]
#
#   1. npm ci: the pinned Serverless Framework v3 into infra/node_modules (when the lock changed);
#   2. pip: the Lambda layer infra/layer/python from infra/requirements.txt, as wheels for the
#      Lambda platform (manylinux2014_x86_64, CPython 3.12), when the file changed;
#   3. serverless package: CloudFormation templates and zips in infra/.serverless/ (or --out
#      DIR), with each --param passed on (e.g. --param searchBackend=opensearch).
#
# Steps 1 and 2 need the npm and Python package registries; --deps-only stops after them (run
# it before `serverless deploy`). Step 3 makes one AWS call: Serverless v3 asks CloudFormation
# for the stack's outputs (DescribeStacks) to reuse an unchanged layer upload. Here moto's proxy
# answers it on loopback ("stack does not exist", as before a first deploy), with fake
# credentials. --offline runs step 3 in a new network namespace with only loopback (needs root
# or user namespaces): proof that nothing else is fetched.
#
# Environment: PYTHON, a Python with moto installed (default: .venv/bin/python, else python3).
set -euo pipefail

stage=test
region=us-east-1
offline=0
deps_only=0
out=""
params=()
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
fail() { echo "package_infra.sh: $1" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --stage) [[ -n "${2:-}" ]] || fail "--stage needs a value"; stage="$2"; shift 2 ;;
    --region) [[ -n "${2:-}" ]] || fail "--region needs a value"; region="$2"; shift 2 ;;
    --param) [[ "${2:-}" == ?*=* ]] || fail "--param needs NAME=VALUE"; params+=("--param=$2"); shift 2 ;;
    --out) [[ -n "${2:-}" ]] || fail "--out needs a directory"; out="$2"; shift 2 ;;
    --offline) offline=1; shift ;;
    --deps-only) deps_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) fail "unknown argument: $1 (see --help)" ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
infra="$root/infra"
out="$(realpath -m "${out:-$infra/.serverless}")"  # absolute: serverless runs elsewhere
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
for tool in npm node "$PYTHON"; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed and not on PATH"
done

stamp_of() { cat "$@" | cksum | cut -d' ' -f1; }

# 1. Serverless Framework, exactly as locked.
lock_stamp="$(stamp_of "$infra/package.json" "$infra/package-lock.json")"
if [[ ! -x "$infra/node_modules/.bin/serverless" || "$(cat "$infra/node_modules/.stamp" 2>/dev/null)" != "$lock_stamp" ]]; then
  echo "== npm ci (infra/node_modules)" >&2
  (cd "$infra" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$lock_stamp" >"$infra/node_modules/.stamp"
fi

# 2. The dependencies layer: wheels for the Lambda platform, never this machine's.
layer_stamp="$(stamp_of "$infra/requirements.txt")"
if [[ ! -d "$infra/layer/python" || "$(cat "$infra/layer/.stamp" 2>/dev/null)" != "$layer_stamp" ]]; then
  echo "== pip install --target infra/layer/python (manylinux2014_x86_64, cp312)" >&2
  rm -rf "$infra/layer"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile \
    --target "$infra/layer/python" \
    --platform manylinux2014_x86_64 --implementation cp --python-version 3.12 --abi cp312 \
    --only-binary=:all: \
    -r "$infra/requirements.txt" >&2
  echo "$layer_stamp" >"$infra/layer/.stamp"
fi
((deps_only)) && exit 0

# 2b. The conversion walk's common cases in C (indexer/_walk.c), built for the stable ABI, so
# the one built here loads in the python3.12 runtime; it needs only glibc 2.2.5 symbols
# (tests/test_infra.py checks against manylinux2014's 2.17). Without a C compiler the package
# ships without it and the functions run the same walk in Python.
if [[ ! -f "$root/indexer/_walk.abi3.so" || "$root/indexer/_walk.c" -nt "$root/indexer/_walk.abi3.so" ]]; then
  echo "== cc indexer/_walk.c -> indexer/_walk.abi3.so" >&2
  # The compiler directly, as setup.py's build would call it: the Python here may carry an old
  # setuptools, and the build needs nothing else (the stable ABI's macro is set in the file).
  include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  "${CC:-cc}" -shared -fPIC -O3 -fwrapv -DNDEBUG -Wall -Werror -I"$include" \
    "$root/indexer/_walk.c" -o "$root/indexer/_walk.abi3.so.$$" \
    && mv "$root/indexer/_walk.abi3.so.$$" "$root/indexer/_walk.abi3.so" \
    || echo "package_infra.sh: warning: indexer/_walk.c did not build; packaging without the C walk" >&2
fi

# 3. serverless package, its one AWS call answered by moto's proxy on loopback.
# Built in a scratch copy of the service that holds only what the package reads. Serverless
# always builds into <service>/.serverless, so each run gets its own (packages for several
# configurations can be built at once, each into its --out DIR), and with no node_modules there
# it does not spend seconds walking them for dev dependencies.
service="$(mktemp -d)"
trap 'rm -rf "$service"' EXIT
cp "$infra/serverless.yml" "$infra/rebuild-state-machine.asl" "$service/"
ln -s "$infra/indexer" "$service/indexer"
ln -s "$infra/replay" "$service/replay"
ln -s "$infra/layer" "$service/layer"
ca_cert="$("$PYTHON" -c 'import os, moto.moto_proxy as p; print(os.path.join(os.path.dirname(p.__file__), "ca.crt"))' 2>/dev/null)" \
  || fail "$PYTHON has no moto (pip install 'moto[server]'), needed to answer DescribeStacks"
port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

run_package() {
  set -euo pipefail
  # Globals, not locals: the EXIT trap runs after this function has returned.
  proxy_log="$(mktemp)"
  "$PYTHON" -c 'import sys; from moto.proxy import main; sys.exit(main())' -H 127.0.0.1 -p "$port" >"$proxy_log" 2>&1 &
  proxy_pid=$!
  trap 'kill "$proxy_pid" 2>/dev/null || true; rm -f "$proxy_log"' EXIT
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$proxy_log" >&2; echo "package_infra.sh: moto proxy did not start" >&2; exit 1; }
    sleep 0.1
  done
  # Serverless must not call home: no telemetry, update or notification checks, no dashboard.
  export SLS_TELEMETRY_DISABLED=1 SLS_TRACKING_DISABLED=1 SLS_NOTIFICATIONS_MODE=off
  export SLS_INTERACTIVE_SETUP_DISABLE=1 CI="${CI:-true}"
  # Fake credentials (packaging needs no account) and every AWS call to moto on loopback.
  export AWS_ACCESS_KEY_ID=packaging-needs-no-account AWS_SECRET_ACCESS_KEY=packaging-needs-no-account
  export AWS_REGION="$region" AWS_DEFAULT_REGION="$region"
  unset AWS_PROFILE AWS_SESSION_TOKEN
  export https_proxy="http://127.0.0.1:$port" HTTPS_PROXY="http://127.0.0.1:$port" NODE_EXTRA_CA_CERTS="$ca_cert"
  cd "$service"
  eval "set -- $sls_params"
  "$infra/node_modules/.bin/serverless" package --stage "$stage" --region "$region" "$@"
}
export -f run_package
# Arrays do not cross `bash -c`: the params go as one shell-quoted string.
sls_params=""
((${#params[@]})) && sls_params="$(printf '%q ' "${params[@]}")"
export PYTHON infra service port ca_cert stage region sls_params

echo "== serverless package --stage $stage --region $region ${params[*]} -> $out" >&2
if ((offline)); then
  unshare --net -- bash -c 'ip link set lo up && run_package'
else
  bash -c run_package
fi
test -f "$service/.serverless/cloudformation-template-update-stack.json"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$service/.serverless" "$out"
echo "$out"
