#!/usr/bin/env bash
# bench/run.sh — benchmark chorus against its peers and write docs/BENCHMARKS.md.
#
#   bench/run.sh BUILD_DIR              full run (~25 min): chorus, uWebSockets.js, Node ws,
#                                       nginx+nchan, Python websockets, then chorus's conversation
#                                       sync (native protocol, durable); writes docs/BENCHMARKS.md
#   bench/run.sh BUILD_DIR --quick      ~50 s, chorus only, tiny sizes, plus the generator's
#                                       self-test; for CI; prints the table, writes no docs
#   bench/run.sh BUILD_DIR --conv       only chorus's conversation section at full size (~10 min);
#                                       prints the report, writes no docs
#   bench/run.sh BUILD_DIR --agent      only chorus's agent relay section at full size (~2 min);
#                                       prints the report, writes no docs
#   bench/run.sh BUILD_DIR --report-from=bench/out/<stamp>-full
#                                       write docs/BENCHMARKS.md again from a full run's raw
#                                       results (measures nothing)
#   bench/run.sh BUILD_DIR --selftest   only the generator's self-test against
#                                       bench/peers/torture-server.js (hostile server, faults)
#   env BENCH_SERVERS="chorus ws"       restrict the full run to some servers
#   env BENCH_DOC=FILE                  write the report there instead of docs/BENCHMARKS.md
#   env BENCH_CONV_REPEAT=N             runs per conversation scenario (2; the best one is compared)
#   env BENCH_AGENT_REPEAT=N            runs per agent relay scenario (2; the best one is compared)
#
# Every server runs on a free loopback port pinned to CPU 0 (taskset -c 0; chorus with
# --threads 1), the generator (BUILD_DIR/chorus-loadgen) pinned to CPU 1. Scenarios per server:
#   echo    100 conns x pipeline 1 and x 16, 32-byte payloads
#   fanout  1,000 and 10,000 subscribers at window 16; window sweep 4..128 at 1,000 subscribers
#   idle    19,000 connections held, on a freshly started server (RSS growth per connection)
#   conv    chorus only (no peer speaks its protocol), each on a fresh server with a fresh data
#           dir (mktemp -d, removed after): durable sends at 100 conns (max, then open loop at half
#           the max and at 25,000/s), 10 clients per room, conversation fan-out to 1,000 and 10,000
#           next to raw fanout on the same settings, resume of 10,000 missed messages
#   agent   chorus only, each on a fresh server whose `openai` agent points at the fake upstream
#           inside chorus-loadgen: time to first chunk added by chorus (1,000 sequential prompts,
#           next to the same request sent direct; again with the data dir on tmpfs), and one
#           stream of 100 chunks/s for 10 s watched by 1,000 subscribers
# Each run is ~5 s measured after 1 s of warm-up. Every process this script starts is
# stopped by PID on any exit. Raw results and logs go to bench/out/<timestamp>/.
# Everything after a line `<!-- manual -->` in docs/BENCHMARKS.md is kept as it is.
set -uo pipefail

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 && $1 != -h && $1 != --help ]] || { usage; exit 2; }
BUILD=$1; shift
MODE=full
for a in "$@"; do
  case $a in
    --quick) MODE=quick ;;
    --selftest) MODE=selftest ;;
    --conv) MODE=conv ;;
    --agent) MODE=agent ;;
    --report-from=*) MODE=report; REPORT_FROM=${a#--report-from=} ;;
    *) echo "run.sh: unknown option $a" >&2; usage >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || { echo "run.sh: no build directory '$1'" >&2; exit 2; }
LG=$BUILD/chorus-loadgen
CHORUS=$BUILD/chorus
PEERS=$ROOT/bench/peers
PY=/usr/bin/python3; [[ -x $PY ]] || PY=$(command -v python3)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/out/$STAMP-$MODE
if [[ $MODE == report ]]; then
  OUT=$(cd "$REPORT_FROM" 2>/dev/null && pwd) && [[ -f $OUT/results.tsv ]] ||
    { echo "run.sh: no raw results in '$REPORT_FROM'" >&2; exit 2; }
fi
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv     # scenario \t server \t rc \t json
COMMANDS=$OUT/commands.txt
NOTES=$OUT/notes.txt
[[ $MODE == report ]] || { : >"$RESULTS"; : >"$COMMANDS"; : >"$NOTES"; }

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
note() { log "$*"; printf '%s\n' "$*" >>"$NOTES"; }

[[ -x $LG ]] || { echo "run.sh: $LG not found (build first: cmake --build $BUILD)" >&2; exit 1; }

# ---- process bookkeeping: everything started is stopped by PID on exit ----------------------
PIDS=()
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}
forget_pid() { # drop one PID from PIDS (it has exited)
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p != "$1" ]] && keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}
cleanup() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
  PIDS=()
  [[ -n ${SRV_DATA:-} ]] && rm -rf "$SRV_DATA"
  SRV_DATA=""
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- machine -------------------------------------------------------------------------------
NPROC=$(nproc)
if ((NPROC >= 2)); then
  PIN_SRV=(taskset -c 0); PIN_GEN=(taskset -c 1)
else
  PIN_SRV=(); PIN_GEN=()
  note "only $NPROC CPU: server and generator are not pinned apart"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
IDLE_CONNS=19000
if ((NOFILE < IDLE_CONNS + 200)); then
  IDLE_CONNS=$((NOFILE - 200))
  note "descriptor limit is $NOFILE: idle scenario reduced to $IDLE_CONNS connections"
fi
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $MODE == report ]]; then LOAD0=$(cat "$OUT/load0" 2>/dev/null || echo unknown); else echo "$LOAD0" >"$OUT/load0"; fi
CONV_FS="$(df -T "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR==2 {print $2 " (" $1 ")"}')"; CONV_FS=${CONV_FS:-unknown}

# ---- helpers -------------------------------------------------------------------------------
# Quote words for a copy-pasteable command line (only those that need it).
shq() {
  local w out=()
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$w"); else out+=("'${w//\'/\'\\\'\'}'"); fi
  done
  printf '%s' "${out[*]}"
}

free_port() {
  local p
  for p in $(shuf -i 20000-32000 -n 200); do
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then echo "$p"; return 0; fi
  done
  return 1
}

http_ok() { # PORT PATH: 0 when GET answers 200
  local r
  r=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
    printf 'GET $2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    head -c 12 <&3" 2>/dev/null) || return 1
  [[ $r == "HTTP/1.1 200" ]]
}

SRV_PID=""; SRV_MPID=""; SRV_PORT=""; SRV_DIR=""; SRV_DATA=""
# start_server NAME: sets SRV_PID (the process started), SRV_MPID (the process doing the work,
# whose CPU and RSS are measured: nginx's worker, else SRV_PID), SRV_PORT; returns non-zero
# if it does not come up.
start_server() {
  local name=$1 port dir cmd=() health=/health i
  port=$(free_port) || { note "$name: no free port"; return 1; }
  dir=$(mktemp -d "$OUT/$name.XXXX")
  case $name in
    chorus) cmd=("$CHORUS" serve --listen "127.0.0.1:$port" --test-endpoints --threads 1) ;;
    chorus-conv) # a fresh data dir per run, outside the repo, removed by stop_server; default
      # pings and presence limits (a 10,000-client join storm no longer needs them spaced out)
      SRV_DATA=$(mktemp -d "${TMPDIR:-/tmp}/chorus-bench.XXXXXX")
      cmd=("$CHORUS" serve --listen "127.0.0.1:$port" --test-endpoints --insecure-dev --threads 1
           --data-dir "$SRV_DATA") ;;
    uws)    cmd=(node "$PEERS/uws-server.js" "$port") ;;
    ws)     cmd=(node "$PEERS/ws-server.js" "$port") ;;
    python) cmd=("$PY" "$PEERS/py_server.py" "$port") ;;
    nchan)
      sed -e "s|@PORT@|$port|g" -e "s|@DIR@|$dir|g" -e "s|@NOFILE@|$NOFILE|g" \
          -e "s|@WORKER_CONNS@|$((NOFILE * 2))|g" -e "s|@NCHAN_MODULE@|$NCHAN_MODULE|g" \
          "$PEERS/nginx-nchan.conf.in" >"$dir/nginx.conf"
      cmd=(nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log") ;;
    torture*) cmd=(node "$PEERS/torture-server.js" "$port" ${TORTURE_ARGS:-}) ;;
    convfake*) cmd=("$PY" "$ROOT/bench/conv_fault_server.py" "$port" ${CONVFAKE_ARGS:-}) ;;
    chorus-agent) # like chorus-conv, plus an `openai` agent whose upstream is the fake one inside
      # chorus-loadgen on AGENT_UP_PORT (the key variable is never set: no key is sent);
      # AGENT_DATA_ROOT puts the data dir elsewhere (tmpfs, to take fsync out).
      SRV_DATA=$(mktemp -d "${AGENT_DATA_ROOT:-${TMPDIR:-/tmp}}/chorus-bench.XXXXXX")
      cmd=("$CHORUS" serve --listen "127.0.0.1:$port" --test-endpoints --insecure-dev --threads 1
           --data-dir "$SRV_DATA"
           --agent "bench=openai:bench-model;base-url=http://127.0.0.1:$AGENT_UP_PORT/v1;key-env=CHORUS_BENCH_NO_KEY") ;;
    *) return 1 ;;
  esac
  printf '# %s\n(cd %s && %s) &\n' "$name" "$(shq "$dir")" "$(shq "${PIN_SRV[@]}" "${cmd[@]}")" >>"$COMMANDS"
  (cd "$dir" && exec "${PIN_SRV[@]}" "${cmd[@]}") >"$dir/stdout.log" 2>"$dir/stderr.log" </dev/null &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  SRV_PORT=$port; SRV_DIR=$dir
  for i in $(seq 1 150); do
    if ! kill -0 "$SRV_PID" 2>/dev/null; then
      note "$name exited at start: $(tail -n 3 "$dir/stderr.log" "$dir/error.log" 2>/dev/null | tr '\n' ' ')"
      return 1
    fi
    if http_ok "$port" "$health"; then
      SRV_MPID=$SRV_PID
      if [[ $name == nchan ]]; then
        SRV_MPID=$(pgrep -P "$SRV_PID" | head -n 1)
        [[ -n $SRV_MPID ]] || { note "nchan: no worker process found"; SRV_MPID=$SRV_PID; }
      fi
      return 0
    fi
    sleep 0.1
  done
  note "$name: no 200 from GET $health within 15 s"
  stop_server
  return 1
}

stop_server() {
  if [[ -n $SRV_PID ]]; then
    stop_pid "$SRV_PID"
    forget_pid "$SRV_PID"
    SRV_PID=""
  fi
  if [[ -n $SRV_DATA ]]; then rm -rf "$SRV_DATA"; SRV_DATA=""; fi
  return 0
}

# run_lg SCENARIO SERVER ARGS...: one generator run, recorded in results.tsv
run_lg() {
  local scen=$1 server=$2 json rc
  shift 2
  local cmd=("${PIN_GEN[@]}" "$LG" "$@" --label "$server")
  printf '%s\n' "$(shq "${cmd[@]}")" >>"$COMMANDS"
  # In the background + wait, so that a signal to this script is handled at once
  # (the trap stops the generator by PID like every other process).
  timeout 600 "${cmd[@]}" >"$OUT/last.json" 2>>"$OUT/loadgen.stderr.log" &
  local lgpid=$!
  PIDS+=("$lgpid")
  wait "$lgpid"
  rc=$?
  forget_pid "$lgpid"
  json=$(tail -n 1 "$OUT/last.json")
  [[ $json == \{* ]] || json='{}'
  printf '%s\t%s\t%s\t%s\n' "$scen" "$server" "$rc" "$json" >>"$RESULTS"
  log "$scen $server rc=$rc ${json:0:220}"
  if [[ -n $SRV_PID ]] && ! kill -0 "$SRV_PID" 2>/dev/null; then
    note "$server died during $scen"
    return 2
  fi
  sleep "$SETTLE" # let closes settle between runs
  return "$rc"
}

# ---- the scenarios for one server ----------------------------------------------------------
# Sizes: full vs quick.
SETTLE=1
if [[ $MODE != full ]]; then
  SETTLE=0.2
fi
if [[ $MODE == quick ]]; then
  D=1; W=0.3; ECHO_C=10; FAN_S=(50); SWEEP=(4 64); IDLE_N=200; IDLE_D=1
  CONV_C=10; CONV_W=(4); RESUME_N=1000; RESUME_K=2; CONV_REPEAT=1
  AGENT_N=50; AGENT_WARM=5; AGENT_SUBS=50; AGENT_CHUNKS=100; AGENT_REPEAT=1
else
  D=5; W=1; ECHO_C=100; FAN_S=(1000 10000); SWEEP=(4 8 32 64 128); IDLE_N=$IDLE_CONNS; IDLE_D=3
  CONV_C=100; CONV_W=(16 64); RESUME_N=10000; RESUME_K=5; CONV_REPEAT=${BENCH_CONV_REPEAT:-2}
  AGENT_N=1000; AGENT_WARM=20; AGENT_SUBS=1000; AGENT_CHUNKS=1000; AGENT_REPEAT=${BENCH_AGENT_REPEAT:-2}
fi

bench_server() {
  local s=$1 u n w pid ch
  log "== $s"
  if ! start_server "$s"; then
    printf '%s\t%s\t%s\t%s\n' "start" "$s" 99 '{}' >>"$RESULTS"
    return
  fi
  ensure_up() {
    if ! kill -0 "$SRV_PID" 2>/dev/null; then
      note "restarting $s"
      start_server "$s" || return 1
    fi
    u="ws://127.0.0.1:$SRV_PORT"; pid=$SRV_MPID
  }
  ensure_up || return
  run_lg echo_p1 "$s" echo --url "$u/echo" -c "$ECHO_C" -p 1 -s 32 -d "$D" --warmup "$W" --server-pid "$pid"
  ensure_up || return
  run_lg echo_p16 "$s" echo --url "$u/echo" -c "$ECHO_C" -p 16 -s 32 -d "$D" --warmup "$W" --server-pid "$pid"
  for n in "${FAN_S[@]}"; do
    ensure_up || return
    ch="fan$n-$RANDOM"
    run_lg "fanout_$n" "$s" fanout --sub-url "$u/bench/sub?channel=$ch" --pub-url "$u/bench/pub?channel=$ch" \
      -c "$n" -w 16 -s 32 -d "$D" --warmup "$W" --server-pid "$pid"
  done
  for w in "${SWEEP[@]}"; do
    ensure_up || return
    ch="sweep$w-$RANDOM"
    run_lg "sweep_$w" "$s" fanout --sub-url "$u/bench/sub?channel=$ch" --pub-url "$u/bench/pub?channel=$ch" \
      -c "${FAN_S[0]}" -w "$w" -s 32 -d "$D" --warmup "$W" --server-pid "$pid"
  done
  # Idle memory on a fresh process: freed memory of earlier runs would hide the growth.
  stop_server
  if start_server "$s"; then
    sleep 1
    run_lg idle "$s" idle --url "ws://127.0.0.1:$SRV_PORT/bench/sub?channel=idle-$RANDOM" \
      -c "$IDLE_N" -d "$IDLE_D" --server-pid "$SRV_MPID"
    stop_server
  fi
}

# ---- conversation sync (chorus only) --------------------------------------------------------
# field_max SCENARIO SERVER KEY: the largest value of KEY over the results of SCENARIO (empty when none)
field_max() {
  awk -F'\t' -v s="$1" -v v="$2" '$1 == s && $2 == v { print $4 }' "$RESULTS" |
    "$PY" -c 'import json,sys
vals = []
for line in sys.stdin:
    try: x = json.loads(line).get(sys.argv[1])
    except ValueError: x = None
    if isinstance(x, (int, float)): vals.append(x)
print(max(vals) if vals else "")' "$3"
}

# conv_run SCENARIO ARGS...: one generator run against a freshly started chorus with a fresh data dir.
conv_run() {
  local scen=$1
  shift
  if ! start_server chorus-conv; then
    printf '%s\t%s\t%s\t%s\n' "$scen" chorus 99 '{}' >>"$RESULTS"
    return 1
  fi
  local u="ws://127.0.0.1:$SRV_PORT"
  local args=() a
  for a in "$@"; do args+=("${a//@U@/$u}"); done
  run_lg "$scen" chorus "${args[@]}" --server-pid "$SRV_MPID"
  local rc=$?
  stop_server
  return $rc
}

# Every conversation scenario runs CONV_REPEAT times (interleaved where two are compared): on a
# machine shared with other work, interference only ever slows a run down, so the report sets
# the best run of each scenario against the targets and lists every run.
bench_conv() {
  local url='@U@/ws?token=bench:d{i}&source=bench' max half n r w
  log "== chorus conversation sync (data dirs in ${TMPDIR:-/tmp}: $CONV_FS)"
  note "conversation section: load average at its start $(cut -d' ' -f1-3 /proc/loadavg); data directories on $CONV_FS"
  # Durable acknowledged sends, closed loop: every connection its own conversation.
  for r in $(seq 1 "$CONV_REPEAT"); do
    for w in "${CONV_W[@]}"; do
      conv_run "conv_send_w$w" send --url "$url" -c "$CONV_C" --conversations "$CONV_C" -w "$w" -s 32 -d "$D" --warmup "$W"
    done
  done
  max=0
  for w in "${CONV_W[@]}"; do
    n=$(field_max "conv_send_w$w" chorus msgs_per_s); n=${n%.*}
    [[ -n $n ]] && ((n > max)) && max=$n
  done
  # Open loop at half the best rate (and at half the target), for the p99 ack latency.
  half=$((max / 2))
  for r in $(seq 1 "$CONV_REPEAT"); do
    ((half > 0)) && conv_run conv_send_half send --url "$url" -c "$CONV_C" --conversations "$CONV_C" -w 1000 -s 32 -d "$D" --warmup "$W" --rate "$half"
    [[ $MODE != quick ]] && conv_run conv_send_25k send --url "$url" -c "$CONV_C" --conversations "$CONV_C" -w 1000 -s 32 -d "$D" --warmup "$W" --rate 25000
  done
  # Rooms of 10: every message is broadcast to 10 members.
  [[ $MODE != quick ]] && conv_run conv_send_rooms send --url "$url" -c "$CONV_C" --conversations $((CONV_C / 10)) -w 16 -s 32 -d "$D" --warmup "$W"
  # Fan-out through one conversation, next to raw fanout with the same subscribers and window.
  for n in "${FAN_S[@]}"; do
    for r in $(seq 1 "$CONV_REPEAT"); do
      conv_run "conv_rawfan_$n" fanout --sub-url "@U@/bench/sub?channel=raw$n" --pub-url "@U@/bench/pub?channel=raw$n" \
        -c "$n" -w 16 -s 32 -d "$D" --warmup "$W"
      conv_run "conv_fan_$n" convfan --url "$url" -c "$n" -w 16 -s 32 -d "$D" --warmup "$W"
    done
  done
  # Resume: the sync after a reconnect carries every missed message.
  for r in $(seq 1 "$CONV_REPEAT"); do
    conv_run conv_resume resume --url "$url" -n "$RESUME_N" -w 64 -s 32 --repeat "$RESUME_K"
  done
}

# ---- agent relay (chorus only) --------------------------------------------------------------
# agent_run SCENARIO LABEL ARGS...: one generator run against a fresh chorus whose `openai` agent
# streams from the fake upstream inside chorus-loadgen (@U@ = chorus's ws:// root, @UP@ = the
# upstream's port, a second free port). LABEL is the "server" of the row (not "chorus" for runs
# that are expected to fail: the quick mode counts failed "chorus" rows).
agent_run() {
  local scen=$1 label=$2
  shift 2
  AGENT_UP_PORT=$(free_port) || { note "agent: no free port"; return 1; }
  if ! start_server chorus-agent; then
    printf '%s\t%s\t%s\t%s\n' "$scen" "$label" 99 '{}' >>"$RESULTS"
    return 1
  fi
  local u="ws://127.0.0.1:$SRV_PORT" args=() a
  for a in "$@"; do a=${a//@U@/$u}; args+=("${a//@UP@/$AGENT_UP_PORT}"); done
  run_lg "$scen" "$label" "${args[@]}" --server-pid "$SRV_MPID"
  local rc=$?
  stop_server
  return $rc
}

# Issue 4's targets. T1: what chorus adds to an upstream's time to first chunk (sequential prompts,
# each next to the same request sent direct; then with the data dir on tmpfs, where fsync costs
# nothing, to show the durable commit's share). T2: one stream at 100 chunks/s to many subscribers.
bench_agent() {
  local url='@U@/ws?token=bench:d{i}&source=bench' up='127.0.0.1:@UP@' r
  log "== chorus agent relay (data dirs in ${TMPDIR:-/tmp}: $CONV_FS)"
  note "agent relay section: load average at its start $(cut -d' ' -f1-3 /proc/loadavg)"
  for r in $(seq 1 "$AGENT_REPEAT"); do
    agent_run agent_ttfc chorus agent-ttfc --url "$url" --upstream "$up" -n "$AGENT_N" --warmup-samples "$AGENT_WARM"
    if [[ $MODE != quick && -d /dev/shm && -w /dev/shm ]]; then
      AGENT_DATA_ROOT=/dev/shm agent_run agent_ttfc_tmpfs chorus agent-ttfc --url "$url" --upstream "$up" -n "$AGENT_N" --warmup-samples "$AGENT_WARM"
    fi
    agent_run "agent_fan_$AGENT_SUBS" chorus agent-fan --url "$url" --upstream "$up" -c "$AGENT_SUBS" --chunks "$AGENT_CHUNKS" --interval 10
  done
  if [[ $MODE == quick ]]; then
    # The checks must be able to fail: an upstream that leaves a chunk off the wire (but counts it
    # as written) must be reported, through chorus, as corrupt and undelivered.
    agent_run agent_fan_drop agent-fault agent-fan --url "$url" --upstream "$up" -c 10 --chunks 20 --interval 5 --drop-chunk 7 --settle 0.1
    check "agent-fan: a chunk missing upstream is reported (corrupt, undelivered)" 'rc == 1 and j["corrupt"] > 0 and j["undelivered"] > 0'
    agent_run agent_ttfc_drop agent-fault agent-ttfc --url "$url" --upstream "$up" -n 3 --warmup-samples 0 --drop-chunk 2
    check "agent-ttfc: a chunk missing upstream is reported" 'rc == 1 and j["corrupt"] > 0 and j["undelivered"] > 0'
  fi
}

# ---- the generator's self-test -------------------------------------------------------------
# A hostile server (fragments, interleaved pings, 1..64-byte writes, 16/64-bit lengths) must give
# clean runs, and its own checks of our frames (masked, fresh masks, right pongs) must pass;
# with faults injected, the generator must report exactly what was broken.
SELFTEST_FAILS=0
check() { # DESCRIPTION PYTHON-EXPR over j (json) and rc
  local desc=$1 expr=$2 line json rc
  line=$(tail -n 1 "$RESULTS")
  rc=$(cut -f3 <<<"$line"); json=$(cut -f4- <<<"$line")
  if "$PY" -c "import json,sys; j=json.loads(sys.argv[1]); rc=int(sys.argv[2]); sys.exit(0 if ($expr) else 1)" "$json" "$rc"; then
    log "selftest ok: $desc"
  else
    log "selftest FAILED: $desc (rc=$rc $json)"; SELFTEST_FAILS=$((SELFTEST_FAILS + 1))
  fi
}

selftest() {
  selftest_conv
  if ! command -v node >/dev/null; then note "selftest skipped: node not found"; return 0; fi
  log "== generator self-test"
  TORTURE_ARGS="" start_server torture || { SELFTEST_FAILS=$((SELFTEST_FAILS + 1)); return; }
  local u="ws://127.0.0.1:$SRV_PORT" stats
  run_lg st_echo32 torture echo --url "$u/echo" -c 8 -p 4 -s 32 -d 0.6 --warmup 0.2
  check "echo 32 B through fragments and split writes" 'rc == 0 and j["msgs"] > 0 and j["errors"] == 0'
  run_lg st_echo300 torture echo --url "$u/echo" -c 4 -p 2 -s 300 -d 0.6 --warmup 0.2
  check "echo 300 B (16-bit lengths)" 'rc == 0 and j["msgs"] > 0 and j["errors"] == 0'
  run_lg st_echo70k torture echo --url "$u/echo" -c 2 -p 2 -s 70000 -d 0.6 --warmup 0.2
  check "echo 70,000 B (64-bit lengths)" 'rc == 0 and j["msgs"] > 0 and j["errors"] == 0'
  run_lg st_fanout torture fanout --sub-url "$u/bench/sub?channel=t" --pub-url "$u/bench/pub?channel=t" -c 20 -w 8 -d 0.6 --warmup 0.2
  check "fanout without faults: no loss" 'rc == 0 and j["deliveries"] > 0 and j["losses"] == 0'
  run_lg st_idle torture idle --url "$u/echo" -c 100 -d 0.5 --server-pid "$SRV_MPID"
  check "idle: every connection answers a ping" 'rc == 0 and j["alive"] == 100'
  stats=$(curl -s "http://127.0.0.1:$SRV_PORT/stats" 2>/dev/null || true)
  printf 'stats\ttorture\t0\t%s\n' "${stats:-{\}}" >>"$RESULTS"
  check "server saw only masked frames, fresh masks, exact pongs, good keys" \
    'j.get("client_frames",0) > 0 and j["unmasked"] == 0 and j["mask_repeats"] == 0 and j["rsv_set"] == 0 and j["pong_mismatch"] == 0 and j["pongs_ok"] > 0 and j["bad_handshakes"] == 0 and j["duplicate_keys"] == 0'
  stop_server
  TORTURE_ARGS="--corrupt-every 40 --drop-every 50 --dup-every 77" start_server torture-faults || { SELFTEST_FAILS=$((SELFTEST_FAILS + 1)); return; }
  u="ws://127.0.0.1:$SRV_PORT"
  run_lg st_corrupt torture-faults echo --url "$u/echo" -c 4 -p 4 -s 64 -d 0.6 --warmup 0.2
  check "corrupted echoes are detected" 'rc == 1 and j["corrupt"] > 0'
  run_lg st_loss torture-faults fanout --sub-url "$u/bench/sub?channel=t" --pub-url "$u/bench/pub?channel=t" -c 10 -w 8 -d 0.6 --warmup 0.2
  check "dropped and duplicated deliveries are detected" 'rc == 1 and j["lost"] > 0 and j["out_of_order"] > 0'
  stop_server
}

# The conversation modes against bench/conv_fault_server.py: clean runs must be clean, and
# dropped, duplicated and corrupted broadcasts and a resume sync missing an event must be reported.
selftest_conv() {
  if ! "$PY" -c 'import websockets' 2>/dev/null; then note "conversation self-test skipped: python3 websockets missing"; return 0; fi
  log "== generator self-test, conversation modes"
  local u
  CONVFAKE_ARGS="" start_server convfake || { SELFTEST_FAILS=$((SELFTEST_FAILS + 1)); return; }
  u="ws://127.0.0.1:$SRV_PORT/ws?token=bench:d{i}"
  run_lg st_conv_send convfake send --url "$u" -c 8 --conversations 2 -w 4 -s 64 -d 0.6 --warmup 0.2 --settle 0.1
  check "send: acks and broadcasts, no loss" 'rc == 0 and j["msgs"] > 0 and j["bcasts"] >= j["msgs"] and j["losses"] == 0 and j["corrupt"] == 0'
  run_lg st_conv_rate convfake send --url "$u" -c 8 -w 100 -s 64 -d 0.6 --warmup 0.2 --settle 0.1 --rate 2000
  check "send --rate: the schedule is kept" 'rc == 0 and abs(j["sent"] - 1200) <= 8 and j["losses"] == 0'
  run_lg st_conv_fan convfake convfan --url "$u" -c 10 -w 4 -s 64 -d 0.6 --warmup 0.2 --settle 0.1
  check "convfan: deliveries, no loss" 'rc == 0 and j["deliveries"] > 0 and j["losses"] == 0 and j["corrupt"] == 0'
  run_lg st_conv_resume convfake resume --url "$u" -n 300 -w 16 -s 64 --repeat 2
  check "resume: every missed message, in order" 'rc == 0 and j["received"] == 600 and j["corrupt"] == 0'
  stop_server
  CONVFAKE_ARGS="--drop-every 97 --dup-every 89 --corrupt-every 83 --short-sync" start_server convfake-faults ||
    { SELFTEST_FAILS=$((SELFTEST_FAILS + 1)); return; }
  u="ws://127.0.0.1:$SRV_PORT/ws?token=bench:d{i}"
  run_lg st_conv_send_faults convfake-faults send --url "$u" -c 8 --conversations 2 -w 4 -s 64 -d 0.6 --warmup 0.2 --settle 0.1
  check "send: dropped, duplicated, corrupted broadcasts are detected" 'rc == 1 and j["lost"] > 0 and j["out_of_order"] > 0 and j["corrupt"] > 0'
  run_lg st_conv_fan_faults convfake-faults convfan --url "$u" -c 10 -w 4 -s 64 -d 0.6 --warmup 0.2 --settle 0.1
  check "convfan: dropped, duplicated, corrupted deliveries are detected" 'rc == 1 and j["lost"] > 0 and j["out_of_order"] > 0 and j["corrupt"] > 0'
  run_lg st_conv_resume_faults convfake-faults resume --url "$u" -n 300 -w 16 -s 64 --repeat 2
  check "resume: a sync missing an event is detected" 'rc == 1 and j["corrupt"] > 0'
  stop_server
}

# ---- peers ---------------------------------------------------------------------------------
NCHAN_MODULE=""
install_peers() {
  local SUDO="" need=()
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  dpkg-query -W -f='${Status}' libnginx-mod-nchan 2>/dev/null | grep -q "install ok installed" || need+=(libnginx-mod-nchan)
  command -v nginx >/dev/null || need+=(nginx-light)
  dpkg-query -W -f='${Status}' python3-websockets 2>/dev/null | grep -q "install ok installed" || need+=(python3-websockets)
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
      >"$OUT/apt.log" 2>&1 || note "apt-get install ${need[*]} failed (see $OUT/apt.log)"
  fi
  if command -v npm >/dev/null; then
    if [[ ! -d $PEERS/node_modules/ws || ! -d $PEERS/node_modules/uwebsockets ]]; then
      log "npm ci in bench/peers"
      (cd "$PEERS" && npm ci --no-audit --no-fund --silent) >"$OUT/npm.log" 2>&1 || note "npm ci in bench/peers failed (see $OUT/npm.log)"
    fi
  else
    note "npm not found: uws and ws skipped"
  fi
  NCHAN_MODULE=$(dpkg -L libnginx-mod-nchan 2>/dev/null | grep -m1 'ngx_nchan_module\.so$' || true)
}

peer_available() {
  case $1 in
    chorus) [[ -x $CHORUS ]] || { note "chorus: $CHORUS not found"; return 1; } ;;
    uws) [[ -d $PEERS/node_modules/uwebsockets ]] && command -v node >/dev/null || { note "uws: not installed"; return 1; } ;;
    ws) [[ -d $PEERS/node_modules/ws ]] && command -v node >/dev/null || { note "ws: not installed"; return 1; } ;;
    nchan) command -v nginx >/dev/null && [[ -n $NCHAN_MODULE ]] || { note "nchan: nginx or the nchan module missing"; return 1; } ;;
    python) "$PY" -c 'import websockets' 2>/dev/null || { note "python: websockets not importable"; return 1; } ;;
    *) note "unknown server '$1' (chorus uws ws nchan python)"; return 1 ;;
  esac
}

versions() {
  {
    printf 'chorus\t%s%s\n' "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'uncommitted tree')" \
      "$(cd "$ROOT" && [[ -n $(git status --porcelain -- src CMakeLists.txt 2>/dev/null) ]] && echo ' + uncommitted changes in src/')"
    printf 'uws\tuWebSockets.js via npm uwebsockets %s (source commit %s)\n' \
      "$(node -p "require('$PEERS/node_modules/uwebsockets/package.json').version" 2>/dev/null)" \
      "$(cut -c1-12 "$PEERS/node_modules/uwebsockets/source_commit" 2>/dev/null)"
    printf 'ws\tws %s on Node %s\n' "$(node -p "require('$PEERS/node_modules/ws/package.json').version" 2>/dev/null)" "$(node --version 2>/dev/null)"
    printf 'nchan\tnginx %s + nchan %s\n' "$(nginx -v 2>&1 | sed 's|.*/||')" "$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"
    printf 'python\twebsockets %s on Python %s\n' "$(dpkg-query -W -f='${Version}' python3-websockets 2>/dev/null)" "$("$PY" -c 'import platform; print(platform.python_version())')"
  } >"$OUT/versions.tsv"
}

# ---- report --------------------------------------------------------------------------------
write_report() { # MODE DEST ('-' for stdout)
  "$PY" - "$OUT" "$1" "$2" "$LOAD0" "$NPROC" "$ROOT" "$W" "$CONV_FS" <<'PYEOF'
import json, os, platform, re, sys, time
out, mode, dest, load0, nproc, root, warmup, conv_fs = sys.argv[1:9]
rows = []
for line in open(os.path.join(out, "results.tsv")):
    parts = line.rstrip("\n").split("\t", 3)
    if len(parts) < 4:
        continue
    try:
        j = json.loads(parts[3])
    except ValueError:
        j = {}
    rows.append({"scen": parts[0], "server": parts[1], "rc": int(parts[2]), "j": j})
res = {(r["scen"], r["server"]): r for r in rows}
servers = [s for s in ["chorus", "uws", "ws", "nchan", "python"]
           if any(r["server"] == s and not r["scen"].startswith(("conv_", "agent_")) for r in rows)] if mode != "selftest" else []
names = {"chorus": "chorus", "uws": "uWS", "ws": "ws", "nchan": "nchan", "python": "python websockets"}
versions = {}
vp = os.path.join(out, "versions.tsv")
if os.path.exists(vp):
    for line in open(vp):
        k, _, v = line.rstrip("\n").partition("\t")
        versions[k] = v

def fmt_n(x):
    return "{:,.0f}".format(x)

def us(x):
    # x in microseconds -> a short human figure with its unit
    if x >= 1e6:
        return "%.2f s" % (x / 1e6)
    if x >= 1e4:
        return "%.0f ms" % (x / 1e3)
    if x >= 1e3:
        return "%.1f ms" % (x / 1e3)
    return "%.0f µs" % x

def problem(r):
    j = r["j"]
    if not j:
        return "no result (rc %d)" % r["rc"]
    bits = []
    for k, label in (("lost", "lost"), ("out_of_order", "out of order"), ("undelivered", "undelivered"),
                     ("timeouts", "unanswered"), ("corrupt", "corrupt")):
        if j.get(k):
            bits.append("%s %s" % (fmt_n(j[k]), label))
    other = j.get("errors", 0) - j.get("corrupt", 0) - (1 if j.get("undelivered") or j.get("timeouts") else 0)
    if other > 0:
        bits.append("%s errors" % fmt_n(other))
    if j.get("error") and not bits:
        bits.append(j["error"])
    if j.get("open") is not None and j.get("open", 0) < j.get("conns", j.get("subs", 0)):
        bits.append("%d of %d connected" % (j["open"], j.get("conns", j.get("subs", 0))))
    return "; ".join(bits)

def cell_rate(scen, s, key):
    r = res.get((scen, s))
    if r is None:
        return "n/a"
    j = r["j"]
    if key not in j:
        return "failed" + (": " + problem(r) if problem(r) else "")
    txt = fmt_n(j[key]) + "/s"
    extra = []
    if "server_cpu_pct" in j:
        extra.append("srv %d%%" % round(j["server_cpu_pct"]))
    extra.append("gen %d%%" % round(j.get("gen_cpu_pct", 0)))
    p = problem(r)
    return txt + " (" + ", ".join(extra) + ")" + (" ⚠ " + p if p else "")

def cell_lat(scen, s):
    r = res.get((scen, s))
    if r is None or "p50_us" not in r["j"] or not r["j"].get("msgs"):
        return "n/a"
    j = r["j"]
    return "%s / %s / %s" % (us(j["p50_us"]), us(j["p99_us"]), us(j["p999_us"]))

def cell_idle(s):
    r = res.get(("idle", s))
    if r is None:
        return "n/a"
    j = r["j"]
    if j.get("bytes_per_conn", -1) < 0:
        return "failed" + (": " + problem(r) if problem(r) else "")
    txt = "%s B (%s → %s MiB, %s/%s alive)" % (fmt_n(j["bytes_per_conn"]), fmt_n(j["rss_before_kb"] / 1024),
                                               fmt_n(j["rss_after_kb"] / 1024), fmt_n(j["alive"]), fmt_n(j["conns"]))
    p = problem(r)
    return txt + (" ⚠ " + p if p else "")

def table(header, lines):
    o = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    o += ["| " + " | ".join(l) + " |" for l in lines]
    return "\n".join(o)

fan = sorted({int(r["scen"].split("_")[1]) for r in rows if r["scen"].startswith("fanout_")})
sweep = sorted({int(r["scen"].split("_")[1]) for r in rows if r["scen"].startswith("sweep_")})
j0 = next((r["j"] for r in rows if r["scen"] == "echo_p1"), {})
echo_c = j0.get("conns", "?")
dur = j0.get("duration_s", "?")

md = []
if mode == "full":
    md.append("# chorus benchmarks")
    md.append("")
    md.append("<!-- Generated by bench/run.sh: edit only below the manual marker line at the end. -->")
    md.append("")
else:
    md.append("# chorus-loadgen %s run" % mode)
    md.append("")
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
mem = "?"
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
except OSError:
    pass
md.append("- Date: %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
md.append("- Machine: %s CPU (%s), %s RAM, Linux %s" % (nproc, cpu, mem, platform.release()))
md.append("- Load average when the run started: %s%s" % (load0, "  (**other work was running: figures are noisy**)" if float(load0.split()[0]) > 0.5 else ""))
if servers:
    md.append("- Pinning: each server on CPU 0 (`taskset -c 0`; chorus `--threads 1`), the generator on CPU 1. "
              "Every server does its work on one thread (nginx + nchan: one worker process, whose CPU and RSS are the ones measured).")
    md.append("- Generator: `chorus-loadgen` (bench/loadgen.c): C, libuv, one thread, a masking client that checks every "
              "byte it gets back. Measured window %s s after %s s of warm-up; payloads are %s-byte text messages." % (dur, warmup, j0.get("size", 32)))
if versions:
    md.append("- Versions: " + "; ".join("%s: %s" % (names.get(k, k), v) for k, v in versions.items() if k in servers or k == "chorus"))
md.append("")

if servers:
    md.append("## Results")
    md.append("")
    md.append("Throughput per scenario. In brackets: CPU of the server (`srv`, its one core) and of the generator "
              "(`gen`) over the measured window; a generator near 100% means the generator, not the server, was the limit. "
              "⚠ marks runs with errors, losses or failed connections.")
    md.append("")
    hdr = ["scenario"] + [names[s] for s in servers]
    lines = []
    lines.append(["echo, %s conns × pipeline 1 (msgs/s)" % echo_c] + [cell_rate("echo_p1", s, "msgs_per_s") for s in servers])
    lines.append(["echo, %s conns × pipeline 16 (msgs/s)" % echo_c] + [cell_rate("echo_p16", s, "msgs_per_s") for s in servers])
    for n in fan:
        lines.append(["fanout, %s subscribers, window 16 (deliveries/s)" % fmt_n(n)] + [cell_rate("fanout_%d" % n, s, "deliveries_per_s") for s in servers])
    lines.append(["idle, memory per connection (server RSS growth)"] + [cell_idle(s) for s in servers])
    md.append(table(hdr, lines))
    md.append("")
    md.append("### Latency, p50 / p99 / p999")
    md.append("")
    md.append("Echo: round trip of one message. Fanout: from the publisher's send to each subscriber's receipt "
              "(every delivery is a sample).")
    md.append("")
    lines = [["echo, pipeline 1"] + [cell_lat("echo_p1", s) for s in servers],
             ["echo, pipeline 16"] + [cell_lat("echo_p16", s) for s in servers]]
    for n in fan:
        lines.append(["fanout, %s subscribers" % fmt_n(n)] + [cell_lat("fanout_%d" % n, s) for s in servers])
    md.append(table(["scenario"] + [names[s] for s in servers], lines))
    md.append("")
    if sweep and fan:
        md.append("### Fanout window sweep, %s subscribers" % fmt_n(fan[0]))
        md.append("")
        md.append("Deliveries/s and p99 delivery latency as the publisher's window (messages in flight) grows.")
        md.append("")
        ws_all = sorted(set(sweep) | {16})
        lines = []
        for w in ws_all:
            scen = "fanout_%d" % fan[0] if w == 16 else "sweep_%d" % w
            row = ["window %d" % w]
            for s in servers:
                r = res.get((scen, s))
                if r is None or "deliveries_per_s" not in r["j"]:
                    row.append("n/a" if r is None else "failed")
                else:
                    j = r["j"]
                    p = problem(r)
                    row.append("%s/s, p99 %s%s" % (fmt_n(j["deliveries_per_s"]), us(j["p99_us"]), " ⚠ " + p if p else ""))
            lines.append(row)
        md.append(table(["window"] + [names[s] for s in servers], lines))
        md.append("")
    bad = [r for r in rows if r["server"] in servers and (r["rc"] != 0)]
    md.append("### Errors and losses")
    md.append("")
    if not bad:
        md.append("None: every run completed with 0 errors and 0 lost or out-of-order deliveries.")
    else:
        for r in bad:
            md.append("- %s / %s: exit %d%s" % (names.get(r["server"], r["server"]), r["scen"], r["rc"],
                                               ": " + problem(r) if problem(r) else ""))
    md.append("")

conv_rows = [r for r in rows if r["scen"].startswith("conv_")]
if conv_rows:
    def cj(scen, key, higher=True):
        # The best of the runs of scen by key (interference only slows a run down); a failed run
        # (no key) only when no run has the key.
        runs = [r for r in conv_rows if r["scen"] == scen]
        good = [r for r in runs if isinstance(r["j"].get(key), (int, float))]
        if good:
            r = (max if higher else min)(good, key=lambda x: x["j"][key])
        elif runs:
            r = runs[-1]
        else:
            return {}, None
        return r["j"], r
    def nruns(scen):
        return sum(1 for r in conv_rows if r["scen"] == scen)
    def cpu(j):
        bits = []
        if "server_cpu_pct" in j:
            bits.append("srv %d%%" % round(j["server_cpu_pct"]))
        if "gen_cpu_pct" in j:
            bits.append("gen %d%%" % round(j["gen_cpu_pct"]))
        return ", ".join(bits)
    def verdict(ok, r):
        if r is None or not r["j"]:
            return "not run"
        if r["rc"] != 0:
            p = problem(r)
            return ("❌ missed" if not ok else "⚠ met, but") + " (the run reported: " + (p or "exit %d" % r["rc"]) + ")"
        return "✅ met" if ok else "❌ missed"
    md.append("## Conversation sync (chorus only)")
    md.append("")
    md.append("chorus's own protocol on `/ws` (docs/PROTOCOL.md), which no peer speaks: `chorus-loadgen send | convfan | resume` "
              "(bench/lg_conv.c), each run against a freshly started chorus (`--threads 1 --insecure-dev`, pinned like above, "
              "default settings otherwise) with a fresh data directory. An ack means the message is durable: SQLite in WAL mode with "
              "`synchronous=FULL`, one fsync per group-committed batch; the data directories were on %s. "
              "Every connection is its own device (`?token=bench:d<i>`) of one user. Message content is %s bytes "
              "(the broadcast frame around it is ~330 bytes); every ack, broadcast and synced event is checked "
              "(seq gap-free per conversation, content byte for byte)." % (conv_fs, next((r["j"].get("size") for r in conv_rows if r["j"].get("size")), 32)))
    md.append("")
    md.append("### Against the targets")
    md.append("")
    md.append("Each scenario ran %d time(s), each on a fresh server; the best run is set against the target (every run "
              "is listed below). Half the max rate is half the best closed-loop figure." % max([nruns(x) for x in {r["scen"] for r in conv_rows}] or [1]))
    md.append("")
    lines = []
    sends = [r for r in conv_rows if r["scen"].startswith("conv_send_w") and r["j"].get("msgs_per_s") is not None]
    best = max(sends, key=lambda r: r["j"]["msgs_per_s"]) if sends else None
    if best:
        j = best["j"]
        lines.append(["Durable acknowledged sends (%d connections, one conversation each, closed loop)" % j["conns"], "≥ 50,000 msg/s",
                      "%s msg/s (best window: %d per connection; p99 ack %s; %s)" % (fmt_n(j["msgs_per_s"]), j["window"], us(j["p99_us"]), cpu(j)),
                      verdict(j["msgs_per_s"] >= 50000, best)])
    else:
        lines.append(["Durable acknowledged sends", "≥ 50,000 msg/s", "n/a", "not run"])
    for scen, what in (("conv_send_half", "p99 ack latency at half the measured max"), ("conv_send_25k", "p99 ack latency at 25,000 msg/s (half the target)")):
        j, row = cj(scen, "p99_us", higher=False)
        if row is None:
            continue
        if "p99_us" in j and j.get("msgs"):
            m = "p99 %s (p50 %s, p999 %s) at %s msg/s offered, %s acked/s%s; %s" % (
                us(j["p99_us"]), us(j["p50_us"]), us(j["p999_us"]), fmt_n(j["rate"]), fmt_n(j["msgs_per_s"]),
                (", %s sent > 1 ms late" % fmt_n(j["late"])) if j.get("late") else "", cpu(j))
            lines.append([what + " (open loop)", "< 10 ms", m, verdict(j["p99_us"] < 10000, row)])
        else:
            lines.append([what, "< 10 ms", "failed: " + (j.get("error") or "no result"), "❌ failed"])
    fans = sorted({int(r["scen"].split("_")[2]) for r in conv_rows if r["scen"].startswith("conv_fan_")})
    for n in fans:
        j, row = cj("conv_fan_%d" % n, "deliveries_per_s")
        rj, rrow = cj("conv_rawfan_%d" % n, "deliveries_per_s")
        if "deliveries_per_s" in j and rj.get("deliveries_per_s"):
            ratio = j["deliveries_per_s"] / rj["deliveries_per_s"]
            m = "%s deliveries/s vs raw fanout %s/s (each on a fresh server, runs interleaved) = **%.0f%%** (p99 delivery %s vs %s; %s)" % (
                fmt_n(j["deliveries_per_s"]), fmt_n(rj["deliveries_per_s"]), 100 * ratio, us(j["p99_us"]), us(rj["p99_us"]), cpu(j))
            lines.append(["Fan-out through one conversation, %s subscribers, window 16" % fmt_n(n), "≥ 80% of raw fanout", m,
                          verdict(ratio >= 0.8, row if rrow["rc"] == 0 else rrow)])
        else:
            lines.append(["Fan-out through one conversation, %s subscribers" % fmt_n(n), "≥ 80% of raw fanout",
                          "failed: " + (j.get("error") or rj.get("error") or "no result"), "❌ failed"])
    j, row = cj("conv_resume", "resume_ms", higher=False)
    if row is not None:
        if "resume_ms" in j:
            m = "median %.1f ms over %d resumes (min %.1f, max %.1f, first %.1f); sync of %s bytes" % (
                j["resume_ms"], j["resumes"], j["resume_min_ms"], j["resume_max_ms"], j["resume_first_ms"], fmt_n(j["sync_bytes"]))
            lines.append(["Resume of %s missed messages (join with since+epoch → last one received)" % fmt_n(j["n"]), "< 200 ms", m,
                          verdict(j["resume_ms"] < 200, row)])
        else:
            lines.append(["Resume of missed messages", "< 200 ms", "failed: " + (j.get("error") or "no result"), "❌ failed"])
    md.append(table(["issue target", "goal", "measured", "verdict"], lines))
    md.append("")
    md.append("### Every conversation run")
    md.append("")
    lines = []
    for r in conv_rows:
        j = r["j"]
        p = problem(r)
        if j.get("mode") == "send":
            what = "send: %d conns, %d conversations, window %d%s" % (j["conns"], j["conversations"], j["window"],
                                                                    ", open loop %s/s" % fmt_n(j["rate"]) if j.get("rate") else "")
            thr = "%s acks/s, %s broadcasts/s" % (fmt_n(j["msgs_per_s"]), fmt_n(j["bcasts_per_s"]))
            lat = "ack %s / %s / %s" % (us(j["p50_us"]), us(j["p99_us"]), us(j["p999_us"]))
        elif j.get("mode") == "convfan":
            what = "convfan: %s subscribers, window %d (joined in %.1f s, settled %.1f s, %s presence frames)" % (
                fmt_n(j["subs"]), j["window"], j["join_s"], j["settle_s"], fmt_n(j["presence_frames"]))
            thr = "%s deliveries/s (%s msgs/s)" % (fmt_n(j["deliveries_per_s"]), fmt_n(j["msgs_per_s"]))
            lat = "delivery %s / %s / %s; ack p99 %s" % (us(j["p50_us"]), us(j["p99_us"]), us(j["p999_us"]), us(j["ack_p99_us"]))
        elif j.get("mode") == "fanout":
            what = "raw fanout: %s subscribers, window %d" % (fmt_n(j["subs"]), j["window"])
            thr = "%s deliveries/s" % fmt_n(j["deliveries_per_s"])
            lat = "delivery %s / %s / %s" % (us(j["p50_us"]), us(j["p99_us"]), us(j["p999_us"]))
        elif j.get("mode") == "resume":
            what = "resume: %s missed, %d times" % (fmt_n(j["n"]), j["repeat"])
            thr = "fill (1 conn, window %d): %s acks/s" % (j["window"], fmt_n(j.get("fill_msgs_per_s", 0)))
            lat = "resume %s ms (samples %s)" % (j.get("resume_ms", "n/a"), ", ".join("%.1f" % x for x in j.get("samples_ms", [])))
        else:
            what, thr, lat = r["scen"], "failed", p or "no result"
        lines.append([r["scen"], what, thr, lat, cpu(j), ("⚠ " + p) if p else ("ok" if r["rc"] == 0 else "exit %d" % r["rc"])])
    md.append(table(["run", "what", "throughput", "latency p50 / p99 / p999", "CPU", "checks"], lines))
    md.append("")

agent_rows = [r for r in rows if r["scen"].startswith("agent_") and r["server"] == "chorus"]
if agent_rows:
    def best(scen, key, higher=True):
        runs = [r for r in agent_rows if r["scen"] == scen]
        good = [r for r in runs if isinstance(r["j"].get(key), (int, float))]
        if good:
            return (max if higher else min)(good, key=lambda x: x["j"][key])
        return runs[-1] if runs else None
    def acpu(j):
        bits = []
        if "server_cpu_pct" in j:
            bits.append("srv %d%%" % round(j["server_cpu_pct"]))
        if "gen_cpu_pct" in j:
            bits.append("gen %d%%" % round(j["gen_cpu_pct"]))
        return ", ".join(bits)
    def averdict(ok, r):
        if r is None or not r["j"]:
            return "not run"
        if r["rc"] != 0:
            p = problem(r)
            return ("❌ missed" if not ok else "⚠ met, but") + " (the run reported: " + (p or "exit %d" % r["rc"]) + ")"
        return "✅ met" if ok else "❌ missed"
    def q3(j, k):
        return "%s / %s / %s" % (us(j[k + "_p50_us"]), us(j[k + "_p99_us"]), us(j[k + "_p999_us"])) if k + "_p50_us" in j else "n/a"
    md.append("## Agent relay (chorus only)")
    md.append("")
    md.append("`chorus-loadgen agent-ttfc | agent-fan` (bench/lg_agent.c) against a freshly started chorus (`--threads 1 --insecure-dev`, "
              "pinned like above, fresh data directory on %s) whose agent is `bench=openai:bench-model;base-url=http://127.0.0.1:U/v1`: "
              "chorus's real `openai` back end (libcurl on the hub thread, SSE parsed, one chunk event per upstream delta) talking to "
              "a fake OpenAI-compatible upstream that runs inside the generator (chunked `text/event-stream`, OpenAI's chunk shape, "
              "`[DONE]`), so both ends share one monotonic clock. Every chunk that comes back is checked byte for byte against what "
              "the upstream wrote under its index, and so are the stored reply and the stream's end." % conv_fs)
    md.append("")
    md.append("T1 times, per prompt: the client sends it (t0); the upstream has the whole request (t1); the upstream writes chunk 1 (t2); "
              "the client has chunk 1's stream event (t3). **Added by chorus = (t1 − t0) + (t3 − t2)**, i.e. the client's time to first "
              "chunk minus the upstream's own. The request leg includes the prompt's durable append (chorus commits the prompt, with an "
              "fsync, before it asks the agent), the request build (history read from the store), and libcurl's new TCP connection "
              "(chorus closes idle upstream connections). The **direct** path sends the same bytes from the generator's own HTTP "
              "client on a fresh connection: the loopback cost chorus cannot avoid. Prompts go one at a time, chorus and direct "
              "alternating; quantiles are exact over the samples.")
    md.append("")
    lines = []
    r = best("agent_ttfc", "added_p99_us", higher=False)
    if r is not None:
        j = r["j"]
        if "added_p99_us" in j:
            m = ("p99 **%s** (p50 %s, p999 %s) over %s prompts; request leg p50/p99 %s / %s (of which before the upstream connection "
                 "%s / %s; the client's ack %s / %s), chunk leg %s / %s; direct path p99 %s (p50 %s); %s") % (
                us(j["added_p99_us"]), us(j["added_p50_us"]), us(j["added_p999_us"]), fmt_n(j["samples"]),
                us(j["req_leg_p50_us"]), us(j["req_leg_p99_us"]), us(j["pre_connect_p50_us"]) if "pre_connect_p50_us" in j else "—", us(j["pre_connect_p99_us"]) if "pre_connect_p99_us" in j else "— (connection kept)",
                us(j["ack_p50_us"]), us(j["ack_p99_us"]), us(j["chunk_leg_p50_us"]), us(j["chunk_leg_p99_us"]),
                us(j["direct_added_p99_us"]), us(j["direct_added_p50_us"]), acpu(j))
            lines.append(["T1: time to first chunk added by chorus, loopback (durable prompt, data dir on %s)" % conv_fs.split(" ")[0],
                          "p99 ≤ 1 ms", m, averdict(j["added_p99_us"] <= 1000, r)])
        else:
            lines.append(["T1: time to first chunk added by chorus", "p99 ≤ 1 ms", "failed: " + (j.get("error") or "no result"), "❌ failed"])
    r = best("agent_ttfc_tmpfs", "added_p99_us", higher=False)
    if r is not None and "added_p99_us" in r["j"]:
        j = r["j"]
        m = ("p99 **%s** (p50 %s, p999 %s); request leg %s / %s, chunk leg %s / %s; direct p99 %s; %s") % (
            us(j["added_p99_us"]), us(j["added_p50_us"]), us(j["added_p999_us"]), us(j["req_leg_p50_us"]), us(j["req_leg_p99_us"]),
            us(j["chunk_leg_p50_us"]), us(j["chunk_leg_p99_us"]), us(j["direct_added_p99_us"]), acpu(j))
        lines.append(["T1, the same with the data dir on tmpfs (fsync costs nothing: chorus's own work)", "(p99 ≤ 1 ms)", m,
                      averdict(j["added_p99_us"] <= 1000, r)])
    for scen in sorted({x["scen"] for x in agent_rows if x["scen"].startswith("agent_fan_")}):
        r = best(scen, "recv_chunks_per_s_min")
        j = r["j"] if r else {}
        if "deliveries" in j:
            exact = (j["deliveries"] == j["expected_deliveries"] and j["complete_subs"] == j["subs"] and j["losses"] == 0
                     and j["corrupt"] == 0 and j["replies_ok"] == j["subs"])
            pace = j["emit_chunks_per_s"] > 0 and j["recv_chunks_per_s_min"] >= 0.98 * j["emit_chunks_per_s"]
            m = ("%s of %s chunk deliveries (%s chunks × %s subscribers), %s lost, %s out of order, %s corrupt; stored reply right "
                 "at %s/%s, end at %s; upstream wrote %.1f chunks/s, the slowest subscriber received %.1f/s; delivery latency from "
                 "the upstream's write p50/p99/p999 %s / %s / %s, until every subscriber had a chunk p99 %s; %s") % (
                fmt_n(j["deliveries"]), fmt_n(j["expected_deliveries"]), fmt_n(j["chunks"]), fmt_n(j["open"]), fmt_n(j["lost"]),
                fmt_n(j["out_of_order"]), fmt_n(j["corrupt"]), fmt_n(j["replies_ok"]), fmt_n(j["subs"]), fmt_n(j["ends"]),
                j["emit_chunks_per_s"], j["recv_chunks_per_s_min"], us(j["p50_us"]), us(j["p99_us"]), us(j["p999_us"]),
                us(j["all_p99_us"]), acpu(j))
            lines.append(["T2: one stream at %g chunks/s watched by %s subscribers: every chunk to every subscriber, in order" % (
                round(1000.0 / j["interval_ms"]) if j.get("interval_ms") else 0, fmt_n(j["subs"])), "no loss, full pace", m,
                averdict(exact and pace, r)])
        else:
            lines.append(["T2: one stream to many subscribers", "no loss, full pace", "failed: " + (j.get("error") or "no result"), "❌ failed"])
    md.append(table(["issue target", "goal", "measured", "verdict"], lines))
    md.append("")
    md.append("### Every agent relay run")
    md.append("")
    lines = []
    for r in agent_rows:
        j = r["j"]
        p = problem(r)
        if j.get("mode") == "agent-ttfc":
            what = "%s prompts (+%s warm-up), upstream: first chunk after %g ms, %d chunks × %g ms" % (
                fmt_n(j.get("samples", 0)), j.get("warmup_samples", 0), j["ttfc_ms"], j["chunks"], j["interval_ms"])
            res = "added %s; req leg %s; chunk leg %s; direct %s; excess over direct p99 %s" % (
                q3(j, "added"), q3(j, "req_leg"), q3(j, "chunk_leg"), q3(j, "direct_added"),
                us(j["excess_p99_us"]) if "excess_p99_us" in j else "n/a")
        elif j.get("mode") == "agent-fan":
            what = "%s subscribers (joined in %.1f s, settled %.1f s, %s presence frames), %s chunks × %g ms" % (
                fmt_n(j["subs"]), j["join_s"], j["settle_s"], fmt_n(j["presence_frames"]), fmt_n(j["chunks"]), j["interval_ms"])
            res = "%s/%s deliveries, %.1f chunks/s written, slowest subscriber %.1f/s; latency %s / %s / %s" % (
                fmt_n(j["deliveries"]), fmt_n(j["expected_deliveries"]), j["emit_chunks_per_s"], j["recv_chunks_per_s_min"],
                us(j["p50_us"]), us(j["p99_us"]), us(j["p999_us"]))
        else:
            what, res = r["scen"], p or "no result"
        lines.append([r["scen"], what, res, acpu(j), ("⚠ " + p) if p else ("ok" if r["rc"] == 0 else "exit %d" % r["rc"])])
    md.append(table(["run", "what", "result (p50 / p99 / p999)", "CPU", "checks"], lines))
    md.append("")

st = [r for r in rows if r["server"].startswith("torture") or r["server"].startswith("convfake") or r["server"] == "agent-fault"]
if st:
    md.append("## Generator self-test")
    md.append("")
    md.append("Against bench/peers/torture-server.js (fragmented replies, interleaved pings, 1..64-byte writes; "
              "then with corruption, drops and duplicates injected), and, for the conversation modes, against "
              "bench/conv_fault_server.py (a fake of the native protocol; clean, then dropping, duplicating and "
              "corrupting broadcasts and leaving an event out of resume syncs), and, for the agent modes, chorus relaying the "
              "generator's fake upstream told to leave one chunk off the wire (`--drop-chunk`), which must be reported:")
    md.append("")
    for r in st:
        j = r["j"]
        if r["scen"] == "stats":
            md.append("- server-side checks: " + ", ".join("%s %s" % (k, v) for k, v in j.items()))
        else:
            keys = [k for k in ("msgs", "deliveries", "received", "alive", "errors", "corrupt", "lost", "out_of_order", "undelivered") if k in j]
            md.append("- %s: exit %d, %s" % (r["scen"], r["rc"], ", ".join("%s %s" % (k, j[k]) for k in keys)))
    md.append("")

notes = open(os.path.join(out, "notes.txt")).read().strip()
if notes:
    md.append("## Notes from this run")
    md.append("")
    for line in notes.splitlines():
        md.append("- " + line)
    md.append("")

md.append("## How to reproduce")
md.append("")
md.append("`make bench` (= `bench/run.sh build`). The exact commands of this run, in order "
          "(servers start in a private temporary directory; `&` = in the background):")
md.append("")
md.append("```sh")
cmds = open(os.path.join(out, "commands.txt")).read().rstrip()
md.append(cmds.replace(root + "/", ""))
md.append("```")
md.append("")
md.append("<details><summary>Raw results (one JSON line per run)</summary>")
md.append("")
md.append("```")
for r in rows:
    md.append("%s %s rc=%d %s" % (r["scen"], r["server"], r["rc"], json.dumps(r["j"], separators=(",", ":"))))
md.append("```")
md.append("")
md.append("</details>")
md.append("")
text = "\n".join(md)

if dest == "-":
    sys.stdout.write(text)
    sys.exit(0)
manual = "<!-- manual -->\n\n## Notes (hand-written)\n\nAnything below the marker line survives `make bench`.\n"
if os.path.exists(dest):
    old = open(dest).read()
    m = re.search(r"^<!-- manual -->[^\n]*\n?", old, re.M)
    if m:
        manual = old[m.start():]
with open(dest + ".tmp", "w") as f:
    f.write(text + "\n" + manual)
os.replace(dest + ".tmp", dest)
PYEOF
}

# ---- main ----------------------------------------------------------------------------------
log "mode $MODE, output in ${OUT#$ROOT/}, load average $LOAD0, fd limit $NOFILE"
case $MODE in
  conv)
    [[ -x $CHORUS ]] || { echo "run.sh: $CHORUS not found" >&2; exit 1; }
    bench_conv
    versions
    write_report conv - >"$OUT/report.md"; cat "$OUT/report.md"
    ;;
  agent)
    [[ -x $CHORUS ]] || { echo "run.sh: $CHORUS not found" >&2; exit 1; }
    bench_agent
    versions
    write_report agent - >"$OUT/report.md"; cat "$OUT/report.md"
    ;;
  selftest)
    selftest
    write_report selftest - >"$OUT/report.md"; cat "$OUT/report.md"
    ((SELFTEST_FAILS == 0)) || { log "self-test: $SELFTEST_FAILS check(s) failed"; exit 1; }
    ;;
  quick)
    [[ -x $CHORUS ]] || { echo "run.sh: $CHORUS not found" >&2; exit 1; }
    selftest
    bench_server chorus
    bench_conv
    bench_agent
    versions
    write_report quick - >"$OUT/report.md"; cat "$OUT/report.md"
    fails=$(awk -F'\t' '$2 == "chorus" && $3 != 0' "$RESULTS" | wc -l)
    ((SELFTEST_FAILS == 0 && fails == 0)) || { log "quick: $SELFTEST_FAILS self-test failure(s), $fails failed chorus run(s)"; exit 1; }
    ;;
  full)
    install_peers
    versions
    selftest
    for s in ${BENCH_SERVERS:-chorus uws ws nchan python}; do
      peer_available "$s" || { printf 'start\t%s\t98\t{}\n' "$s" >>"$RESULTS"; continue; }
      bench_server "$s"
    done
    if [[ " ${BENCH_SERVERS:-chorus} " == *" chorus "* ]] && peer_available chorus; then bench_conv; bench_agent; fi
    DOC=${BENCH_DOC:-$ROOT/docs/BENCHMARKS.md}
    mkdir -p "$(dirname "$DOC")"
    write_report full "$DOC" || { log "the report could not be written (raw results in ${OUT#$ROOT/})"; exit 1; }
    log "wrote ${DOC#$ROOT/} (raw results in ${OUT#$ROOT/})"
    ((SELFTEST_FAILS == 0)) || { log "self-test: $SELFTEST_FAILS check(s) failed"; exit 1; }
    ;;
  report)
    DOC=${BENCH_DOC:-$ROOT/docs/BENCHMARKS.md}
    write_report full "$DOC" || { echo "run.sh: the report could not be written" >&2; exit 1; }
    echo "wrote ${DOC#$ROOT/} from ${OUT#$ROOT/}"
    ;;
esac
exit 0
