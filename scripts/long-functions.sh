#!/bin/sh
# Lists the functions in src/ longer than 80 lines (tests included), longest
# first: "<lines> <file>:<line> <name>". A function runs from its `fn` line to
# the `}` at the same indentation (rustfmt's layout). Issue 24.
# The one line: awk '<program below>' $(find src -name '*.rs') | sort -rn
exec awk 'FNR==1{delete s} /^ *(pub(\([a-z]+\))? )?(const )?fn [A-Za-z0-9_]+/{match($0,/^ */);k=RLENGTH;n=$0;sub(/^.*fn /,"",n);sub(/[<(].*/,"",n);s[k]=FNR;nm[k]=n} /^ *}$/{match($0,/^ */);k=RLENGTH;if(k in s){if(FNR-s[k]+1>'"${1:-80}"')print FNR-s[k]+1" "FILENAME":"s[k]" "nm[k];delete s[k]}}' $(find "${2:-src}" -name '*.rs' | sort) | sort -rn
