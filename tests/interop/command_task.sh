#!/bin/sh
# A task that knows nothing of taskvisor's Python SDK: it speaks the line protocol on
# stdin/stdout (one JSON object per line) and logs on stderr. The variable to read comes from
# the activity's env (INTEROP_VARIABLE); its whole answer line is pushed back as an XCom.
set -eu

read -r startup
echo "command task started; StartupDetails is ${#startup} bytes" >&2
echo '{"type":"Hello","protocol_version":1,"sdk":"posix-sh"}'

echo '{"type":"GetVariable","id":1,"key":"'"$INTEROP_VARIABLE"'"}'
read -r variable
echo "variable answer: $variable" >&2

echo '{"type":"Log","level":"info","event":"command task pushing its XCom","fields":{"lang":"sh"}}'
echo '{"type":"SetXCom","id":2,"key":"variable_answer","value":'"$variable"'}'
read -r pushed
echo "push answer: $pushed" >&2

echo '{"type":"SucceedTask","id":3}'
read -r done
echo "terminal answer: $done" >&2
