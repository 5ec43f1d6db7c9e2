#!/usr/bin/env bash
# Compile the JDK-only Java producer and run it against REDIS_URL / STREAM_PREFIX.
#   REDIS_URL      default redis://127.0.0.1:6380 (the Redis `make run` starts)
#   STREAM_PREFIX  default streamshop
#   OUT_DIR        where the classes go, default examples/java-producer/out
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT_DIR:-$here/out}"
command -v javac >/dev/null || { echo "javac not found: install a JDK 17+" >&2; exit 1; }
mkdir -p "$out"
javac --release 17 -encoding UTF-8 -Xlint:all -Werror -d "$out" $(find "$here/src" -name '*.java')
exec java -cp "$out" dev.streamshop.producer.Producer "${REDIS_URL:-redis://127.0.0.1:6380}" "${STREAM_PREFIX:-streamshop}"
