#!/usr/bin/env bash
# Installs what efl's native transport builds with (gRPC's C core and its headers, pkg-config) from Debian's
# packages, when they are missing and this shell may install packages. Never fails: without them efl runs on
# its Python transport.
if pkg-config --exists grpc 2>/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "native transport: libgrpc-dev is missing and cannot be installed here; efl uses its Python transport"
  exit 0
fi
echo "native transport: installing libgrpc-dev and pkg-config"
# Bounded: an unreachable package mirror must not stall the build.
if ! { timeout 300 apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq libgrpc-dev pkg-config; } \
    >/tmp/efl-apt.log 2>&1; then
  echo "native transport: apt-get failed (log: /tmp/efl-apt.log); efl uses its Python transport"
fi
exit 0
