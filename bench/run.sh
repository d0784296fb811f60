#!/usr/bin/env bash
# bench/run.sh — benchmark chorus against its peers and write docs/BENCHMARKS.md.
#
#   bench/run.sh BUILD_DIR              full run (~10-15 min): chorus, uWebSockets.js, Node ws,
#                                       nginx+nchan, Python websockets; writes docs/BENCHMARKS.md
#   bench/run.sh BUILD_DIR --quick      ~30 s, chorus only, tiny sizes, plus the generator's
#                                       self-test; for CI; prints the table, writes no docs
#   bench/run.sh BUILD_DIR --selftest   only the generator's self-test against
#                                       bench/peers/torture-server.js (hostile server, faults)
#   env BENCH_SERVERS="chorus ws"       restrict the full run to some servers
#   env BENCH_DOC=FILE                  write the report there instead of docs/BENCHMARKS.md
#
# Every server runs on a free loopback port pinned to CPU 0 (taskset -c 0; chorus with
# --threads 1), the generator (BUILD_DIR/chorus-loadgen) pinned to CPU 1. Scenarios per server:
#   echo    100 conns x pipeline 1 and x 16, 32-byte payloads
#   fanout  1,000 and 10,000 subscribers at window 16; window sweep 4..128 at 1,000 subscribers
#   idle    19,000 connections held, on a freshly started server (RSS growth per connection)
# Each run is ~5 s measured after 1 s of warm-up. Every process this script starts is
# stopped by PID on any exit. Raw results and logs go to bench/out/<timestamp>/.
# Everything after a line `<!-- manual -->` in docs/BENCHMARKS.md is kept as it is.
set -uo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 && $1 != -h && $1 != --help ]] || { usage; exit 2; }
BUILD=$1; shift
MODE=full
for a in "$@"; do
  case $a in
    --quick) MODE=quick ;;
    --selftest) MODE=selftest ;;
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
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv     # scenario \t server \t rc \t json
COMMANDS=$OUT/commands.txt
NOTES=$OUT/notes.txt
: >"$RESULTS"; : >"$COMMANDS"; : >"$NOTES"

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

SRV_PID=""; SRV_MPID=""; SRV_PORT=""; SRV_DIR=""
# start_server NAME: sets SRV_PID (the process started), SRV_MPID (the process doing the work,
# whose CPU and RSS are measured: nginx's worker, else SRV_PID), SRV_PORT; returns non-zero
# if it does not come up.
start_server() {
  local name=$1 port dir cmd=() health=/health i
  port=$(free_port) || { note "$name: no free port"; return 1; }
  dir=$(mktemp -d "$OUT/$name.XXXX")
  case $name in
    chorus) cmd=("$CHORUS" serve --listen "127.0.0.1:$port" --test-endpoints --threads 1) ;;
    uws)    cmd=(node "$PEERS/uws-server.js" "$port") ;;
    ws)     cmd=(node "$PEERS/ws-server.js" "$port") ;;
    python) cmd=("$PY" "$PEERS/py_server.py" "$port") ;;
    nchan)
      sed -e "s|@PORT@|$port|g" -e "s|@DIR@|$dir|g" -e "s|@NOFILE@|$NOFILE|g" \
          -e "s|@WORKER_CONNS@|$((NOFILE * 2))|g" -e "s|@NCHAN_MODULE@|$NCHAN_MODULE|g" \
          "$PEERS/nginx-nchan.conf.in" >"$dir/nginx.conf"
      cmd=(nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log") ;;
    torture*) cmd=(node "$PEERS/torture-server.js" "$port" ${TORTURE_ARGS:-}) ;;
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
  [[ -n $SRV_PID ]] || return 0
  stop_pid "$SRV_PID"
  forget_pid "$SRV_PID"
  SRV_PID=""
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
else
  D=5; W=1; ECHO_C=100; FAN_S=(1000 10000); SWEEP=(4 8 32 64 128); IDLE_N=$IDLE_CONNS; IDLE_D=3
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
    printf 'chorus\t%s\n' "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'uncommitted tree')"
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
  "$PY" - "$OUT" "$1" "$2" "$LOAD0" "$NPROC" "$ROOT" "$W" <<'PYEOF'
import json, os, platform, re, sys, time
out, mode, dest, load0, nproc, root, warmup = sys.argv[1:8]
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
           if any(r["server"] == s for r in rows)] if mode != "selftest" else []
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

st = [r for r in rows if r["server"].startswith("torture")]
if st:
    md.append("## Generator self-test")
    md.append("")
    md.append("Against bench/peers/torture-server.js (fragmented replies, interleaved pings, 1..64-byte writes; "
              "then with corruption, drops and duplicates injected):")
    md.append("")
    for r in st:
        j = r["j"]
        if r["scen"] == "stats":
            md.append("- server-side checks: " + ", ".join("%s %s" % (k, v) for k, v in j.items()))
        else:
            keys = [k for k in ("msgs", "deliveries", "alive", "errors", "corrupt", "lost", "out_of_order") if k in j]
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
  selftest)
    selftest
    write_report selftest - >"$OUT/report.md"; cat "$OUT/report.md"
    ((SELFTEST_FAILS == 0)) || { log "self-test: $SELFTEST_FAILS check(s) failed"; exit 1; }
    ;;
  quick)
    [[ -x $CHORUS ]] || { echo "run.sh: $CHORUS not found" >&2; exit 1; }
    selftest
    bench_server chorus
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
    DOC=${BENCH_DOC:-$ROOT/docs/BENCHMARKS.md}
    mkdir -p "$(dirname "$DOC")"
    write_report full "$DOC"
    log "wrote ${DOC#$ROOT/} (raw results in ${OUT#$ROOT/})"
    ((SELFTEST_FAILS == 0)) || { log "self-test: $SELFTEST_FAILS check(s) failed"; exit 1; }
    ;;
esac
exit 0
