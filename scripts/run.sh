#!/usr/bin/env bash
# `make run`: starts apim all-in-one (which starts its private PostgreSQL
# cluster and embedded Kafka-protocol broker), Envoy and the sample backend,
# prints how to use them, and stops everything on Ctrl-C or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY=$(scripts/get-envoy.sh)
mkdir -p .data/logs
pids=()
stop() {
  trap - EXIT INT TERM
  echo; echo "stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap stop EXIT INT TERM

wait_http() { # url, seconds, pid, log
  for _ in $(seq 1 $(( $2 * 5 ))); do
    curl -sf -o /dev/null "$1" && return 0
    if ! kill -0 "$3" 2>/dev/null; then echo "failed to start; the end of $4:"; tail -n 40 "$4"; exit 1; fi
    sleep 0.2
  done
  echo "timed out waiting for $1; the end of $4:"; tail -n 40 "$4"; exit 1
}

bin/apim sample-backend -address 127.0.0.1:9080 >.data/logs/backend.log 2>&1 & pids+=($!)
bin/apim run >.data/logs/apim.log 2>&1 & pids+=($!)
wait_http http://127.0.0.1:9401/readyz 120 "${pids[1]}" .data/logs/apim.log
bin/apim envoy-bootstrap -out .data/envoy.yaml
"$ENVOY" -c .data/envoy.yaml --log-level warn >.data/logs/envoy.log 2>&1 & pids+=($!)
wait_http http://127.0.0.1:9901/ready 60 "${pids[2]}" .data/logs/envoy.log

cat <<BANNER

apim is running (all-in-one profile). Logs are in .data/logs/.

  REST APIs and key manager   https://localhost:9443   (self-signed certificate: .data/tls/server.crt)
    publisher  https://localhost:9443/api/am/publisher/v4/openapi.yaml
    devportal  https://localhost:9443/api/am/devportal/v3/openapi.yaml
    admin      https://localhost:9443/api/am/admin/v4/openapi.yaml
  Gateway (Envoy)             http://localhost:8280
  Health and metrics          http://127.0.0.1:9401/readyz  /metrics
  Login                       admin / admin (no admin.password configured; set APIM_ADMIN_PASSWORD)

The whole core flow, to paste into another shell in $(pwd):

BANNER
grep -v '^set -euo pipefail$' scripts/demo.sh | sed 's/^/    /'
echo
echo "Or run it in one go: bash scripts/demo.sh      Press Ctrl-C to stop everything."
wait -n "${pids[@]}" || true
echo "a process exited; see .data/logs/"
exit 1
