#!/usr/bin/env bash
# Create a GCE VM that runs the rtc-yolo image with host networking, plus its firewall.
# Run from a workstation with gcloud authenticated. Every setting is an env variable:
#
#   PROJECT=my-proj IMAGE=us-central1-docker.pkg.dev/my-proj/rtc-yolo/server:v1 \
#   DOMAIN=rtc.example.com TURN=yes deploy/gce/create-vm.sh
#
# DOMAIN: with it, Caddy serves https://DOMAIN on 443 (Let's Encrypt certificate; point the
#   domain's A record at the printed address first) and the server listens on loopback.
#   Without it, the server answers plain HTTP on 8080 (browsers only give the camera to
#   HTTPS pages, so that is for /predict and testing).
# TURN=yes: coturn beside the server, for browsers behind networks that block UDP; the page
#   and the server get short-lived credentials for it (TURN REST API, a shared secret).
# Tokens live in Secret Manager, never in metadata: this script creates rtc-operator-token
#   (and rtc-turn-secret with TURN=yes) when missing, with random values, and lets the VM's
#   service account read them; startup.sh reads them at boot. A private page: also create
#   rtc-publish-token (docs/deploy.md, "Secrets"). Read the operator token with
#   gcloud secrets versions access latest --secret rtc-operator-token
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${IMAGE:?set IMAGE (an Artifact Registry image)}"
ZONE=${ZONE:-us-central1-a}
REGION=${ZONE%-*}
NAME=${NAME:-rtc-yolo}
MACHINE=${MACHINE:-c3-standard-4}
UDP_PORTS=${UDP_PORTS:-40000-40100}
TURN_PORTS=${TURN_PORTS:-49160-49200}
DOMAIN=${DOMAIN:-}
TURN=${TURN:-no}
HERE=$(cd "$(dirname "$0")" && pwd)
gc() { gcloud --project "$PROJECT" --quiet "$@"; }

# A static external address: the VM's 1:1 NAT address, advertised in ICE candidates.
gc compute addresses create "$NAME-ip" --region "$REGION" || true
ADDRESS=$(gc compute addresses describe "$NAME-ip" --region "$REGION" --format='value(address)')

gc compute firewall-rules create "$NAME-web" --direction INGRESS --target-tags "$NAME" \
  --allow tcp:80,tcp:443,tcp:8080 --description "rtc-yolo: page, signaling, /predict" || true
gc compute firewall-rules create "$NAME-media" --direction INGRESS --target-tags "$NAME" \
  --allow "udp:$UDP_PORTS" --description "rtc-yolo: WebRTC media (RTC_UDP_PORTS)" || true
if [ "$TURN" = yes ]; then
  gc compute firewall-rules create "$NAME-turn" --direction INGRESS --target-tags "$NAME" \
    --allow "tcp:3478,udp:3478,tcp:5349,udp:$TURN_PORTS" --description "rtc-yolo: coturn" || true
fi

# Secrets: made once (random), readable by the VM's service account only.
SERVICE_ACCOUNT=$(gc compute project-info describe --format='value(defaultServiceAccount)')
ensure_secret() {
  if ! gc secrets describe "$1" >/dev/null 2>&1; then
    head -c 24 /dev/urandom | base64 | tr -d '/+=' | gc secrets create "$1" --data-file=-
  fi
  gc secrets add-iam-policy-binding "$1" --member "serviceAccount:$SERVICE_ACCOUNT" \
    --role roles/secretmanager.secretAccessor >/dev/null
}
ensure_secret rtc-operator-token
if [ "$TURN" = yes ]; then ensure_secret rtc-turn-secret; fi
if gc secrets describe rtc-publish-token >/dev/null 2>&1; then ensure_secret rtc-publish-token; fi

# Container-Optimized OS: Docker is there; startup.sh (re)starts the containers at boot,
# reading its settings from the instance metadata set here.
gc compute instances create "$NAME" --zone "$ZONE" --machine-type "$MACHINE" \
  --image-family cos-stable --image-project cos-cloud --boot-disk-size 20GB \
  --address "$ADDRESS" --tags "$NAME" --scopes default,cloud-platform \
  --metadata-from-file startup-script="$HERE/startup.sh" \
  --metadata "rtc-image=$IMAGE,rtc-udp-ports=$UDP_PORTS,rtc-domain=$DOMAIN,rtc-turn=$TURN,rtc-turn-ports=$TURN_PORTS"

echo "VM $NAME at $ADDRESS"
if [ -n "$DOMAIN" ]; then echo "point $DOMAIN at $ADDRESS, then open https://$DOMAIN"; else echo "http://$ADDRESS:8080"; fi
if [ "$TURN" = yes ]; then echo "TURN: turn:${DOMAIN:-$ADDRESS}:3478 (credentials from GET /ice-servers)"; fi
