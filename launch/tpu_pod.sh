#!/usr/bin/env bash
# Cloud TPU pod slice (e.g. v4-32, v5p-64): the same command on every worker VM; JAX reads the pod's
# topology from the TPU metadata (MSP_DISTRIBUTED=auto), one process per worker holding its local chips.
#
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh setup     # once: clone + install on every worker
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh train --gin_file runs/nlupp_hotels.gin \
#       --workdir /mnt/shared/runs/hotels
#
# REPO_URL / REPO_DIR (default ~/msp-jax) say where the code lives on the workers. The workdir must be one
# directory every worker sees: an NFS / Filestore mount, or a bucket mounted with gcsfuse at the same path
# (msp takes local paths; a gs:// URL is not supported).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}" "${ZONE:?set ZONE to its zone}"
REPO_DIR="${REPO_DIR:-~/msp-jax}"
on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}
if [ "${1:-}" = "setup" ]; then
  : "${REPO_URL:?set REPO_URL to the git URL of msp-jax}"
  on_all_workers "set -e; [ -d $REPO_DIR ] || git clone $REPO_URL $REPO_DIR; cd $REPO_DIR \
    && bash scripts/setup.sh && .venv/bin/python -m pip install --quiet 'jax[tpu]==0.10.2'"
  exit 0
fi
args="$(printf '%q ' "$@")"
on_all_workers "cd $REPO_DIR && MSP_DISTRIBUTED=auto .venv/bin/msp $args"
