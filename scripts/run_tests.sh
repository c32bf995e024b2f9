#!/usr/bin/env bash
# make test: the whole suite against Elasticsearch, and the backend suites against OpenSearch, at once.
#
#   scripts/run_tests.sh PYTHON [BACKEND_SUITE...]
#
# The two sessions are independent (each starts its own cluster under a name it claims, its own
# moto servers on free ports, its own temporary directories), and most of their time is spent
# waiting on clusters and subprocesses, so running them side by side roughly halves the wall
# time on 2 cores. The Elasticsearch session runs on two pytest-xdist workers, a test module
# per worker at a time (--dist loadfile: module-scoped fixtures such as the infra builds stay in
# one process); each worker is a session of its own with its own cluster.
#
# The OpenSearch session's output goes to a file and is printed after the Elasticsearch
# session's, so neither is interleaved; the exit code is non-zero if either failed. Both are
# stopped if this script is interrupted.
set -uo pipefail

python="$1"
shift
log="$(mktemp "${TMPDIR:-/tmp}/opensearch-tests.XXXXXX")"
opensearch_pid=""
stop_opensearch() {
  # SIGINT, as Ctrl-C would: pytest then runs its teardown, which stops the cluster it started.
  if [[ -n "$opensearch_pid" ]] && kill -0 "$opensearch_pid" 2>/dev/null; then
    kill -INT -- "-$opensearch_pid" 2>/dev/null
    wait "$opensearch_pid" 2>/dev/null
  fi
  rm -f "$log"
}
trap stop_opensearch EXIT
trap 'exit 130' INT TERM

# Job control on, for the background session only: without it bash starts a background
# command with SIGINT ignored, which its subprocesses inherit (the tests that Ctrl-C a replay
# would then see it ignore the signal), and the session gets a process group of its own.
# -p no:cacheprovider: the two sessions would otherwise both write .pytest_cache at the end.
set -m
SEARCH_BACKEND=opensearch PROPERTY_EXAMPLES=20 \
  "$python" -m pytest -p no:cacheprovider -m es "$@" >"$log" 2>&1 </dev/null &
opensearch_pid=$!
set +m

"$python" -m pytest -n 2 --dist loadfile
elasticsearch=$?

wait "$opensearch_pid"
opensearch=$?
opensearch_pid=""
echo
echo "== OpenSearch backend suites (SEARCH_BACKEND=opensearch, run beside the session above)"
cat "$log"
if ((elasticsearch != 0 || opensearch != 0)); then
  echo "make test: Elasticsearch session exit $elasticsearch, OpenSearch session exit $opensearch" >&2
  exit 1
fi
