#!/usr/bin/env bash
# Builds the interposer into preload/build/:
#   libwrapguard-x86_64.so   with gcc on x86_64 (or x86_64-linux-gnu-gcc elsewhere)
#   libwrapguard-aarch64.so  with aarch64-linux-gnu-gcc (or gcc on aarch64); skipped if absent
#   protocol_test            the protocol/config unit-test binary, for this machine
#   probe-<arch>             wrapguard-probe (probe.c, not part of the library), the program
#                            selftest and doctor run under the interposer, per architecture
#   supervisor-<arch>        wrapguard-supervisor (supervisor/*.c with the pure protocol.c,
#                            config.c, sockaddr.c), the seccomp launcher `run` starts every
#                            program under, per architecture
#   embedded.json            the libraries, probes and supervisors as base64 per architecture,
#   embedded.ts              and the module that names them, imported by cli/run.ts,
#                            cli/selftest.ts and cli/doctor.ts so that `deno run` from source and
#                            `deno compile` both carry them
# Each output is written to a temporary name and renamed, so concurrent builds never expose a
# half-written library. Needs only a C compiler; links only libc, libdl and libpthread.
set -euo pipefail
cd "$(dirname "$0")"

out=${WRAPGUARD_PRELOAD_OUT:-build}
mkdir -p "$out"
srcs=()
for f in *.c; do [ "$f" = probe.c ] || srcs+=("$f"); done
cflags=(-std=gnu11 -O2 -fPIC -Wall -Wextra -Werror -fvisibility=hidden -fno-strict-aliasing)
ldflags=(-shared -Wl,--no-undefined -Wl,-soname,libwrapguard.so -Wl,-z,relro -Wl,-z,now)
libs=(-ldl -lpthread)

native=$(uname -m)
case "$native" in
  x86_64) cc_x86_64=gcc cc_aarch64=aarch64-linux-gnu-gcc ;;
  aarch64) cc_x86_64=x86_64-linux-gnu-gcc cc_aarch64=gcc ;;
  *) cc_x86_64=x86_64-linux-gnu-gcc cc_aarch64=aarch64-linux-gnu-gcc ;;
esac

# install(tmp, final): atomic replace.
install_file() { mv -f "$1" "$2"; }

build_lib() {
  local cc=$1 arch=$2
  if ! command -v "$cc" >/dev/null 2>&1; then
    echo "preload: $cc not found, skipping libwrapguard-$arch.so"
    return 0
  fi
  local tmp
  tmp=$(mktemp "$out/.libwrapguard-$arch.XXXXXX")
  if ! "$cc" "${cflags[@]}" "${ldflags[@]}" -o "$tmp" "${srcs[@]}" "${libs[@]}"; then
    rm -f "$tmp"
    return 1
  fi
  install_file "$tmp" "$out/libwrapguard-$arch.so"
  echo "preload: built $out/libwrapguard-$arch.so"
}

build_lib "$cc_x86_64" x86_64
build_lib "$cc_aarch64" aarch64

build_probe() {
  local cc=$1 arch=$2
  command -v "$cc" >/dev/null 2>&1 || return 0
  local tmp
  tmp=$(mktemp "$out/.probe-$arch.XXXXXX")
  if ! "$cc" -std=gnu11 -O2 -s -Wall -Wextra -Werror -o "$tmp" probe.c; then
    rm -f "$tmp"
    return 1
  fi
  install_file "$tmp" "$out/probe-$arch"
  echo "preload: built $out/probe-$arch"
}

build_probe "$cc_x86_64" x86_64
build_probe "$cc_aarch64" aarch64

build_supervisor() {
  local cc=$1 arch=$2
  command -v "$cc" >/dev/null 2>&1 || return 0
  local tmp
  tmp=$(mktemp "$out/.supervisor-$arch.XXXXXX")
  if ! "$cc" -std=gnu11 -O2 -s -Wall -Wextra -Werror -fno-strict-aliasing -I. -o "$tmp" \
    supervisor/*.c protocol.c config.c sockaddr.c -lpthread; then
    rm -f "$tmp"
    return 1
  fi
  install_file "$tmp" "$out/supervisor-$arch"
  echo "preload: built $out/supervisor-$arch"
}

build_supervisor "$cc_x86_64" x86_64
build_supervisor "$cc_aarch64" aarch64

# The unit-test binary links the pure parts (protocol, config, sockaddr) without any hook.
native_cc=gcc
command -v "$native_cc" >/dev/null 2>&1 || native_cc=cc
tmp=$(mktemp "$out/.protocol_test.XXXXXX")
if ! "$native_cc" "${cflags[@]}" -Wno-unused-function -I. -o "$tmp" test/protocol_test.c \
  protocol.c config.c sockaddr.c; then
  rm -f "$tmp"
  exit 1
fi
install_file "$tmp" "$out/protocol_test"
echo "preload: built $out/protocol_test"

# The libraries as base64 in a JSON module, and the TypeScript module that names them: cli/run.ts
# imports it statically, so the bytes travel with the program (deno compile bundles every static
# import, JSON modules too) and need no file next to it. JSON, not string literals in the
# TypeScript module itself: Deno loads the same 640 KB of base64 as JSON in about a quarter of
# the time (7 against 23-30 ms, docs/performance.md "Cold start"), and it is on every start's path.
json_table() { # NAME PREFIX [SUFFIX]: "NAME": {"<arch>": "<base64 of PREFIX<arch>SUFFIX>", ...}
  local name=$1 prefix=$2 suffix=${3:-} sep=""
  printf '  "%s": {' "$name"
  for arch in x86_64 aarch64; do
    if [ -f "$out/$prefix$arch$suffix" ]; then
      printf '%s\n    "%s": "%s"' "$sep" "$arch" "$(base64 -w0 "$out/$prefix$arch$suffix")"
      sep=","
    fi
  done
  printf '\n  }'
}
tmp=$(mktemp "$out/.embedded.XXXXXX")
{
  echo "{"
  json_table libraries libwrapguard- .so
  echo ","
  json_table probes probe-
  echo ","
  json_table supervisors supervisor-
  echo ""
  echo "}"
} >"$tmp"
chmod 644 "$tmp"
install_file "$tmp" "$out/embedded.json"
tmp=$(mktemp "$out/.embedded.XXXXXX")
cat >"$tmp" <<'TS'
// Generated by preload/build.sh: do not edit. The bytes are in embedded.json (why JSON: build.sh).
import embedded from "./embedded.json" with { type: "json" };
/** The interposer for each architecture (Deno.build.arch), as base64. */
export const libraries: Readonly<Record<string, string>> = embedded.libraries;
/** wrapguard-probe (preload/probe.c) for each architecture, as base64. */
export const probes: Readonly<Record<string, string>> = embedded.probes;
/** wrapguard-supervisor (preload/supervisor/) for each architecture, as base64. */
export const supervisors: Readonly<Record<string, string>> = embedded.supervisors;
TS
chmod 644 "$tmp"
install_file "$tmp" "$out/embedded.ts"
echo "preload: built $out/embedded.ts and embedded.json"
