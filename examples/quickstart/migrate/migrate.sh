#!/bin/sh
# One-shot migration job: asks db to apply schema v1, exits 0 only when db says OK.
set -e
reply=$(echo "MIGRATE v1" | nc "$DB_HOST" "$DB_PORT")
echo "db: $reply"
[ "$reply" = OK ]
