#!/bin/sh
# sqlite-table.sh — an espfd exec connector that keeps one row per PortaBilling account in
# an SQL table, through the sqlite3 command-line shell. The same statements work for
# PostgreSQL through psql with small changes (INSERT ... ON CONFLICT is the same syntax).
#
# JSON is read with jq when it is installed, else with python3 (set JSON_TOOL=jq|python3 to
# choose). Needs sqlite3 3.24 or later (UPSERT).
#
# The exec contract (README, "Exec connectors"): espfd runs this once per event, the event
# document (JSON: i_event, event_type, variables, attempt, group, entity = PortaBilling's
# account record or null) on stdin, and ESPFD_I_EVENT, ESPFD_EVENT_TYPE, ESPFD_ENTITY_KIND,
# ESPFD_ENTITY_ID, ESPFD_I_ACCOUNT (when present), ESPFD_ATTEMPT, ESPFD_GROUP in the
# environment. Exit 0 → OK, 75 → try again later, anything else → FAILED; the last line
# printed becomes the status message shown in PortaBilling.
#
# What it does, per account (other events are acknowledged and ignored): the account's row
# is inserted or updated with the current PortaBilling record (espfd looks it up when it
# processes the event, so the row always holds the latest state); when PortaBilling no
# longer knows the account (entity null, e.g. after a delete) the row is deleted. The table
# is created when missing:
#
#   i_account INTEGER PRIMARY KEY, id TEXT, i_customer INTEGER, product TEXT,
#   bill_status TEXT, blocked TEXT, firstname TEXT, lastname TEXT, email TEXT,
#   last_i_event INTEGER, last_event_type TEXT, updated_at TEXT,
#   record TEXT (the whole record as JSON, without h323_password and password)
#
# Settings (environment):
#   SQLITE_DB      the database file (default /var/lib/espfd-connector/subscribers.db);
#                  espfd's user must be able to write it and its directory
#   SQLITE_TABLE   the table (default subscribers)
#   JSON_TOOL      jq | python3 (default: jq if installed)
set -u

DB=${SQLITE_DB:-/var/lib/espfd-connector/subscribers.db}
TABLE=${SQLITE_TABLE:-subscribers}

done_() { printf '%s\n' "$*"; exit 0; }
retry() { printf '%s\n' "$*"; exit 75; }
fail() { printf '%s\n' "$*"; exit 1; }

case $TABLE in
    ''|[0-9]*|*[!A-Za-z0-9_]*) fail "sqlite-table: SQLITE_TABLE '$TABLE' is not a plain table name" ;;
esac
command -v sqlite3 >/dev/null 2>&1 || retry "sqlite-table: sqlite3 is not installed"
if [ -z "${JSON_TOOL:-}" ]; then
    if command -v jq >/dev/null 2>&1; then JSON_TOOL=jq; else JSON_TOOL=python3; fi
fi
command -v "$JSON_TOOL" >/dev/null 2>&1 || retry "sqlite-table: $JSON_TOOL is not installed (install jq or python3)"

doc=$(cat)

# The value at a path such as .entity.id: strings as they are, numbers as digits, objects
# as compact JSON, nothing for null, false or a missing key.
json_get() {
    case $JSON_TOOL in
        jq) printf '%s' "$doc" | jq -r "($1) // empty | if type == \"object\" or type == \"array\" then tojson else tostring end" ;;
        *) printf '%s' "$doc" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1].strip(".").split("."):
    d = d.get(k) if isinstance(d, dict) else None
if d is not None and d is not False:
    print(d if isinstance(d, str) else json.dumps(d, separators=(",", ":")))
' "$1" ;;
    esac
}

# The account record as compact JSON, without its passwords.
record_json() {
    case $JSON_TOOL in
        jq) printf '%s' "$doc" | jq -c '.entity | del(.h323_password, .password)' ;;
        *) printf '%s' "$doc" | python3 -c '
import json, sys
e = json.load(sys.stdin)["entity"]
for k in ("h323_password", "password"):
    e.pop(k, None)
print(json.dumps(e, separators=(",", ":")))
' ;;
    esac
}

json_get . >/dev/null 2>&1 || fail "sqlite-table: the document on stdin is not JSON"

i_account=${ESPFD_I_ACCOUNT:-$(json_get .entity.i_account)}
[ -n "$i_account" ] || i_account=$(json_get .variables.i_account)
[ -n "$i_account" ] || done_ "sqlite-table: not an account event; nothing to do"
case $i_account in *[!0-9]*) fail "sqlite-table: i_account '$i_account' is not a number" ;; esac

kind=$(json_get .entity.kind)
i_event=${ESPFD_I_EVENT:-$(json_get .i_event)}
event_type=${ESPFD_EVENT_TYPE:-$(json_get .event_type)}
case $i_event in ''|*[!0-9]*) i_event=NULL ;; esac
if [ -n "$kind" ] && [ "$kind" != account ]; then
    done_ "sqlite-table: a $kind record, not an account; nothing to do"
fi

# SQL literals: text in single quotes (quotes doubled), NULL when empty; integers checked.
text() {
    if [ -z "$1" ]; then printf 'NULL'; else printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; fi
}
int() {
    case $1 in ''|*[!0-9]*) printf 'NULL' ;; *) printf '%s' "$1" ;; esac
}

schema="CREATE TABLE IF NOT EXISTS $TABLE (
    i_account INTEGER PRIMARY KEY, id TEXT, i_customer INTEGER, product TEXT,
    bill_status TEXT, blocked TEXT, firstname TEXT, lastname TEXT, email TEXT,
    last_i_event INTEGER, last_event_type TEXT, updated_at TEXT, record TEXT);"

if [ -z "$kind" ]; then
    action="deleted from"
    sql="DELETE FROM $TABLE WHERE i_account = $i_account;"
else
    action="stored in"
    sql="INSERT INTO $TABLE (i_account, id, i_customer, product, bill_status, blocked,
        firstname, lastname, email, last_i_event, last_event_type, updated_at, record)
    VALUES ($i_account, $(text "$(json_get .entity.id)"), $(int "$(json_get .entity.i_customer)"),
        $(text "$(json_get .entity.product_name)"), $(text "$(json_get .entity.bill_status)"),
        $(text "$(json_get .entity.blocked)"), $(text "$(json_get .entity.firstname)"),
        $(text "$(json_get .entity.lastname)"), $(text "$(json_get .entity.email)"),
        $i_event, $(text "$event_type"), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),
        $(text "$(record_json)"))
    ON CONFLICT (i_account) DO UPDATE SET id = excluded.id, i_customer = excluded.i_customer,
        product = excluded.product, bill_status = excluded.bill_status,
        blocked = excluded.blocked, firstname = excluded.firstname,
        lastname = excluded.lastname, email = excluded.email,
        last_i_event = excluded.last_i_event, last_event_type = excluded.last_event_type,
        updated_at = excluded.updated_at, record = excluded.record;"
fi

mkdir -p "$(dirname "$DB")" 2>/dev/null
if ! out=$(printf '%s\nBEGIN IMMEDIATE;\n%s\nCOMMIT;\n' "$schema" "$sql" |
    sqlite3 -bail -cmd '.timeout 10000' "$DB" 2>&1); then
    last=$(printf '%s' "$out" | tail -n 1)
    case $out in
        *locked*|*busy*|*"unable to open"*|*"disk I/O"*|*"database or disk is full"*|*readonly*)
            retry "sqlite-table: $DB: $last" ;;
        *) fail "sqlite-table: $DB: $last" ;;
    esac
fi
done_ "sqlite-table: account $i_account $action $TABLE (i_event $(int "$i_event"))"
