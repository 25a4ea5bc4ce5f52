#!/usr/bin/env bash
# Start-up through the HSM against the file keyring, same run (issue 22, docs/benchmarks.md):
# a store of N subjects (default 1,000,000) is opened REPS times with its file keyring and REPS
# times with the same keys sealed by a SoftHSM2 key (alternating, one process: pvbench custody).
# Needs softhsm2 and release builds of profilectl and pvbench.
#   bench/hsm-startup.sh [N] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
reps=${2:-20}
bin=${BIN:-.build/release}
module=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[ -x "$bin/profilectl" ] && [ -x "$bin/pvbench" ] || { echo "build first: swift build -c release --product profilectl && swift build -c release --product pvbench" >&2; exit 1; }
command -v softhsm2-util >/dev/null || { echo "softhsm2 is not installed" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/pv-hsm-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" > "$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
softhsm2-util --init-token --free --label bench --so-pin 87654321 --pin 12345678 >/dev/null
( umask 077; printf '12345678\n' > "$work/pin" )
uri="pkcs11:token=bench;object=pv-seal?module-path=$module&pin-source=file:$work/pin"

"$bin/profilectl" keys generate --out "$work/keyring.json" >/dev/null
"$bin/pvbench" gen "$n" "$work/profiles.csv" >/dev/null
"$bin/pvbench" vault "$work/profiles.csv" "$work/store.sqlite" policies "$work/keyring.json" >&2
# The sealing key (with a throwaway sealed keyring), then the same keyring sealed under it.
"$bin/profilectl" keys generate --hsm "$uri" --out "$work/throwaway.json" >/dev/null
cp -p "$work/keyring.json" "$work/sealed.json"
"$bin/profilectl" keys seal --hsm "$uri" --store "$work/store.sqlite" --keys "$work/sealed.json" --policy policies --role privacy_officer >/dev/null
"$bin/pvbench" custody "$work/store.sqlite" policies "$work/keyring.json" "$work/sealed.json" "$uri" "$reps"
