#!/usr/bin/env bash
# Builds this capsule's module (see ../build.sh).
exec "$(dirname "$0")/../build.sh" "$(dirname "$0")"
