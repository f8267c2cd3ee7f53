#!/bin/sh
# freeradius-users.sh — an espfd exec connector that keeps a FreeRADIUS "users" file
# (rlm_files) in step with PortaBilling accounts, and reloads FreeRADIUS so that the change
# is live before it says OK.
#
# JSON is read with jq when it is installed, else with python3 (set JSON_TOOL=jq|python3 to
# choose). One of the two must be there; without either, events are retried (exit 75).
# flock(1) (util-linux, on every Debian) serialises the runs.
#
# The exec contract (README, "Exec connectors"): espfd runs this once per event, the event
# document (JSON: i_event, event_type, variables, attempt, group, entity = PortaBilling's
# account record or null) on stdin, and ESPFD_I_EVENT, ESPFD_EVENT_TYPE, ESPFD_ENTITY_KIND,
# ESPFD_ENTITY_ID, ESPFD_I_ACCOUNT (when present), ESPFD_ATTEMPT, ESPFD_GROUP in the
# environment. Exit 0 → OK, 75 → try again later, anything else → FAILED; the last line
# printed becomes the status message shown in PortaBilling. Passwords never appear in it.
#
# What it does, per account (other events are acknowledged and ignored):
#   open and not blocked   '<account id>' Cleartext-Password := '<h323_password>'
#   blocked (blocked = Y)  '<account id>' Auth-Type := Reject
#   closed (bill_status C), deleted, or unknown to PortaBilling (entity null): no entry
# Each account's entry sits between two marker lines, so the rest of the file (your own
# entries, DEFAULT rules) is left as it is:
#   # espfd i_account=1000889 begin
#   '12065550100' Cleartext-Password := 's3cret'
#   # espfd i_account=1000889 end
# The file is replaced atomically (written next to it, then renamed) while holding a lock
# (flock on <file>.espfd-lock; the kernel releases it when a run dies, so a run killed at
# ESPFD_EXEC_TIMEOUT leaves nothing that blocks the next).
#
# Values are written literally. FreeRADIUS expands %{...} in double-quoted strings (a
# password "%{User-Password}" would accept any password, "%{echo:...}" runs a command), so
# values go in single-quoted strings, which it never expands; inside them it reads \\ as one
# backslash and \' as a quote (and \n, \t, \NNN as escapes, so every backslash is doubled).
# Checked against FreeRADIUS 3.2. Refused (exit 1, FAILED, with the reason):
#   - the account id DEFAULT (a catch-all entry matching every user, quoted or not) and ids
#     starting with $ ($INCLUDE reads another file);
#   - ids with a backslash (the users file keeps a name's backslashes as written, so some
#     cannot be expressed) and ids or passwords with control characters (line breaks, tabs,
#     NUL) or longer than 253 bytes (the most a RADIUS attribute carries).
# Stock FreeRADIUS rejects some ids before it reads this file: the default site's
# filter_username policy refuses names with spaces, and realm-style ids such as
# 79123456789@msisdn ("Realm does not have at least one dot separator") unless you configure
# realms (proxy.conf, the suffix module) or relax filter_username.
#
# Live before OK. rlm_files reads the file only at start and when reloaded, and FreeRADIUS
# silently ignores a reload of a module less than 3 s after the previous one (it answers OK
# all the same). So after a change the connector records a pending reload
# (<file>.espfd-pending: the time of the change), waits until 3 s have passed since the
# change, then reloads: FreeRADIUS then either really reloads, or ignores it because another
# reload happened in the last 2 s — which was already after the change. Only then is the
# event OK. If the reload fails (FreeRADIUS down, permission denied), the event is retried
# (exit 75) and the pending reload stays recorded, so the retry really reloads even though
# the file is already up to date; any later run, for any account, does it too.
# So each change takes about 3 s before it is reported OK.
#
# Reloading as the service user. The default reload is
#   radmin -f $RADIUS_CONTROL_SOCKET -e "hup $RADIUS_MODULE"
# through FreeRADIUS's control socket, which needs no signal and no root. It needs:
#   - the control socket enabled and writable: ln -s ../sites-available/control-socket
#     /etc/freeradius/3.0/sites-enabled/, and in its listen section "mode = rw" (hup is a
#     write command) and, to let only espfd in, "uid = espfd" (peercred; root is always let
#     in; "gid = ..." would be compared with espfd's primary group only);
#   - espfd in the freerad group (adduser espfd freerad): the socket is srw-rw---- freerad
#     in /run/freeradius, and /etc/freeradius is drwxr-s--- freerad;
#   - the users file's directory writable by that group (chmod g+w
#     /etc/freeradius/3.0/mods-config/files); the rewritten file keeps its group and mode
#     (0640 freerad), so FreeRADIUS can still read it.
# A SIGHUP (systemctl reload freeradius) needs root or the freerad user and is subject to
# the same 3 s rule; prefer radmin. A permission error is reported as such, e.g.
# "radmin: Failed connecting to /var/run/freeradius/freeradius.sock: Permission denied".
#
# Settings (environment):
#   RADIUS_USERS_FILE     the users file (default /etc/freeradius/3.0/mods-config/files/authorize)
#   RADIUS_CONTROL_SOCKET FreeRADIUS's control socket (default /var/run/freeradius/freeradius.sock)
#   RADIUS_MODULE         the rlm_files instance to reload (default files)
#   RADIUS_RELOAD         a command to run instead of radmin (through sh -c; exit 0 = reloaded),
#                         or "none": write the file only and say so in the status (nothing
#                         then makes the change live until FreeRADIUS restarts)
#   RADIUS_RELOAD_WAIT    seconds a run may wait for the 3 s gap (default 10); when the wait
#                         would be longer (0: always), it asks for a retry (exit 75) instead
#   RADIUS_LOCK_WAIT      seconds to wait for the lock before asking for a retry (default 10)
#   JSON_TOOL             jq | python3 (default: jq if installed)
set -u
LC_ALL=C
export LC_ALL
# radmin lives in /usr/sbin, which a service user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
export PATH

USERS=${RADIUS_USERS_FILE:-/etc/freeradius/3.0/mods-config/files/authorize}
SOCKET=${RADIUS_CONTROL_SOCKET:-/var/run/freeradius/freeradius.sock}
MODULE=${RADIUS_MODULE:-files}
RELOAD=${RADIUS_RELOAD:-}
RELOAD_WAIT=${RADIUS_RELOAD_WAIT:-10}
LOCK_WAIT=${RADIUS_LOCK_WAIT:-10}
# FreeRADIUS ignores a module reload when the previous one was at most 2 s (whole seconds of
# time(2)) before it; 3 s after a change, any reload is either done or was done for us.
GAP=3

done_() { printf '%s\n' "$*"; exit 0; }
retry() { printf '%s\n' "$*"; exit 75; }
fail() { printf '%s\n' "$*"; exit 1; }
# The reason at the end of an error message ("cp: cannot create ...: Permission denied").
reason() { printf '%s' "$1" | tail -n 1 | sed 's/.*: //'; }

case $RELOAD_WAIT in '' | *[!0-9]*) fail "freeradius-users: RADIUS_RELOAD_WAIT '$RELOAD_WAIT' is not a number of seconds" ;; esac
case $LOCK_WAIT in '' | *[!0-9]*) fail "freeradius-users: RADIUS_LOCK_WAIT '$LOCK_WAIT' is not a number of seconds" ;; esac

if [ -z "${JSON_TOOL:-}" ]; then
    if command -v jq >/dev/null 2>&1; then JSON_TOOL=jq; else JSON_TOOL=python3; fi
fi
command -v "$JSON_TOOL" >/dev/null 2>&1 || retry "freeradius-users: $JSON_TOOL is not installed (install jq or python3)"
command -v flock >/dev/null 2>&1 || retry "freeradius-users: flock is not installed (it is in util-linux)"
if [ -z "$RELOAD" ]; then
    command -v radmin >/dev/null 2>&1 || retry "freeradius-users: radmin is not installed (it comes with FreeRADIUS); or set RADIUS_RELOAD"
fi

doc=$(cat)

# The value at a path such as .entity.id, without a trailing newline: strings as they are,
# numbers as digits, nothing for null, false or a missing key. A NUL, which a shell variable
# cannot hold, comes out as \001 so that the control-character check below still sees it.
json_get() {
    case $JSON_TOOL in
        jq) printf '%s' "$doc" | jq -j "($1) // empty | tostring | gsub(\"\\u0000\"; \"\\u0001\")" ;;
        *) printf '%s' "$doc" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1].strip(".").split("."):
    d = d.get(k) if isinstance(d, dict) else None
if d is not None and d is not False:
    sys.stdout.write((d if isinstance(d, str) else json.dumps(d)).replace("\0", "\1"))
' "$1" ;;
    esac
}
# The same, kept exactly: $(...) would drop trailing newlines, which must be seen and refused.
json_value() {
    v=$(json_get "$1" && printf x) || return 1
    printf '%s' "${v%x}"
}

json_get . >/dev/null 2>&1 || fail "freeradius-users: the document on stdin is not JSON"

i_account=${ESPFD_I_ACCOUNT:-$(json_get .entity.i_account)}
[ -n "$i_account" ] || i_account=$(json_get .variables.i_account)
[ -n "$i_account" ] || done_ "freeradius-users: not an account event; nothing to do"
case $i_account in *[!0-9]*) fail "freeradius-users: i_account '$i_account' is not a number" ;; esac

kind=$(json_get .entity.kind)
id=$(json_value .entity.id)
password=$(json_value .entity.h323_password)
bill_status=$(json_get .entity.bill_status)
blocked=$(json_get .entity.blocked)
i_event=${ESPFD_I_EVENT:-$(json_get .i_event)}

# A value as a single-quoted users-file string: FreeRADIUS takes it literally once each
# backslash is doubled and each quote escaped.
quote_value() {
    printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")"
}
# A name (the first field) as a single-quoted string: only \' is an escape there, and
# backslashes are refused before this is called.
quote_name() {
    printf "'%s'" "$(printf '%s' "$1" | sed -e "s/'/\\\\'/g")"
}
# Why an id cannot be a users-file name (nothing when it can). Ids are not secret.
bad_name() {
    case $1 in
        DEFAULT) printf '%s\n' "the account id DEFAULT would be FreeRADIUS's catch-all entry, matching every user" ;;
        '$'*) printf '%s\n' "the account id '$1' starts with \$, which FreeRADIUS reads as a directive (\$INCLUDE)" ;;
        *[[:cntrl:]]*) printf '%s\n' "the account id has a control character (line break, tab ...), which the users file cannot carry" ;;
        *\\*) printf '%s\n' "the account id '$1' has a backslash, which the users file cannot carry literally in a name" ;;
        *) [ "${#1}" -le 253 ] || printf '%s\n' "the account id is longer than 253 bytes, more than a RADIUS User-Name carries" ;;
    esac
}
# Why a password cannot be written (nothing when it can). Never names the value.
bad_password() {
    case $1 in
        *[[:cntrl:]]*) printf '%s\n' "the h323_password has a control character (line break, tab, NUL ...), which the users file cannot carry literally" ;;
        *) [ "${#1}" -le 253 ] || printf '%s\n' "the h323_password is longer than 253 bytes, more than a RADIUS attribute carries" ;;
    esac
}
# How the account is named in status lines: its id when that is printable.
label="account $i_account"
[ -z "$id" ] || [ -n "$(bad_name "$id")" ] || label=$id

if [ -z "$kind" ] || [ "$bill_status" = C ]; then
    action=remove
    entry=
elif [ "$kind" != account ]; then
    done_ "freeradius-users: a $kind record, not an account; nothing to do"
else
    [ -n "$id" ] || fail "freeradius-users: account $i_account has no id in PortaBilling's record"
    why=$(bad_name "$id")
    [ -z "$why" ] || fail "freeradius-users: account $i_account refused: $why"
    if [ "$blocked" = Y ]; then
        action=block
        entry="$(quote_name "$id") Auth-Type := Reject"
    else
        [ -n "$password" ] || fail "freeradius-users: account $i_account has no h323_password in PortaBilling's record (can the API user read it?)"
        why=$(bad_password "$password")
        [ -z "$why" ] || fail "freeradius-users: account $i_account ($id) refused: $why"
        action=allow
        entry="$(quote_name "$id") Cleartext-Password := $(quote_value "$password")"
    fi
fi

lockfile="$USERS.espfd-lock"
pending="$USERS.espfd-pending"
# Written in place of a link, the users file would stop being what FreeRADIUS reads (and a
# link planted by whoever else may write the directory would be followed).
[ -L "$USERS" ] && fail "freeradius-users: $USERS is a symbolic link; set RADIUS_USERS_FILE to the file itself ($(readlink -f "$USERS" 2>/dev/null))"
# Temporary files under names nobody can guess (mktemp, created exclusively), so nothing
# planted in the directory beforehand is written through.
tmp=
pending_tmp=
trap 'rm -f ${tmp:+"$tmp"} ${pending_tmp:+"$pending_tmp"}' EXIT

# One writer at a time: an flock on fd 9, released when the run ends or dies. The open is
# tried in a subshell first: a failed redirection of `exec` would end the script unexplained.
lock() {
    err=$( (: >>"$lockfile") 2>&1 ) || retry "freeradius-users: cannot open the lock file $lockfile: $(reason "$err") (espfd's user must be able to write the users file's directory)"
    exec 9>>"$lockfile"
    flock -w "$LOCK_WAIT" 9 || retry "freeradius-users: another run has held $lockfile for ${LOCK_WAIT}s; will retry"
}
unlock() { exec 9>&-; }

# Records that the file changed now and FreeRADIUS has not yet read it.
mark_pending() {
    out=$(mktemp "$pending.XXXXXX" 2>&1) ||
        retry "freeradius-users: cannot record the pending reload in $pending: $(reason "$out"); will retry"
    pending_tmp=$out
    err=$( { date +%s >"$pending_tmp" && mv -f "$pending_tmp" "$pending"; } 2>&1 ) ||
        retry "freeradius-users: cannot record the pending reload in $pending: $(reason "$err"); will retry"
    pending_tmp=
}

lock
if [ ! -e "$USERS" ]; then
    err=$( (: >"$USERS") 2>&1 ) || retry "freeradius-users: cannot create $USERS: $(reason "$err")"
fi
# Keep the file's group and mode: start from a copy, then overwrite its contents.
out=$(mktemp "$USERS.espfd.XXXXXX" 2>&1) || retry "freeradius-users: cannot write next to $USERS: $(reason "$out")"
tmp=$out
err=$(cp -p "$USERS" "$tmp" 2>&1) || retry "freeradius-users: cannot write next to $USERS: $(reason "$err")"
begin="# espfd i_account=$i_account begin"
end="# espfd i_account=$i_account end"
err=$( {
    awk -v b="$begin" -v e="$end" '
        $0 == b { skip = 1; next }
        $0 == e { skip = 0; next }
        !skip { print }
    ' "$USERS"
    if [ -n "$entry" ]; then
        printf '%s\n%s\n%s\n' "$begin" "$entry" "$end"
    fi
} 2>&1 >"$tmp") || retry "freeradius-users: cannot write $tmp: $(reason "$err")"

changed=no
if ! cmp -s "$tmp" "$USERS"; then
    # Pending first: a run killed right after the rename still leaves the reload owed.
    [ "$RELOAD" = none ] || mark_pending
    err=$(mv -f "$tmp" "$USERS" 2>&1) || retry "freeradius-users: cannot replace $USERS: $(reason "$err")"
    [ "$RELOAD" = none ] || mark_pending
    changed=yes
fi
pending_at=
[ "$RELOAD" = none ] || pending_at=$(cat "$pending" 2>/dev/null)
unlock

case $action in
    allow) what="$label may log in" ;;
    block) what="$label is blocked: Auth-Type := Reject" ;;
    remove) what="account $i_account removed" ;;
esac
[ "$changed" = yes ] || what="$label unchanged"

if [ "$RELOAD" = none ]; then
    done_ "freeradius-users: $what (i_event $i_event; not reloaded: RADIUS_RELOAD=none)"
fi
case $pending_at in
    '') done_ "freeradius-users: $what (i_event $i_event)" ;;
    *[!0-9]*) pending_at=0 ;;
esac

# Wait until GAP seconds have passed since the change. A pending time in the future means
# the clock was set back; count from now then.
now=$(date +%s)
due=$((pending_at + GAP))
[ "$due" -le $((now + GAP)) ] || due=$((now + GAP))
if [ "$due" -gt "$now" ]; then
    [ $((due - now)) -le "$RELOAD_WAIT" ] ||
        retry "freeradius-users: $USERS updated for $label; reload pending (FreeRADIUS ignores reloads less than ${GAP}s apart); will retry"
    while [ "$(date +%s)" -lt "$due" ]; do sleep 0.2; done
fi

if [ -n "$RELOAD" ]; then
    out=$(sh -c "$RELOAD" 2>&1) || retry "freeradius-users: $USERS updated for $label, but the RADIUS_RELOAD command failed: $(printf '%s' "$out" | tail -n 1); will retry"
else
    out=$(radmin -f "$SOCKET" -e "hup $MODULE" 2>&1) || {
        # radmin's first line names the cause; the rest is advice about sites-enabled.
        first=$(printf '%s' "$out" | sed -n '/./{p;q;}')
        retry "freeradius-users: $USERS updated for $label, but the reload failed: ${first:-radmin exited with an error}; will retry"
    }
fi

# Done: clear the mark unless a newer change has been written meanwhile (its run reloads).
lock
[ "$(cat "$pending" 2>/dev/null)" != "$pending_at" ] || rm -f "$pending"
unlock
if [ "$changed" = yes ]; then
    done_ "freeradius-users: $what (i_event $i_event)"
fi
done_ "freeradius-users: $what; the pending reload is done (i_event $i_event)"
