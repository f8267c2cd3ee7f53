# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # port and basic come from the caller; sim and squatter go back
# Helpers shared by .ci/contrib, .ci/contrib-openrc and .ci/contrib-install (sourced).
# They use: $port (espfd's port), $basic (user:password for ESPF's basic auth), $LOG_FILE.

fail() {
  echo "FAILED: $*" >&2
  if [ -f "${LOG_FILE:-/nonexistent}" ]; then tail -n 20 "$LOG_FILE" >&2; fi
  exit 1
}

# need_tool TOOL PACKAGE: as root (CI), a missing tool is a failure, never a silent skip.
need_tool() {
  command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed (apt-get install $2; .ci/run installs it)"
}

# A free loopback port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_sim BINARY DIR: `espfd simulate` in the background; sets $sim (its pid); its
# output goes to DIR/sim.out (the export lines, later the summary) and DIR/sim.err.
start_sim() {
  "$1" simulate --listen 127.0.0.1:0 >"$2/sim.out" 2>"$2/sim.err" &
  sim=$!
  for _ in $(seq 50); do grep -q '^# SIGINT' "$2/sim.out" && break; sleep 0.1; done
  grep -q '^export ' "$2/sim.out" || fail "simulate printed no environment"
}

# stop_sim DIR: SIGTERM to the simulator, then its summary must show the target call and
# the status OK reported to the ESPF API.
stop_sim() {
  kill -TERM "$sim"
  wait "$sim" || fail "simulate exited non-zero"
  sim=
  grep -q 'POST /target' "$1/sim.out" || fail "the simulator's summary shows no target call"
  grep -q 'ESPF status reports: .*OK [1-9]' "$1/sim.out" || fail "the simulator got no status OK"
  tail -n 8 "$1/sim.out"
}

# One HTTP/1.1 request over bash's /dev/tcp; prints the status code.
http() { # method path [body]
  local body=${3:-} auth
  auth=$(printf '%s' "$basic" | base64)
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s %s HTTP/1.1\r\nHost: ci\r\nConnection: close\r\nAuthorization: Basic %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$1" "$2" "$auth" "${#body}" "$body" >&3
  head -n 1 <&3 | cut -d' ' -f2
  exec 3<&- 3>&-
}

# eventually COMMAND...: true once COMMAND succeeds, polling for at most 10 s.
eventually() {
  for _ in $(seq 50); do "$@" && return 0; sleep 0.2; done
  return 1
}

# event_ok N: espfd's log shows i_event N finished OK.
event_ok() { grep -q "i_event=$1 .*OK" "$LOG_FILE"; }

# take_port PORT DIR: a listener on PORT in the background; sets $squatter (its pid).
take_port() {
  python3 -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); print("listening", flush=True); time.sleep(600)' \
    "$1" >"$2/squatter.out" &
  squatter=$!
  for _ in $(seq 50); do grep -q listening "$2/squatter.out" && break; sleep 0.1; done
  grep -q listening "$2/squatter.out" || fail "could not take port $1 for the test"
}
