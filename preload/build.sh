#!/usr/bin/env bash
# Builds the interposer into preload/build/:
#   libwrapguard-x86_64.so   with gcc on x86_64 (or x86_64-linux-gnu-gcc elsewhere)
#   libwrapguard-aarch64.so  with aarch64-linux-gnu-gcc (or gcc on aarch64); skipped if absent
#   protocol_test            the protocol/config unit-test binary, for this machine
# Each output is written to a temporary name and renamed, so concurrent builds never expose a
# half-written library. Needs only a C compiler; links only libc, libdl and libpthread.
set -euo pipefail
cd "$(dirname "$0")"

out=build
mkdir -p "$out"
srcs=(*.c)
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
