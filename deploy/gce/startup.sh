#!/bin/bash
# GCE startup script (Container-Optimized OS, runs as root at every boot): pull the image
# and run it with host networking; Caddy for TLS and coturn when the metadata asks.
# Roll out a new image: set the rtc-image metadata, then rerun this script
# (sudo google_metadata_script_runner startup) or reset the VM. deploy/gce/rollout.sh does it.
set -euo pipefail

md() { curl -fsS -H 'Metadata-Flavor: Google' "http://metadata.google.internal/computeMetadata/v1/$1"; }
attr() { md "instance/attributes/$1" 2>/dev/null || printf '%s' "${2:-}"; }

IMAGE=$(attr rtc-image)
UDP_PORTS=$(attr rtc-udp-ports 40000-40100)
DOMAIN=$(attr rtc-domain)
TURN=$(attr rtc-turn no)
TURN_PORTS=$(attr rtc-turn-ports 49160-49200)
TURN_PASSWORD=$(attr rtc-turn-password)
PRIVATE_IP=$(md instance/network-interfaces/0/ip)
PUBLIC_IP=$(md instance/network-interfaces/0/access-configs/0/external-ip)

# COS keeps / read-only: docker's credential config goes under a writable HOME.
export HOME=/var/lib/rtc-yolo
mkdir -p "$HOME" /var/lib/caddy
docker-credential-gcr configure-docker --registries="${IMAGE%%/*}"
docker pull "$IMAGE"
docker rm -f rtc-yolo caddy coturn >/dev/null 2>&1 || true

# Behind Caddy the server needs loopback only; without a domain it serves 8080 itself.
HTTP_HOST=0.0.0.0
if [ -n "$DOMAIN" ]; then HTTP_HOST=127.0.0.1; fi

# Host candidates on the private address, advertised as the external one (1:1 NAT),
# on ports the firewall rule opens. docker stop gives the app 10 s to close sessions.
docker run -d --name rtc-yolo --restart unless-stopped --network host --stop-timeout 10 \
  -e PORT=8080 -e RTC_HOST="$HTTP_HOST" \
  -e RTC_ICE_ADDRESSES="$PRIVATE_IP" -e RTC_PUBLIC_ADDRESS="$PUBLIC_IP" \
  -e RTC_UDP_PORTS="$UDP_PORTS" \
  "$IMAGE"

if [ -n "$DOMAIN" ]; then
  docker run -d --name caddy --restart unless-stopped --network host \
    -v /var/lib/caddy:/data \
    caddy:2 caddy reverse-proxy --from "$DOMAIN" --to 127.0.0.1:8080
fi

# coturn is for browsers whose network blocks UDP to the VM: they relay over TCP 3478
# (or TLS 5349). The server itself needs no TURN here: its UDP ports are open.
if [ "$TURN" = yes ]; then
  docker run -d --name coturn --restart unless-stopped --network host \
    coturn/coturn:4.6 -n --log-file=stdout --fingerprint --lt-cred-mech \
    --user="rtc:$TURN_PASSWORD" --realm="${DOMAIN:-rtc-yolo}" \
    --listening-port=3478 --external-ip="$PUBLIC_IP/$PRIVATE_IP" \
    --min-port="${TURN_PORTS%-*}" --max-port="${TURN_PORTS#*-}" \
    --no-cli --no-multicast-peers --denied-peer-ip=0.0.0.0-0.255.255.255
fi
