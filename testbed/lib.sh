# Shared helpers for bench/cluster, testbed/ci-smoke (sourced, not run).
# Expects: ROOT (repository root), WORK (a private temp dir).

TB_PREFIX=${KDTB_PREFIX:-kdtb}  # several clusters side by side: KDTB_PREFIX=kdtbX
TB_SW=$TB_PREFIX-sw
host_ns()   { echo "$TB_PREFIX-h$1"; }
host_addr() { echo "198.18.0.$(($1 + 1))"; }
now()       { date +%s.%N; }
in_host()   { local i=$1; shift; ip netns exec "$(host_ns "$i")" "$@"; }

require_root_or_skip() {
    local who=$1
    if [[ $(id -u) -ne 0 ]]; then
        echo "$who: needs root (builds network namespaces for the virtual cluster); skipping" >&2
        exit 77
    fi
    if ! ip netns list >/dev/null 2>&1 || ! unshare --net true 2>/dev/null; then
        echo "$who: network namespaces unavailable on this machine; skipping" >&2
        exit 77
    fi
}

apt_need() { # cmd package...
    local cmd=$1; shift
    command -v "$cmd" >/dev/null && return 0
    echo "installing $* with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

# Kill every process still running in hosts h0..h$1 (all started by us: the
# namespaces are ours), by pid.
kill_hosts() {
    local n=$1 i pids
    for ((i = 0; i <= n; i++)); do
        [[ -f /run/$TB_PREFIX/$(host_ns "$i").owned ]] || continue
        pids=$(ip netns pids "$(host_ns "$i")" 2>/dev/null || true)
        [[ -n $pids ]] && kill $pids 2>/dev/null
    done
    sleep 0.2
    for ((i = 0; i <= n; i++)); do
        [[ -f /run/$TB_PREFIX/$(host_ns "$i").owned ]] || continue
        pids=$(ip netns pids "$(host_ns "$i")" 2>/dev/null || true)
        [[ -n $pids ]] && kill -9 $pids 2>/dev/null
    done
    return 0
}

# Wait until host i listens on TCP port p (bounded: 10 s).
wait_listen() {
    local i=$1 p=$2 k
    for ((k = 0; k < 100; k++)); do
        in_host "$i" ss -Hltn "sport = :$p" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    echo "h$i never listened on port $p" >&2
    return 1
}

# Wait for files $WORK/done.1..N (bounded by deadline, epoch seconds).
# Prints the latest timestamp; returns 1 on timeout.
wait_done() {
    local n=$1 deadline=$2 i missing
    while :; do
        missing=0
        for ((i = 1; i <= n; i++)); do [[ -s $WORK/done.$i ]] || { missing=1; break; }; done
        ((missing == 0)) && break
        if (($(date +%s) > deadline)); then return 1; fi
        sleep 0.05
    done
    cat "$WORK"/done.* | sort -g | tail -1
}

# Locate ka-deploy: $KA_DEPLOY, else the launcher at the repository root.
find_ka_deploy() {
    if [[ -n ${KA_DEPLOY:-} ]]; then
        [[ -x $KA_DEPLOY ]] && { echo "$KA_DEPLOY"; return 0; }
        return 1
    fi
    [[ -x $ROOT/ka-deploy ]] && { echo "$ROOT/ka-deploy"; return 0; }
    return 1
}

# Make the launcher build once, outside any timed section.
warm_ka_deploy() {
    local kd=$1
    timeout 600 "$kd" --help >/dev/null 2>&1 || timeout 600 "$kd" --version >/dev/null 2>&1 || true
}

# Size like "256MiB", "1GiB", "100M", "5000" -> bytes.
parse_size() {
    local s=$1
    [[ $s =~ ^([0-9]+)([KMGkmg]?)(i?B)?$ ]] || { echo "bad size '$s'" >&2; return 1; }
    local n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]^^}
    case $u in
        '') echo "$n" ;;
        K) echo $((n * 1024)) ;;
        M) echo $((n * 1048576)) ;;
        G) echo $((n * 1073741824)) ;;
    esac
}
