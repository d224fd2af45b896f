#!/bin/sh
# run_tests.sh - runs each "label command..." line of a plan read from stdin,
# logs each to build/logs/<label>.log, and adds up the test cases: a program that
# prints "<file>: N passed, N failed" contributes its counts, any other program
# counts as one case that passed if it exited 0. Ends with one line
# "N passed, N failed" and exits non-zero if anything failed.
mkdir -p build/logs
passed=0; failed=0; failures=""
while read -r label cmd; do
    [ -z "$label" ] && continue
    case "$label" in \#*) continue ;; esac
    log="build/logs/$label.log"
    start=$(date +%s)
    sh -c "$cmd" >"$log" 2>&1 </dev/null
    rc=$?
    secs=$(( $(date +%s) - start ))
    # (programs run under wine end their lines with CR LF)
    line=$(tr -d '\r' <"$log" | grep -E '^[^ ]*: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/')
        f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/')
        # A crash after the summary, or a non-zero exit with all cases passed, is a failure too.
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    elif [ "$rc" -eq 0 ]; then p=1; f=0; else p=0; f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        failures="$failures $label"
        printf '%-28s FAIL (%s passed, %s failed, exit %s, %ss) - log %s\n' "$label" "$p" "$f" "$rc" "$secs" "$log"
        grep -E 'FAIL|error|ERROR|failed|:[0-9]+: ' "$log" | head -n 20 | sed 's/^/    /'
    else
        printf '%-28s ok   (%s passed, %ss)\n' "$label" "$p" "$secs"
    fi
done
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
