#!/usr/bin/env bash
# Point the VM at a new image and restart its containers (a few seconds of downtime;
# live sessions end: run it when the VM is idle, or run two VMs behind DNS).
#   PROJECT=my-proj IMAGE=...:v2 deploy/gce/rollout.sh
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${IMAGE:?set IMAGE}"
ZONE=${ZONE:-us-central1-a}
NAME=${NAME:-rtc-yolo}
gcloud --project "$PROJECT" compute instances add-metadata "$NAME" --zone "$ZONE" --metadata "rtc-image=$IMAGE"
gcloud --project "$PROJECT" compute ssh "$NAME" --zone "$ZONE" --command 'sudo google_metadata_script_runner startup'
