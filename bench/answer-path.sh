#!/bin/bash
# Time from the provider's answer to the client's write, inside one gateway (bench/answer-path-hook.mjs),
# under wrk at 32 connections: what a request's answer waits for after the upstream has answered.
#
#   CONFIG=nolimits|memory|sqlite bench/answer-path.sh CHECKOUT [SECONDS]
#
# Non-streaming only. The first 2,000 requests are warm-up. Prints the stretch's p50/p90/p99 and wrk's summary.
set -u
TARGET=$(cd "$1" && pwd); SECS=${2:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d /tmp/tollgate-answer-path.XXXX)
MP=$((20000 + RANDOM % 20000)); GP=$((MP + 1))
GW=""; MOCK=""
trap 'kill $GW $MOCK 2>/dev/null' EXIT
PORT=$MP TOKENS=16 node "$HERE/fast-mock.js" > "$D/mock.log" 2>&1 & MOCK=$!
SHARED=${SHARED_BENCH:-$HERE/../../shared/bench}
[ -d "$SHARED" ] || SHARED=$HERE/../../../shared/bench
CONFIG=${CONFIG:-memory}
YML=$SHARED/tollgate-bench$([ "$CONFIG" = sqlite ] || echo "-$CONFIG").yaml
[ -f "$YML" ] || { echo "no $YML (set SHARED_BENCH to the shared harness's bench dir)" >&2; exit 2; }
cp "$YML" "$D/cfg.yaml"
export MOCK_URL=http://127.0.0.1:$MP/v1
(cd "$D" && ANSWER_PATH_DIST="$TARGET/dist" ANSWER_PATH_WARMUP=2000 exec node --import "$HERE/answer-path-hook.mjs" "$TARGET/dist/cli/main.js" serve --config "$D/cfg.yaml" --port $GP > "$D/gw.log" 2> "$D/gw.err") & GW=$!
for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/$GP) 2>/dev/null && break; sleep 0.5; done
BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":256,"temperature":0}'
cat > "$D/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-mock"
LUA
wrk -t1 -c32 -d"${SECS}s" --latency -s "$D/post.lua" "http://127.0.0.1:$GP/v1/chat/completions" > "$D/wrk.log" 2>&1
kill -TERM $GW; wait $GW 2>/dev/null
echo "$TARGET ($CONFIG): $(grep answer-path "$D/gw.err")"
grep -E "Requests/sec|^ +(50|99)%" "$D/wrk.log" | tr -s ' ' | tr '\n' ' '; echo
