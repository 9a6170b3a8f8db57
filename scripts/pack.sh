#!/usr/bin/env bash
# Builds the npm tarballs into target/pack/: the main package and the
# platform package for this machine. The platform package carries the addon
# and the native runtime it loads (on Linux: libmlx with the libraries it
# needs, and OpenBLAS), found through the addon's rpath, so an install from
# the two tarballs needs no build, no Rust and no Python.
#
#   scripts/pack.sh              # release build, then pack
#   scripts/pack.sh --no-build   # pack the addon already built (as `npm test` does)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "${1:-}" == "--no-build" ]] || scripts/setup.sh

out=target/pack
rm -rf "$out" && mkdir -p "$out/stage"
version=$(node -p "require('./package.json').version")
platform=$(node -p "const a={x64:'x64',arm64:'arm64'}[process.arch]; process.platform==='linux' ? 'linux-'+a+'-gnu' : process.platform+'-'+a")
addon=mlx-serving.$platform.node
[[ -f $addon ]] || { echo "no $addon: build first" >&2; exit 1; }

# --- the platform package --------------------------------------------------
stage=$out/stage/$platform
mkdir -p "$stage"
cp "npm/$platform/package.json" "npm/$platform/README.md" "$stage/"
cp "$addon" "$stage/"
if [[ $(uname -s) == Linux ]]; then
  # Same layout as the project-local prefix: libmlx finds its BLAS/LAPACK
  # through its own rpath ($ORIGIN/../../mlx_cpu.libs).
  mkdir -p "$stage/runtime/mlx/lib" "$stage/runtime/mlx_cpu.libs" "$stage/runtime/lib"
  cp .mlx/mlx/lib/libmlx.so "$stage/runtime/mlx/lib/"
  cp .mlx/mlx_cpu.libs/* "$stage/runtime/mlx_cpu.libs/"
  # OpenBLAS (the addon links it directly) and what it needs beyond glibc.
  scripts/openblas_runtime.sh "$addon" "$stage/runtime/lib"
  node -e "
    const f='$stage/package.json', p=require('./'+f)
    p.files=[...p.files,'runtime/']
    require('fs').writeFileSync(f, JSON.stringify(p,null,2)+'\n')"
fi
(cd "$stage" && npm pack --silent --pack-destination "$OLDPWD/$out" >/dev/null)

# --- the main package ------------------------------------------------------
main=$out/stage/main
mkdir -p "$main"
cp -r package.json README.md index.js index.d.ts lib bin "$main/"
node -e "
  const f='$main/package.json', p=require('./'+f)
  delete p.devDependencies; delete p.scripts
  p.optionalDependencies={['mlx-serving-$platform']: '$version'}
  require('fs').writeFileSync(f, JSON.stringify(p,null,2)+'\n')"
(cd "$main" && npm pack --silent --pack-destination "$OLDPWD/$out" >/dev/null)

rm -rf "$out/stage"
for t in "$out"/*.tgz; do
  printf '%s\t%s\n' "$(du -h "$t" | cut -f1)" "$t"
done
