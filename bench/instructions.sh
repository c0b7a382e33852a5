#!/bin/bash
# Instructions per request of one gateway process under valgrind's callgrind: a count that does not
# move with what else the machine is doing, for A/B comparisons of a change (`npm run bench` gives
# CPU µs, which a shared machine inflates by several times). Slow: ~1-3 min per run.
#
#   bench/instructions.sh TARGET SCENARIO [N] [WARMUP]
#     TARGET    floor (the bare undici proxy), bare401 (a node:http server answering a fixed 401:
#               the lower bound of a refusal) or a built checkout (its dist/ is served)
#     SCENARIO  stream (50 tokens with a usage chunk), nonstream (16 tokens) or refusal (a bad key, 401);
#               the refusals of a known key, on `npm run bench`'s config with limits (bench/configs.js, store
#               per CONFIG=memory|sqlite|redis, memory by default): ratelimited (429), forbidden (403), budget (402)
#     N         requests counted (200), after WARMUP requests not counted (150); CONC at a time (4;
#               the shared harness keeps 32 in flight)
#
# Config: tollgate on the memory store with no limits (the bench's tg-nolimits). CONFIG=nolimits|memory|sqlite
# serves the shared harness's yaml instead (../shared/bench/tollgate-bench{-nolimits,-memory,}.yaml: memory or
# SQLite with three limits and a daily budget), so the cost of limits can be counted the same way.
# CONFIG=redis: the SQLite yaml with its store on a private redis-server (not counted: the gateway only).
# STREAM_TOKENS=N streams N tokens instead of 50: two runs give the cost of one more chunk.
# TOKEN_MS=N paces the mock (a token every N ms, as a provider sends them): each event then reaches
# the gateway in a read of its own, so the count holds the gateway's cost per socket read.
set -u
TARGET=$1; SC=$2; N=${3:-200}; WARM=${4:-150}
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d /tmp/tollgate-instructions.XXXX)
MP=$((20000 + RANDOM % 20000)); GP=$((MP + 1))
GW=""; MOCK=""; REDIS=""
trap 'kill $GW $MOCK $REDIS 2>/dev/null' EXIT
PORT=$MP TOKEN_MS=${TOKEN_MS:-0} TOKENS=$([ "$SC" = stream ] && echo "${STREAM_TOKENS:-50}" || echo 16) node "$HERE/fast-mock.js" > "$D/mock.log" 2>&1 & MOCK=$!
# The shared harness sits beside the repo (../shared/bench); a worktree one level deeper looks one further up.
SHARED=${SHARED_BENCH:-$HERE/../../shared/bench}
[ -d "$SHARED" ] || SHARED=$HERE/../../../shared/bench
case "$SC:${CONFIG:-}" in
  ratelimited:*|forbidden:*|budget:*)
    case "${CONFIG:-memory}" in
      memory) STORE="memory:" ;;
      sqlite) STORE="sqlite:$D/bench.db" ;;
      redis) RP=$((MP + 2)); STORE="redis://127.0.0.1:$RP/0"
        redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no > "$D/redis.log" 2>&1 & REDIS=$! ;;
      *) echo "CONFIG must be memory, sqlite or redis for $SC" >&2; exit 2 ;;
    esac
    (cd "$HERE" && node --input-type=module -e "import { writeFileSync } from 'node:fs'; import { stringify } from 'yaml'; import { tollgateConfig } from './configs.js'; writeFileSync('$D/cfg.yaml', stringify(tollgateConfig('$STORE', true)));") || exit 2 ;;
  *:) cat > "$D/cfg.yaml" <<YAML
server: { host: 127.0.0.1, port: 0 }
store: "memory:"
providers: { mock: { type: openai, base_url: "http://127.0.0.1:$MP/v1", api_key: sk-upstream-bench } }
models: { gpt-4o-mini: { provider: mock, price: { input: 0.15, output: 0.6 } } }
plans: { bench: { models: [gpt-4o-mini] } }
keys: [ { key: sk-bench-mock, user: bench-user, plan: bench } ]
routes: { main: { path: "/", plans: [bench] } }
YAML
;;
  *:nolimits|*:memory|*:sqlite|*:redis)
    YML=$SHARED/tollgate-bench$([ "$CONFIG" = sqlite ] || [ "$CONFIG" = redis ] || echo "-$CONFIG").yaml
    [ -f "$YML" ] || { echo "no $YML (set SHARED_BENCH to the shared harness's bench dir)" >&2; exit 2; }
    cp "$YML" "$D/cfg.yaml"
    if [ "$CONFIG" = redis ]; then
      RP=$((MP + 2))
      redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no > "$D/redis.log" 2>&1 & REDIS=$!
      sed -i "s|^store:.*|store: redis://127.0.0.1:$RP/0|" "$D/cfg.yaml"
    fi ;;
  *) echo "CONFIG must be nolimits, memory, sqlite or redis" >&2; exit 2 ;;
esac
export MOCK_URL=http://127.0.0.1:$MP/v1
CG=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$D/cg.out")
if [ "$TARGET" = bare401 ]; then
  PORT=$GP "${CG[@]}" node "$HERE/bare-401.js" > "$D/gw.log" 2>&1 & GW=$!
elif [ "$TARGET" = floor ]; then
  PORT=$GP UPSTREAM=http://127.0.0.1:$MP "${CG[@]}" node "$HERE/node-floor.js" > "$D/gw.log" 2>&1 & GW=$!
else
  TARGET=$(cd "$TARGET" && pwd)
  (cd "$D" && exec "${CG[@]}" node "$TARGET/dist/cli/main.js" serve --config "$D/cfg.yaml" --port $GP > "$D/gw.log" 2>&1) & GW=$!
fi
for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/$GP) 2>/dev/null && break; sleep 0.5; done
URL=http://127.0.0.1:$GP/v1/chat/completions
node "$HERE/instructions-load.js" $URL $WARM ${CONC:-4} $SC || exit 1
callgrind_control -i on $GW > /dev/null 2>&1
node "$HERE/instructions-load.js" $URL $N ${CONC:-4} $SC || exit 1
callgrind_control -i off $GW > /dev/null 2>&1
callgrind_control -d $GW > /dev/null 2>&1
sleep 1
kill $GW 2>/dev/null; wait $GW 2>/dev/null
IR=$(grep -h "^summary:\|^totals:" "$D"/cg.out* | awk '{s+=$2} END {printf "%.0f", s}')
echo "$TARGET${CONFIG:+ ($CONFIG)} $SC: $((IR / N)) instructions/request ($N requests after $WARM, ${CONC:-4} in flight)"
