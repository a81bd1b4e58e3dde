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

# Repair on the virtual cluster (issue 8): kill, stop, cut off nodes mid-stream (a few minutes).
if [ -x testbed/repair-e2e ] && [ "${KA_SKIP_REPAIR_E2E:-0}" != 1 ]; then
  set +e
  testbed/repair-e2e
  rc=$?
  set -e
  case $rc in
    0) ;;
    77) echo "test.sh: virtual-cluster repair test SKIPPED (reason above)" ;;
    *) echo "test.sh: virtual-cluster repair test FAILED ($rc)"; exit $rc ;;
  esac
fi
