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
PRIVATE_IP=$(md instance/network-interfaces/0/ip)
PUBLIC_IP=$(md instance/network-interfaces/0/access-configs/0/external-ip)
PROJECT_ID=$(md project/project-id)

# A secret's latest version from Secret Manager, read with the VM's service account (it
# needs roles/secretmanager.secretAccessor on it: create-vm.sh grants it); empty when absent.
# Tokens never go through instance metadata, which every project viewer can read.
secret() {
  local token
  token=$(md instance/service-accounts/default/token | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p') || true
  { curl -fsS -H "Authorization: Bearer $token" \
      "https://secretmanager.googleapis.com/v1/projects/$PROJECT_ID/secrets/$1/versions/latest:access" 2>/dev/null \
      | sed -n 's/.*"data" *: *"\([^"]*\)".*/\1/p' | base64 -d; } || true
}
OPERATOR_TOKEN=$(secret rtc-operator-token)
PUBLISH_TOKEN=$(secret rtc-publish-token)
TURN_SECRET=""
if [ "$TURN" = yes ]; then
  TURN_SECRET=$(secret rtc-turn-secret)
  if [ -z "$TURN_SECRET" ]; then
    echo "rtc-turn=yes needs the secret rtc-turn-secret in Secret Manager (deploy/gce/create-vm.sh makes it)" >&2
    exit 1
  fi
fi
# Where this script keeps its files (COS keeps / read-only; /var/lib is writable).
STATE=${RTC_STATE_DIR:-/var/lib/rtc-yolo}

# COS keeps / read-only: docker's credential config goes under a writable HOME.
export HOME="$STATE"
mkdir -p "$STATE" "$STATE/caddy"
docker-credential-gcr configure-docker --registries="${IMAGE%%/*}"
docker pull "$IMAGE"
docker rm -f rtc-yolo caddy coturn >/dev/null 2>&1 || true

# The server's settings, in a file only root reads (the tokens and the TURN secret are in it).
umask 077
{
  echo "PORT=8080"
  # Host candidates on the private address, advertised as the external one (1:1 NAT), on
  # the ports the firewall rule opens.
  echo "RTC_ICE_ADDRESSES=$PRIVATE_IP"
  echo "RTC_PUBLIC_ADDRESS=$PUBLIC_IP"
  echo "RTC_UDP_PORTS=$UDP_PORTS"
  if [ -n "$DOMAIN" ]; then
    # Behind Caddy the server needs loopback only, and believes Caddy's X-Forwarded-*.
    echo "RTC_HOST=127.0.0.1"
    echo "RTC_TRUSTED_PROXIES=127.0.0.1/32"
    echo "RTC_PUBLIC_HOSTS=$DOMAIN"
  else
    echo "RTC_HOST=0.0.0.0"
    echo "RTC_PUBLIC_HOSTS=$PUBLIC_IP"
  fi
  # Operating (GET /sessions, other sessions, /streams) needs this token; without the
  # secret the operator API answers 401. Publishing needs a token only with rtc-publish-token.
  if [ -n "$OPERATOR_TOKEN" ]; then echo "RTC_OPERATOR_TOKEN=$OPERATOR_TOKEN"; fi
  if [ -n "$PUBLISH_TOKEN" ]; then echo "RTC_AUTH_TOKEN=$PUBLISH_TOKEN"; fi
  if [ "$TURN" = yes ]; then
    # The page (GET /ice-servers) and every server session get their own short-lived
    # credential for this VM's coturn (TURN REST API; coturn checks it with the same secret).
    TURN_HOST=${DOMAIN:-$PUBLIC_IP}
    echo "RTC_TURN_SECRET=$TURN_SECRET"
    echo "RTC_TURN_URLS=turn:$TURN_HOST:3478?transport=udp,turn:$TURN_HOST:3478?transport=tcp"
    echo "RTC_TURN_TTL=3600"
  fi
} > "$STATE/rtc.env"

# coturn's config: TURN REST credentials only (no static users), and no relaying into this
# VM's network: private ranges, loopback, link-local (the metadata server 169.254.169.254)
# and the like are denied as peers, except this VM's own private address (the server).
turnserver_conf() {
  cat <<CONF
listening-ip=$PRIVATE_IP
relay-ip=$PRIVATE_IP
listening-port=3478
min-port=${TURN_PORTS%-*}
max-port=${TURN_PORTS#*-}
external-ip=$PUBLIC_IP/$PRIVATE_IP
realm=${DOMAIN:-rtc-yolo}
use-auth-secret
static-auth-secret=$TURN_SECRET
fingerprint
no-cli
no-tls
no-dtls
no-multicast-peers
no-software-attribute
stale-nonce=600
user-quota=12
total-quota=1200
log-file=stdout
simple-log
denied-peer-ip=0.0.0.0-0.255.255.255
denied-peer-ip=10.0.0.0-10.255.255.255
denied-peer-ip=100.64.0.0-100.127.255.255
denied-peer-ip=127.0.0.0-127.255.255.255
denied-peer-ip=169.254.0.0-169.254.255.255
denied-peer-ip=172.16.0.0-172.31.255.255
denied-peer-ip=192.0.0.0-192.0.0.255
denied-peer-ip=192.168.0.0-192.168.255.255
denied-peer-ip=198.18.0.0-198.19.255.255
denied-peer-ip=224.0.0.0-255.255.255.255
denied-peer-ip=::1
denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
denied-peer-ip=fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff
allowed-peer-ip=$PRIVATE_IP
CONF
}

# The embedded store (SQLite: pull streams kept across restarts and image updates) on the boot
# disk; the image runs as uid 10001.
install -d -o 10001 -g 10001 "$STATE/data"
docker run -d --name rtc-yolo --restart unless-stopped --network host --stop-timeout 10 \
  -v "$STATE/data:/data" --env-file "$STATE/rtc.env" "$IMAGE"

if [ -n "$DOMAIN" ]; then
  docker run -d --name caddy --restart unless-stopped --network host \
    -v "$STATE/caddy:/data" \
    caddy:2 caddy reverse-proxy --from "$DOMAIN" --to 127.0.0.1:8080
fi

# coturn is for browsers whose network blocks UDP to the VM: they relay over TCP 3478.
if [ "$TURN" = yes ]; then
  turnserver_conf > "$STATE/turnserver.conf"
  chmod 0644 "$STATE/turnserver.conf"  # read by coturn's own (non-root) user in its image
  docker run -d --name coturn --restart unless-stopped --network host \
    -v "$STATE/turnserver.conf:/etc/coturn/turnserver.conf:ro" \
    coturn/coturn:4.6 -c /etc/coturn/turnserver.conf
fi
