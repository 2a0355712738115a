#!/bin/sh
# Resolves $TARGET (one address per replica) and asks every address; `sh /client.sh once` does one
# round and exits, otherwise it repeats every $INTERVAL seconds (see `stackd logs -f client`).
round() {
	addrs=$(nslookup "$TARGET" 2>/dev/null | sed -n '/^Name:/,$ s/^Address: *//p')
	echo "$TARGET resolves to: $(echo $addrs)"
	for a in $addrs; do
		printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$a" 80 | tail -n 1
	done
}
if [ "$1" = once ]; then round; exit; fi
while :; do round; sleep "${INTERVAL:-2}"; done
