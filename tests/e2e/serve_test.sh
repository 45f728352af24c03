#!/usr/bin/env bash
# `cond && pass ... || fail ...` is safe here: pass() always succeeds.
# shellcheck disable=SC2015
# End-to-end test of `keygate serve`: the admin API over HTTPS on a fresh SQLite file, driven by
# curl (trusting the self-signed certificate the command writes, --cacert, no -k) and checked
# with the CLI on the same file: the first-run hint, a key created, modified, blocked and rolled
# through the API and seen by `keygate verify`, 401 and 403 for the wrong keys, one log line a
# request without a token, and a clean stop on SIGTERM. Then, built with keygate::webhooks, serve
# --webhook-state: refused without a secret; with one, a dispatcher whose attempts (to a closed
# port) the API's and the CLI's delivery logs show, stopped with the server.
#
#   serve_test.sh CLI_BINARY
# Exit: 0 pass, 1 fail, 77 skipped (no curl; under CI a missing curl fails).
set -uo pipefail

CLI=${1:?cli binary}
unset KEYGATE_DB KEYGATE_PEPPER_FILE
if ! command -v curl >/dev/null; then
  if [[ -n "${CI:-}" && "${CI:-}" != false ]]; then
    echo "FAIL: curl not installed: CI must run every test (scripts/setup.sh installs it)"
    exit 1
  fi
  echo "SKIP: curl not installed, so this end-to-end test does not run (install curl)"
  exit 77
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/keygate_serve.XXXXXX")
PID=""
cleanup() {
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
FAILED=0
pass() { echo "ok    $*"; }
fail() {
  echo "FAIL  $*"
  FAILED=1
}
kg() { "$CLI" --db "$W/keys.db" "$@"; }

"$CLI" --db "$W/keys.db" serve --port 0 --port-file "$W/port" --write-cert "$W/cert.pem" \
  >"$W/out" 2>"$W/err" &
PID=$!
for _ in $(seq 100); do
  [[ -s "$W/port" ]] && break
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
[[ -s "$W/port" ]] || { echo "serve did not start:"; cat "$W/err"; exit 1; }
PORT=$(cat "$W/port")
URL=$(head -1 "$W/out")
[[ "$URL" == "https://127.0.0.1:$PORT/admin/" ]] && pass "prints its URL" || fail "URL: $URL"
grep -q "no admin key yet; create the first one with" "$W/err" &&
  grep -q -- "create --name admin --owner YOU --env production --scope admin" "$W/err" &&
  pass "first run: says how to make the first admin key" || fail "no first-run hint"

ADMIN=$(kg create --name admin --owner alice --env production --scope admin 2>/dev/null | tail -1)
READER=$(kg create --name reader --owner bob --env production --scope read:all 2>/dev/null |
  tail -1)
[[ "$ADMIN" == kg_live_* && "$READER" == kg_live_* ]] || { echo "cannot create keys"; exit 1; }
API="https://localhost:$PORT/admin/api/v1"
# call NAME CURL_ARGS...: body to $W/NAME.b, headers to $W/NAME.h; prints the status.
call() {
  local name=$1
  shift
  curl -sS --cacert "$W/cert.pem" -D "$W/$name.h" -o "$W/$name.b" -w '%{http_code}' "$@"
}

[[ "$(call none "$API/keys")" == 401 ]] && pass "no key: 401" || fail "no key"
[[ "$(call reader "$API/keys" -H "Authorization: Bearer $READER")" == 403 ]] &&
  pass "read:all key: 403" || fail "read:all key"
status=$(call create "$API/keys" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' \
  -d '{"name":"ci-pipeline","environment":"production","scopes":["read:all"]}')
ID=$(sed -n 's/.*"id":"\(key_[A-Za-z0-9]*\)".*/\1/p' "$W/create.b")
TOKEN=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' "$W/create.b")
[[ "$status" == 201 && "$TOKEN" == kg_live_* ]] && pass "create: 201 with the token" ||
  fail "create: $status $(cat "$W/create.b")"
kg verify - --scope read:all <<<"$TOKEN" >/dev/null 2>&1 && pass "the CLI verifies its token" ||
  fail "the CLI does not verify the new token"
status=$(call modify "$API/keys/$ID" -X PATCH -H "Authorization: Bearer $ADMIN" \
  -H 'If-Match: "1"' -H 'Content-Type: application/json' -d '{"scopes":["write:all"]}')
[[ "$status" == 200 ]] && pass "modify with If-Match: 200" || fail "modify: $status"
kg verify - --scope write:all <<<"$TOKEN" >/dev/null 2>&1 && pass "the CLI sees the new scopes" ||
  fail "the CLI does not see the modified scopes"
# (-d '': cpp-httplib answers a POST without Content-Length 400.)
[[ "$(call revoke "$API/keys/$ID/revoke" -d '' -H "Authorization: Bearer $ADMIN")" == 200 ]] &&
  ! kg verify - <<<"$TOKEN" >/dev/null 2>&1 && pass "blocked through the API: the CLI refuses it" ||
  fail "revoke"
kg restore "$ID" >/dev/null 2>&1
status=$(call roll "$API/keys/$ID/roll" -d '' -H "Authorization: Bearer $ADMIN")
NEW=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' "$W/roll.b")
[[ "$status" == 200 ]] && kg verify - <<<"$NEW" >/dev/null 2>&1 &&
  ! kg verify - <<<"$TOKEN" >/dev/null 2>&1 && pass "roll: the new token works, the old not" ||
  fail "roll: $status"
[[ "$(kg --json audit --key "$ID" 2>/dev/null | grep -o '"actor":"alice"' | wc -l)" == 4 ]] &&
  pass "audit: the API's four changes are by alice" || fail "audit: $(kg audit --key "$ID" 2>&1)"

[[ "$(call nohooks "$API/webhook-deliveries" -H "Authorization: Bearer $ADMIN")" == 404 ]] &&
  grep -q '"code":"webhooks_off"' "$W/nohooks.b" && pass "no --webhook-state: no delivery log, 404" ||
  fail "webhook deliveries without a dispatcher: $(cat "$W/nohooks.b")"

kill -TERM "$PID"
wait "$PID"
rc=$?
PID=""
[[ $rc == 0 ]] && pass "stops cleanly on SIGTERM" || fail "exit status $rc on SIGTERM"
grep -q '^POST /admin/api/v1/keys 201$' "$W/err" && pass "logs method, path and status" ||
  fail "no log line for the create"
if [[ -z "$TOKEN" || -z "$NEW" ]] || grep -qF -e "$ADMIN" -e "$TOKEN" -e "$NEW" "$W/err" "$W/out"; then
  fail "a token reached the output"
else
  pass "no token in its output"
fi

# Webhooks.
probe=$("$CLI" --db "$W/keys.db" --webhook-state "$W/none.db" webhooks deliveries 2>&1)
if [[ "$probe" == *"built without webhook delivery"* ]]; then
  echo "skip  webhooks: this keygate was built without keygate::webhooks"
  exit "$FAILED"
fi
"$CLI" --db "$W/keys.db" --webhook-state "$W/hooks.db" serve --port 0 >/dev/null 2>"$W/nosecret"
rc=$?
[[ $rc == 2 ]] && grep -q -- "--webhook-secret-file: required" "$W/nosecret" &&
  [[ ! -e "$W/hooks.db" ]] && pass "webhooks without a signing secret: refused" ||
  fail "webhooks without a secret: exit $rc, $(cat "$W/nosecret")"
"$CLI" --db "$W/keys.db" serve --port 0 --webhook-threads 2 >/dev/null 2>"$W/nostate"
[[ $? == 2 ]] && grep -q -- "--webhook-threads: only with --webhook-state" "$W/nostate" &&
  pass "--webhook-threads without --webhook-state: refused" || fail "$(cat "$W/nostate")"
SECRET="whsec_$(head -c 32 /dev/urandom | base64)"
(umask 077 && echo "$SECRET" >"$W/whsec")
"$CLI" --db "$W/keys.db" --webhook-state "$W/hooks.db" --webhook-secret-file "$W/whsec" \
  --allow-internal-webhooks serve --port 0 --port-file "$W/port2" --write-cert "$W/cert2.pem" \
  --webhook-threads 2 >"$W/out2" 2>"$W/err2" &
PID=$!
for _ in $(seq 100); do
  [[ -s "$W/port2" ]] && break
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
[[ -s "$W/port2" ]] || { echo "serve with webhooks did not start:"; cat "$W/err2"; exit 1; }
API="https://localhost:$(cat "$W/port2")/admin/api/v1"
call() {
  local name=$1
  shift
  curl -sS --cacert "$W/cert2.pem" -D "$W/$name.h" -o "$W/$name.b" -w '%{http_code}' "$@"
}
grep -q "webhooks on: .*delivery log in $W/hooks.db" "$W/err2" &&
  pass "says webhooks are on and where the log is" || fail "no webhooks line: $(cat "$W/err2")"
# Nothing listens on port 9 of 127.0.0.1: every attempt fails and is logged.
HOOKED=$(kg --json --allow-internal-webhooks create --name hooked --owner alice --env production \
  --webhook https://127.0.0.1:9/hook 2>/dev/null | sed -n 's/.*"id":"\(key_[A-Za-z0-9]*\)".*/\1/p')
status=""
for _ in $(seq 100); do
  status=$(call hooks "$API/keys/$HOOKED/webhook-deliveries" -H "Authorization: Bearer $ADMIN")
  grep -q '"attempts":\[{' "$W/hooks.b" && break
  sleep 0.1
done
[[ "$status" == 200 ]] && grep -q '"type":"key.created"' "$W/hooks.b" &&
  grep -q '"state":"pending"' "$W/hooks.b" && grep -q '"status":null' "$W/hooks.b" &&
  grep -q '"error":"[^"]' "$W/hooks.b" && pass "the API shows the key's message and failed attempt" ||
  fail "key's deliveries: $status $(cat "$W/hooks.b")"
[[ "$(call allhooks "$API/webhook-deliveries?limit=5" -H "Authorization: Bearer $ADMIN")" == 200 ]] &&
  grep -q "\"key_id\":\"$HOOKED\"" "$W/allhooks.b" && pass "the API shows every key's messages" ||
  fail "all deliveries: $(cat "$W/allhooks.b")"
[[ "$(call readerhooks "$API/keys/$HOOKED/webhook-deliveries" -H "Authorization: Bearer $READER")" == 403 ]] &&
  pass "not to a key without the admin scope: 403" || fail "reader: $(cat "$W/readerhooks.b")"
kg --webhook-state "$W/hooks.db" webhooks deliveries "$HOOKED" >"$W/cli_hooks" 2>&1 &&
  grep -q "  key.created  $HOOKED  pending, next attempt " "$W/cli_hooks" &&
  grep -q "  attempt 1: .*  no response  " "$W/cli_hooks" &&
  pass "the CLI reads the log while serve runs" || fail "CLI deliveries: $(cat "$W/cli_hooks")"
kill -TERM "$PID"
wait "$PID"
rc=$?
PID=""
[[ $rc == 0 ]] && grep -q "webhooks stopped" "$W/err2" &&
  pass "stops the dispatcher and exits cleanly on SIGTERM" || fail "exit $rc: $(tail -3 "$W/err2")"
if grep -qF -e "$SECRET" -e "${SECRET#whsec_}" "$W/err2" "$W/out2" "$W/cli_hooks" "$W"/*.b; then
  fail "the signing secret reached the output"
else
  pass "no signing secret in its output"
fi
exit "$FAILED"
