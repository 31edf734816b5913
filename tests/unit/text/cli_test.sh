#!/usr/bin/env bash
# moemesh tokenize / detokenize / render-chat on the tiny-r1 fixture: exact output, exit codes.
# usage: cli_test.sh MOEMESH_BINARY SHARED_DIR
set -euo pipefail
moemesh=$1
tokenizer=$2/fixtures/tiny-r1
fail() { echo "FAIL: $*" >&2; exit 1; }

[[ $(printf 'Hello world' | "$moemesh" tokenize --tokenizer "$tokenizer") == '[19923,2058]' ]] ||
  fail "tokenize"
[[ $(printf '[19923, 2058, 200000]' | "$moemesh" detokenize --tokenizer "$tokenizer") == \
   'Hello world' ]] || fail "detokenize"
expected=$'<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n'
# Compare bytes exactly (command substitution would drop the trailing newline).
printf '[{"role": "user", "content": "Hi"}]' |
  "$moemesh" render-chat --tokenizer "$tokenizer" | cmp - <(printf '%s' "$expected") ||
  fail "render-chat"
printf '[{"role": "user", "content": "Hi"}]' |
  "$moemesh" render-chat --tokenizer "$tokenizer" --no-generation-prompt |
  cmp - <(printf '%s' $'<｜begin▁of▁sentence｜><｜User｜>Hi') || fail "render-chat --no-generation-prompt"
set +e
"$moemesh" tokenize >/dev/null 2>&1; [[ $? == 2 ]] || fail "missing --tokenizer must exit 2"
printf 'not json' | "$moemesh" detokenize --tokenizer "$tokenizer" >/dev/null 2>&1
[[ $? == 1 ]] || fail "bad ids must exit 1"
echo "cli ok"
