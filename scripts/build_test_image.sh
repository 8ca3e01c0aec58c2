#!/usr/bin/env bash
# Build the experiment image for tests with no registry: a Debian base from debootstrap
# (docker import) plus wheels downloaded on the host and installed offline.
# Cached by a content hash of its inputs: a second run with unchanged inputs does nothing.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TAG="${1:-llem-experiment:test}"
BASE_TAG="llem-base:bookworm"
BUILD="${LLEM_BUILD_DIR:-$REPO/build/image}"
PY="${PYTHON:-python3}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

cd "$REPO"
HASH=$(cat docker/Dockerfile docker/constraints-test.txt pyproject.toml \
       $(find llem_core -name '*.py' -o -name '*.txt' | sort) | sha256sum | cut -c1-16)
if [ "$(docker image inspect "$TAG" --format '{{ index .Config.Labels "llem.hash" }}' 2>/dev/null)" = "$HASH" ]; then
  echo "image $TAG is up to date ($HASH)"
  exit 0
fi

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  echo "building $BASE_TAG with debootstrap"
  rm -rf "$BUILD/rootfs"
  mkdir -p "$BUILD"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$BUILD/rootfs" "$MIRROR" > "$BUILD/debootstrap.log" 2>&1 \
    || { tail -20 "$BUILD/debootstrap.log"; exit 1; }
  rm -rf "$BUILD/rootfs/var/cache/apt/archives/"*.deb
  tar -C "$BUILD/rootfs" -c . | docker import - "$BASE_TAG"
  rm -rf "$BUILD/rootfs"
fi

echo "downloading wheels on the host"
CTX="$BUILD/context"
rm -rf "$CTX/wheels"
mkdir -p "$CTX/wheels"
"$PY" -m pip wheel --quiet -w "$CTX/wheels" -c docker/constraints-test.txt ".[pytorch]"
cp docker/Dockerfile "$CTX/Dockerfile"
docker build --quiet --build-arg BASE_IMAGE="$BASE_TAG" --build-arg PIP_OFFLINE=1 \
  --label "llem.hash=$HASH" -t "$TAG" "$CTX"
echo "built $TAG ($HASH)"
