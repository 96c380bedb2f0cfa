#!/usr/bin/env bash
# The one script to run on a lent GPU machine (one NVIDIA H200, a few minutes of device time):
# install, then measure what the GPU path gives, and print one markdown table at the end (also
# written to $OUT/gpu_check.md when $OUT is set, with the stage logs' tails in
# $OUT/gpu_check_logs.txt).
#
#   bash bench/gpu_check.sh               # on the GPU machine: about 6 minutes, 8 at the most
#   GPU_CHECK_STAGES=study bash bench/gpu_check.sh   # a second call: only the stages named (see below)
#   bash bench/gpu_check.sh --cpu-smoke   # the same stages on the CPU with tiny sizes (CI: tests/test_gpu_check.py)
#   bash bench/gpu_check.sh --fetch-wheels  # here, with network: wheels for a GPU machine without one (see below)
#
# Stages (each under its own `timeout`, all under one deadline, GPU_CHECK_BUDGET seconds; a stage
# that fails or times out gives "failed: <its last output line>" in the table, the others go on,
# except after a failed imports stage):
#   install   python -m venv .venv && pip install torch==2.13.0 && pip install -e ".[test]" (timed),
#             unless .venv exists and imports torch and mtmoe. A GPU machine of this workplace reaches
#             no package registry: there, with no network, the image's own python3 (it holds a CUDA
#             torch) is used, the wheels in .whl/ (GPU_CHECK_WHEELS; made beforehand where pip works
#             by --fetch-wheels, sent with the working tree) are installed without an index into a
#             --target folder, and that folder and the repository go on PYTHONPATH.
#   machine   nvidia-smi in one line (compute mode too); python, torch and CUDA versions
#   imports   python -c "import torch, gymnasium, minatar, mtmoe": when it fails, no later stage starts
#             (each would fail the same way; the device time is kept); ale_py (Atari) and rliable
#             are reported, and without ale_py only the atari stage is skipped
#   tensor-*  bench/bench_device_env.py: raw TensorMinAtarVec steps/s of all five games on cuda at
#             1024, 16384 and 65536 envs (random actions, no loop backend)
#   run-*     mtmoe run --suite minatar-multitask --device cuda --steps S, the whole command with the
#             preset (evaluation and probes on): dense, --placement critic, and dense with
#             --set env_device=host (the Python-loop envs); training steps/s from summary.json
#   atari     mtmoe run --suite atari-multitask --placement critic --device cuda --steps S2, evaluation
#             and probes off (ATARI_SETS: one Atari evaluation alone may take a minute)
#   sweep     mtmoe sweep of 16 runs (4 placements x 4 seeds) on one GPU, --runs-per-device 16,
#             S3 steps each: sum of the runs' env steps / wall time of the sweep command
#   dqn       mtmoe run --suite minatar-multitask --algo dqn --placement critic --device cuda --steps S4
#             (the dqn-minatar preset, SoftMoE Q network; evaluation and probes off): DQN's CUDA path
#             and its training steps/s (host envs: DQN takes no tensor envs)
#   study     the same for the reference study's grid (configs/sweeps/reference-study.yaml, 8
#             variants x 2 seeds): what the placement study would cost on this GPU. Not in the
#             default set: run it in a second call (GPU_CHECK_STAGES=study) when device time is left
#
# The table and the stage logs' tails are written to $OUT before and after every stage, so a command cut off
# by the device tool still returns what was measured.
#
# Environment: GPU_CHECK_CPU=1 (same as --cpu-smoke), GPU_CHECK_PYTHON (the python to use, no
# install), GPU_CHECK_BUDGET (seconds for everything), GPU_CHECK_STAGES (a comma list of tensor, run,
# atari, sweep, dqn, study, or all; default tensor,run,atari,sweep,dqn; install, machine and imports always
# run), GPU_CHECK_WORK (a folder for runs and logs;
# default a fresh one under /tmp), GPU_CHECK_WHEELS (default .whl), GPU_CHECK_WHEEL_PY (the Python
# version --fetch-wheels fetches for, default 3.12: the GPU image's).
set -u

# ---- sizes (GPU). An H200 is assumed no faster than ~10k training env steps/s for one preset run
# (64 envs, 4 epochs x 8 minibatches per 8192 steps) and the install is assumed to take ~3 min.
S=131072          # minatar-multitask runs: 16 PPO iterations of 64 envs x 128 steps
S2=10240          # atari-multitask: 10 iterations of the preset's 8 envs x 128 steps
S3=32768          # each of the 16 sweep runs: 4 iterations
S4=8192           # DQN: 3,192 gradient steps after the preset's 5,000 random steps
ENVS="1024 16384 65536"
BENCH_SECONDS=0.5
BUDGET=${GPU_CHECK_BUDGET:-480}   # a device command may run 600 s; 15 min of device time include the start
STAGES=${GPU_CHECK_STAGES:-tensor,run,atari,sweep,dqn}
STAGES=${STAGES// /}
[[ ",$STAGES," == *",all,"* ]] && STAGES=tensor,run,atari,sweep,dqn,study
for stage in ${STAGES//,/ }; do
  case $stage in tensor|run|atari|sweep|dqn|study) ;;
    *) echo "gpu_check.sh: GPU_CHECK_STAGES: unknown stage '$stage' (known: tensor, run, atari, sweep, dqn, study, all)" >&2
       exit 2 ;;
  esac
done
DEVICE=cuda
RUN_SETS=()
TENSOR_SETS=()
# Atari without evaluation and probes: one evaluation of 5 games x 8 episodes can take 5000 vector
# steps of 20 ALE envs (about a minute), which would not fit; the rate is the training loop's.
ATARI_SETS=(--set eval_every=-1 --set probe_every=-1)
DQN_SETS=(--set eval_every=-1 --set probe_every=-1)
SWEEP_GRID=(--placements none,actor,critic,both --seeds 0-3)
STUDY_GRID=(--grid configs/sweeps/reference-study.yaml --seeds 0-1)
T_INSTALL=300 T_MACHINE=60 T_BENCH=60 T_RUN=90 T_ATARI=90 T_SWEEP=150 T_DQN=90

MODE=gpu
case "${1:-}" in
  --cpu-smoke) MODE=cpu ;;
  --fetch-wheels) MODE=fetch ;;
  "") ;;
  -h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//; /^set -u/d'; exit 0 ;;
  *) echo "gpu_check.sh: unknown argument ${1} (expected --cpu-smoke, --fetch-wheels or nothing)" >&2; exit 2 ;;
esac
[ "${GPU_CHECK_CPU:-0}" = 1 ] && [ "$MODE" = gpu ] && MODE=cpu

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
WHEELS=${GPU_CHECK_WHEELS:-.whl}

if [ "$MODE" = fetch ]; then
  # Binary wheels, for the GPU image's Python 3.12, of what mtmoe needs that the image lacks
  # (the image has torch, numpy, scipy, pandas, matplotlib, seaborn, statsmodels, tensorboard, rich,
  # tqdm, pyyaml, opencv). Sent with the working tree (64 MiB at most; these are a few MiB).
  mkdir -p "$WHEELS"
  FPY=${GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python}; [ -x "$FPY" ] || FPY=python3
  # compiled ones: the cp312 manylinux wheels; pure-Python ones: built or fetched here (py3-none-any)
  "$FPY" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_CHECK_WHEEL_PY:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" ale-py==0.12.1 arch==7.2.0 || exit 1
  "$FPY" -m pip wheel -q --no-deps -w "$WHEELS" gymnasium==1.4.0 farama-notifications==0.0.6 minatar==1.0.15 \
    rliable==1.2.0 pytz || exit 1
  ls -la "$WHEELS"
  echo "send them with the working tree (the device tool's carry, or untracked files in the repository); then"
  echo "bash bench/gpu_check.sh on the GPU machine installs them without an index"
  exit 0
fi

if [ "$MODE" = cpu ]; then
  S=32; S2=40; S3=32; S4=48; ENVS="16 64"; BENCH_SECONDS=0.05; DEVICE=cpu  # one PPO iteration per run
  BUDGET=${GPU_CHECK_BUDGET:-480}
  RUN_SETS=(--set num_envs=4 --set ppo.num_steps=8 --set eval_every=-1 --set probe_every=-1)
  TENSOR_SETS=(--set env_device=tensor)  # what env_device=auto picks on cuda; on the CPU auto means host
  ATARI_SETS=(--set num_envs=5 --set ppo.num_steps=8 --set eval_every=-1 --set probe_every=-1)
  DQN_SETS=(--set dqn.learning_starts=16 --set dqn.batch_size=8 --set eval_every=-1 --set probe_every=-1)
  SWEEP_GRID=(--placements none --seeds 0-1)
  STUDY_GRID=(--grid configs/sweeps/reference-study.yaml --seeds 0)
  T_RUN=120 T_ATARI=120 T_SWEEP=180 T_BENCH=90 T_DQN=120  # generous: a busy 2-core CI machine, not a hang
fi

START=$(date +%s)
DEADLINE=$((START + BUDGET))
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK"
ROWS=$WORK/rows.tsv
: >"$ROWS"
export PYTHONUNBUFFERED=1

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
clean() { tr '\t\n' '  ' <<<"$1" | sed 's/[[:space:]]\+/ /g; s/^ //; s/ $//'; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$(clean "$2")" "$(clean "$3")" "$4" >>"$ROWS"; publish; }
want() { [[ ",$STAGES," == *",$1,"* ]]; }  # is stage group $1 in GPU_CHECK_STAGES?
last_line() {  # the last non-empty line of a log (progress bars' \r pieces split off)
  tr '\r' '\n' <"$1" 2>/dev/null | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | awk 'NF { l = $0 } END { print substr(l, 1, 240) }'
}

# run_stage NAME LIMIT CMD...: runs CMD under `timeout` (LIMIT, cut to the deadline), output in
# $WORK/NAME.log; sets STAGE_RC, STAGE_S and STAGE_FAIL ("" or "failed: ...").
run_stage() {
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - $(date +%s) - 15))  # timeout -k 10 may take 10 s more
  STAGE_FAIL="" STAGE_RC=0 STAGE_S=0
  if [ "$left" -lt 5 ]; then
    STAGE_RC=124 STAGE_FAIL="failed: not started, the ${BUDGET} s budget was spent"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most ${limit} s): $*" >&2
  : >"$WORK/$name.log"
  [ -n "${OUT:-}" ] && publish  # a command cut off in this stage still returns its log's start
  local t0
  t0=$(now)
  timeout -k 10 "$limit" "$@" >"$WORK/$name.log" 2>&1 </dev/null
  STAGE_RC=$?
  STAGE_S=$(elapsed "$t0")
  STAGE_SF=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  if [ "$STAGE_RC" -eq 124 ] || [ "$STAGE_RC" -eq 137 ]; then
    STAGE_FAIL="failed: timed out after ${limit} s; last line: $(last_line "$WORK/$name.log")"
  elif [ "$STAGE_RC" -ne 0 ]; then
    STAGE_FAIL="failed: $(last_line "$WORK/$name.log")"
  fi
  echo "   $name: rc $STAGE_RC in ${STAGE_S} s" >&2
}

# ---- the helper that reads logs and summaries and prints the table (stdlib only)
HELPER=$WORK/gpu_check_helper.py
cat >"$HELPER" <<'PYEOF'
import json, re, sys
from pathlib import Path


def rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else (f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}")


def bench(log: str, envs: str) -> str:
    """Rates of every game at `envs` from bench_device_env.py's markdown table."""
    text = Path(log).read_text(errors="replace")
    parts, skipped = [], re.findall(r"^- (\w+): no tensor implementation", text, re.M)
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 4 and cells[1].replace(",", "") == envs:
            parts.append(f"{cells[0]} {rate(float(cells[3].replace(',', '')))}")
    if not parts:
        return "failed: no rate in the output of bench_device_env.py"
    out = "env steps/s: " + " · ".join(parts)
    return out + (f" (no tensor game: {', '.join(skipped)})" if skipped else "")


def summary(folder: str) -> str:
    found = sorted(Path(folder).rglob("summary.json"))
    if not found:
        return "failed: no summary.json"
    s = json.loads(found[-1].read_text())
    return (f"{s['steps_per_s']:,.0f} training env steps/s (summary.json); {s['steps']:,} steps, run "
            f"{s['wall_time_s']:.0f} s of which eval + probes {s['eval_and_probe_time_s']:.0f} s; {s['device']}; "
            f"envs {s.get('envs')}")


def sweep(folder: str, wall: str, expected: str) -> str:
    found = sorted(Path(folder).rglob("summary.json"))
    if not found:
        return "failed: no summary.json"
    sums = [json.loads(p.read_text()) for p in found]
    steps, wall_s = sum(s["steps"] for s in sums), float(wall)
    train = sum(s["steps_per_s"] for s in sums)
    devices = sorted({s["device"] for s in sums})
    return (f"{steps / wall_s:,.0f} env steps/s in total ({len(sums)}/{expected} runs, {steps:,} env steps in "
            f"{wall_s:.0f} s); sum of the runs' training steps/s {train:,.0f}; {', '.join(devices)}")


def sweep_failure(folder: str) -> str:
    """How many runs finished, and the last line of the log of a run that did not."""
    done = len(list(Path(folder).rglob("summary.json")))
    for log in sorted(Path(folder).rglob("log.txt")):
        if not (log.parent / "summary.json").is_file():
            lines = [ln for ln in log.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
            return f"{done} run(s) finished; {log.parent.name}: {lines[-1][:200] if lines else '(empty log)'}"
    return f"{done} run(s) finished" if done else ""


def table(rows_path: str) -> str:
    rows = [ln.split("\t") for ln in Path(rows_path).read_text().splitlines() if ln.strip()]
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    out = ["| stage | command | result | s |", "|---|---|---|---|"]
    for name, cmd, result, secs in rows:
        out.append(f"| {name} | {'`' + esc(cmd) + '`' if cmd else ''} | {esc(result)} | {secs} |")
    return "\n".join(out)


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    try:
        print({"bench": bench, "summary": summary, "sweep": sweep, "sweep_failure": sweep_failure,
               "table": table}[what](*args))
    except Exception as e:  # noqa: BLE001 - one cell of the table, never a traceback
        print(f"failed: could not read the results ({type(e).__name__}: {e})")
PYEOF
gchelp() { "${HPY:-python3}" "$HELPER" "$@"; }

TABLE=$WORK/gpu_check.md
publish() {  # the table so far (and the logs' tails) to $TABLE and $OUT: a cut-off command still returns them
  {
    echo "gpu_check.sh ($MODE mode, stages $STAGES), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(elapsed "$START") s in all; logs in $WORK"
    echo
    gchelp table "$ROWS"
  } >"$TABLE.tmp" && mv "$TABLE.tmp" "$TABLE"
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$TABLE" "$OUT/gpu_check.md"
    for f in "$WORK"/*.log; do [ -e "$f" ] && echo "==== $(basename "$f")" && tail -n 40 "$f"; done \
      >"$OUT/gpu_check_logs.txt" 2>/dev/null
  fi
  return 0
}

# ---- install
PY=""
usable() { [ -x "$1" ] && "$1" -c "import torch, mtmoe" >/dev/null 2>&1; }
online() {  # can pip reach its index? (a lent GPU machine reaches nothing: then this fails within seconds)
  timeout 15 "$1" -c "import urllib.request as u; u.urlopen('${PIP_INDEX_URL:-https://pypi.org/simple}/pip/', timeout=8)" \
    >/dev/null 2>&1
}
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  PY=$GPU_CHECK_PYTHON
  record install "" "skipped: GPU_CHECK_PYTHON=$PY" 0
elif [ "$MODE" = cpu ]; then
  PY=$ROOT/.venv/bin/python
  [ -x "$PY" ] || PY=$(command -v python3)
  record install "" "skipped (cpu smoke): $PY" 0
elif usable "$ROOT/.venv/bin/python"; then
  PY=$ROOT/.venv/bin/python
  record install "" "skipped: .venv exists" 0
else
  BASE_PY=$(command -v python3.11 || command -v python3)
  VENV=$ROOT/.venv
  [ -e "$VENV" ] && VENV=$ROOT/.venv-gpu-check  # a .venv that does not run here (made elsewhere): leave it be
  if online "$BASE_PY"; then
    cmd="python -m venv $(basename "$VENV") && pip install torch==2.13.0 && pip install -e .[test]"
    run_stage install "$T_INSTALL" bash -c "'$BASE_PY' -m venv '$VENV' && '$VENV/bin/pip' install torch==2.13.0 \
      && '$VENV/bin/pip' install -e '.[test]'"
    PY=$VENV/bin/python
  else
    # No index: the image's own python3 (it holds a CUDA torch; it may itself be a venv, so no
    # --system-site-packages venv over it), the carried wheels in a --target folder, the repo on PYTHONPATH.
    PY=$(command -v python3)
    SITE=$WORK/site
    export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    cmd="(no network) pip install --no-index --no-deps --target SITE WHEEL, one wheel at a time (unzipped where the image has no pip); PYTHONPATH=repo:SITE"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
      # one wheel at a time: a wheel for another Python (ale-py and arch are cp312) leaves the others in
      cat >"$WORK/install_wheels.sh" <<'SHEOF'
py=$1 site=$2 wheels=$3 bad=""
mkdir -p "$site"
if "$py" -m pip --version >/dev/null 2>&1; then
  for w in "$wheels"/*.whl; do
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$w" || bad="$bad $(basename "$w")"
  done
else  # an image python without pip: a wheel is a zip of what goes into site-packages
  bad=$("$py" - "$site" "$wheels" <<'PY'
import glob, sys, zipfile
ok = ("py3-none-any", "py2.py3-none-any", "cp%d%d-cp%d%d" % (sys.version_info[:2] * 2))
for w in sorted(glob.glob(sys.argv[2] + "/*.whl")):
    name = w.rsplit("/", 1)[-1]
    try:
        if not any(tag in name for tag in ok):
            raise ValueError("for another Python")
        zipfile.ZipFile(w).extractall(sys.argv[1])
    except Exception as e:
        print(f" {name} ({e})", end="")
PY
) || bad="$bad (unzipping)"
fi
[ -z "$bad" ] || { echo "not installed:$bad"; exit 1; }
SHEOF
      run_stage install "$T_INSTALL" bash "$WORK/install_wheels.sh" "$PY" "$SITE" "$WHEELS"
    else
      STAGE_S=0 STAGE_FAIL="failed: no network and no wheels in $WHEELS/ (make them where pip works: bash bench/gpu_check.sh --fetch-wheels)"
    fi
  fi
  record install "$cmd" "${STAGE_FAIL:-done: $PY}" "$STAGE_S"
fi
HPY=$PY
timeout 30 "$HPY" "$HELPER" table "$ROWS" >/dev/null 2>&1 || HPY=python3  # a python that cannot run the helper: the system one
MTMOE=("$PY" -m mtmoe.cli)

# ---- machine
if [ "$MODE" = gpu ]; then
  smi=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_mode --format=csv,noheader 2>&1 | head -n 1)
else
  smi="nvidia-smi skipped (cpu smoke)"
fi
run_stage machine "$T_MACHINE" "$PY" -c "
import platform, torch
cuda = torch.cuda.is_available()
print(f'python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, '
      f'cuda available {cuda}' + (f', {torch.cuda.get_device_name(0)}' if cuda else '') + f', {__import__(\"os\").cpu_count()} cores')
"
record machine "nvidia-smi; python -c 'import torch'" "$smi; ${STAGE_FAIL:-$(last_line "$WORK/machine.log")}" "$STAGE_S"

# ---- imports: without them every later stage would fail the same way; then none starts
run_stage imports "$T_MACHINE" "$PY" -c "
import importlib, torch, gymnasium, minatar, mtmoe
missing = []
for name in ('ale_py', 'rliable'):  # Atari; the reports' statistics (imported where used)
    try:
        importlib.import_module(name)
    except Exception as e:
        missing.append(f'{name} ({type(e).__name__})')
print('gymnasium', gymnasium.__version__, '· mtmoe from', mtmoe.__path__[0],
      '· missing: ' + ', '.join(missing) if missing else '· ale_py and rliable too')
"
IMPORT_FAIL=$STAGE_FAIL
ALE_FAIL=""
grep -q "missing: .*ale_py" "$WORK/imports.log" 2>/dev/null && ALE_FAIL="ale_py does not import"
record imports "python -c 'import torch, gymnasium, minatar, mtmoe' (ale_py, rliable reported)" \
  "${STAGE_FAIL:-$(last_line "$WORK/imports.log")}" "$STAGE_S"

# go GROUP ROW...: whether the stage group GROUP (GPU_CHECK_STAGES) runs; when the imports failed, its
# rows are recorded as not started instead
go() {
  local group=$1 row
  shift
  want "$group" || return 1
  local why=${IMPORT_FAIL:+the imports failed}
  [ "$group" = atari ] && [ -z "$why" ] && why=$ALE_FAIL
  [ -z "$why" ] && return 0
  for row in "$@"; do record "$row" "" "failed: not started, $why" 0; done
  return 1
}

# ---- tensor MinAtar raw throughput: one process per env count on the GPU (a failure at 65536
# envs leaves the others), one for all of them in the CPU smoke (process start-up dominates there)
bench_cmd() { echo python bench/bench_device_env.py --device "$DEVICE" --envs "$@" --seconds "$BENCH_SECONDS" --repeats 1 --no-loop; }
tensor_rows=()
for n in $ENVS; do tensor_rows+=("tensor MinAtar, $n envs"); done
if go tensor "${tensor_rows[@]}"; then
  if [ "$MODE" = cpu ]; then
    # shellcheck disable=SC2046,SC2086
    run_stage tensor "$T_BENCH" "$PY" $(bench_cmd $ENVS | cut -d' ' -f2-)
  fi
  for n in $ENVS; do
    if [ "$MODE" = cpu ]; then
      log=$WORK/tensor.log cmd=$(bench_cmd $ENVS)
    else
      # shellcheck disable=SC2046
      run_stage "tensor-$n" "$T_BENCH" "$PY" $(bench_cmd "$n" | cut -d' ' -f2-)
      log=$WORK/tensor-$n.log cmd=$(bench_cmd "$n")
    fi
    result=${STAGE_FAIL:-$(gchelp bench "$log" "$n")}
    record "tensor MinAtar, $n envs" "$cmd" "$result" "$STAGE_S"
  done
fi

# ---- whole mtmoe run commands
one_run() {  # NAME LIMIT ARGS...: mtmoe run ARGS, its own results folder
  local name=$1 limit=$2
  shift 2
  run_stage "$name" "$limit" "${MTMOE[@]}" run "$@" --out "$WORK/$name"
  local result=${STAGE_FAIL:-$(gchelp summary "$WORK/$name")}
  local shown=("$@")
  record "$name" "mtmoe run ${shown[*]}" "$result" "$STAGE_S"
}
DENSE_FAIL=""
if go run run-dense run-critic run-dense-host-envs; then
  one_run run-dense "$T_RUN" --suite minatar-multitask --device "$DEVICE" --steps "$S" ${RUN_SETS[@]+"${RUN_SETS[@]}"} \
    ${TENSOR_SETS[@]+"${TENSOR_SETS[@]}"}
  DENSE_FAIL=$STAGE_FAIL
  one_run run-critic "$T_RUN" --suite minatar-multitask --placement critic --device "$DEVICE" --steps "$S" \
    ${RUN_SETS[@]+"${RUN_SETS[@]}"} ${TENSOR_SETS[@]+"${TENSOR_SETS[@]}"}
  one_run run-dense-host-envs "$T_RUN" --suite minatar-multitask --device "$DEVICE" --steps "$S" --set env_device=host \
    ${RUN_SETS[@]+"${RUN_SETS[@]}"}
fi
if go atari atari; then
  one_run atari "$T_ATARI" --suite atari-multitask --placement critic --device "$DEVICE" --steps "$S2" \
    ${ATARI_SETS[@]+"${ATARI_SETS[@]}"}
fi

# ---- sweeps sharing one GPU: 16 preset runs (4 placements x 4 seeds), then the reference study's
# grid (configs/sweeps/reference-study.yaml: 8 variants incl. the slow 'big' ones, x 2 seeds)
sweep_stage() {  # NAME EXPECTED GRID-ARGS...: mtmoe sweep on one GPU, --runs-per-device 16
  local name=$1 expected=$2
  shift 2
  local args=(--suite minatar-multitask "$@" --runs-per-device 16 --steps "$S3" --device "$DEVICE"
    --retries 0 ${RUN_SETS[@]+"${RUN_SETS[@]}"} ${TENSOR_SETS[@]+"${TENSOR_SETS[@]}"})
  if [ -n "$DENSE_FAIL" ]; then  # its runs would fail the same way, 16 times: keep the time
    STAGE_S=0 STAGE_FAIL="failed: not started, run-dense failed"
  else
    run_stage "$name" "$T_SWEEP" "${MTMOE[@]}" sweep "${args[@]}" --out "$WORK/$name"
  fi
  local result
  if [ -n "$STAGE_FAIL" ]; then
    local why
    why=$(gchelp sweep_failure "$WORK/$name")
    result="$STAGE_FAIL${why:+; $why}"
  else
    result=$(gchelp sweep "$WORK/$name" "$STAGE_SF" "$expected")
  fi
  record "$name" "mtmoe sweep ${args[*]}" "$result" "$STAGE_S"
}
go sweep sweep && sweep_stage sweep "$( [ "$MODE" = cpu ] && echo 2 || echo 16 )" "${SWEEP_GRID[@]}"
go dqn dqn && one_run dqn "$T_DQN" --suite minatar-multitask --algo dqn --placement critic --device "$DEVICE" \
  --steps "$S4" "${DQN_SETS[@]}"
go study study && sweep_stage study "$( [ "$MODE" = cpu ] && echo 8 || echo 16 )" "${STUDY_GRID[@]}"

# ---- the table (published after every stage; once more with the total time)
publish
echo
cat "$TABLE"
