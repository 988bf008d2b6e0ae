#!/usr/bin/env bash
# The container test (`make test-containers`; .ci/run after `make test`). Needs root on a Debian
# bookworm machine of the dev kind (no container registry reachable, PyPI through the machine's pip
# configuration). Steps, each timed:
#   1. the engine: Debian's docker.io (and mmdebstrap) installed with apt when missing, and a private
#      dockerd started by hand (own data root and socket under $HLLM_CT_WORK; --iptables=false
#      --bridge=none, overlay2; containers use the host network), stopped and deleted at the end;
#   2. a STAND-IN base image: Debian bookworm + python3 + python3-venv made with mmdebstrap from the
#      machine's apt sources, tagged hllm-standin-python:3.11-bookworm (the official
#      python:3.11-slim-bookworm cannot be pulled here; the Dockerfiles take the base as the
#      PYTHON_IMAGE build argument);
#   3. the cpu and serving images built with BuildKit from a copy of the tracked files (the build context a clean
#      checkout gives), the machine's pip configuration and CA certificates passed in
#      Dockerfiles/build-extra/ of that copy (the torch CPU wheel index is not reachable here);
#   4. pytest over tests/containers/ (DOCKER_HOST set for the docker SDK): test_images.py, the serving
#      image run as the manifests run it, the cpu image's entrypoint, user and item cache;
#      test_pipeline_in_containers.py, the tiny pipeline with KFP's local DockerRunner in the cpu image
#      compared with a SubprocessRunner run (pipeline digest); test_gpu_image.py, Dockerfile.gpu's pip
#      layers resolved by pip for CPython 3.12 without CUDA (PyPI metadata, about a minute);
#   5. clean-up: the images, the stand-in base, the build context and the engine's data are removed;
#      the peak disk use of the test is printed (sampled every 2 s).
# Environment: HLLM_CT_KEEP=1 keeps the images and the daemon (debugging); HLLM_CT_WORK (default a
# new dir under /var/tmp); PYTHON (default .venv/bin/python, made by `make install`); HLLM_CT_NEED_MIB
# (default 8000: the free disk the test asks for before it starts, or it stops at once saying so).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
PY=${PYTHON:-$REPO/.venv/bin/python}
WORK=${HLLM_CT_WORK:-$(mktemp -d /var/tmp/hllm-ct.XXXXXX)}
mkdir -p "$WORK"
SOCK=$WORK/docker.sock
export DOCKER_HOST=unix://$SOCK
BASE=hllm-standin-python:3.11-bookworm
CPU_IMAGE=hllm-creator-cpu:ct
SERVING_IMAGE=hllm-creator-serving:ct
T0=$(date +%s)
log() { echo "[containers $(( $(date +%s) - T0 ))s] $*"; }

# -- disk: peak use of the root filesystem while the test runs -----------------------------------
used_kb() { df --output=used -k "$(dirname "$WORK")" | tail -1 | tr -d ' '; }  # its parent: $WORK is gone at the end
DISK0=$(used_kb)
# what the test needs free: its measured peak (BuildKit, Dec 7: see the README) and a margin. Less
# than that fails here, at once, saying so, not with "no space left on device" minutes into a build.
NEED_MIB=${HLLM_CT_NEED_MIB:-8000}
FREE_MIB=$(( $(df --output=avail -k "$(dirname "$WORK")" | tail -1 | tr -d ' ') / 1024 ))
if [ "$FREE_MIB" -lt "$NEED_MIB" ]; then
  echo "tests/containers/run.sh: $FREE_MIB MiB free on $(dirname "$WORK"), the test needs about $NEED_MIB MiB" \
       "(HLLM_CT_WORK puts its work dir on another disk; HLLM_CT_NEED_MIB overrides the figure)" >&2
  rm -rf "$WORK"; exit 2
fi
( peak=$DISK0; while sleep 2; do u=$(used_kb); [ "$u" -gt "$peak" ] && peak=$u && echo "$peak" > "$WORK/peak_kb"; done ) &
SAMPLER=$!
echo "$DISK0" > "$WORK/peak_kb"

DOCKERD_PID=
cleanup() {
  rc=$?
  set +e
  if [ "${HLLM_CT_KEEP:-0}" != 1 ]; then
    if [ -n "$DOCKERD_PID" ]; then
      docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1
      docker rmi -f "$CPU_IMAGE" "$SERVING_IMAGE" "$BASE" >/dev/null 2>&1
      docker image prune -af >/dev/null 2>&1
      kill "$DOCKERD_PID" 2>/dev/null
      for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
    kill "$SAMPLER" 2>/dev/null
    peak=$(cat "$WORK/peak_kb")
    # whatever dockerd left mounted under the work dir (overlays, the netns at exec/netns/default:
    # `umount -R exec` missed it, exec is no mount point itself), deepest first
    findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$WORK"
    log "cleaned up: images, stand-in base, daemon data, build context removed"
    log "peak disk use of the test: $(( (peak - DISK0) / 1024 )) MiB above the $(( DISK0 / 1024 )) MiB used at its start; now $(( ($(used_kb) - DISK0) / 1024 )) MiB"
  else
    kill "$SAMPLER" 2>/dev/null
    log "HLLM_CT_KEEP=1: daemon (pid $DOCKERD_PID, DOCKER_HOST=$DOCKER_HOST) and images kept in $WORK"
  fi
  log "exit $rc"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- 1. the engine --------------------------------------------------------------------------------
if [ "$(id -u)" != 0 ]; then echo "tests/containers/run.sh: needs root (installs and starts dockerd)" >&2; exit 2; fi
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$WORK/apt.log" 2>&1 \
    || { apt-get update -q >>"$WORK/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >>"$WORK/apt.log" 2>&1; } \
    || { tail -20 "$WORK/apt.log"; exit 2; }
fi
DOCKER=/usr/bin/docker; [ -x "$DOCKER" ] || DOCKER=$(command -v docker)
docker() { "$DOCKER" "$@"; }
log "starting dockerd ($("$DOCKER" --version)) in $WORK"
if [ "${HLLM_CT_KEEP:-0}" = 1 ] && [ -f "$WORK/dockerd.pid" ] && docker info >/dev/null 2>&1; then
  DOCKERD_PID=$(cat "$WORK/dockerd.pid")   # a kept daemon (HLLM_CT_KEEP=1 HLLM_CT_WORK=same dir): reuse it
else
  dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" -H "$DOCKER_HOST" \
    --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
fi
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; kill -0 $DOCKERD_PID || break; sleep 1; done
docker info >/dev/null 2>&1 || { tail -30 "$WORK/dockerd.log"; echo "dockerd did not start" >&2; exit 2; }

# -- 2. the stand-in base ----------------------------------------------------------------------------
t=$(date +%s)
if docker image inspect "$BASE" >/dev/null 2>&1; then log "stand-in base $BASE kept from an earlier run"; else
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$WORK/base.tar" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >"$WORK/mmdebstrap.log" 2>&1 \
  || { tail -30 "$WORK/mmdebstrap.log"; exit 2; }
docker import "$WORK/base.tar" "$BASE" >/dev/null
rm -f "$WORK/base.tar"
log "stand-in base $BASE made in $(( $(date +%s) - t ))s: $(docker image inspect -f '{{.Size}}' "$BASE" | awk '{printf "%.0f MB", $1/1e6}')"
fi

# -- 3. the images, from the tracked files --------------------------------------------------------
CTX=$WORK/context
rm -rf "$CTX"; mkdir -p "$CTX"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - 2>/dev/null | tar -xf - -C "$CTX"
EXTRA=$CTX/Dockerfiles/build-extra
mkdir -p "$EXTRA/wheels"
cat /etc/ssl/certs/ca-certificates.crt > "$EXTRA/ca.crt"
{
  echo "[global]"
  echo "cert = /tmp/build-extra/ca.crt"
  echo "find-links = /tmp/build-extra/wheels"
  echo "retries = 1"
  echo "timeout = 120"
} > "$EXTRA/pip.conf"
# the torch CPU wheel (its hash is the lock's) where this machine keeps it: /opt/wheels or pip's find-links
for d in /opt/wheels ${PIP_FIND_LINKS:-}; do
  [ -d "$d" ] && find "$d" -maxdepth 1 -name 'torch-2.13.0+cpu-*.whl' -exec cp {} "$EXTRA/wheels/" \;
done
TORCH_INDEX=https://download.pytorch.org/whl/cpu
if ls "$EXTRA/wheels"/torch-* >/dev/null 2>&1; then TORCH_INDEX=; fi
INDEX=$("$PY" -m pip config get global.index-url 2>/dev/null || true); INDEX=${INDEX:-https://pypi.org/simple}
# BuildKit (the engine's own; no buildx needed with this CLI): it keeps each step's files where they were
# written, where the legacy builder commits every step through a tar stream into a second copy. The
# legacy builder's peak, the venv three times over during the runtime stage's COPY --from, ran a CI
# machine out of disk (Dec 7: "no space left on device" at 7.3 GiB above the start).
build() {  # build NAME TAG
  local t=$(date +%s)
  DOCKER_BUILDKIT=1 docker build --progress plain --network host -f "$CTX/Dockerfiles/Dockerfile.$1" -t "$2" \
    --build-arg PYTHON_IMAGE="$BASE" --build-arg PIP_INDEX_URL="$INDEX" --build-arg TORCH_INDEX_URL="$TORCH_INDEX" \
    "$CTX" >"$WORK/build-$1.log" 2>&1 || { tail -40 "$WORK/build-$1.log"; log "FAILED: docker build $1"; exit 1; }
  log "built $2 in $(( $(date +%s) - t ))s: $(docker image inspect -f '{{.Size}}' "$2" | awk '{printf "%.2f GB", $1/1e9}'); engine data $(data_mib) MiB"
}
data_mib() { du -sm "$WORK/data" 2>/dev/null | cut -f1; }
build cpu "$CPU_IMAGE"
build serving "$SERVING_IMAGE"   # its builder stage is the cpu image's, from the build cache
rm -rf "$CTX"
# the builder stages (a second venv) are only build cache now: freed before the checks run containers
docker builder prune -af >/dev/null
log "build cache pruned: engine data $(data_mib) MiB"

# -- 4. the checks -------------------------------------------------------------------------------------
t=$(date +%s)
HLLM_CONTAINER_TEST=1 HLLM_CT_DOCKER="$DOCKER" HLLM_CT_CPU_IMAGE="$CPU_IMAGE" HLLM_CT_SERVING_IMAGE="$SERVING_IMAGE" \
  "$PY" -m pytest -p no:randomly tests/containers -v -rP --durations=0
log "checks passed in $(( $(date +%s) - t ))s"
