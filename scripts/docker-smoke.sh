#!/usr/bin/env bash
# Build the Docker image and run it, on a machine with no Docker engine and no image registry.
#
#   sudo bash scripts/docker-smoke.sh        # as root; about 10 minutes the first time
#
# What it does, and what it proves:
#   1. A stand-in for python:3.11-slim: Debian bookworm's python3.11 + venv + pip from
#      debootstrap, imported with buildah (FROM scratch). The real base is pinned by digest in
#      the Dockerfile; this one only replaces it through --build-arg BASE=..., nothing else.
#   2. buildah builds the Dockerfile as it is (multi-stage, --layers, docker format so the
#      HEALTHCHECK is kept), unprivileged-style: --isolation chroot --storage-driver vfs.
#   3. A source edit rebuilds with the dependency layer taken from the cache.
#   4. The image holds no source tree, no wheel, runs as uid 10001, /data is a volume.
#   5. It runs the image the way `docker run` would, from the image's own config (Env, User,
#      WorkingDir, Entrypoint, Cmd): its own PID and mount namespaces, the entrypoint as PID 1,
#      as uid 10001, a host folder on /data, the host's network. podman is not used: crun
#      cannot set rlimits in this sandbox.
#      a. IMAGINE_WEB__PORT + WEB_ACCESS_TOKEN: /healthz answers 200, / answers the
#         plain-text 401 that the README quotes, /?token= sets the cookie; the image's
#         HEALTHCHECK command reports healthy on that port.
#      b. `serve --port N` in place of the Cmd: the HEALTHCHECK follows it.
#      c. IMAGINE_WEB__ENABLED=false with no chat token: serve refuses in one line.
#      d. The database in /data belongs to uid 10001.
set -euo pipefail
cd "$(dirname "$0")/.."
{ # read whole before it runs: an edit to this file during a run cannot change that run


WORK=${SMOKE_WORK:-/var/tmp/imagine-bot-smoke}
BASE=${SMOKE_BASE:-localhost/python-standin:3.11-slim}
IMAGE=localhost/imagine-bot:smoke
PORT=${SMOKE_PORT:-18417}
TOKEN=smoke-token-$RANDOM$RANDOM
STORE=(--storage-driver vfs)
mkdir -p "$WORK"

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

say "tools"
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq buildah debootstrap >/dev/null
fi
buildah --version

say "stand-in base $BASE"
if ! buildah "${STORE[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase \
    --include=python3.11,python3-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
  # The host's trust store, so pip inside the build trusts what the host trusts.
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  mkdir -p "$WORK/base" && tar -C "$WORK/rootfs" -cf "$WORK/base/rootfs.tar" .
  cat >"$WORK/base/Containerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
  buildah "${STORE[@]}" bud --isolation chroot --format docker -t "$BASE" "$WORK/base"
fi

build() {  # build CONTEXT LOG
  buildah "${STORE[@]}" bud --isolation chroot --format docker --layers \
    --build-arg BASE="$BASE" -t "$IMAGE" "$1" >"$2" 2>&1 || { tail -40 "$2"; fail "build"; }
}
step_cached() {  # step_cached LOG PATTERN: did the step whose line matches PATTERN hit the cache?
  grep -A1 -F "$2" "$1" | tail -1 | grep -q "Using cache"
}

say "build (log: $WORK/build.log)"
build . "$WORK/build.log"
echo "built $IMAGE"

say "a source edit keeps the dependency layer"
rm -rf "$WORK/context" && mkdir -p "$WORK/context"
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$WORK/context"
EDIT="# edited by docker-smoke $(date +%s%N)"  # new each run, so no earlier run's cache fits
echo "$EDIT" >>"$WORK/context/bot/cli.py"
build "$WORK/context" "$WORK/build-edit.log"
step_cached "$WORK/build-edit.log" "pip install -r /tmp/requirements.txt" \
  || fail "the dependency install ran again after a source edit"
step_cached "$WORK/build-edit.log" "pip wheel" && fail "the wheel was not rebuilt after an edit"
installed_has_edit() {
  local ctr root found=1
  ctr=$(buildah "${STORE[@]}" from --pull-never "$IMAGE"); root=$(buildah "${STORE[@]}" mount "$ctr")
  grep -qF "$EDIT" "$root"/opt/imagine-bot/lib/python3.11/site-packages/bot/cli.py \
    && found=0
  buildah "${STORE[@]}" umount "$ctr" >/dev/null; buildah "${STORE[@]}" rm "$ctr" >/dev/null
  return $found
}
installed_has_edit || fail "the image does not hold the edited source"
echo "deps: Using cache; wheel: rebuilt; the image holds the edit"
build . "$WORK/build.log"  # back to the tree as it is
installed_has_edit && fail "the rebuilt image still holds the edit"

say "what the image holds"
config() { buildah "${STORE[@]}" inspect --type image --format "$1" "$IMAGE"; }
[ "$(config '{{.Docker.Config.User}}')" = "10001:10001" ] || fail "user is not 10001"
config '{{.Docker.Config.Volumes}}' | grep -q '/data' || fail "/data is no volume"
HEALTH=()
while IFS= read -r arg; do HEALTH+=("$arg"); done < <(
  config '{{range $i, $a := .Docker.Config.Healthcheck.Test}}{{if $i}}{{println $a}}{{end}}{{end}}')
[ "${#HEALTH[@]}" -gt 0 ] || fail "no HEALTHCHECK in the image"
echo "HEALTHCHECK: ${HEALTH[*]}"
mapfile -t IMAGE_ENV < <(config '{{range .Docker.Config.Env}}{{println .}}{{end}}')
mapfile -t ENTRY < <(config '{{range .Docker.Config.Entrypoint}}{{println .}}{{end}}')
mapfile -t CMD < <(config '{{range .Docker.Config.Cmd}}{{println .}}{{end}}')
WORKDIR=$(config '{{.Docker.Config.WorkingDir}}')

CTR=$(buildah "${STORE[@]}" from --pull-never "$IMAGE")
ROOT=$(buildah "${STORE[@]}" mount "$CTR")
BOT_PID=
cleanup() {
  [ -n "$BOT_PID" ] && kill -TERM "$BOT_PID" 2>/dev/null || true
  sleep 1
  buildah "${STORE[@]}" umount "$CTR" >/dev/null 2>&1 || true
  buildah "${STORE[@]}" rm "$CTR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
[ ! -e "$ROOT/build" ] || fail "/build (the source) is in the image"
# (Debian's stand-in base has its own pip and setuptools wheels for venv; those are not ours.)
[ -z "$(find "$ROOT" -xdev -name 'imagine_bot*.whl' -print -quit)" ] || fail "our wheel is in the image"
[ -z "$(find "$ROOT" -xdev -path '*/bot/cli.py' -not -path '*/site-packages/*' -print -quit)" ] \
  || fail "a copy of the source is in the image"
[ "$(stat -c %u "$ROOT/data")" = 10001 ] || fail "/data is not uid 10001's"
echo "no /build, no wheel, no source outside site-packages; /data is uid 10001's"

# `docker run` without an engine: new PID and mount namespaces, entrypoint as PID 1.
start() {  # start ENV... -- ARGS...   (ARGS replace the image's Cmd when given)
  local envs=() args=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  args=("$@"); [ "${#args[@]}" -gt 0 ] || args=("${CMD[@]}")
  rm -rf "$WORK/data" && mkdir -p "$WORK/data" && chown 10001:10001 "$WORK/data"
  unshare --pid --fork --mount --propagation private sh -c '
    root=$1; data=$2; workdir=$3; shift 3
    mount --bind "$data" "$root/data"
    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    exec chroot --userspec=10001:10001 "$root" /usr/bin/env -i "$@"
  ' sh "$ROOT" "$WORK/data" "$WORKDIR" "${IMAGE_ENV[@]}" HOME=/home/imagine "${envs[@]}" \
    sh -c 'cd "$0" && exec "$@"' "$WORKDIR" "${ENTRY[@]}" "${args[@]}" \
    >"$WORK/bot.log" 2>&1 &
  local unshare_pid=$!
  for _ in $(seq 50); do
    BOT_PID=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null | awk '{print $1}')
    [ -n "$BOT_PID" ] && break; sleep 0.1
  done
  [ -n "$BOT_PID" ] || fail "the container did not start"
  RUN_ENV=("${IMAGE_ENV[@]}" HOME=/home/imagine "${envs[@]}")
}
stop() {
  kill -TERM "$BOT_PID"; local pid=$BOT_PID; BOT_PID=
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  fail "the bot did not stop on SIGTERM"
}
healthcheck() {  # the image's HEALTHCHECK command, inside the container, as docker runs it
  nsenter --target "$BOT_PID" --pid --mount \
    chroot --userspec=10001:10001 "$ROOT" /usr/bin/env -i "${RUN_ENV[@]}" \
    sh -c 'cd "$0" && exec "$@"' "$WORKDIR" "${HEALTH[@]}"
}
wait_healthy() {
  for _ in $(seq 60); do
    if out=$(healthcheck 2>&1); then echo "HEALTHCHECK: $out"; return 0; fi
    kill -0 "$BOT_PID" 2>/dev/null || { cat "$WORK/bot.log"; fail "the bot exited"; }
    sleep 0.5
  done
  echo "$out"; cat "$WORK/bot.log"; fail "never healthy"
}

say "run: IMAGINE_WEB__PORT=$PORT with WEB_ACCESS_TOKEN"
start IMAGINE_WEB__PORT="$PORT" WEB_ACCESS_TOKEN="$TOKEN" --
wait_healthy | tee "$WORK/health.txt"
[ "$(cat "/proc/$BOT_PID/comm")" = imagine-bot ] || fail "PID 1 is not the bot"
grep -q "127.0.0.1:$PORT/healthz: HTTP 200" "$WORK/health.txt" || fail "probe used another port"
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null && echo "/healthz: 200"
body=$(curl -sS -o - -w ' [%{http_code}]' "http://127.0.0.1:$PORT/")
echo "/: $body"
[ "$body" = "This playground needs its access token: open /?token=<token> once. [401]" ] \
  || fail "unexpected answer without a token"
code=$(curl -sS -o /dev/null -c "$WORK/cookies" -w '%{http_code}' "http://127.0.0.1:$PORT/?token=$TOKEN")
[ "$code" = 303 ] || fail "/?token= answered $code"
code=$(curl -sS -o /dev/null -b "$WORK/cookies" -w '%{http_code}' "http://127.0.0.1:$PORT/")
[ "$code" = 200 ] || fail "/ with the cookie answered $code"
echo "/?token=...: 303 and a cookie; / with it: 200"
[ "$(stat -c %u "$WORK/data/imagine-bot.sqlite3")" = 10001 ] || fail "database is not uid 10001's"
echo "database in /data belongs to uid 10001"
grep -q "$TOKEN" "$WORK/bot.log" && fail "the token is in the log"
stop

say "run: serve --port $((PORT + 1)) in place of the Cmd"
start WEB_ACCESS_TOKEN="$TOKEN" -- serve --port "$((PORT + 1))"
wait_healthy | tee "$WORK/health.txt"
grep -q "127.0.0.1:$((PORT + 1))/healthz: HTTP 200" "$WORK/health.txt" || fail "probe did not follow --port"
stop

say "run: IMAGINE_WEB__ENABLED=false and no chat token"
# Nothing to serve: the bot says so in one line and exits (a Discord- or Slack-only container
# needs its token and the platform's network; the web-off HEALTHCHECK path, which checks the
# data-dir lock, is tested in tests/test_docker.py).
start IMAGINE_WEB__ENABLED=false --
for _ in $(seq 200); do kill -0 "$BOT_PID" 2>/dev/null || break; sleep 0.1; done
grep -q "nothing to serve" "$WORK/bot.log" || fail "serve with nothing to serve did not say so"

say "all checks passed"
exit 0
}
