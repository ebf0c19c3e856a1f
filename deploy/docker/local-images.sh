#!/usr/bin/env bash
# Build every image the compose stack needs on a machine without Docker Hub (CI, air-gapped
# hosts), from Debian's own packages:
#   tensorgate-local/debian:bookworm    debootstrap minbase + python3.11/venv (python as `python`)
#   tensorgate-local/redis:7            Debian's redis-server on it (Dockerfile.redis)
#   tensorgate-local/prometheus:2       Debian's prometheus on it (Dockerfile.prometheus)
#   tensorgate:cpu                      deploy/docker/Dockerfile with PYTHON_IMAGE=the base above
# and print the .env lines that point docker-compose.yml at them. Grafana has no Debian package:
# it is left out (run compose with the services you need, or pull grafana/grafana elsewhere).
#
#   deploy/docker/local-images.sh [--mirror URL] [--pip-cert FILE] [--image NAME] [--rebuild-base]
#
# --mirror      Debian mirror for debootstrap (default: the first one apt uses on this host)
# --pip-cert    CA bundle pip trusts inside the build, passed as a BuildKit secret (default:
#               the `cert` of `pip config list`, if any; a TLS-inspecting proxy needs it)
# --image       tag of the serving image (default tensorgate:cpu)
# --rebuild-base  debootstrap again even if the base image exists
# Needs root (debootstrap), docker with BuildKit (Docker 23+, or 20.10 with DOCKER_BUILDKIT=1)
# and apt-get reachable with host networking.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE=tensorgate-local/debian:bookworm
REDIS=tensorgate-local/redis:7
PROMETHEUS=tensorgate-local/prometheus:2
IMAGE=tensorgate:cpu
MIRROR=""
PIP_CERT_FILE=""
REBUILD=0
while (($#)); do
    case "$1" in
        --mirror) MIRROR=$2; shift 2 ;;
        --pip-cert) PIP_CERT_FILE=$2; shift 2 ;;
        --image) IMAGE=$2; shift 2 ;;
        --rebuild-base) REBUILD=1; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

# A docker client that builds with BuildKit: a static client without the buildx plugin cannot,
# Debian's docker.io client (20.10) can with DOCKER_BUILDKIT=1.
DOCKER=${DOCKER:-docker}
if ! "$DOCKER" buildx version >/dev/null 2>&1; then
    for candidate in /usr/bin/docker /usr/local/bin/docker; do
        if [[ -x $candidate ]] && "$candidate" version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then
            DOCKER=$candidate; break
        fi
    done
fi
export DOCKER_BUILDKIT=1

if [[ -z $MIRROR ]]; then
    # The first Debian archive apt uses (not -security, not a third-party repository).
    MIRROR=$(grep -rhoE '^(URIs:|deb) +\S+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | awk '{print $NF}' | grep -E '/debian/?$' | head -1 || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
if [[ -z $PIP_CERT_FILE ]] && command -v pip >/dev/null; then
    PIP_CERT_FILE=$(pip config list 2>/dev/null | sed -nE "s/^[^=]*\.cert='(.*)'$/\1/p" | head -1 || true)
fi

now() { date +%s%N; }
step() { local ms=$((($(now) - $2) / 1000000)); printf '%-60s %d.%03ds\n' "$1" $((ms / 1000)) $((ms % 1000)); }

if ((REBUILD)) || ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    t=$(now)
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    if ! debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1; then
        tail -20 "$rootfs.log" >&2
        echo "debootstrap from $MIRROR failed" >&2
        exit 1
    fi
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$DOCKER" import -c 'CMD ["bash"]' - "$BASE" >/dev/null
    step "debootstrap + import $BASE" "$t"
fi

t=$(now)
"$DOCKER" build -q --network host -f deploy/docker/Dockerfile.redis --build-arg DEBIAN_IMAGE="$BASE" \
    -t "$REDIS" deploy/docker >/dev/null &
redis_pid=$!
"$DOCKER" build -q --network host -f deploy/docker/Dockerfile.prometheus --build-arg DEBIAN_IMAGE="$BASE" \
    -t "$PROMETHEUS" deploy/docker >/dev/null &
prometheus_pid=$!
secret=()
if [[ -n $PIP_CERT_FILE && -s $PIP_CERT_FILE ]]; then secret=(--secret "id=pip_cert,src=$PIP_CERT_FILE"); fi
"$DOCKER" build -q --network host -f deploy/docker/Dockerfile --build-arg PYTHON_IMAGE="$BASE" \
    "${secret[@]}" -t "$IMAGE" . >/dev/null
wait "$redis_pid" "$prometheus_pid"
step "build $REDIS, $PROMETHEUS, $IMAGE" "$t"

cat <<ENV
# .env lines for these images:
TENSORGATE_IMAGE=$IMAGE
TENSORGATE_PYTHON_IMAGE=$BASE
REDIS_IMAGE=$REDIS
PROMETHEUS_IMAGE=$PROMETHEUS
ENV
