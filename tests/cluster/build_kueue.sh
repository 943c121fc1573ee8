#!/usr/bin/env bash
# Builds Kueue's controller manager from its Go module (sigs.k8s.io/kueue, version below; its go.mod has no
# replace directives, so `go install module@version` builds exactly the released module) into
# ${GODRUN_CACHE:-$HOME/.cache/godrun}/kueue-bin, with the release's CRDs (config/components/crd/bases of the
# same module) beside it in kueue-bin/crds/. A set and stamp of its own (hash of this script, lib.sh and the
# version): a no-op when current. Without Go it prints one line and exits 0 (the Kueue tests then skip),
# unless GODRUN_REQUIRE_CLUSTER=1, where it fails. `.builds.jsonl` records each build's seconds (cold = empty
# Go build cache), the figure for the Kueue build time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${GODRUN_CACHE:-$HOME/.cache/godrun}"
bin="$cache/kueue-bin"
binaries=(kueue)
kueue_module="sigs.k8s.io/kueue"
kueue_version="${GODRUN_KUEUE_VERSION:-v0.17.0}"

# shellcheck source=lib.sh
source "$here/lib.sh"

want="$( (cd "$here" && cat build_kueue.sh lib.sh && echo "$kueue_module@$kueue_version") | sha256sum | cut -d' ' -f1)"
begin_build kueue-bin

start=$(date +%s)
echo "kueue-bin: building $kueue_module $kueue_version into $bin (cold: tens of minutes)"
ldflags="-s -w -X $kueue_module/pkg/version.GitVersion=$kueue_version"
GOBIN="$tmp" go install -p "${GODRUN_BUILD_JOBS:-2}" -ldflags "$ldflags" "$kueue_module/cmd/kueue@$kueue_version"
seconds=$(($(date +%s) - start))

src="$(go mod download -json "$kueue_module@$kueue_version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
rm -rf "$bin/crds" && mkdir -p "$bin/crds"
cp "$src"/config/components/crd/bases/*.yaml "$bin/crds/"
chmod u+w "$bin"/crds/*.yaml
mv -f "$tmp/kueue" "$bin/kueue"
printf '{"seconds": %d, "cold": %s, "kueue": "%s", "finished": "%s"}\n' \
  "$seconds" "$cold" "$kueue_version" "$(date -u +%FT%TZ)" >>"$bin/.builds.jsonl"
echo "$want" >"$bin/.stamp"
echo "kueue-bin: built in ${seconds}s: $(du -sh "$bin/kueue" | cut -f1), $(ls "$bin/crds" | wc -l) CRDs"
