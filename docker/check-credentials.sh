#!/bin/bash
# Refuse to start the platform with an empty, short or well-known credential (compose's
# `credentials-check` service; every other service waits for it). Names the variable, never
# prints its value. The rule (WEAK, MIN_LENGTH) is credential-rules.env beside this script,
# the one devstack/secrets.py applies too.
set -uo pipefail
# shellcheck source=credential-rules.env
. "${CREDENTIAL_RULES:-$(dirname "$0")/credential-rules.env}"
bad=0
for name in $(compgen -e | sort); do
  case "$name" in
    *PASSWORD*|*SECRET*|*_KEY*|*TOKEN*|*ROOT_USER*|*ACCESS_KEY*) ;;
    *) continue ;;
  esac
  value="${!name}"
  lower="$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')"
  if [ -z "$value" ]; then
    echo "credentials-check: $name is empty; set it in .env" >&2; bad=1
  elif [[ " $WEAK " == *" $lower "* ]]; then
    echo "credentials-check: $name is a well-known default; set a random value in .env" >&2; bad=1
  elif [ "${#value}" -lt "$MIN_LENGTH" ] && [[ "$name" != *ACCESS_KEY* && "$name" != *ROOT_USER* ]]; then
    echo "credentials-check: $name is shorter than $MIN_LENGTH characters" >&2; bad=1
  fi
done
[ "$bad" -eq 0 ] && echo "credentials-check: ok"
exit "$bad"
