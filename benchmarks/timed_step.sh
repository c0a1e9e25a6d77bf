# Sourced by benchmark scripts: `RUN_DIR=runs/NAME; source benchmarks/timed_step.sh`, then
# `run STEP CMD...` runs CMD with its output in $RUN_DIR/STEP.log and its wall time appended to
# $RUN_DIR/times.txt (after a line naming the step, its start time and the command).
mkdir -p "$RUN_DIR"
run() {
  local name=$1; shift
  echo "== $name $(date -u +%T): $*" | tee -a "$RUN_DIR/times.txt"
  /usr/bin/time -f "$name wall %e s" -a -o "$RUN_DIR/times.txt" "$@" > "$RUN_DIR/$name.log" 2>&1
  tail -1 "$RUN_DIR/times.txt"
}
