#!/usr/bin/env bash
# Notebook 06 at learner size beside one CPU-bound neighbour, spinning vs OMP_WAIT_POLICY=PASSIVE
# (README, "Runtimes", busy-machine column). The neighbour is ended by its PID.
set -u
for policy in spin PASSIVE; do
  .venv/bin/python -c "while True: pass" & NB=$!
  sleep 1
  echo "== notebook 06 at learner size, OMP_WAIT_POLICY=$policy, 1 CPU-bound neighbour (pid $NB), load before $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ $policy = spin ]; then
    env -u OMP_WAIT_POLICY -u OMP_NUM_THREADS -u MKL_NUM_THREADS -u KMP_BLOCKTIME MPLBACKEND=Agg .venv/bin/python bench/course_runtime.py 06 --sizes learner 2>&1 | tail -4
  else
    env -u OMP_NUM_THREADS -u MKL_NUM_THREADS OMP_WAIT_POLICY=PASSIVE KMP_BLOCKTIME=0 MPLBACKEND=Agg .venv/bin/python bench/course_runtime.py 06 --sizes learner 2>&1 | tail -4
  fi
  echo "load after $(cut -d' ' -f1-3 /proc/loadavg)"
  kill $NB; wait $NB 2>/dev/null
done
