#!/bin/sh
# A database-like server, one request per connection (nc -ll -e runs this for each client):
#   PING            -> PONG
#   MIGRATE <ver>   -> applies schema <ver> once (seeds /data/items); every call is logged
#   QUERY           -> the schema version, the migration log and the rows
# Everything lives in /data, the named volume `dbdata`.
read -r cmd arg
case "$cmd" in
PING)
	echo PONG ;;
MIGRATE)
	if [ "$(cat /data/schema 2>/dev/null)" = "$arg" ]; then
		echo "$(date -u +%FT%TZ) migrate $arg: already applied" >> /data/migrations.log
	else
		printf '%s\n' "1 hello from the db service" "2 seeded by the migrate job" > /data/items
		echo "$arg" > /data/schema
		echo "$(date -u +%FT%TZ) migrate $arg: applied" >> /data/migrations.log
	fi
	echo OK ;;
QUERY)
	[ -f /data/schema ] || { echo "ERROR no schema: the migration has not run"; exit 0; }
	echo "schema $(cat /data/schema) (served by db $(hostname))"
	echo "migrations:"
	sed 's/^/  /' /data/migrations.log
	echo "items:"
	sed 's/^/  /' /data/items ;;
*)
	echo "ERROR unknown command: $cmd" ;;
esac
