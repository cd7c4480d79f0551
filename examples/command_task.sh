#!/bin/sh
# A task in plain shell: it speaks taskvisor's line protocol on stdin/stdout and knows nothing
# else. Its stderr is its log. Run it with an activity whose "command" is ["sh", "examples/command_task.sh"].
set -eu

read -r startup                       # StartupDetails: protocol version, TI identity, context
echo "starting; startup line has ${#startup} bytes" >&2

echo '{"type":"Hello","protocol_version":1,"sdk":"posix-sh"}'

echo '{"type":"GetVariable","id":1,"key":"greeting"}'
read -r answer                        # VariableResult or ErrorResponse, with "id":1
echo "variable answer: $answer" >&2

echo '{"type":"Log","level":"info","event":"shell task did its work","fields":{"lang":"sh"}}'
echo '{"type":"SetXCom","id":2,"key":"return_value","value":"done in sh"}'
read -r answer

echo '{"type":"SucceedTask","id":3}'
read -r answer                        # OKResponse: the supervisor recorded the outcome
