#!/usr/bin/env bash
# The test command: the whole xunit suite (unit, hostile input, loopback integration with real
# sockets, files and loop devices), then the 4-node virtual-cluster smoke test when it can run.
# Tests that need root, loop devices or network namespaces say why when they skip.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

dotnet test tests/KaDeploy.Tests/KaDeploy.Tests.csproj -c Release --nologo \
  --blame-hang-timeout 10m --logger "console;verbosity=normal" "$@" | grep -Ev '^\s*Passed [A-Za-z]' || exit "${PIPESTATUS[0]}"

if [ "${KA_SKIP_AOT:-0}" = 1 ]; then
  echo "test.sh: NativeAOT check SKIPPED (KA_SKIP_AOT=1)"
else
  tests/aot/check
fi

if [ -x testbed/ci-smoke ]; then
  set +e
  testbed/ci-smoke
  rc=$?
  set -e
  case $rc in
    0) ;;
    77) echo "test.sh: virtual-cluster smoke test SKIPPED (reason above)" ;;
    *) echo "test.sh: virtual-cluster smoke test FAILED ($rc)"; exit $rc ;;
  esac
fi

# The Debian package: built from the repository, installed with dpkg into a clean root, `ka-deploy demo` run
# there, purged without leftovers (root only; it needs the NativeAOT build, so KA_SKIP_AOT=1 skips it too).
if [ "${KA_SKIP_AOT:-0}" = 1 ]; then
  echo "test.sh: Debian package test SKIPPED (KA_SKIP_AOT=1)"
else
  set +e; packaging/test-deb; rc=$?; set -e
  case $rc in
    0) ;;
    77) echo "test.sh: Debian package test SKIPPED (reason above)" ;;
    *) echo "test.sh: Debian package test FAILED ($rc)"; exit $rc ;;
  esac
fi
