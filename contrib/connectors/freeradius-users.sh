#!/bin/sh
# freeradius-users.sh — an espfd exec connector that keeps a FreeRADIUS "users" file
# (rlm_files) in step with PortaBilling accounts.
#
# JSON is read with jq when it is installed, else with python3 (set JSON_TOOL=jq|python3 to
# choose). One of the two must be there; without either, events are retried (exit 75).
#
# The exec contract (README, "Exec connectors"): espfd runs this once per event, the event
# document (JSON: i_event, event_type, variables, attempt, group, entity = PortaBilling's
# account record or null) on stdin, and ESPFD_I_EVENT, ESPFD_EVENT_TYPE, ESPFD_ENTITY_KIND,
# ESPFD_ENTITY_ID, ESPFD_I_ACCOUNT (when present), ESPFD_ATTEMPT, ESPFD_GROUP in the
# environment. Exit 0 → OK, 75 → try again later, anything else → FAILED; the last line
# printed becomes the status message shown in PortaBilling.
#
# What it does, per account (other events are acknowledged and ignored):
#   open and not blocked   "<account id>" Cleartext-Password := "<h323_password>"
#   blocked (blocked = Y)  "<account id>" Auth-Type := Reject
#   closed (bill_status C), deleted, or unknown to PortaBilling (entity null): no entry
# Each account's entry sits between two marker lines, so the rest of the file (your own
# entries, DEFAULT rules) is left as it is:
#   # espfd i_account=1000889 begin
#   "12065550100" Cleartext-Password := "s3cret"
#   # espfd i_account=1000889 end
# The file is replaced atomically (written next to it, then renamed), under a lock
# directory (<file>.lock) so that several workers never interleave.
#
# Settings (environment):
#   RADIUS_USERS_FILE  the users file (default /etc/freeradius/3.0/mods-config/files/authorize);
#                      espfd's user must be able to write it and its directory
#   RADIUS_RELOAD      command run after a change, e.g. "systemctl reload freeradius"
#                      (default: none; rlm_files reads the file at start and on HUP)
#   RADIUS_LOCK_WAIT   seconds to wait for the lock before asking for a retry (default 10)
#   JSON_TOOL          jq | python3 (default: jq if installed)
set -u

USERS=${RADIUS_USERS_FILE:-/etc/freeradius/3.0/mods-config/files/authorize}
RELOAD=${RADIUS_RELOAD:-}
LOCK_WAIT=${RADIUS_LOCK_WAIT:-10}

done_() { printf '%s\n' "$*"; exit 0; }
retry() { printf '%s\n' "$*"; exit 75; }
fail() { printf '%s\n' "$*"; exit 1; }

if [ -z "${JSON_TOOL:-}" ]; then
    if command -v jq >/dev/null 2>&1; then JSON_TOOL=jq; else JSON_TOOL=python3; fi
fi
command -v "$JSON_TOOL" >/dev/null 2>&1 || retry "freeradius-users: $JSON_TOOL is not installed (install jq or python3)"

doc=$(cat)

# The value at a path such as .entity.id: strings as they are, numbers as digits, nothing
# for null, false or a missing key.
json_get() {
    case $JSON_TOOL in
        jq) printf '%s' "$doc" | jq -r "($1) // empty | tostring" ;;
        *) printf '%s' "$doc" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1].strip(".").split("."):
    d = d.get(k) if isinstance(d, dict) else None
if d is not None and d is not False:
    print(d if isinstance(d, str) else json.dumps(d))
' "$1" ;;
    esac
}

json_get . >/dev/null 2>&1 || fail "freeradius-users: the document on stdin is not JSON"

i_account=${ESPFD_I_ACCOUNT:-$(json_get .entity.i_account)}
[ -n "$i_account" ] || i_account=$(json_get .variables.i_account)
[ -n "$i_account" ] || done_ "freeradius-users: not an account event; nothing to do"
case $i_account in *[!0-9]*) fail "freeradius-users: i_account '$i_account' is not a number" ;; esac

kind=$(json_get .entity.kind)
id=$(json_get .entity.id)
password=$(json_get .entity.h323_password)
bill_status=$(json_get .entity.bill_status)
blocked=$(json_get .entity.blocked)
i_event=${ESPFD_I_EVENT:-$(json_get .i_event)}

# A value as a double-quoted users-file string: backslash and quote escaped.
quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}
nl='
'
case "$id$password" in *"$nl"*) fail "freeradius-users: the id or password of account $i_account has a line break" ;; esac
label=${id:-account $i_account}

if [ -z "$kind" ] || [ "$bill_status" = C ]; then
    action=remove
    entry=
elif [ "$kind" != account ]; then
    done_ "freeradius-users: a $kind record, not an account; nothing to do"
else
    [ -n "$id" ] || fail "freeradius-users: account $i_account has no id in PortaBilling's record"
    if [ "$blocked" = Y ]; then
        action=block
        entry="$(quote "$id") Auth-Type := Reject"
    else
        [ -n "$password" ] || fail "freeradius-users: account $i_account has no h323_password in PortaBilling's record (can the API user read it?)"
        action=allow
        entry="$(quote "$id") Cleartext-Password := $(quote "$password")"
    fi
fi

# One writer at a time: mkdir is atomic.
lock="$USERS.lock"
tries=0
until mkdir "$lock" 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -ge $((LOCK_WAIT * 5)) ] && retry "freeradius-users: $lock is held by another process; will retry"
    sleep 0.2
done
tmp="$USERS.espfd.$$"
trap 'rm -f "$tmp"; rmdir "$lock" 2>/dev/null' EXIT

begin="# espfd i_account=$i_account begin"
end="# espfd i_account=$i_account end"
[ -e "$USERS" ] || : > "$USERS" || retry "freeradius-users: cannot create $USERS"
# Keep the file's owner and mode: start from a copy, then overwrite its contents.
cp -p "$USERS" "$tmp" || retry "freeradius-users: cannot write next to $USERS"
{
    awk -v b="$begin" -v e="$end" '
        $0 == b { skip = 1; next }
        $0 == e { skip = 0; next }
        !skip { print }
    ' "$USERS"
    if [ -n "$entry" ]; then
        printf '%s\n%s\n%s\n' "$begin" "$entry" "$end"
    fi
} > "$tmp" || retry "freeradius-users: cannot write $tmp"

if cmp -s "$tmp" "$USERS"; then
    done_ "freeradius-users: $label unchanged (i_event $i_event)"
fi
mv -f "$tmp" "$USERS" || retry "freeradius-users: cannot replace $USERS"

if [ -n "$RELOAD" ]; then
    out=$(sh -c "$RELOAD" 2>&1) || retry "freeradius-users: $USERS updated but '$RELOAD' failed: $(printf '%s' "$out" | tail -n 1)"
fi
case $action in
    allow) done_ "freeradius-users: $id may log in (i_event $i_event)" ;;
    block) done_ "freeradius-users: $id is blocked: Auth-Type := Reject (i_event $i_event)" ;;
    remove) done_ "freeradius-users: account $i_account removed (i_event $i_event)" ;;
esac
