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

# Fuzzing (issue 9): every decoder under AFL for KA_FUZZ_SECONDS each (CI: 30), fuzz/README.md.
# Property-based runs of the same targets are part of the xunit suite above on every run.
if [ -n "${KA_FUZZ_SECONDS:-}" ] || [ -n "${CI:-}" ]; then
  set +e
  fuzz/run --seconds "${KA_FUZZ_SECONDS:-30}"
  rc=$?
  set -e
  case $rc in
    0) ;;
    77) echo "test.sh: AFL fuzzing SKIPPED (reason above)" ;;
    *) echo "test.sh: AFL fuzzing FAILED ($rc)"; exit $rc ;;
  esac
else
  echo "test.sh: AFL fuzzing not run (KA_FUZZ_SECONDS=30 ./test.sh runs it; CI does)"
fi
