#!/usr/bin/env bash
# One process on one machine, using every local device (all GPUs, all chips of a TPU VM, or the CPU).
#
#   launch/single_host.sh train --gin_file runs/quickstart.gin
#   launch/single_host.sh run   --gin_file runs/nlupp_hotels.gin --gin.msp.experiment.num_model=2
#
# The mesh is ('data', 'model') over all devices: msp.experiment.num_model devices hold one model replica
# (its heads / mlp / vocab sharded between them), the rest of the devices split the batch.
set -euo pipefail
MSP="${MSP:-msp}"
# A single-process run, even if the calling shell carries multi-host settings.
unset MSP_COORDINATOR_ADDRESS MSP_NUM_PROCESSES MSP_PROCESS_ID
export MSP_DISTRIBUTED=off
exec $MSP "$@"
