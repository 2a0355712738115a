#!/bin/sh
# GET /: the page, with data fetched from api over the frontend network (api fetches it from db).
host=${API_URL%:*} port=${API_URL#*:}
data=$(printf 'GET /cgi-bin/items HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" | nc "$host" "$port" | sed '1,/^\r*$/d')
printf 'Content-Type: text/html\r\n\r\n'
cat <<HTML
<!doctype html>
<title>stackd quick start</title>
<h1>stackd quick start</h1>
<p>web ($(hostname)) &rarr; api &rarr; db, brought up by <code>stackd up</code>:</p>
<pre>
${data:-ERROR: no answer from $API_URL}
</pre>
HTML
