#!/bin/sh
# run_tests.sh - runs each "label command..." line of a plan read from stdin,
# logs each to build/logs/<label>.log, and adds up the test cases: a program that
# prints "<file>: N passed, N failed" (optionally followed by ", N skipped")
# contributes its counts, any other program counts as one case that passed if it
# exited 0. Ends with one line "N passed, N failed, N skipped" and exits non-zero
# if anything failed.
mkdir -p build/logs
passed=0; failed=0; skipped=0; failures=""
while read -r label cmd; do
    [ -z "$label" ] && continue
    case "$label" in \#*) continue ;; esac
    log="build/logs/$label.log"
    start=$(date +%s)
    sh -c "$cmd" >"$log" 2>&1 </dev/null
    rc=$?
    secs=$(( $(date +%s) - start ))
    # (programs run under wine end their lines with CR LF)
    line=$(tr -d '\r' <"$log" | grep -E '^[^ ]*: [0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' | tail -n 1)
    s=0
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/')
        f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/')
        case "$line" in *skipped) s=$(echo "$line" | sed -E 's/.*, ([0-9]+) skipped$/\1/') ;; esac
        # A crash after the summary, or a non-zero exit with all cases passed, is a failure too.
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    elif [ "$rc" -eq 0 ]; then p=1; f=0; else p=0; f=1; fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    if [ "$f" -ne 0 ]; then
        failures="$failures $label"
        printf '%-28s FAIL (%s passed, %s failed, exit %s, %ss) - log %s\n' "$label" "$p" "$f" "$rc" "$secs" "$log"
        grep -E 'FAIL|error|ERROR|failed|:[0-9]+: ' "$log" | head -n 20 | sed 's/^/    /'
    else
        if [ "$s" -ne 0 ]; then
            printf '%-28s ok   (%s passed, %s skipped, %ss)\n' "$label" "$p" "$s" "$secs"
            tr -d '\r' <"$log" | grep -E '^ *skip' | head -n 10 | sed 's/^/    /'
        else
            printf '%-28s ok   (%s passed, %ss)\n' "$label" "$p" "$secs"
        fi
    fi
done
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
