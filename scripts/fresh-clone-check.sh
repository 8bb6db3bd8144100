#!/usr/bin/env bash
# The README's two commands on a bare clone, as a new user would type them.
#
#   scripts/fresh-clone-check.sh [--user NAME] [--only run-test|signals|test|user] [SOURCE]
#
# SOURCE (default: this repository) is cloned into a new, empty temporary
# directory (nothing beside the clone), and there:
#   run-test  `make run` with no terminal (it stops after the demo and exits),
#             then `make test`;
#   test      `make test` alone, on another fresh clone;
#   user      the same as run-test, as the normal user NAME (default mpuser).
#   signals   in the run-test clone: scripts/run-demo-check.py (Ctrl-C and
#             SIGTERM to `make run` in a terminal stop everything, no make Error).
# Every step runs unless --only picks one.  Exit status 0 when all passed.
# Each step's output goes to DIR/STEP.log; the summary lines are printed.
#
# The `user` step, run as root, prepares the account:
#   - `useradd -m NAME` when NAME does not exist;
#   - sudo is installed (apt-get) when missing, and /etc/sudoers.d/mapiproxy-check
#     lets NAME run apt-get as root without a password, which is all that
#     scripts/install-deps.sh needs (it calls `sudo apt-get` only when a package
#     is missing);
#   - the clone is made by NAME from its own bare copy of SOURCE (git refuses
#     to read a repository owned by another user).
# Remove the account afterwards with `userdel -r NAME; rm /etc/sudoers.d/mapiproxy-check`.
set -euo pipefail
# The whole script is one function, read before it runs: editing this file
# while a check runs (it takes long) cannot change what the running one does.
main() {
HERE=$(cd "$(dirname "$0")/.." && pwd)
USERNAME=mpuser
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
    --user) USERNAME=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    -*) echo "fresh-clone-check: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
SOURCE=${1:-$HERE}
WORK=$(mktemp -d -t fresh-clone-check.XXXXXX)
chmod 755 "$WORK"
echo "fresh-clone-check: source $SOURCE, logs in $WORK"

# A world-readable bare copy: what every step clones from.
git clone -q --bare "$SOURCE" "$WORK/src.git"
chmod -R a+rX "$WORK/src.git"
echo "fresh-clone-check: commit $(git -C "$WORK/src.git" rev-parse --short HEAD)"

status=0
summary() { # STEP LOG RC: the lines a reader needs from a make test log
    echo "== $1: exit $3"
    grep -E 'passed|failed|skipped|error|: Done|\*\*\*|^run: |^check-format|^note: ' "$2" |
        grep -vE '^(cc|clang|gcc) ' | tail -n 30 || true
}

# STEP DIR CMD: clone into DIR/mapiproxy (DIR empty), run CMD there as the caller.
step() {
    local name=$1 dir=$2 cmd=$3 rc=0
    mkdir -p "$dir"
    git clone -q "$WORK/src.git" "$dir/mapiproxy"
    (cd "$dir/mapiproxy" && bash -c "$cmd") </dev/null >"$WORK/$name.log" 2>&1 || rc=$?
    summary "$name" "$WORK/$name.log" "$rc"
    [ "$rc" -eq 0 ] || status=1
}

if [ -z "$ONLY" ] || [ "$ONLY" = run-test ]; then
    step run-test "$WORK/c1" 'make run && make test'
fi
if [ -z "$ONLY" ] || [ "$ONLY" = signals ]; then
    [ -d "$WORK/c1/mapiproxy" ] || git clone -q "$WORK/src.git" "$WORK/c1/mapiproxy"
    rc=0
    "$WORK/c1/mapiproxy/scripts/run-demo-check.py" "$WORK/c1/mapiproxy" >"$WORK/signals.log" 2>&1 ||
        rc=$?
    echo "== signals: exit $rc"
    cat "$WORK/signals.log"
    [ "$rc" -eq 0 ] || status=1
fi
if [ -z "$ONLY" ] || [ "$ONLY" = test ]; then
    step test "$WORK/c2" 'make test'
fi
if [ -z "$ONLY" ] || [ "$ONLY" = user ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "fresh-clone-check: the user step needs root to prepare $USERNAME; skipped" >&2
        status=1
    else
        id "$USERNAME" >/dev/null 2>&1 || useradd -m -s /bin/bash "$USERNAME"
        command -v sudo >/dev/null ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends sudo >/dev/null
        echo "$USERNAME ALL=(root) NOPASSWD: /usr/bin/apt-get" >/etc/sudoers.d/mapiproxy-check
        chmod 440 /etc/sudoers.d/mapiproxy-check
        d="$WORK/c3"
        mkdir -p "$d"
        # git refuses a repository another user owns: NAME gets its own copy.
        cp -r "$WORK/src.git" "$d/src.git"
        chown -R "$USERNAME" "$d"
        rc=0
        su - "$USERNAME" -c "cd '$d' && git clone -q '$d/src.git' mapiproxy && cd mapiproxy &&
            make run && make test" </dev/null >"$WORK/user.log" 2>&1 || rc=$?
        summary "user ($USERNAME)" "$WORK/user.log" "$rc"
        [ "$rc" -eq 0 ] || status=1
    fi
fi
echo "fresh-clone-check: $([ $status -eq 0 ] && echo PASS || echo FAIL) (logs in $WORK)"
exit $status
}
main "$@"
