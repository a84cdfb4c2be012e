#!/usr/bin/env bash
# N joined processes on this one machine, on CPU: a rehearsal of a multi-host run (coordinator, a mesh across
# processes, one shared workdir) without a cluster. Each process is launch/multihost_gpu.sh with its own
# PROCESS_ID and DEVICES (default 2) simulated CPU devices.
#
#   launch/local_processes.sh 2 train --gin_file runs/quickstart.gin \
#       --gin.msp.experiment.backbone="'random:llama-tiny'" --gin.msp.experiment.num_model=2 --workdir /tmp/mp_run
#
# Output of process i goes to msp-process-i.log in the current directory. If one process fails, the others
# stop once JAX's coordination service notices (within about 100 s) and the script exits non-zero.
set -euo pipefail
num_processes="${1:?usage: launch/local_processes.sh NUM_PROCESSES msp-arguments...}"
shift
launch_dir="$(cd "$(dirname "$0")" && pwd)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')"
export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES:-2}"
export COORDINATOR_ADDRESS="localhost:$port" NUM_PROCESSES="$num_processes"
unset MSP_COORDINATOR_ADDRESS MSP_NUM_PROCESSES MSP_PROCESS_ID
pids=()
for ((i = 0; i < num_processes; i++)); do
  PROCESS_ID=$i "$launch_dir/multihost_gpu.sh" "$@" > "msp-process-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "process $i failed: see msp-process-$i.log" >&2; status=1; }
done
exit $status
