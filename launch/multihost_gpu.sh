#!/usr/bin/env bash
# One process per GPU host. Run this same command on every host (ssh, pdsh, a cluster scheduler ...), with
# only PROCESS_ID differing; the hosts find each other through process 0's address.
#
#   COORDINATOR_ADDRESS=10.0.0.1:1234 NUM_PROCESSES=4 PROCESS_ID=0 launch/multihost_gpu.sh train --gin_file F
#   COORDINATOR_ADDRESS=10.0.0.1:1234 NUM_PROCESSES=4 PROCESS_ID=1 launch/multihost_gpu.sh train --gin_file F
#   ...                                                               (MSP_COORDINATOR_ADDRESS etc. work too)
#
# COORDINATOR_ADDRESS: host:port of the host running process 0 (any free port, the same on every host).
# NUM_PROCESSES: the number of hosts. PROCESS_ID: 0 .. NUM_PROCESSES-1, a different one on each host.
# Each process sees all GPUs of its host; the mesh spans the GPUs of every host.
# --workdir (checkpoints, prompts, synthetic data) must be on a filesystem every host shares.
set -euo pipefail
MSP="${MSP:-msp}"
MSP_COORDINATOR_ADDRESS="${MSP_COORDINATOR_ADDRESS:-${COORDINATOR_ADDRESS:?set it to host:port of process 0}}"
MSP_NUM_PROCESSES="${MSP_NUM_PROCESSES:-${NUM_PROCESSES:?set it to the number of hosts}}"
MSP_PROCESS_ID="${MSP_PROCESS_ID:-${PROCESS_ID:?set it to the index of this host, 0 .. NUM_PROCESSES-1}}"
export MSP_COORDINATOR_ADDRESS MSP_NUM_PROCESSES MSP_PROCESS_ID
unset MSP_DISTRIBUTED
exec $MSP "$@"
