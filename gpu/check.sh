#!/usr/bin/env bash
# Device check of the CUDA build of `workload` with `tracer`, on a GPU machine that has
# the NVIDIA driver and CUDA 13 libraries, Python 3 and no Rust (see README, "GPU build").
#
#   bash target/gpu-dist/check.sh            # next to the binaries that `cargo xtask build-gpu` made
#   BIN=/path/to/dist bash gpu/check.sh      # binaries elsewhere
#
# Steps, each under its own `timeout`, about 5 minutes in all (8 at most):
#   0. find the CUDA 13 libraries the binary was linked against (ldd), print the machine
#   1. tracer doctor --json: NVML sees the GPU, the driver and the memory
#   2. synthetic checkpoints made here: NLLB at the full (600M) shapes, Aya at the full
#      aya-23-8B shapes (16 GB at bf16) when this machine writes them fast enough, else
#      smaller (--bytes); both bf16
#   3. tracer run -- workload serve on cuda:0 in bf16: load seconds and GPU bytes per
#      model, one translation with each, GPU memory samples of the process rising during
#      each load in the trace (JSON lines) and in the Perfetto export
#   4. --gpu-memory-limit below what Aya needs (and --device auto): Aya FAILED with the
#      GPU numbers, NLLB READY, /health 200, a translation still served
# Results: markdown on standard output and in $OUT/gpu.md (OUT defaults to ./gpu-check-out),
# with the traces and logs beside it. Exit status 0 when every step passed.
set -u -o pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -z "${BIN:-}" ]]; then
    if [[ -x "$SCRIPT_DIR/workload" ]]; then BIN=$SCRIPT_DIR
    elif [[ -x "$SCRIPT_DIR/../target/gpu-dist/workload" ]]; then BIN=$(cd "$SCRIPT_DIR/../target/gpu-dist" && pwd)
    else echo "check.sh: no workload binary next to this script nor in target/gpu-dist: set BIN=FOLDER" >&2; exit 2; fi
fi
OUT=${OUT:-$PWD/gpu-check-out}
WORK=${WORK:-${TMPDIR:-/tmp}/gpu-check}
PORT=${PORT:-18431}
# Aya at the full shapes when the NLLB generation predicts it is written in this long.
AYA_FULL_MAX_S=${AYA_FULL_MAX_S:-170}
DEADLINE_S=${DEADLINE_S:-470}
# For a dry run of the plumbing on a machine without a GPU: DEVICE=cpu NLLB_PRESET=tiny AYA_PRESET=tiny
DEVICE=${DEVICE:-cuda:0}
NLLB_PRESET=${NLLB_PRESET:-full}
AYA_PRESET=${AYA_PRESET:-}
mkdir -p "$OUT" "$WORK"
WORKLOAD="$BIN/workload"
TRACER="$BIN/tracer"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
START=$(date +%s)
PY=$(command -v python3 || command -v python || true)
[[ -n "$PY" ]] || { echo "check.sh: python3 is needed (it is on the GPU machine by assumption)" >&2; exit 2; }

log() { echo "[check $(($(date +%s) - START))s] $*" >&2; }
# record STEP STATUS DETAIL: one result line (STATUS: PASS, FAIL, SKIP, INFO)
record() { "$PY" - "$1" "$2" "$3" >>"$RESULTS" <<'EOF'
import json, sys
print(json.dumps({"step": sys.argv[1], "status": sys.argv[2], "detail": sys.argv[3]}))
EOF
log "$1: $2: $3"; }
left() { echo $((DEADLINE_S - ($(date +%s) - START))); }

# --- helper for HTTP, polling and trace parsing (python3, standard library only) ---
HELPER="$WORK/helper.py"
cat >"$HELPER" <<'EOF'
import json, os, sys, time, urllib.request, urllib.error

def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except Exception:
            return e.code, body.decode(errors="replace")
    except Exception as e:
        return None, str(e)

def post(url, body, timeout=120):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except Exception:
            return e.code, body.decode(errors="replace")
    except Exception as e:
        return None, str(e)

def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

def watch(base, out_path, timeout, want, pid):
    """Polls /models every 0.2 s until every model is in a final state (READY/FAILED),
    the service is gone or the time is up. Per model, in wall-clock ns: the last poll
    that saw it UNLOADED, the first that saw it LOADING and the first that saw it
    READY/FAILED: its load window. Prints the last /models."""
    deadline = time.time() + timeout
    times, changes, models, last = {}, [], None, {}
    started = time.time_ns()
    while time.time() < deadline:
        code, answer = get(base + "/models", timeout=2)
        now = time.time_ns()
        if code == 200 and isinstance(answer, list):
            models = answer
            for m in models:
                t = times.setdefault(m["name"], {})
                if m["state"] == "UNLOADED":
                    t["unloaded"] = now
                elif m["state"] == "LOADING":
                    t.setdefault("loading", now)
                else:
                    t.setdefault("done", now)
                if last.get(m["name"]) != m["state"]:
                    changes.append({"t_ns": now, "model": m["name"], "state": m["state"]})
                    last[m["name"]] = m["state"]
            if len(models) == want and all(m["state"] in ("READY", "FAILED") for m in models):
                break
        elif pid and not alive(pid):
            break
        time.sleep(0.2)
    json.dump({"started": started, "changes": changes, "times": times, "models": models}, open(out_path, "w"), indent=1)
    print(json.dumps(models))

def windows(watch_path):
    """Load window per model, in wall-clock ns: [start, end] where start is the first
    poll that saw it LOADING, else the last that saw it UNLOADED; end the first that saw
    it READY or FAILED (None if never)."""
    w = json.load(open(watch_path))
    res = {}
    for name, t in w.get("times", {}).items():
        start = t.get("loading", t.get("unloaded", w.get("started")))
        if start is not None:
            res[name] = [start, t.get("done")]
    return res

def trace_check(trace, perfetto, watch_path, report):
    """GPU memory of the process during each load: from the trace's sample events and
    from the Perfetto counters."""
    wins = windows(watch_path)
    models = {m["name"]: m for m in json.load(open(watch_path))["models"]}
    samples, t0, n_lines = [], None, 0
    for line in open(trace):
        try:
            ev = json.loads(line)
        except Exception:
            continue
        n_lines += 1
        t0 = ev["ts_ns"] if t0 is None else min(t0, ev["ts_ns"])
        if ev.get("kind") == "sample":
            for g in ev.get("gpus", []):
                if g.get("index") == 0:
                    samples.append((ev["ts_ns"], g.get("process_bytes"), g["used_bytes"]))
    out = {"trace_lines": n_lines, "gpu_samples": len(samples), "models": {}}
    have_proc = any(p is not None and p > 0 for _, p, _ in samples)
    col = 1 if have_proc else 2
    out["series"] = "process_bytes" if have_proc else "used_bytes (NVML gave no per-process figure for this pid)"
    def at_or_before(t):
        vals = [s[col] for s in samples if s[0] <= t and s[col] is not None]
        return vals[-1] if vals else 0
    def at_or_after(t):
        vals = [s[col] for s in samples if s[0] >= t and s[col] is not None]
        return vals[0] if vals else None
    ok = bool(samples)
    for name, (start, end) in wins.items():
        weights = (models.get(name) or {}).get("bytes") or 0
        if end is None:
            out["models"][name] = {"ok": False, "why": "no READY seen"}
            ok = False
            continue
        before, after = at_or_before(start - 300_000_000), at_or_after(end + 300_000_000)
        inside = [s[col] for s in samples if start - 300_000_000 <= s[0] <= end + 300_000_000 and s[col] is not None]
        rises = sum(1 for a, b in zip(inside, inside[1:]) if b > a)
        delta = (after or 0) - before
        good = after is not None and delta >= 0.5 * weights and rises >= 1
        out["models"][name] = {"weights": weights, "before": before, "after": after, "delta": delta,
                               "samples_in_window": len(inside), "rising_steps": rises, "ok": good}
        ok = ok and good
    # Perfetto: the same counter, ts in microseconds since the first event of the trace.
    pf = {"ok": False}
    try:
        p = json.load(open(perfetto))
        name = "GPU 0 process memory" if have_proc else "GPU 0 used"
        pts = sorted((e["ts"], e["args"]["bytes"]) for e in p["traceEvents"] if e.get("ph") == "C" and e.get("name") == name)
        pf = {"counter": name, "points": len(pts), "models": {}}
        good_all = bool(pts)
        for mname, (start, end) in wins.items():
            if end is None:
                continue
            s_us, e_us = (start - t0) / 1000 - 300_000, (end - t0) / 1000 + 300_000
            before = [v for ts, v in pts if ts <= s_us]
            after = [v for ts, v in pts if ts >= e_us]
            b, a = (before[-1] if before else 0), (after[0] if after else None)
            weights = (models.get(mname) or {}).get("bytes") or 0
            good = a is not None and a - b >= 0.5 * weights
            pf["models"][mname] = {"before": b, "after": a, "delta": (a or 0) - b, "ok": good}
            good_all = good_all and good
        pf["ok"] = good_all
    except Exception as e:
        pf["error"] = str(e)
    out["perfetto"] = pf
    out["ok"] = ok and pf.get("ok", False)
    json.dump(out, open(report, "w"), indent=1)
    print(json.dumps(out))

def gib(b):
    return f"{b / (1 << 30):.2f} GiB" if b is not None else "?"

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "watch":
        watch(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]) if len(sys.argv) > 6 else 0)
    elif cmd == "load-line":
        # load-line MODELS NAME: "STATUS|detail" for one model of a /models answer
        models = json.loads(sys.argv[2]) or []
        m = next((x for x in models if isinstance(x, dict) and x.get("name") == sys.argv[3]), None)
        if m is None:
            print("FAIL|no /models answer for " + sys.argv[3])
        else:
            detail = (f'{m["name"]} {m["state"]}: load {m.get("load_seconds") or 0:.1f} s, weights {gib(m.get("bytes"))} '
                      f'at {m.get("dtype")} on {m.get("device")}' + (f', reason: {m["reason"]}' if m.get("reason") else ""))
            print(("PASS|" if m["state"] == "READY" else "FAIL|") + detail)
    elif cmd == "translate-line":
        r = json.loads(sys.argv[2])
        print(("PASS|" if r["code"] == 200 else "FAIL|") + f'HTTP {r["code"]} in {r["wall_s"]} s: ' + json.dumps(r["body"])[:300])
    elif cmd == "limit":
        # limit MODELS: a GPU limit halfway between what the two models need (weights + 10%)
        b = sorted(int((x.get("bytes") or 0) * 1.1) for x in json.loads(sys.argv[2]) or [] if isinstance(x, dict))
        if len(b) == 2 and b[0] < b[1]:
            print((b[0] + b[1]) // 2)
    elif cmd == "smaller":
        print(min((x for x in json.loads(sys.argv[2]) if isinstance(x, dict)), key=lambda x: x.get("bytes") or 0)["name"])
    elif cmd == "over-verdict":
        # over-verdict MODELS HEALTH TRANSLATE
        s = {x["name"]: x for x in json.loads(sys.argv[2]) or [] if isinstance(x, dict)}
        health, tr = json.loads(sys.argv[3]), json.loads(sys.argv[4])
        if len(s) != 2:
            print("FAIL|no /models answer")
        else:
            small, big = sorted(s.values(), key=lambda x: x.get("bytes") or 0)
            reason = big.get("reason", "")
            ok = (big["state"] == "FAILED" and "GPU cuda:0" in reason and "--gpu-memory-limit" in reason
                  and small["state"] == "READY" and health["code"] == 200 and tr["code"] == 200)
            print(("PASS|" if ok else "FAIL|") + f'{big["name"]} {big["state"]}: {reason or "no reason"}; {small["name"]} {small["state"]}; '
                  f'/health HTTP {health["code"]} {json.dumps(health["body"])}; /translate {small["name"]} HTTP {tr["code"]}')
    elif cmd == "trace-line":
        d = json.loads(sys.argv[2])
        parts = [f'{d["gpu_samples"]} GPU samples in {d["trace_lines"]} trace lines, series {d["series"]}']
        for k, v in d["models"].items():
            parts.append(f'{k}: {gib(v.get("before"))} -> {gib(v.get("after"))} over its load '
                         f'({v.get("rising_steps")} rising samples of {v.get("samples_in_window")})' if "before" in v else f'{k}: {v.get("why")}')
        p = d["perfetto"]
        parts.append(f'Perfetto counter {p.get("counter")!r} ({p.get("points", 0)} points): ' +
                     ", ".join(f'{k}: {gib(v["before"])} -> {gib(v["after"])}' for k, v in p.get("models", {}).items()) +
                     (f' ({p["error"]})' if "error" in p else ""))
        print(("PASS|" if d["ok"] else "FAIL|") + "; ".join(parts))
    elif cmd == "get":
        code, body = get(sys.argv[2])
        print(json.dumps({"code": code, "body": body}))
    elif cmd == "translate":
        t = time.time()
        code, body = post(sys.argv[2] + "/translate", {"text": "Hello, how are you today?", "source": "eng_Latn",
                                                       "target": "fra_Latn", "model": sys.argv[3]})
        print(json.dumps({"code": code, "body": body, "wall_s": round(time.time() - t, 3)}))
    elif cmd == "trace":
        trace_check(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif cmd == "descendant":
        # descendant PID NAME: the first process named NAME below PID (any depth)
        procs = {}
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    stat = open(f"/proc/{p}/stat").read()
                    comm = stat[stat.index("(") + 1:stat.rindex(")")]
                    procs[int(p)] = (int(stat[stat.rindex(")") + 2:].split()[1]), comm)
                except Exception:
                    pass
        todo = [int(sys.argv[2])]
        while todo:
            parent = todo.pop(0)
            for pid, (ppid, comm) in sorted(procs.items()):
                if ppid == parent:
                    if comm == sys.argv[3]:
                        print(pid)
                        sys.exit(0)
                    todo.append(pid)
EOF
h() { "$PY" "$HELPER" "$@"; }

# --- 0. the machine and the CUDA libraries ---
{
    echo "date: $(date -u +%FT%TZ)"; uname -a
    ldd --version 2>&1 | head -1
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap --format=csv 2>&1
    nvidia-smi 2>&1 | head -4
    cat "$BIN/BUILD-INFO.txt" 2>/dev/null
} >"$OUT/machine.txt" 2>&1
missing_libs() { ldd "$WORKLOAD" 2>&1 | awk '/not found/ {print $1}'; }
if [[ -n "$(missing_libs)" ]]; then
    dirs=()
    for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib \
             /usr/lib/x86_64-linux-gnu /usr/lib64 /opt/conda/lib; do [[ -d $d ]] && dirs+=("$d"); done
    while read -r site; do
        for d in "$site"/nvidia/cu13/lib "$site"/nvidia/*/lib; do [[ -d $d ]] && dirs+=("$d"); done
    done < <("$PY" -c 'import site,sys; print("\n".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null)
    # Prefer one folder that holds every missing library (one CUDA install, not a mix).
    for d in "${dirs[@]}"; do
        all=1; for lib in $(missing_libs); do [[ -e $d/$lib ]] || all=0; done
        if [[ $all == 1 ]]; then export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; break; fi
    done
    for lib in $(missing_libs); do
        found=""
        for d in "${dirs[@]}"; do [[ -e $d/$lib ]] && { found=$d; break; }; done
        if [[ -z $found ]]; then
            found=$(timeout 60 find / -xdev -name "$lib" -not -path '/proc/*' 2>/dev/null | head -1)
            found=${found%/*}
        fi
        [[ -n $found && ":${LD_LIBRARY_PATH:-}:" != *":$found:"* ]] && export LD_LIBRARY_PATH="$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" >>"$OUT/machine.txt"
ldd "$WORKLOAD" >>"$OUT/machine.txt" 2>&1
if [[ -n "$(missing_libs)" ]]; then
    record libraries FAIL "the CUDA build needs $(missing_libs | tr '\n' ' ')and this machine has none of them on the loader path nor on disk: install the CUDA 13 runtime libraries (cuBLAS, NVRTC, cuRAND, cudart) or point LD_LIBRARY_PATH at them"
    STOP=1
else
    record libraries PASS "every library the CUDA build needs resolves (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-system default})"
    record build-info INFO "$("$WORKLOAD" build-info 2>&1 | tr -d '\n')"
fi
ROOT=0; [[ $(id -u) == 0 ]] && ROOT=1
SUDO=(); if [[ $ROOT == 0 ]] && sudo -n true 2>/dev/null; then SUDO=(sudo -n -E env "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"); ROOT=1; fi

# --- 1. tracer doctor ---
if [[ -x "$TRACER" ]]; then
    timeout 60 "$TRACER" doctor --json >"$OUT/doctor.json" 2>"$OUT/doctor.stderr"; rc=$?
    timeout 60 "$TRACER" doctor >"$OUT/doctor.txt" 2>&1
    if [[ $rc == 2 ]] && grep -qi "unrecognized subcommand\|unexpected argument" "$OUT/doctor.stderr"; then
        record doctor SKIP "this tracer has no doctor subcommand; NVML facts come from nvidia-smi only (machine.txt)"
    else
        verdict=$("$PY" - "$OUT/doctor.json" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("FAIL|doctor --json gave no JSON: " + str(e)); sys.exit()
checks = d.get("checks", [])
gpu = [c for c in checks if any(w in (c.get("name", "") + c.get("finding", "")).lower() for w in ("gpu", "nvml", "nvidia", "driver"))]
text = "; ".join(f'{c["name"]}: {c["status"]}: {c["finding"]}' for c in gpu)
# Pass: NVML answered (nvidia_driver ok: driver and CUDA version) and reported GPU 0's memory.
driver = next((c for c in checks if c.get("name") == "nvidia_driver"), {})
gpu0 = next((c for c in checks if c.get("name") == "gpu.0"), {})
ok = driver.get("status") == "ok" and gpu0.get("status") in ("ok", "warn") and "total" in gpu0.get("finding", "")
print(("PASS|" if ok else "FAIL|") + (text or "no GPU check in the doctor's report"))
EOF
)
        record doctor "${verdict%%|*}" "${verdict#*|}"
    fi
else
    record doctor SKIP "no tracer binary in $BIN"
fi

# --- 2. synthetic checkpoints ---
gen() { # gen NAME ARGS...: prints seconds
    local name=$1; shift
    local t=$(date +%s.%N)
    if ! timeout "$(( $(left) - 200 > 30 ? $(left) - 200 : 30 ))" "$WORKLOAD" gen-model "$@" --dtype bf16 --out "$WORK/$name.tmp" >"$OUT/gen-$name.log" 2>&1; then
        return 1
    fi
    rm -rf "$WORK/$name"; mv "$WORK/$name.tmp" "$WORK/$name"
    "$PY" -c "import time; print(round(time.time() - $t, 1))"
}
if [[ -z "${STOP:-}" ]]; then
    rm -rf "$WORK"/nllb* "$WORK"/aya*
    if s=$(gen nllb --arch nllb --preset "$NLLB_PRESET"); then
        nllb_bytes=$(du -sb "$WORK/nllb" | cut -f1)
        record gen-nllb PASS "NLLB preset $NLLB_PRESET (full: 615M parameters), bf16: $(( nllb_bytes >> 20 )) MiB in ${s} s"
        # aya-23-8B: 8.03e9 parameters, 16.06e9 bytes at bf16
        predicted=$("$PY" -c "print(int(16.06e9 / ($nllb_bytes / max($s, 0.1))))")
        free_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
        if [[ -n $AYA_PRESET ]]; then
            aya_args=(--preset "$AYA_PRESET"); aya_what="preset $AYA_PRESET (AYA_PRESET)"
        elif (( predicted <= AYA_FULL_MAX_S && free_kb > 24 * 1024 * 1024 )); then
            aya_args=(--preset full); aya_what="full aya-23-8B shapes (8.0B parameters)"
        else
            # As much as fits the time budget at the measured rate, at least 4 GiB.
            aya_bytes=$("$PY" -c "print(max(4 << 30, int($nllb_bytes / max($s, 0.1) * $AYA_FULL_MAX_S * 0.8)))")
            aya_args=(--bytes "$aya_bytes"); aya_what="smaller than the full shapes (--bytes $aya_bytes: the full 16 GB would take about ${predicted} s to write here, or disk is short)"
        fi
        if s=$(gen aya --arch aya "${aya_args[@]}"); then
            record gen-aya PASS "Aya $aya_what, bf16: $(( $(du -sb "$WORK/aya" | cut -f1) >> 20 )) MiB in ${s} s"
        else
            record gen-aya FAIL "gen-model --arch aya failed or timed out: $(tail -3 "$OUT/gen-aya.log" | tr '\n' ' ')"; STOP=1
        fi
    else
        record gen-nllb FAIL "gen-model --arch nllb failed: $(tail -3 "$OUT/gen-nllb.log" | tr '\n' ' ')"; STOP=1
    fi
fi

# stop_service PID: SIGTERM, then SIGKILL after 20 s
stop_service() { kill -TERM "$1" 2>/dev/null; for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done; kill -KILL "$1" 2>/dev/null; }

# --- 3. serve both on cuda:0 in bf16 under the tracer ---
BASE="http://127.0.0.1:$PORT"
if [[ -z "${STOP:-}" ]]; then
    serve=("$WORKLOAD" serve --model "nllb=$WORK/nllb" --model "aya=$WORK/aya" --device "$DEVICE" --dtype bf16
           --port "$PORT" --max-new-tokens 12)
    traced=0
    if [[ $ROOT == 1 && -x "$TRACER" ]]; then
        "${SUDO[@]}" timeout 300 "$TRACER" run --no-tui --jsonl "$OUT/trace.jsonl" --perfetto "$OUT/trace.perfetto.json" \
            --sample-interval 100ms -- "${serve[@]}" >"$OUT/serve.log" 2>&1 &
        tracer_pid=$!
        traced=1
    else
        record tracer-run SKIP "not root (and no passwordless sudo): the eBPF tracer cannot run; serving without it"
        timeout 300 "${serve[@]}" >"$OUT/serve.log" 2>&1 &
        tracer_pid=$!
    fi
    # nvidia-smi's view of the process, every second, independent of the tracer
    ( while kill -0 $tracer_pid 2>/dev/null; do
        echo "$(date +%s.%N) $(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null | tr '\n' ' ')"
        sleep 1; done ) >"$OUT/nvidia-smi-apps.log" 2>&1 &
    models=$(h watch "$BASE" "$OUT/watch.json" "$(( $(left) - 150 > 60 ? $(left) - 150 : 60 ))" 2 "$tracer_pid")
    echo "$models" >"$OUT/models-gpu.json"
    for m in nllb aya; do
        line=$(h load-line "$models" "$m" 2>&1 || echo "FAIL|cannot read /models")
        record "load-$m" "${line%%|*}" "${line#*|}"
    done
    for m in nllb aya; do
        line=$(h translate-line "$(h translate "$BASE" "$m")" 2>&1 || echo "FAIL|no answer")
        record "translate-$m" "${line%%|*}" "${line#*|}"
    done
    grep -h "GPU memory taken by the load\|models run on" "$OUT/serve.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -3 >"$OUT/gpu-bytes.log"
    record gpu-bytes INFO "workload log: $(tr '\n' ';' <"$OUT/gpu-bytes.log")"
    if [[ $traced == 1 ]]; then
        wl=$(h descendant "$tracer_pid" workload)
        [[ -n $wl ]] && "${SUDO[@]}" kill -TERM "$wl"
        for _ in $(seq 150); do kill -0 $tracer_pid 2>/dev/null || break; sleep 0.2; done
        kill -0 $tracer_pid 2>/dev/null && { "${SUDO[@]}" kill -INT $tracer_pid; sleep 5; }
        wait $tracer_pid 2>/dev/null
        if [[ -s $OUT/trace.jsonl ]]; then
            tc=$(h trace "$OUT/trace.jsonl" "$OUT/trace.perfetto.json" "$OUT/watch.json" "$OUT/trace-check.json")
            line=$(h trace-line "$tc" 2>&1 || echo "FAIL|cannot read the trace: $tc")
            record tracer-run "${line%%|*}" "${line#*|}"
        else
            record tracer-run FAIL "tracer wrote no trace: $(tail -5 "$OUT/serve.log" | tr '\n' ' ')"
        fi
    else
        stop_service $tracer_pid
    fi
fi

# --- 4. over budget on the GPU: --gpu-memory-limit between what NLLB and Aya need: the
# smaller (NLLB) is READY, the bigger (Aya) FAILED with the GPU numbers ---
if [[ -z "${STOP:-}" ]] && (( $(left) > 40 )); then
    limit=$(h limit "$models" 2>/dev/null)
    if [[ -n $limit ]]; then
        timeout 150 "$WORKLOAD" serve --model "nllb=$WORK/nllb" --model "aya=$WORK/aya" --device "$([[ $DEVICE == cpu ]] && echo cpu || echo auto)" \
            --gpu-memory-limit "$limit" --port "$PORT" --max-new-tokens 8 >"$OUT/over-budget.log" 2>&1 &
        pid=$!
        m2=$(h watch "$BASE" "$OUT/watch-over.json" 100 2 "$pid")
        echo "$m2" >"$OUT/models-over-budget.json"
        health=$(h get "$BASE/health")
        small=$(h smaller "$models")
        tr=$(h translate "$BASE" "$small")
        line=$(h over-verdict "$m2" "$health" "$tr" 2>&1 || echo "FAIL|cannot read the answers")
        auto=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/over-budget.log" | grep -o "models run on .*" | head -1)
        record over-budget "${line%%|*}" "--gpu-memory-limit $limit ($(( limit >> 20 )) MiB): ${line#*|}; --device auto: ${auto:-no line}"
        stop_service $pid
    else
        record over-budget FAIL "no model sizes from the first run to set the limit"
    fi
elif [[ -z "${STOP:-}" ]]; then
    record over-budget SKIP "out of time ($DEADLINE_S s budget)"
fi

# --- results --- (the big files packed: they travel back from the device)
for f in trace.jsonl trace.perfetto.json serve.log; do [[ -f $OUT/$f ]] && gzip -f "$OUT/$f"; done
# --- results ---
"$PY" - "$RESULTS" "$OUT/gpu.md" "$(( $(date +%s) - START ))" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
machine = open(sys.argv[1].rsplit("/", 1)[0] + "/machine.txt").read().splitlines()
md = ["# GPU device check", "", f"Ran in {sys.argv[3]} s. Machine:", "", "```"] + machine[:12] + ["```", "",
      "| step | status | detail |", "| --- | --- | --- |"]
md += [f"| {r['step']} | {r['status']} | {r['detail'].replace('|', '/')} |" for r in rows]
failed = [r["step"] for r in rows if r["status"] == "FAIL"]
md += ["", "Result: " + ("all steps passed" if not failed else "FAILED: " + ", ".join(failed)), ""]
open(sys.argv[2], "w").write("\n".join(md))
print("\n".join(md))
sys.exit(1 if failed else 0)
EOF
