#!/usr/bin/env bash
# Fetch the libraries listed in VERSIONS from the npm registry (`npm pack`, the registry's
# own client), copy the listed files here (a licence as PACKAGE-LICENSE), then write
# SHA256SUMS, which the tests check the served files against. Needs npm only on the
# machine that refreshes: the files are committed, so users and CI never run this.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v npm >/dev/null || { echo "refresh.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
while read -r package version _licence files; do
  case "$package" in ''|'#'*) continue ;; esac
  (cd "$work" && npm pack --silent "$package@$version" >/dev/null)
  mkdir -p "$work/$package"
  tar xzf "$work/$package-$version.tgz" -C "$work/$package"
  for file in $files; do
    name=$(basename "$file")
    # Scripts keep their names; licences and notices get the package's name in front.
    case "$name" in *.js) ;; *) name="$package-$name" ;; esac
    cp "$work/$package/package/$file" "$here/$name"
  done
  echo "refresh.sh: $package $version" >&2
done < "$here/VERSIONS"
(cd "$here" && ls | grep -vxE "VERSIONS|refresh.sh|SHA256SUMS" | xargs sha256sum -- > SHA256SUMS)
