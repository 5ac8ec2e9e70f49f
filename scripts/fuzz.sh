#!/usr/bin/env bash
# make fuzz (and make test's short run): every decoder that reads input from outside, under
# libFuzzer (swiftc -sanitize=fuzzer), for SECONDS each, from the committed seed corpus
# (Tests/Fuzz/corpus/TARGET) plus what earlier runs found (.build/fuzz/TARGET/corpus).
# A trap is a failure: the input that caused it is left in .build/fuzz/TARGET/ (crash-…); make
# it a regression test, fix, run again.
#   scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
out=$root/.build/fuzz
api="Sources/KemuAPI"
server="$api Sources/KemuStore/StoreError.swift Sources/KemuAPIServer/APIError.swift Sources/KemuAPIServer/Protobuf.swift Sources/KemuAPIServer/Protobuf+Messages.swift Sources/KemuAPIServer/Query.swift Sources/KemuAPIServer/ListPage.swift"
declare -A sources=(
    [json]=$api [selectors]=$api [patch]=$api [meshpolicy]=$api
    [protobuf]=$server [query]=$server
    [dns]="Sources/KemuIP Sources/KemuDNS/DNSMessage.swift"
    [nflog]="Sources/KemuIP Sources/KemuPolicy/NFLog.swift"
    [tunnelwire]="Sources/KemuMesh/TunnelWire.swift"
)
# Package modules a target's sources import: linked from make build's debug objects (not
# instrumented: coverage guides by kemu's own code) with those they need in turn.
declare -A packages=(
    [tunnelwire]="NIOCore NIOHPACK NIOHTTP1 CNIOLLHTTP NIOConcurrencyHelpers _NIODataStructures _NIOBase64 CNIOAtomics CNIOLinux
                  CNIOPosix CNIODarwin CNIOWindows CNIOWASI Atomics _AtomicsShims DequeModule InternalCollectionsUtilities ContainersPreview"
)
# The package's C modules, for Swift modules that were built importing them.
modulemaps() {
    find "$root/.build/debug/" -maxdepth 2 -name module.modulemap
    find "$root/.build/checkouts" -path '*/include/module.modulemap'
}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json selectors patch protobuf query dns nflog meshpolicy tunnelwire)
for target in "${targets[@]}"; do
    [ -n "${sources[$target]:-}" ] || { echo "fuzz: no target $target (one of: ${!sources[*]})" >&2; exit 2; }
    dir=$out/$target
    rm -rf "$dir/src"
    mkdir -p "$dir/src" "$dir/corpus"
    # One module of the sources the decoder needs (kemu's own imports dropped) and the harness.
    for s in ${sources[$target]}; do
        find "$root/$s" -name '*.swift' | while read -r f; do sed '/^import Kemu/d' "$f" > "$dir/src/$(basename "$f")"; done
    done
    linked=()
    if [ -n "${packages[$target]:-}" ]; then
        [ -d "$root/.build/debug/Modules" ] || { echo "fuzz: $target links the debug build's modules: run make build first" >&2; exit 2; }
        linked+=(-I "$root/.build/debug/Modules")
        while read -r map; do linked+=(-Xcc "-fmodule-map-file=$map" -Xcc "-I$(dirname "$map")"); done < <(modulemaps)
        for module in ${packages[$target]}; do
            while IFS= read -r -d '' object; do linked+=("$object"); done < <(find "$root/.build/debug/$module.build" -name '*.o' -print0)
        done
    fi
    swiftc -O -sanitize=fuzzer -parse-as-library -module-name Fuzz "$dir"/src/*.swift "$root/Tests/Fuzz/$target.swift" ${linked[@]+"${linked[@]}"} -o "$dir/fuzz"
    if ! "$dir/fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$dir/" "$dir/corpus" "$root/Tests/Fuzz/corpus/$target" > "$dir/log" 2>&1; then
        tail -40 "$dir/log"
        echo "fuzz: $target FAILED; the input is in $dir/ (crash-*, timeout-* or oom-*)" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz: $target ok, $runs inputs in ${seconds}s, corpus $(ls "$dir/corpus" | wc -l)"
done
